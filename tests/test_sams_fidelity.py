"""SamS as its authors' released code defines it (github.com/hzx122/SamS): the `anchor` loss normalisation
(unselected losses detached, mean over all n candidates), the frozen scheduler and scheduler files, the SFT
pre-training reward, and the bad-flag errors. Expected values are written out from the released formulas here."""
import math

import pytest
import torch
import torch.nn.functional as F

from alignment.selection import batch as sch
from alignment.training import losses
from runlog import ConfigError
from tests.test_alignment_schedulers import ROWS, _batch, _hand_pair_losses, _params, _trainer
from tests.test_alignment_train_dpo import PAIRS, _cli, _write_prefs

sig = lambda v: 1.0 / (1.0 + math.exp(-v))


# ------------------------------------------------------------------------------------------- normalisation

def test_anchor_mean_by_hand_on_a_hand_tensor():
    theta = torch.tensor([0.3, -1.2, 2.0, 0.7, -0.4, 1.1], requires_grad=True)
    pairs = lambda: theta ** 2 + torch.arange(6.0)  # l_i, d l_i / d theta_i = 2 theta_i (a fresh graph per use)
    per_pair = pairs()
    mask = torch.tensor([1, 0, 1, 0, 0, 1])
    n, k = 6, 3
    anchor = losses.anchor_mean(per_pair, mask, n)
    # the released code: unselected l_i detached, then the mean over all n (value: the plain mean of every l_i)
    hand = sum(per_pair[i] if mask[i] else per_pair[i].detach() for i in range(n)) / n
    assert anchor.item() == pytest.approx(hand.item(), rel=1e-7)
    assert anchor.item() == pytest.approx(per_pair.detach().mean().item(), rel=1e-7)
    g_anchor = torch.autograd.grad(anchor, theta)[0]
    g_matched = torch.autograd.grad(losses.masked_mean(pairs(), mask, k), theta)[0]
    expected = torch.stack([2 * theta.detach()[i] * mask[i] / n for i in range(n)])
    torch.testing.assert_close(g_anchor, expected)
    torch.testing.assert_close(g_anchor, g_matched * (k / n))
    # two processes, 3 candidates each: each one's loss x processes / n, averaged by DDP, is the same gradient
    halves = [losses.anchor_mean(pairs()[s], mask[s], n, processes=2) for s in (slice(0, 3), slice(3, 6))]
    g_ddp = sum(torch.autograd.grad(h, theta)[0] for h in halves) / 2
    torch.testing.assert_close(g_ddp, expected)


@pytest.mark.parametrize("selector", ["sams", "random_subset"])
def test_trainer_anchor_is_k_over_n_of_matched_on_a_tiny_model(tmp_path, monkeypatch, selector):
    idx = torch.tensor([1, 2])
    monkeypatch.setattr(sch, "random_indices", lambda n, k, gen: idx.clone())
    monkeypatch.setattr(sch, "top_indices", lambda scores, k: idx.clone())
    got = {}
    for norm in ("matched", "anchor"):
        trainer, tok, policy, ref = _trainer(tmp_path / norm, selector, sams_normalisation=norm)
        policy.train()
        value = trainer.compute_loss(policy, dict(_batch(trainer)))
        assert trainer.last_selection.tolist() == [1, 2]
        got[norm] = (value, torch.autograd.grad(value, [policy.model.embed_tokens.weight])[0])
    hand = _hand_pair_losses(policy, ref, tok, 0.5, "sigmoid")  # the four candidates' l_i
    n, k = 4, 2
    hand_anchor = sum(hand[i] if i in (1, 2) else hand[i].detach() for i in range(n)) / n
    assert got["anchor"][0].item() == pytest.approx(hand_anchor.item(), rel=1e-5)
    assert got["matched"][0].item() == pytest.approx(hand[idx].mean().item(), rel=1e-5)
    hand_grad = torch.autograd.grad(hand_anchor, [policy.model.embed_tokens.weight])[0]
    torch.testing.assert_close(got["anchor"][1], hand_grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(got["anchor"][1], got["matched"][1] * (k / n), rtol=1e-5, atol=1e-8)


# ------------------------------------------------------------------------------------------- the SFT reward

def test_sft_reward_is_the_released_formula_by_hand():
    # three batches' mean SFT losses: rewards of the selections made at batches 0 and 1
    L = [40.0, 30.0, 36.0]
    b1 = (L[0] - L[1]) / max(L[0], L[1])           # first reward: no average yet
    avg1 = b1
    b2 = 0.5 * avg1 + 0.5 * (L[1] - L[2]) / max(L[1], L[2])
    avg2 = avg1 + (b2 - avg1) / 2
    const = 0.5 * sig(sig(0.5))                    # 0.5 rm + 0.5 (1 - p) = 0.5 when rm = p, then sigmoid twice
    y1, a, c = sch.sft_reward(L[0], L[1], 0.0, 0)
    assert (y1, a, c) == pytest.approx((0.5 * sig(50 * b1 + 0.5) + const, avg1, 1), rel=1e-12)
    y2, a, c = sch.sft_reward(L[1], L[2], a, c)
    assert (y2, a, c) == pytest.approx((0.5 * sig(50 * b2 + 0.5) + const, avg2, 2), rel=1e-12)


def test_scheduler_steps_under_the_sft_reward_use_the_chosen_nll():
    torch.manual_seed(0)
    s = sch.SamsScheduler(dim=5, hidden=8, seed=1)
    logps = [-(torch.rand(6) * 30 + 5) for _ in range(3)]
    stats = [s.step(torch.randn(6, 5), torch.randn(6), lp, 3, sch.step_generator(0, t), reward="sft")[1]
             for t, lp in enumerate(logps)]
    L = [float(-lp.double().mean()) for lp in logps]  # the batch's mean -log pi(chosen)
    b1 = (L[0] - L[1]) / max(L[0], L[1])
    b2 = 0.5 * b1 + 0.5 * (L[1] - L[2]) / max(L[1], L[2])
    assert stats[0] is None and s.num_updates == 2
    assert stats[1]["reward"] == pytest.approx(0.5 * sig(50 * b1 + 0.5) + 0.5 * sig(sig(0.5)), rel=1e-6)
    assert stats[2]["reward"] == pytest.approx(0.5 * sig(50 * b2 + 0.5) + 0.5 * sig(sig(0.5)), rel=1e-6)
    # a pending sft selection is scored under the sft reward by a dpo step (the first DPO step after pre-training)
    lp3 = -(torch.rand(6) * 30 + 5)
    _, last = s.step(torch.randn(6, 5), torch.randn(6), lp3, 3, sch.step_generator(0, 9))
    avg2 = b1 + (b2 - b1) / 2
    L3 = float(-lp3.double().mean())
    b3 = 0.5 * avg2 + 0.5 * (L[2] - L3) / max(L[2], L3)
    assert last["reward"] == pytest.approx(0.5 * sig(50 * b3 + 0.5) + 0.5 * sig(sig(0.5)), rel=1e-6)
    assert s.pending["reward"] == "dpo" and s.sft_count == 3


def test_pretraining_uses_the_sft_reward_and_leaves_its_last_selection_pending(tmp_path):
    trainer, tok, policy, ref = _trainer(tmp_path, "sams", rows=ROWS * 2, batch_size=2, sams_update="frozen",
                                         sams_pretrain_steps=3)
    before = _params(trainer.batch_scheduler.parameters())
    summary = trainer.pretrain_scheduler(3)
    s = trainer.batch_scheduler
    assert summary["sams_pretrain_reward"] == "sft" and s.num_updates == 2 and s.sft_count == 2
    assert s.pending["reward"] == "sft" and s.update == "frozen"  # pre-training learnt; the DPO that follows won't
    assert all(not torch.equal(a, b) for a, b in zip(before, s.parameters()))
    # each batch's reward has the constant sample term: mean reward - const = 0.5 sigmoid(50 b + 0.5) in (0, 0.5)
    assert 0 < summary["sams_pretrain_reward_mean"] - 0.5 * sig(sig(0.5)) < 0.5


# ------------------------------------------------------------------------------------------- frozen, files

def _scheduler_file(tmp_path, policy, seed=5, hidden=128):
    s = sch.SamsScheduler(2 * policy.config.hidden_size + 1, hidden=hidden, seed=seed)
    path = tmp_path / "sched.pt"
    s.save_weights(path)
    return s, path


def test_saved_then_loaded_scheduler_scores_identically(tmp_path):
    a = sch.SamsScheduler(dim=7, hidden=16, seed=3, explore_weight=0.3)
    a.step(torch.randn(8, 7), torch.randn(8), -torch.rand(8), 4, sch.step_generator(0, 0))
    a.step(torch.randn(8, 7), torch.randn(8), -torch.rand(8), 4, sch.step_generator(0, 1))  # it has learnt
    a.save_weights(tmp_path / "s.pt")
    b = sch.SamsScheduler(dim=7, hidden=16, seed=99, explore_weight=0.3)
    x = torch.randn(20, 7)
    assert not torch.equal(a.score(x)[0], b.score(x)[0])
    b.load_weights(tmp_path / "s.pt")
    for u, v in zip(a.score(x), b.score(x)):
        assert torch.equal(u, v)
    with pytest.raises(ConfigError, match="--sams-scheduler.*width 16.*--sams-hidden 8"):
        sch.SamsScheduler(dim=7, hidden=8).load_weights(tmp_path / "s.pt")


def test_frozen_scheduler_is_bit_identical_after_training(tmp_path):
    policy0 = None
    from tests.conftest import sharp_toy_model

    policy0 = sharp_toy_model(seed=1, scale=2.0).float()
    given, path = _scheduler_file(tmp_path, policy0)
    common = dict(rows=ROWS * 2, batch_size=2, max_steps=3, lr=0.05)
    frozen, *_ = _trainer(tmp_path / "f", "sams", policy=policy0, sams_update="frozen", sams_scheduler=str(path),
                          **common)
    loaded = _params(frozen.batch_scheduler.parameters())
    assert all(torch.equal(a, b) for a, b in zip(loaded, given.parameters()))  # it starts from the file
    opt_before = frozen.batch_scheduler.opt.state_dict()
    frozen.train()
    s = frozen.batch_scheduler
    assert s.num_updates == 0 and not s.opt.state_dict()["state"] and opt_before["state"] == {}
    assert all(torch.equal(a, b) for a, b in zip(loaded, s.parameters()))
    rewards = [r["select/reward"] for r in frozen.state.log_history if "select/reward" in r]
    assert len(rewards) == 2 and all(0 < r < 1 for r in rewards)  # rewards still observed, for the logs
    # the same file under online: it learns (so the frozen check above can fail)
    online, *_ = _trainer(tmp_path / "o", "sams", policy=sharp_toy_model(seed=1, scale=2.0).float(),
                          sams_scheduler=str(path), **common)
    online.train()
    assert online.batch_scheduler.num_updates == 2
    assert any(not torch.equal(a, b) for a, b in zip(loaded, online.batch_scheduler.parameters()))


# ------------------------------------------------------------------------------------------- bad flags

def _fields(**kw):
    from types import SimpleNamespace

    base = dict(loss="sigmoid", margin_scale=1.0, selector="sams", select_ratio=0.5, sams_mode="topk",
                sams_pretrain_steps=0, sams_hidden=8, sams_lr=1e-3, sams_explore_weight=0.1, passes=5, dropout=0.05,
                gamma=2.0, sams_normalisation="matched", sams_update="online", sams_scheduler=None,
                sams_pretrain_reward="sft", sams_pretrain_only=False)
    return SimpleNamespace(**(base | kw))


@pytest.mark.parametrize("kw, flag", [
    (dict(sams_normalisation="mean"), "--sams-normalisation"),
    (dict(sams_normalisation="anchor", selector="ae"), "--sams-normalisation"),
    (dict(sams_update="sometimes"), "--sams-update"),
    (dict(sams_update="frozen"), "--sams-update"),  # frozen with nothing to freeze
    (dict(sams_scheduler="/nonexistent/s.pt"), "--sams-scheduler"),
    (dict(sams_scheduler="SELF"), "--sams-scheduler"),  # a file that is not a scheduler file
    (dict(sams_scheduler="SELF", selector="random_subset"), "--sams-scheduler"),
    (dict(sams_pretrain_reward="rm"), "--sams-pretrain-reward"),
    (dict(sams_pretrain_only=True), "--sams-pretrain-only"),
])
def test_bad_sams_fields_raise_one_config_error_naming_the_flag(tmp_path, kw, flag):
    from alignment.training.config import check_sampler_fields

    if kw.get("sams_scheduler") == "SELF":
        (tmp_path / "x.pt").write_text("not a checkpoint")
        kw["sams_scheduler"] = str(tmp_path / "x.pt")
    with pytest.raises(ConfigError) as e:
        check_sampler_fields(_fields(**kw))
    assert str(e.value).startswith(flag)
    check_sampler_fields(_fields(sams_normalisation="anchor", selector="all"))  # all: K = n, both coincide


@pytest.mark.slow
def test_cli_bad_sams_flags_exit_2_and_pretrain_only_writes_a_scheduler_file(tmp_path):
    prefs = _write_prefs(tmp_path / "p.jsonl", PAIRS * 4)
    common = ["--preferences", str(prefs), "--policy", "toy:tiny", "--device", "cpu", "--batch-size", "4"]
    for argv, flag in [(["--selector", "sams", "--sams-scheduler", str(tmp_path / "none.pt")], "--sams-scheduler"),
                       (["--selector", "sams", "--sams-update", "frozen"], "--sams-update"),
                       (["--selector", "sams", "--sams-normalisation", "mean"], "--sams-normalisation")]:
        r = _cli(common + ["--out", str(tmp_path / "bad"), *argv], tmp_path)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and flag in r.stderr, r.stderr
        assert not (tmp_path / "bad").exists()
    r = _cli(common + ["--out", str(tmp_path / "pre"), "--name", "pre", "--selector", "sams", "--sams-pretrain-steps",
                       "3", "--sams-pretrain-only"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "pre" / "pre"
    assert (run / "sams_scheduler.pt").is_file() and not (run / "model").exists()
    state = sch.read_scheduler_file(run / "sams_scheduler.pt")
    assert state["hidden"] == 128
    # the second stage reads it, frozen: the run's final scheduler file holds exactly the pre-trained weights
    r = _cli(common + ["--out", str(tmp_path / "dpo"), "--name", "dpo", "--selector", "sams", "--sams-update", "frozen",
                       "--sams-scheduler", str(run / "sams_scheduler.pt"), "--max-steps", "2",
                       "--sams-normalisation", "anchor"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    after = sch.read_scheduler_file(tmp_path / "dpo" / "dpo" / "sams_scheduler.pt")
    for net in ("f1", "f2"):
        assert all(torch.equal(after[net][k], state[net][k]) for k in state[net])
