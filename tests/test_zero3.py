"""train_dpo under real DeepSpeed ZeRO-3 on CPU (`accelerate launch` with a DeepSpeed config, gloo processes):
both models are created partitioned (each process holds 1/N of every parameter from the start), LoRA adapters are
merged from gathered weights into the same model a run without ZeRO trains, and a save that cannot gather is an
error (exit code 2) rather than an empty model folder.

Parameters are forced to partition (stage3_param_persistence_threshold: 0): by default ZeRO-3 keeps parameters
under 10^5 values whole on every process, which is every weight of the toy model, and nothing would be tested.
The shared-memory all-reduce kernel DeepSpeed builds for multi-process CPU runs is turned off in the harness: it
needs a C++ compiler at run time, and gloo (torch.distributed) does the same reductions without it."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepspeed", reason="DeepSpeed is installed by requirements_alignment.txt; these tests need it")

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", DS_ACCELERATOR="cpu",
           PYTHONPATH=str(REPO))
PAIRS = [
    {"prompt": f"write about {topic} in {n} sentences :", "chosen": " the calm ice rests .",
     "rejected": " the ugly star moves . the old moon shines ."} for topic in ("winter", "food") for n in (1, 2)
] + [{"prompt": "write about sea in 3 sentences :", "chosen": " the good bread shines . the warm soup rests .",
      "rejected": " ."}] * 4

# Each process records, when training starts, how much of each model it holds, then trains as train_dpo does.
HARNESS = """
import importlib, json, os, sys
importlib.import_module("deepspeed.comm.torch")
sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None  # no C++ build at run time (module doc)
import alignment.training.trainer as trainer
fit = trainer.fit
def recording_fit(policy, ref, *a, **k):
    def held(model):
        return {"local": sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in model.parameters()),
                "full": sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters()),
                "partitioned": all(hasattr(p, "ds_id") for p in model.parameters())}
    with open(os.path.join(os.environ["RECORD"], f"rank{os.environ.get('RANK', '0')}.json"), "w") as f:
        json.dump({"policy": held(policy), "ref": held(ref)}, f)
    return fit(policy, ref, *a, **k)
trainer.fit = recording_fit
from alignment.train_dpo import main
main(sys.argv[1:])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(tmp_path, processes: int, gather: bool):
    ds = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "train_batch_size": "auto",
          "gradient_clipping": "auto",
          "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0,
                                "stage3_gather_16bit_weights_on_model_save": gather}}
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    (tmp_path / "accelerate.yaml").write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: DEEPSPEED\ndeepspeed_config:\n"
        f"  deepspeed_config_file: {tmp_path / 'ds.json'}\n  zero3_init_flag: true\n"
        f"num_machines: 1\nnum_processes: {processes}\nuse_cpu: true\nmachine_rank: 0\nmain_process_port: {_free_port()}\n"
        "rdzv_backend: static\nsame_network: true\n")
    (tmp_path / "harness.py").write_text(HARNESS)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    (tmp_path / "sgd.yaml").write_text("dpo:\n  optim: sgd\n")
    (tmp_path / "record").mkdir()
    from alignment.core.models import load_causal_lm, load_tokenizer

    load_causal_lm("toy:tiny", seed=0).save_pretrained(tmp_path / "policy")  # one starting point for every run
    load_tokenizer("toy:tiny").save_pretrained(tmp_path / "policy")


def _launch(tmp_path, argv):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "accelerate.yaml"),
           str(tmp_path / "harness.py"), *argv]
    return subprocess.run(cmd, cwd=REPO, env=dict(ENV, RECORD=str(tmp_path / "record")), capture_output=True,
                          text=True, timeout=600)


def _run_one_process(tmp_path, argv):
    """One process with the environment `accelerate launch` gives it (its DeepSpeed variables and the rendezvous),
    started directly: the exit code is train_dpo's own (a launcher reports any failure of a child as its own 1)."""
    env = dict(ENV, RECORD=str(tmp_path / "record"), ACCELERATE_USE_DEEPSPEED="true",
               ACCELERATE_DEEPSPEED_CONFIG_FILE=str(tmp_path / "ds.json"), ACCELERATE_DEEPSPEED_ZERO3_INIT="true",
               RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    return subprocess.run([sys.executable, str(tmp_path / "harness.py"), *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def _argv(tmp_path, out, batch_size, *extra):
    return ["--config", str(tmp_path / "sgd.yaml"), "--preferences", str(tmp_path / "p.jsonl"),
            "--policy", str(tmp_path / "policy"), "--loss", "sigmoid", "--lr", "0.5", "--warmup-ratio", "0",
            "--max-steps", "3", "--batch-size", str(batch_size), "--device", "cpu", "--out", str(out), *extra]


@pytest.mark.slow
def test_zero3_partitions_at_load_and_lora_merges_gathered_weights(tmp_path):
    """Two ZeRO-3 processes (batch 2 each) against one plain process (batch 4), LoRA rank 4, plain SGD: the merged
    weights agree to 1e-5. Both runs are fp32 and see the same global batches; they differ only in how the two
    halves' gradients are summed (reduce-scatter vs one backward), rounding of order 1e-7 per value per step, which
    SGD passes on unamplified (AdamW would rescale ~0 gradients' noise into visible steps: test_two_gloo_processes
    _match_one_process). LoRA dropout is off so that the two runs draw no different random masks."""
    _setup(tmp_path, processes=2, gather=True)
    lora = ["--lora-r", "4", "--lora-dropout", "0"]
    r = _launch(tmp_path, _argv(tmp_path, tmp_path / "zero3", 2, *lora))
    assert r.returncode == 0, r.stderr[-3000:]
    for rank in (0, 1):
        held = json.loads((tmp_path / "record" / f"rank{rank}.json").read_text())
        for model in ("policy", "ref"):  # created partitioned: each process holds half of every parameter
            h = held[model]
            assert h["partitioned"] and h["full"] > 0
            assert h["local"] == pytest.approx(h["full"] / 2, rel=0.02)
    from alignment.core.models import load_causal_lm
    from alignment.train_dpo import main

    plain = main(_argv(tmp_path, tmp_path / "plain", 4, *lora))  # no DeepSpeed in this process
    zero3 = tmp_path / "zero3" / "dpo"
    run = json.loads((zero3 / "run.json").read_text())["config"]["resolved"]
    assert run["zero3"] is True and run["processes"] == 2
    a = load_causal_lm(str(plain / "model")).state_dict()
    b = load_causal_lm(str(zero3 / "model")).state_dict()  # reloaded without DeepSpeed: a plain model folder
    init = load_causal_lm(str(tmp_path / "policy")).state_dict()
    assert a.keys() == b.keys()
    moved = [k for k in a if not torch.equal(a[k], init[k])]
    assert "model.layers.0.self_attn.q_proj.weight" in moved  # the adapters were merged in
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_zero3_save_that_cannot_gather_is_an_error_not_an_empty_model(tmp_path):
    """stage3_gather_16bit_weights_on_model_save: false makes the Trainer write a weights file without weights (and
    a DeepSpeed checkpoint) and carry on: train_dpo reads the folder back and stops with exit code 2, leaving no
    run and no trainer folder."""
    _setup(tmp_path, processes=1, gather=False)
    out = tmp_path / "out"
    r = _run_one_process(tmp_path, _argv(tmp_path, out, 4))
    assert r.returncode == 2, r.stderr[-3000:]
    assert "saved weights are incomplete" in r.stderr.strip().splitlines()[-1]
    assert not out.exists() or list(out.iterdir()) == []


def test_check_saved_weights_refuses_empty_and_missing_tensors(tmp_path):
    """The read-back guard itself, on folders written by hand: an empty tensor, too few values, a missing tensor,
    no file; renamed or extra (tied) tensors are fine."""
    from safetensors.torch import save_file

    from alignment.core.models import check_saved_weights
    from runlog import ConfigError

    shapes = {"a": (2, 3), "b": (4,)}
    save_file({"a": torch.zeros(2, 3), "b": torch.zeros(4)}, str(tmp_path / "model.safetensors"))
    assert check_saved_weights(tmp_path, shapes, "model/") == 10
    save_file({"a.renamed": torch.zeros(6), "b": torch.zeros(4), "tied": torch.zeros(4)},  # renamed, split, tied
              str(tmp_path / "model.safetensors"))
    assert check_saved_weights(tmp_path, shapes, "model/") == 14
    for bad in ({"a": torch.zeros(0), "b": torch.zeros(4)}, {"a": torch.zeros(2, 2), "b": torch.zeros(4)},
                {"a": torch.zeros(2, 3)}):
        save_file(bad, str(tmp_path / "model.safetensors"))
        with pytest.raises(ConfigError, match="saved weights are incomplete"):
            check_saved_weights(tmp_path, shapes, "model/")
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="saved weights are incomplete"):
        check_saved_weights(tmp_path, shapes, "model/")


def test_qlora_merge_puts_the_adapters_into_the_unquantized_base(tmp_path):
    """What train_dpo --load-in-4bit saves (4-bit weights need CUDA, so the adapters here are trained-like random
    ones over a float base): merge_adapters reloads the base unquantized, merges, and saves a plain model equal to
    peft's own in-memory merge of the same adapters."""
    from peft import LoraConfig, get_peft_model

    from alignment.core.models import check_saved_weights, load_causal_lm, merge_adapters

    base = load_causal_lm("toy:tiny", seed=0)
    base.save_pretrained(tmp_path / "base")
    peft_model = get_peft_model(load_causal_lm(str(tmp_path / "base")), LoraConfig(r=4, target_modules="all-linear"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # peft starts B at 0 (a no-op adapter): give it something to merge
                p.normal_(0, 0.1)
    peft_model.save_pretrained(tmp_path / "adapter")
    expected = peft_model.merge_and_unload().state_dict()
    shapes = merge_adapters(str(tmp_path / "base"), tmp_path / "adapter", tmp_path / "merged", dtype="float32")
    check_saved_weights(tmp_path / "merged", shapes, "merged")
    got = load_causal_lm(str(tmp_path / "merged")).state_dict()
    assert not torch.equal(got["model.layers.0.self_attn.q_proj.weight"], base.state_dict()["model.layers.0.self_attn.q_proj.weight"])
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=1e-6)
