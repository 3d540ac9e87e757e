"""alignment.train_dpo: the rev_kl loss against a hand computation, the explicit reference, recipes and flags,
and two gloo processes matching one process with the same global batch."""
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import typing

import pytest
import torch
import torch.nn.functional as F

from alignment.core import toy
from alignment.train_dpo import Args, dpo_config, main
from alignment.training.data import training_rows
from alignment.training.losses import soft_target
from alignment.training.trainer import SamplerDPOTrainer
from tests.conftest import sharp_toy_model

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")

# two pairs of different lengths (padding inside the batch) and a one-token rejected response
PAIRS = [
    {"prompt": "write about winter in 1 sentences :", "chosen": " the calm ice rests .",
     "rejected": " the ugly star moves . the old moon shines .", "chosen_reward": 1.5, "rejected_reward": -0.5},
    {"prompt": "write about food in 2 sentences :", "chosen": " the good bread shines . the warm soup rests .",
     "rejected": " .", "chosen_reward": 0.25, "rejected_reward": 0.0},
]


def _trainer(tmp_path, loss, margin_scale=1.0, beta=0.5, rows=PAIRS, policy=None, ref=None):
    from datasets import Dataset

    tok = toy.build_tokenizer()
    policy = policy if policy is not None else sharp_toy_model(seed=1, scale=2.0).float()
    ref = ref if ref is not None else sharp_toy_model(seed=2, scale=2.0).float()
    args = Args(preferences="x", loss=loss, beta=beta, margin_scale=margin_scale, batch_size=2, device="cpu")
    data = training_rows(rows, loss, margin_scale)
    trainer = SamplerDPOTrainer(model=policy, ref_model=ref, args=dpo_config(args, torch.device("cpu"), tmp_path),
                                train_dataset=Dataset.from_list(data), processing_class=tok)
    return trainer, tok, policy, ref


def _hand_logp(model, tok, prompt: str, response: str) -> torch.Tensor:
    """log pi(response + EOS | prompt): one forward pass over the unpadded sequence, summed over response tokens."""
    p = tok(prompt)["input_ids"]
    r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([p + r])
    logp = F.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    targets = ids[0, 1:]
    return logp[torch.arange(len(targets)), targets][len(p) - 1:].sum()


def _hand_losses(policy, ref, tok, beta, margin_scale):
    sig, soft = [], []
    for row in PAIRS:
        with torch.no_grad():
            ref_c, ref_r = (_hand_logp(ref, tok, row["prompt"], row[k]) for k in ("chosen", "rejected"))
        pol_c, pol_r = (_hand_logp(policy, tok, row["prompt"], row[k]) for k in ("chosen", "rejected"))
        d = beta * ((pol_c - ref_c) - (pol_r - ref_r))
        q = 1 / (1 + math.exp(-margin_scale * (row["chosen_reward"] - row["rejected_reward"])))
        sig.append(-F.logsigmoid(d))
        soft.append(-q * F.logsigmoid(d) - (1 - q) * F.logsigmoid(-d))
    return torch.stack(sig).mean(), torch.stack(soft).mean()


def _batch(trainer):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])


def test_rev_kl_equals_hand_computation_with_gradients(tmp_path):
    trainer, tok, policy, ref = _trainer(tmp_path, "rev_kl", margin_scale=4.0)
    assert trainer.ref_model is ref  # the reference we passed, never re-loaded from a path
    batch = _batch(trainer)
    assert batch["attention_mask"].sum(1).unique().numel() > 1  # the batch really is padded
    policy.train()
    loss = trainer.compute_loss(policy, dict(batch))
    grads = torch.autograd.grad(loss, [policy.model.embed_tokens.weight])[0]
    _, hand = _hand_losses(policy, ref, tok, beta=0.5, margin_scale=4.0)
    hand_grads = torch.autograd.grad(hand, [policy.model.embed_tokens.weight])[0]
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grads, hand_grads, rtol=1e-4, atol=1e-6)


def test_sigmoid_loss_and_soft_label_limits(tmp_path):
    trainer, tok, policy, ref = _trainer(tmp_path, "sigmoid")
    hand_sig, _ = _hand_losses(policy, ref, tok, beta=0.5, margin_scale=1.0)
    assert trainer.compute_loss(policy, dict(_batch(trainer))).item() == pytest.approx(hand_sig.item(), rel=1e-5)
    # a reward gap so large that q = 1: rev_kl is the hard-label loss
    sure = [dict(r, chosen_reward=100.0, rejected_reward=0.0) for r in PAIRS]
    trainer2, *_ = _trainer(tmp_path / "b", "rev_kl", rows=sure, policy=policy, ref=ref)
    assert trainer2.compute_loss(policy, dict(_batch(trainer2))).item() == pytest.approx(hand_sig.item(), rel=1e-5)
    # q = 1/2 (equal rewards): the loss is log 2 + D/2 - ... at D = 0 it is exactly log 2
    assert soft_target(0.3, 0.3, 4.0) == 0.5
    assert soft_target(1.0, 0.0, 2.0) == pytest.approx(1 / (1 + math.exp(-2.0)))


def _write_prefs(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cli(argv, tmp_path):
    return subprocess.run([sys.executable, "-m", "alignment.train_dpo", *argv], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)


def _in_process(argv, tmp_path, monkeypatch):
    """`python -m alignment.train_dpo ARGV` in this process (its imports once for all the bad inputs;
    test_cli_trains_and_writes_run runs the module itself): an object with returncode and stderr."""
    import contextlib
    import io
    import types

    from alignment import train_dpo

    monkeypatch.chdir(REPO)
    stdout, stderr, rc = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            train_dpo.main(list(argv))
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return types.SimpleNamespace(returncode=rc, stdout=stdout.getvalue(), stderr=stderr.getvalue())


@pytest.mark.slow
def test_cli_trains_and_writes_run(tmp_path):
    prefs = _write_prefs(tmp_path / "p.jsonl", PAIRS * 4)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  beta: 0.5\n  lr: 0.01\n  loss: rev_kl\n  dpo:\n    max_grad_norm: 0.5\n")
    path = main(["--config", str(recipe), "--preferences", str(prefs), "--policy", "toy:tiny", "--beta", "0.2",
                 "--max-steps", "3", "--batch-size", "4", "--device", "cpu", "--out", str(tmp_path / "out")])
    run = json.loads((path / "run.json").read_text())
    assert run["config"]["beta"] == 0.2 and run["config"]["lr"] == 0.01  # the flag overrides the recipe
    assert run["config"]["loss"] == "rev_kl" and run["config"]["dpo"] == {"max_grad_norm": 0.5}
    rows = [json.loads(l) for l in (path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["stage"] == "train_dpo" for r in rows)
    assert all(0 < r["train_soft_target"] < 1 for r in rows)
    from alignment.core.models import load_causal_lm

    trained, init = load_causal_lm(str(path / "model")), load_causal_lm("toy:tiny")
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), init.state_dict().values()))
    assert not list(tmp_path.joinpath("out").glob(".*"))  # no scratch or temporary folder left


@pytest.mark.parametrize("argv, rows, flag", [
    (["--loss", "rev_kl"], [{k: v for k, v in r.items() if "reward" not in k} for r in PAIRS], "--preferences"),
    (["--beta", "0"], PAIRS, "--beta"),
    (["--margin-scale", "-1"], PAIRS, "--margin-scale"),
    (["--warmup-ratio", "1.5"], PAIRS, "--warmup-ratio"),
    (["--loss", "raft"], PAIRS, "--loss"),  # the samplers paper's, not a TRL loss type
    (["--loss", "ipo", "--selector", "ae"], PAIRS, "--selector"),  # the selectors rebuild sigmoid / rev_kl only
    (["--loss", "exo_pair"], PAIRS, "--loss"),  # needs label_smoothing
    pytest.param(["--report-to", "wandb"], PAIRS, "--report-to",
                 marks=pytest.mark.skipif(__import__("importlib").util.find_spec("wandb") is not None,
                                          reason="wandb is installed here")),
])
@pytest.mark.slow
def test_bad_flags_exit_2_and_write_nothing(tmp_path, monkeypatch, argv, rows, flag):
    prefs = _write_prefs(tmp_path / "p.jsonl", rows)
    r = _in_process(["--preferences", str(prefs), "--policy", "toy:tiny", "--out", str(tmp_path / "out"), *argv], tmp_path,
                   monkeypatch)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and flag in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("recipe, words", [
    ("train:\n  betta: 0.1\n", ["'betta'", "known"]),
    ("train:\n  beta: fast\n", ["'beta'", "a number"]),
    ("train:\n  dpo:\n    beta: 0.3\n", ["'beta'", "flag"]),
    ("train:\n  dpo:\n    no_such_field: 1\n", ["'no_such_field'", "DPOConfig"]),
    ("train: [1, 2\n", ["not valid YAML"]),
])
@pytest.mark.slow
def test_bad_recipe_exits_2_naming_the_key(tmp_path, recipe, words):
    prefs = _write_prefs(tmp_path / "p.jsonl", PAIRS)
    (tmp_path / "r.yaml").write_text(recipe)
    r = _cli(["--config", str(tmp_path / "r.yaml"), "--preferences", str(prefs), "--policy", "toy:tiny",
              "--out", str(tmp_path / "out")], tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert all(w in r.stderr for w in words), r.stderr
    assert not (tmp_path / "out").exists()


def _launch(cmd, timeout=300):
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    """torchrun --nproc_per_node 2 (two gloo processes, what `accelerate launch` does on GPUs): batch 2 per process
    gives the same training as one process with batch 4 (DDP averages the two halves' gradients: the global
    batch's mean), up to float32 reduction order: the logged losses and the weights after 3 steps to 1e-5.
    Plain SGD (the recipe's dpo: optim), so the weights compare the gradients themselves: AdamW divides each
    coordinate's step by its own gradient scale and turns rounding noise on ~0 gradients into visible steps."""
    prefs = _write_prefs(tmp_path / "p.jsonl", [dict(r, prompt=r["prompt"].replace("1 ", f"{i % 3 + 1} "))
                                                 for i, r in enumerate(PAIRS * 6)])
    (tmp_path / "sgd.yaml").write_text("dpo:\n  optim: sgd\n")
    common = ["-m", "alignment.train_dpo", "--config", str(tmp_path / "sgd.yaml"), "--preferences", str(prefs),
              "--policy", "toy:tiny", "--lr", "0.5",
              "--max-steps", "3", "--device", "cpu", "--loss", "rev_kl", "--warmup-ratio", "0"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    code, out, err = _launch(torchrun + common + ["--batch-size", "2", "--out", str(tmp_path / "two")])
    assert code == 0, err[-3000:]
    code, out, err = _launch([sys.executable] + common + ["--batch-size", "4", "--out", str(tmp_path / "one")])
    assert code == 0, err[-3000:]
    from alignment.core.models import load_causal_lm

    two = load_causal_lm(str(tmp_path / "two" / "dpo" / "model")).state_dict()
    one = load_causal_lm(str(tmp_path / "one" / "dpo" / "model")).state_dict()
    init = load_causal_lm("toy:tiny").state_dict()
    assert any(not torch.equal(one[k], init[k]) for k in one)
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-5)
    run = json.loads((tmp_path / "two" / "dpo" / "run.json").read_text())
    assert run["config"]["resolved"]["processes"] == 2
    rows1 = [json.loads(l) for l in (tmp_path / "one" / "dpo" / "metrics.jsonl").read_text().splitlines()]
    rows2 = [json.loads(l) for l in (tmp_path / "two" / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows2] == [r["step"] for r in rows1] == [1, 2, 3]  # the main process alone logs
    assert [r["train_loss"] for r in rows2] == pytest.approx([r["train_loss"] for r in rows1], rel=1e-5)


def test_lora_trains_adapters_only_and_saves_merged_weights(tmp_path):
    prefs = _write_prefs(tmp_path / "p.jsonl", PAIRS * 4)
    path = main(["--preferences", str(prefs), "--policy", "toy:tiny", "--lora-r", "4", "--lr", "0.05",
                 "--max-steps", "3", "--batch-size", "4", "--device", "cpu", "--out", str(tmp_path / "out")])
    run = json.loads((path / "run.json").read_text())
    from alignment.core.models import load_causal_lm

    trained, init = load_causal_lm(str(path / "model")), load_causal_lm("toy:tiny")
    total = sum(p.numel() for p in init.parameters())
    assert 0 < run["summary"]["trainable_params"] < total / 4  # adapters only
    # merged: a plain model folder, same parameter names; the adapted linear weights moved, the embeddings did not
    sd_t, sd_i = trained.state_dict(), init.state_dict()
    assert sd_t.keys() == sd_i.keys()
    assert not torch.equal(sd_t["model.layers.0.self_attn.q_proj.weight"], sd_i["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(sd_t["model.embed_tokens.weight"], sd_i["model.embed_tokens.weight"])


@pytest.mark.parametrize("argv, flag", [
    (["--load-in-4bit"], "--load-in-4bit"),                       # 4-bit without adapters
    (["--lora-r", "4", "--load-in-4bit"], "CUDA"),                # QLoRA on a CPU
    (["--lora-r", "-1"], "--lora-r"),
])
@pytest.mark.slow
def test_lora_flag_errors(tmp_path, argv, flag):
    if "CUDA" == flag and torch.cuda.is_available():
        pytest.skip("a GPU is here")
    prefs = _write_prefs(tmp_path / "p.jsonl", PAIRS)
    r = _cli(["--preferences", str(prefs), "--policy", "toy:tiny", "--device", "cpu", "--out", str(tmp_path / "out"),
              *argv], tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and flag in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, allowed", [
    ({"max_grad_norm": True}, "float"),          # YAML true is not 1.0
    ({"weight_decay": "0.01"}, "float"),
    ({"use_weighting": 1}, "bool"),              # 1 is not true
    ({"eval_steps": True}, "float"),
])
def test_recipe_dpo_value_of_the_wrong_type_is_refused_before_loading(extra, allowed):
    from trl import DPOConfig
    from alignment.train_dpo import check_dpo_extras
    from runlog import ConfigError

    (key,) = extra
    # the type DPOConfig itself declares for the field (independent of our check)
    assert allowed in str(typing.get_type_hints(DPOConfig)[key])
    with pytest.raises(ConfigError, match=rf"recipe.yaml: dpo\.{key}: must be {allowed}"):
        check_dpo_extras(extra, "--config recipe.yaml: dpo")


def test_recipe_dpo_values_of_the_right_type_pass():
    from alignment.train_dpo import check_dpo_extras

    ok = {"max_grad_norm": 10, "weight_decay": 0.01, "use_weighting": True, "lr_scheduler_kwargs": {"a": 1}}
    assert check_dpo_extras(ok) == ok
