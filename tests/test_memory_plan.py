"""benchmarks/memory_plan.py: DeepSpeed's ZeRO-2 / ZeRO-3 model-state estimates plus the frozen reference's weights,
checked against a hand count of Llama-3-8B's parameters and DeepSpeed's documented formulas."""
import importlib.util
import json

import pytest

from benchmarks import memory_plan

# Meta-Llama-3-8B: vocabulary 128256, hidden 4096, 32 layers, 32 query heads and 8 key/value heads of 128, MLP 14336,
# untied embedding and LM head, two RMSNorms per layer and a final one
V, H, LAYERS, KV, I = 128256, 4096, 32, 8 * 128, 14336
LLAMA3_8B = 2 * V * H + LAYERS * (2 * H * H + 2 * H * KV + 3 * H * I + 2 * H) + H
LLAMA3_8B_LARGEST = V * H  # the embedding (or the LM head): the largest single module


def test_llama3_8b_row_matches_deepspeeds_formulas():
    pytest.importorskip("deepspeed")
    assert memory_plan.count_params("meta-llama/Meta-Llama-3-8B-Instruct") == (LLAMA3_8B, LLAMA3_8B_LARGEST)
    assert LLAMA3_8B == 8_030_261_248  # the model card's 8.03B
    row = memory_plan.plan_row("sams", "meta-llama/Meta-Llama-3-8B-Instruct", gpus=8, gpu_gib=80)
    p, n = LLAMA3_8B, 8
    # ZeRO-2 without offload: 16-bit weights replicated (2 P) + 18 P / N (grads, fp32 master weights, Adam moments)
    assert row["zero2_policy_bytes"] == 2 * p + int(18 * p / n)
    # ZeRO-3 without offload: the largest layer gathered (4 bytes per parameter) + 18 P / N
    assert row["zero3_policy_bytes"] == 4 * LLAMA3_8B_LARGEST + int(18 * p / n)
    # the frozen bf16 reference: a full copy per GPU under ZeRO-2, a 1/N shard under ZeRO-3
    assert row["zero2_total_bytes"] == row["zero2_policy_bytes"] + 2 * p
    assert row["zero3_total_bytes"] == row["zero3_policy_bytes"] + 2 * p // n
    assert row["zero3_headroom_gib"] == pytest.approx(80 - row["zero3_total_bytes"] / 2**30)
    # sams.yaml: 2 pairs of 1024 tokens per micro-batch; fp32 logits over the vocabulary
    assert row["logits_bytes"] == 2 * 2 * 1024 * V * 4


def test_main_prints_every_model_and_writes_json(tmp_path, capsys):
    pytest.importorskip("deepspeed")
    out = tmp_path / "plan.json"
    memory_plan.main(["--gpus", "8", "--out", str(out)])
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert [r["model"] for r in data["rows"]] == [m for _, m in memory_plan.MODELS]
    for _, name in memory_plan.MODELS:
        assert f"| {name} |" in text
    assert data["deepspeed"] == __import__("deepspeed").__version__


def test_without_deepspeed_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    out = tmp_path / "plan.json"
    with pytest.raises(SystemExit) as e:
        memory_plan.main(["--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deepspeed is not installed" in err[0]
    assert not out.exists()
