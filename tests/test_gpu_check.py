"""benchmarks/gpu_check.py at toy scale on the CPU (--tiny --device cpu): every recipe stage gives a row with positive
tokens/s, a failing stage is a FAILED row and exit 1, and a missing GPU is one error line and exit 2."""
import json

import pytest
import torch

from benchmarks import gpu_check

EXPECTED = {(recipe, stage) for recipe, stages in gpu_check.RECIPE_STAGES.items() for stage in stages}


def test_scaled_configs_keep_the_real_architecture():
    # Llama-3-8B: head size 128, 4 query heads per key/value head, MLP 3.5 x hidden, its 128256-token vocabulary
    c = gpu_check.scaled_config("meta-llama/Meta-Llama-3-8B-Instruct", 2048, 16)
    assert (c.model_type, c.hidden_size, c.num_hidden_layers, c.vocab_size) == ("llama", 2048, 16, 128256)
    assert c.hidden_size // c.num_attention_heads == 128 and c.num_attention_heads == 4 * c.num_key_value_heads
    assert c.intermediate_size == 7168
    g = gpu_check.scaled_config("google/gemma-2-9b-it", 2048, 16)
    assert (g.model_type, g.head_dim, g.num_attention_heads, g.num_key_value_heads) == ("gemma2", 256, 8, 4)
    assert gpu_check.build_tokenizer(32001).vocab_size == 32001  # alpaca-7b's vocabulary, exactly
    # every architecture scales to a valid config (transformers validates it): OpenLLaMA-3B's head size 100 does
    # not divide 2048, so its heads become 32 of 64
    for name, (_, real) in gpu_check.ARCHITECTURES.items():
        for hidden, layers in ((2048, 16), (64, 2)):
            c = gpu_check.scaled_config(name, hidden, layers)
            heads = getattr(c, "num_attention_heads", None) or c.n_head
            assert c.get_text_config().vocab_size == real["vocab_size"] and hidden % heads == 0, name
            kv = getattr(c, "num_key_value_heads", heads)
            assert heads % kv == 0, name
    c = gpu_check.scaled_config("openlm-research/open_llama_3b_v2", 2048, 16)
    assert (c.num_attention_heads, c.num_key_value_heads) == (32, 32)


@pytest.mark.slow  # ~25 s on two shared cores: every recipe
def test_tiny_cpu_run_has_every_row_with_positive_throughput(tmp_path, capsys):
    out = tmp_path / "check.json"
    path = gpu_check.main(["--tiny", "--device", "cpu", "--dpo-steps", "2", "--select-pairs", "8", "--gen-batches", "1",
                           "--out", str(out)])
    assert path == out
    rows = json.loads(out.read_text())["rows"]
    assert {(r["recipe"], r["stage"]) for r in rows} == EXPECTED
    assert len(rows) == len(EXPECTED)
    for r in rows:
        assert r["status"] == "ok", r
        assert r["tokens"] > 0 and r["seconds"] > 0 and r["tokens_per_s"] > 0, r
    # DPO tokens: 2 steps x the recipe's pairs per step x 2 sequences of <bos> + 8 + 8 + <eos> tokens
    dpo = {r["recipe"]: r["tokens"] for r in rows if r["stage"] == "train_dpo"}
    assert dpo["safe_rlhf"] == 2 * 2 * 2 * 18  # safe_rlhf.yaml: batch_size 2, grad_accum 1
    assert dpo["active"] == 2 * 6 * 2 * 2 * 18  # active.yaml: batch_size 6, grad_accum 2
    table = capsys.readouterr().out
    for recipe, stage in EXPECTED:
        assert f"| {recipe} | {stage} |" in table


def test_tiny_cpu_generation_annotation_dpo_and_reward_gap_rows(tmp_path, capsys):
    # the quick lane's share: the four kinds of rows the check exists for (fused and plain generation, DPO steps,
    # reward-gap scoring) plus annotation, one recipe each
    out = tmp_path / "check.json"
    gpu_check.main(["--tiny", "--device", "cpu", "--recipes", "iterative_prompt,difficulty", "--dpo-steps", "1",
                    "--select-pairs", "8", "--gen-batches", "1", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["recipe"], r["stage"]) for r in rows] == [("iterative_prompt", s) for s in
                                                         gpu_check.RECIPE_STAGES["iterative_prompt"]] + \
        [("difficulty", s) for s in gpu_check.RECIPE_STAGES["difficulty"]]
    assert all(r["status"] == "ok" and r["tokens_per_s"] > 0 for r in rows), rows
    gen = {r["stage"]: r["tokens"] for r in rows if r["recipe"] == "iterative_prompt"}
    # --tiny: batches of 4 prompts, 4 new tokens per response (random inits rarely stop early: at most this many);
    # mix_p here draws 2 fused responses + the recipe's on-policy pair, on_policy the recipe's K = 2
    assert 0 < gen["generate_mix_p"] <= 4 * 4 * 4 and 0 < gen["generate_on_policy"] <= 4 * 2 * 4


def test_a_failing_stage_is_a_failed_row_and_exit_1(tmp_path, monkeypatch):
    def broken(ctx):
        raise RuntimeError("scores went NaN")

    monkeypatch.setitem(gpu_check.STAGES, "train_dpo", broken)
    out = tmp_path / "check.json"
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--tiny", "--device", "cpu", "--recipes", "difficulty", "--select-pairs", "8",
                        "--out", str(out)])
    assert e.value.code == 1
    rows = {r["stage"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["train_dpo"]["status"] == "FAILED" and "scores went NaN" in rows["train_dpo"]["error"]
    assert rows["select_reward_gap"]["status"].startswith("skipped")  # it needs the trained model


def test_a_stage_that_exits_is_a_failed_row(tmp_path, monkeypatch):
    # a stage's own bad-flag exit (its entry point turns a ConfigError into SystemExit(2)) is a failure, not a pass
    from alignment import select

    monkeypatch.setitem(gpu_check.STAGES, "select_reward_gap", lambda ctx: select.main(["--method", "reward_gap"]))
    out = tmp_path / "check.json"
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--tiny", "--device", "cpu", "--recipes", "difficulty", "--dpo-steps", "1", "--out", str(out)])
    assert e.value.code == 1
    rows = {r["stage"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["train_dpo"]["status"] == "ok"
    assert rows["select_reward_gap"]["status"] == "FAILED" and rows["select_reward_gap"]["error"] == "SystemExit: 2"


def test_past_the_budget_stages_are_skipped(tmp_path):
    out = tmp_path / "check.json"
    gpu_check.main(["--tiny", "--device", "cpu", "--recipes", "sams", "--budget-s", "1e-9", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["status"] for r in rows] == ["skipped (--budget-s)"]


def test_no_cuda_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "check.json"
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--device" in err[0] and "CUDA" in err[0]
    assert not out.exists()


def test_cpu_needs_tiny(capsys):
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--device", "cpu"])
    assert e.value.code == 2
    assert "--tiny" in capsys.readouterr().err
