"""alignment.selection.batch and train_dpo --selector (alignment.training.trainer):
SamS picks exactly K and learns, random_subset's loss is SamS's
for the same mask (and the hand-computed masked mean), selector none is TRL's loss exactly, us/ae keep their top
scores, the SamS state survives a checkpoint, pre-training leaves the policy alone, and two gloo processes select
the same indices as one process with the same global candidate batch."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from alignment.selection import batch as sch
from alignment.core import toy
from alignment.train_dpo import Args, dpo_config
from alignment.training.data import training_rows
from alignment.training.trainer import SamplerDPOTrainer
from tests.conftest import sharp_toy_model
from tests.test_alignment_train_dpo import ENV, PAIRS, _cli, _hand_logp, _launch, _write_prefs

REPO = Path(__file__).resolve().parents[1]
# four pairs of different lengths (padding inside the batch) with different rewards
ROWS = PAIRS + [dict(r, prompt=r["prompt"].replace("about", "on"), chosen_reward=r["rejected_reward"] + 2.0)
                for r in reversed(PAIRS)]


def _trainer(tmp_path, selector="none", loss="sigmoid", rows=ROWS, batch_size=4, beta=0.5, policy=None, ref=None,
             **kw):
    from datasets import Dataset

    tok = toy.build_tokenizer()
    policy = policy if policy is not None else sharp_toy_model(seed=1, scale=2.0).float()
    ref = ref if ref is not None else sharp_toy_model(seed=2, scale=2.0).float()
    args = Args(preferences="x", loss=loss, beta=beta, margin_scale=2.0, batch_size=batch_size, device="cpu",
                selector=selector, **{k: v for k, v in kw.items() if k in Args.__dataclass_fields__})
    extra = {k: v for k, v in kw.items() if k not in Args.__dataclass_fields__}
    config = dpo_config(args, torch.device("cpu"), tmp_path)
    for k, v in extra.items():
        setattr(config, k, v)
    trainer = SamplerDPOTrainer(model=policy, ref_model=ref, args=config,
                                train_dataset=Dataset.from_list(training_rows(rows, loss, 2.0)), processing_class=tok)
    return trainer, tok, policy, ref


def _batch(trainer):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])


def _hand_pair_losses(policy, ref, tok, beta, loss, rows=ROWS, margin_scale=2.0):
    out = []
    for row in rows:
        with torch.no_grad():
            ref_c, ref_r = (_hand_logp(ref, tok, row["prompt"], row[k]) for k in ("chosen", "rejected"))
        pol_c, pol_r = (_hand_logp(policy, tok, row["prompt"], row[k]) for k in ("chosen", "rejected"))
        d = beta * ((pol_c - ref_c) - (pol_r - ref_r))
        gap = row["chosen_reward"] - row["rejected_reward"]
        q = 1.0 if loss == "sigmoid" else 1 / (1 + math.exp(-margin_scale * gap))
        out.append(-q * F.logsigmoid(d) - (1 - q) * F.logsigmoid(-d))
    return torch.stack(out)


def _logged(trainer, training=True) -> dict:
    """The metrics the trainer would log now (of its training or its evaluation passes, averaged since its last log),
    through the public Trainer.log and state.log_history."""
    was = trainer.model.training
    trainer.model.train(training)
    try:
        trainer.log({})
    finally:
        trainer.model.train(was)
    return trainer.state.log_history[-1]


def _params(module_list):
    return [p.detach().clone() for p in module_list]


# ------------------------------------------------------------------------------------------- SamS itself

@pytest.mark.parametrize("mode", ["topk", "softmax"])
def test_sams_picks_exactly_k_and_both_nets_learn(mode, torch_single_thread):
    torch.manual_seed(0)
    s = sch.SamsScheduler(dim=9, hidden=16, mode=mode, seed=3)
    x, margins, logp = torch.randn(10, 9), torch.randn(10), -torch.rand(10) * 20
    before_f1, before_f2 = _params(s.f1.parameters()), _params(s.f2.parameters())
    idx, stats = s.step(x, margins, logp, 4, sch.step_generator(0, 0))
    assert stats is None and idx.numel() == 4 and idx.unique().numel() == 4 and idx.tolist() == sorted(idx.tolist())
    scores = s.score(x)[0]
    if mode == "topk":
        assert set(idx.tolist()) == set(scores.topk(4).indices.tolist())
    else:  # a draw without replacement, reproducible from the step's generator alone
        again = s.choose(scores, 4, sch.step_generator(0, 0))
        assert torch.equal(idx, again)
        draws = {tuple(s.choose(scores, 4, sch.step_generator(0, t)).tolist()) for t in range(20)}
        assert len(draws) > 1  # not a top-k in disguise
    assert all(torch.equal(a, b) for a, b in zip(before_f1, s.f1.parameters()))  # nothing observed yet
    # the next step observes the reward of the first selection and updates both nets on the 4 selected pairs
    margins2 = torch.randn(10)
    idx2, stats = s.step(torch.randn(10, 9), margins2, -torch.rand(10) * 20, 4, sch.step_generator(0, 1))
    assert idx2.numel() == 4 and stats is not None
    assert all(not torch.equal(a, b) for a, b in zip(before_f1, s.f1.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_f2, s.f2.parameters()))
    # the reward: 0.5 sigmoid(50 (L_prev - L_now) + 0.5) + 0.5 sigmoid(0.5 m + 0.5 (1 - p)), with the batch loss
    # L = 1 - mean sigmoid(D) and m, p min-max normalised over the candidate batch
    loss_of = lambda d: 1 - torch.sigmoid(d.double()).mean()
    m, p = (margins - margins.min()) / (margins.max() - margins.min()), (logp - logp.min()) / (logp.max() - logp.min())
    y = (0.5 * torch.sigmoid(50 * (loss_of(margins) - loss_of(margins2)) + 0.5)
         + 0.5 * torch.sigmoid(0.5 * m + 0.5 * (1 - p)))
    assert stats["reward"] == pytest.approx(y[idx].mean().item(), rel=1e-5)


def test_top_indices_break_ties_towards_the_lower_index():
    assert sch.top_indices(torch.tensor([1.0, 3.0, 3.0, 3.0, 0.0]), 2).tolist() == [1, 2]
    assert sch.keep_count(4, 0.5) == 2 and sch.keep_count(3, 0.5) == 2 and sch.keep_count(5, 0.01) == 1


# ------------------------------------------------------------------------------------------- the trainer's losses

@pytest.mark.parametrize("loss", ["sigmoid", "rev_kl"])
def test_random_subset_loss_equals_sams_loss_and_the_hand_masked_mean(tmp_path, monkeypatch, loss):
    sams, tok, policy, ref = _trainer(tmp_path / "s", "sams", loss)
    policy.train()
    loss_s = sams.compute_loss(policy, dict(_batch(sams)))
    idx = sams.last_selection
    assert idx.numel() == 2  # K = 0.5 x 4
    grads_s = torch.autograd.grad(loss_s, [policy.model.embed_tokens.weight])[0]
    rnd, *_ = _trainer(tmp_path / "r", "random_subset", loss, policy=policy, ref=ref)
    monkeypatch.setattr(sch, "random_indices", lambda n, k, gen: idx.clone())
    loss_r = rnd.compute_loss(policy, dict(_batch(rnd)))
    grads_r = torch.autograd.grad(loss_r, [policy.model.embed_tokens.weight])[0]
    assert torch.equal(loss_r, loss_s) and torch.equal(grads_r, grads_s)
    hand = _hand_pair_losses(policy, ref, tok, 0.5, loss)[idx].mean()
    hand_grads = torch.autograd.grad(hand, [policy.model.embed_tokens.weight])[0]
    assert loss_s.item() == pytest.approx(hand.item(), rel=1e-5)
    torch.testing.assert_close(grads_s, hand_grads, rtol=1e-4, atol=1e-6)
    # the selected-only metrics; TRL's own cover all four candidates
    logged = _logged(sams)  # one training step's
    assert logged["select/loss"] == pytest.approx(hand.item(), rel=1e-5)
    assert logged["select/kept"] == 2.0


def test_selector_none_is_trls_loss_exactly(tmp_path):
    from trl import DPOTrainer

    trainer, tok, policy, ref = _trainer(tmp_path, "none")
    assert trainer.batch_scheduler is None
    policy.train()
    ours = trainer.compute_loss(policy, dict(_batch(trainer)))
    theirs = DPOTrainer.compute_loss(trainer, policy, dict(_batch(trainer)))
    assert torch.equal(ours, theirs)
    assert ours.item() == pytest.approx(_hand_pair_losses(policy, ref, tok, 0.5, "sigmoid").mean().item(), rel=1e-5)
    logged = _logged(trainer)
    assert "rewards/margins" in logged and "select/kept" not in logged  # TRL's metrics only


def test_selectors_use_every_pair_in_evaluation(tmp_path):
    trainer, tok, policy, ref = _trainer(tmp_path, "sams")
    policy.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(policy, dict(_batch(trainer)))
    assert trainer.last_selection is None
    assert loss.item() == pytest.approx(_hand_pair_losses(policy, ref, tok, 0.5, "sigmoid").mean().item(), rel=1e-5)


@pytest.mark.parametrize("selector, loss", [("us", "sigmoid"), ("ae", "rev_kl")])
def test_us_ae_keep_the_top_of_their_scores(tmp_path, selector, loss):
    from alignment.selection import scores as selection

    trainer, tok, policy, ref = _trainer(tmp_path, selector, loss, passes=3, dropout=0.1)
    policy.train()
    batch = _batch(trainer)
    value = trainer.compute_loss(policy, dict(batch))
    with torch.no_grad():  # the same scores: each pair's samples from its own generator (seed 0, step 0, pair i)
        per_pair = [selection.dropout_logps(policy, sch.slice_pairs(batch, torch.tensor([i])), passes=3, p=0.1,
                                            generator=sch.step_generator(0, 0, 0, stream=f"dropout/{i}"))
                    for i in range(4)]
        samples = torch.cat([torch.stack([s[:, j] for s in per_pair], 1) for j in (0, 1)], 1)
        assert torch.equal(samples, sch.dropout_samples(policy, batch, 3, 0.1, seed=0, step=0))
        assert samples.std(0).min() > 0  # the passes really differ
        if selector == "us":
            scores = selection.us_scores(samples)
        else:
            ref_logps = torch.cat(trainer.compute_ref_log_probs(ref, {k: v for k, v in batch.items() if k != "target"}))
            scores = selection.ae_scores(samples, ref_logps, 0.5, trainer.args.gamma)
    idx = trainer.last_selection
    assert idx.numel() == 2
    assert set(idx.tolist()) == set(scores.topk(2).indices.tolist())
    hand = _hand_pair_losses(policy, ref, tok, 0.5, loss)[idx].mean()
    assert value.item() == pytest.approx(hand.item(), rel=1e-5)


# ------------------------------------------------------------------------------------------- state and pre-training

def test_sams_pretrain_changes_the_scheduler_not_the_policy(tmp_path):
    trainer, tok, policy, ref = _trainer(tmp_path, "sams", rows=ROWS * 2, batch_size=2)
    before_policy = {k: v.clone() for k, v in policy.state_dict().items()}
    before_sched = _params(trainer.batch_scheduler.parameters())
    rng = torch.get_rng_state()
    summary = trainer.pretrain_scheduler(3)
    assert summary["sams_pretrain_steps"] == 3 and 0 < summary["sams_pretrain_reward_mean"] < 1
    assert trainer.batch_scheduler.num_updates == 2  # the first batch only sets up the first reward
    assert all(not torch.equal(a, b) for a, b in zip(before_sched, trainer.batch_scheduler.parameters()))
    assert all(torch.equal(before_policy[k], v) for k, v in policy.state_dict().items())
    assert all(p.grad is None for p in policy.parameters())
    assert torch.equal(torch.get_rng_state(), rng)  # training's data order and RNG are untouched
    # no metrics in either bucket: what would be logged is the Trainer's own step and epoch alone
    assert set(_logged(trainer, training=True)) == set(_logged(trainer, training=False)) == {"step", "epoch"}


def test_sams_state_round_trips_through_a_checkpoint(tmp_path):
    """Save at step 2, resume from there: at step 4 the scheduler (both nets, their optimizers, the pending
    selection) and the policy equal an uninterrupted run's."""
    common = dict(rows=ROWS * 2, batch_size=2, max_steps=4, save_strategy="steps", save_steps=2, sams_mode="softmax")
    full, *_ = _trainer(tmp_path / "full", "sams", **common)
    full.train()
    ckpt = tmp_path / "full" / "checkpoint-2"
    saved = torch.load(ckpt / "batch_scheduler.pt", weights_only=True)
    assert saved["num_updates"] == 1 and saved["pending"] is not None
    resumed, _, policy2, _ = _trainer(tmp_path / "resumed", "sams", **common)
    resumed.train(resume_from_checkpoint=str(ckpt))
    a, b = full.batch_scheduler.state_dict(), resumed.batch_scheduler.state_dict()
    assert a["num_updates"] == b["num_updates"] == 3
    for net in ("f1", "f2"):
        assert not all(torch.equal(saved[net][k], a[net][k]) for k in a[net])  # it did learn after step 2
        for k in a[net]:
            torch.testing.assert_close(b[net][k], a[net][k], rtol=0, atol=0)
    torch.testing.assert_close(b["pending"]["x"], a["pending"]["x"], rtol=0, atol=0)
    for (k, v), w in zip(full.model.state_dict().items(), policy2.state_dict().values()):
        torch.testing.assert_close(w, v, rtol=0, atol=0)


# ------------------------------------------------------------------------------------------- command line

@pytest.mark.parametrize("argv, flag", [
    (["--selector", "best"], "--selector"),
    (["--selector", "sams", "--select-ratio", "0"], "--select-ratio"),
    (["--selector", "random_subset", "--sams-pretrain-steps", "2"], "--sams-pretrain-steps"),
])
@pytest.mark.slow
def test_bad_selector_flags_exit_2(tmp_path, argv, flag):
    prefs = _write_prefs(tmp_path / "p.jsonl", PAIRS)
    r = _cli(["--preferences", str(prefs), "--policy", "toy:tiny", "--out", str(tmp_path / "out"), *argv], tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and flag in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def _two_vs_one(tmp_path, selector, extra=()):
    prefs = _write_prefs(tmp_path / "p.jsonl", [dict(r, prompt=r["prompt"].replace("1 ", f"{i % 3 + 1} "))
                                                 for i, r in enumerate(ROWS * 3)])
    (tmp_path / "sgd.yaml").write_text("dpo:\n  optim: sgd\n")
    common = ["-m", "alignment.train_dpo", "--config", str(tmp_path / "sgd.yaml"), "--preferences", str(prefs),
              "--policy", "toy:tiny", "--lr", "0.5", "--max-steps", "3", "--device", "cpu", "--warmup-ratio", "0",
              "--selector", selector, *extra]
    runs = {}
    for name, launcher, bs in [("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                        "--nproc_per_node", "2"], "2"), ("one", [sys.executable], "4")]:
        logs = tmp_path / f"sel_{name}"
        logs.mkdir()
        ENV["ALIGNMENT_SELECTION_LOG"] = str(logs)
        try:
            code, out, err = _launch(launcher + common + ["--batch-size", bs, "--out", str(tmp_path / name)])
        finally:
            del ENV["ALIGNMENT_SELECTION_LOG"]
        assert code == 0, err[-3000:]
        runs[name] = {p.stem: [json.loads(l) for l in p.read_text().splitlines()] for p in sorted(logs.glob("*.jsonl"))}
    return runs


@pytest.mark.parametrize("selector, extra", [("sams", ["--sams-mode", "softmax", "--sams-pretrain-steps", "2"]),
                                             ("ae", ["--passes", "3"])])
@pytest.mark.slow
def test_two_gloo_processes_select_the_same_indices_as_one_process(tmp_path, selector, extra):
    """torchrun --nproc_per_node 2 with batch 2 per process against one process with batch 4: the same global
    candidate batches, so both ranks log the same selected global indices at every step, equal to the single
    process's; the trained weights agree to 1e-5 and the logged losses to rel 1e-5 (float32 reduction order;
    plain SGD as in test_alignment_train_dpo)."""
    runs = _two_vs_one(tmp_path, selector, extra)
    two, one = runs["two"], runs["one"]
    assert set(two) == {"rank0", "rank1"} and set(one) == {"rank0"}
    picks = lambda rows: [(r["step"], r["micro"], r["selected"]) for r in rows]
    assert picks(two["rank0"]) == picks(two["rank1"]) == picks(one["rank0"])
    assert [len(r["selected"]) for r in one["rank0"]] == [2, 2, 2]
    from alignment.core.models import load_causal_lm

    w2 = load_causal_lm(str(tmp_path / "two" / "dpo" / "model")).state_dict()
    w1 = load_causal_lm(str(tmp_path / "one" / "dpo" / "model")).state_dict()
    init = load_causal_lm("toy:tiny").state_dict()
    assert any(not torch.equal(w1[k], init[k]) for k in w1)
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-5)
    rows1 = [json.loads(l) for l in (tmp_path / "one" / "dpo" / "metrics.jsonl").read_text().splitlines()]
    rows2 = [json.loads(l) for l in (tmp_path / "two" / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in rows2] == pytest.approx([r["train_loss"] for r in rows1], rel=1e-5)
    assert all(r["selector"] == selector and r["select_kept"] == 2 for r in rows1 + rows2)
    if selector == "sams":
        assert all(r["sams_mode"] == "softmax" and 0 < r["sams_reward"] < 1 for r in rows1 + rows2)
        for name in ("one", "two"):
            run = json.loads((tmp_path / name / "dpo" / "run.json").read_text())
            assert run["summary"]["selector"] == "sams" and run["summary"]["sams_pretrain_steps"] == 2


def test_bench_sams_runs_and_prints_its_table(capsys):
    """benchmarks/bench_sams.py on a tiny budget: every variant timed, the table printed (no timing assertions)."""
    from benchmarks import bench_sams

    res = bench_sams.main(["--model", "toy:tiny", "--steps", "3", "--repeats", "1", "--batch-size", "4"])
    assert set(res["median_s"]) == {"all", "random_subset", "sams"}
    assert all(len(s) == 2 for s in res["steps"].values()) and res["scheduler_median_s"] > 0
    text = capsys.readouterr().out
    assert "sams overhead:" in text and all(f"\n{v} " in text for v in ("all", "random_subset", "sams"))
