"""The offline regime (bandit/offline.py), the selector registry (bandit/selectors.py) and the entry point
bandit/examples/offline.py, on hand-made cases whose answers are worked out here, not by the code.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bandit.envs import LinearEnv, TabularEnv
from bandit.examples import offline as offline_cli
from bandit.metrics import METRICS
from bandit.offline import (CountWidth, Dataset, DesignWidth, OfflineSim, make_dataset, margins, selected_grad_h,
                            selected_loss)
from bandit.selectors import (SELECTORS, SelectorConfig, ae_score, borda_pick, borda_scores, get_selector,
                              make_selector)
from runlog import ConfigError

DT = torch.float64
BETA = 2.0
REPO = Path(__file__).resolve().parents[1]
OFFLINE_PY = REPO / "bandit" / "examples" / "offline.py"
pytestmark = pytest.mark.usefixtures("torch_single_thread")


def tab_env(r, beta=BETA):
    """A tabular env from rewards [S, E, A] with a uniform pi_ref."""
    r = torch.as_tensor(np.asarray(r, dtype=np.float64))
    return TabularEnv(rewards=r, log_ref=torch.full_like(r, -math.log(r.shape[-1])), beta=beta)


def dataset(x, yw, yl, flipped=None, r=None):
    """A hand-made dataset [S, N]; misordered from the rewards r [S, E, A] if given."""
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long)
    x, yw, yl = t(x), t(yw), t(yl)
    flipped = torch.zeros_like(x, dtype=torch.bool) if flipped is None else torch.as_tensor(np.asarray(flipped))
    if r is None:
        mis = torch.zeros_like(flipped)
    else:
        r = np.asarray(r)
        s = np.arange(x.shape[0])[:, None]
        mis = torch.as_tensor(r[s, x.numpy(), yw.numpy()] < r[s, x.numpy(), yl.numpy()])
    return Dataset(x, yw, yl, flipped.bool(), mis)


def sim_for(env, data, batch=2, lr=0.1, steps=3, seed=0, **kw):
    return OfflineSim(env, data, steps, batch, lr, torch.Generator().manual_seed(seed), **kw)


# ------------------------------------------------------------------------------------------- registry

def test_registry_names():
    assert list(SELECTORS) == ["all", "random_subset", "reward_gap", "reward_gap_step", "us", "ae", "sams", "borda"]
    assert {n for n, c in SELECTORS.items() if c.regime == "online"} == {"borda"}


def test_unknown_selector_lists_the_known_ones():
    with pytest.raises(ConfigError) as e:
        get_selector("nope")
    msg = str(e.value)
    assert "nope" in msg and "--selectors" in msg
    for name in SELECTORS:
        assert name in msg


# -------------------------------------------------------------------------------------- the DPO step

@pytest.mark.parametrize("kind", ["tabular", "linear"])
def test_step_is_the_gradient_of_the_mean_loss_over_kept_pairs(kind):
    """One step moves the parameters by -lr * grad of (1/k) sum_kept -log sigmoid(beta (log-ratio diff)),
    written here with autograd through the policy; dropped pairs contribute nothing."""
    g = torch.Generator().manual_seed(0)
    if kind == "tabular":
        env = tab_env(torch.randn(2, 3, 4, generator=g, dtype=DT).numpy())
        params = torch.randn(2, 3, 4, generator=g, dtype=DT)
    else:
        env = LinearEnv.from_seeds([0, 1], contexts=3, actions=4, dim=5, beta=BETA)
        params = torch.randn(2, 5, generator=g, dtype=DT)
    x = torch.randint(3, (2, 6), generator=g)
    yw = torch.randint(4, (2, 6), generator=g)
    yl = (yw + 1 + torch.randint(3, (2, 6), generator=g)) % 4
    mask = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 1, 1, 0, 1, 0]], dtype=torch.bool)
    k, lr = 3, 0.7

    p = params.clone().requires_grad_(True)
    logr = env.log_policy(p) - env.log_ref
    total = 0.0
    for s in range(2):
        for n in range(6):
            if mask[s, n]:
                d = BETA * (logr[s, x[s, n], yw[s, n]] - logr[s, x[s, n], yl[s, n]])
                total = total - torch.nn.functional.logsigmoid(d) / k
    (grad,) = torch.autograd.grad(total, p)

    h = BETA * (env.log_policy(params) - env.log_ref)
    stepped = env.apply_grad(params, selected_grad_h(h, x, yw, yl, mask, k), lr)
    torch.testing.assert_close(stepped, params - lr * grad, rtol=1e-12, atol=1e-14)
    d = torch.stack([torch.stack([h[s, x[s, n], yw[s, n]] - h[s, x[s, n], yl[s, n]] for n in range(6)]) for s in range(2)])
    torch.testing.assert_close(selected_loss(d, mask, k).sum(), total.detach(), rtol=1e-13, atol=0)


# ----------------------------------------------------------------------------------------- dataset

def test_dataset_flip_swaps_labels_of_the_same_pairs_and_has_no_ties():
    env = TabularEnv.from_seeds([3, 4], contexts=3, actions=5, beta=BETA)
    clean = make_dataset(env, [3, 4], 4000, flip=0.0, tag="t")
    noisy = make_dataset(env, [3, 4], 4000, flip=0.2, tag="t")
    assert not clean.flipped.any()
    assert (noisy.yw != noisy.yl).all() and (clean.yw != clean.yl).all()
    torch.testing.assert_close(noisy.x, clean.x)
    f = noisy.flipped
    assert 0.17 < f.double().mean() < 0.23
    assert torch.equal(noisy.yw[f], clean.yl[f]) and torch.equal(noisy.yl[f], clean.yw[f])
    assert torch.equal(noisy.yw[~f], clean.yw[~f])
    # Bradley-Terry: the better action wins more often than not, and misordered means r(yw) < r(yl)
    r = env.rewards
    s = torch.arange(2)[:, None]
    wrong = r[s, clean.x, clean.yw] < r[s, clean.x, clean.yl]
    assert torch.equal(wrong, clean.misordered) and 0.1 < wrong.double().mean() < 0.45


def test_dataset_of_a_seed_does_not_depend_on_the_batch():
    env = TabularEnv.from_seeds([0, 1, 2], contexts=2, actions=4, beta=BETA)
    a = make_dataset(env, [0, 1, 2], 50, flip=0.3, tag="t")
    b = make_dataset(env.select([1]), [1], 50, flip=0.3, tag="t")
    for k in ("x", "yw", "yl", "flipped", "misordered"):
        assert torch.equal(getattr(a, k)[1:2], getattr(b, k))


# -------------------------------------------------------------------------------------- reward_gap

def _sorted_pairs_env():
    """One context, A = 4, rewards 0, 1, 2, 3. Every pair labelled correctly (the higher reward chosen),
    then the pairs at positions FLIPPED swapped: under pi*, h = r + const, so their signed gap is negative."""
    r = np.array([[[0.0, 1.0, 2.0, 3.0]]])
    pairs = [(1, 0), (3, 1), (2, 0), (3, 2), (2, 1), (3, 0), (1, 0), (2, 0), (3, 1), (2, 1)]
    flipped = [False, True, False, False, True, False, False, True, False, False]
    yw = [[b if f else a for (a, b), f in zip(pairs, flipped)]]
    yl = [[a if f else b for (a, b), f in zip(pairs, flipped)]]
    return tab_env(r), dataset([[0] * 10], yw, yl, [flipped], r), np.array(flipped)


def h_star(env):
    """beta log(pi*/pi_ref) with pi* proportional to pi_ref exp(r / beta): r - beta log Z."""
    return env.rewards - env.beta * torch.logsumexp(env.log_ref + env.rewards / env.beta, -1, keepdim=True)


def test_reward_gap_keeps_the_flipped_pairs_first_under_the_optimum():
    env, data, flipped = _sorted_pairs_env()
    sim = sim_for(env, data)
    # keep exactly as many as were flipped: exactly the flipped pairs
    keep = make_selector("reward_gap", SelectorConfig(ratio=0.3)).select(sim, h_star(env))
    assert keep[0].numpy().tolist() == flipped.tolist()
    # keep more: the flipped ones are all in, then the smallest positive gaps (reward gap 1: pairs 0, 3, 4(flipped), 6, 9)
    keep = make_selector("reward_gap", SelectorConfig(ratio=0.5)).select(sim, h_star(env))
    kept = set(np.flatnonzero(keep[0].numpy()))
    assert set(np.flatnonzero(flipped)) <= kept and len(kept) == 5
    assert kept - set(np.flatnonzero(flipped)) <= {0, 3, 6, 9}


def test_reward_gap_abs_keeps_the_near_ties_instead():
    env, data, flipped = _sorted_pairs_env()
    keep = make_selector("reward_gap", SelectorConfig(ratio=0.5, abs=True)).select(sim_for(env, data), h_star(env))
    # |r(yw) - r(yl)| = 1 for pairs 0, 3, 4, 6, 9 and >= 2 for the others
    assert set(np.flatnonzero(keep[0].numpy())) == {0, 3, 4, 6, 9}


@pytest.mark.parametrize("ratio,expected", [(0.1, 4), (0.25, 10), (0.5, 20), (0.7, 28), (1.0, 40)])
def test_reward_gap_kept_fraction_is_exact(ratio, expected):
    env = TabularEnv.from_seeds([0, 1, 2], contexts=2, actions=5, beta=BETA)
    data = make_dataset(env, [0, 1, 2], 40, tag="k")
    sim = sim_for(env, data, batch=2, steps=4, make_generator=lambda n: torch.Generator().manual_seed(1))
    res = sim.run(make_selector("reward_gap", SelectorConfig(ratio=ratio)))
    assert res.info["subset_size"] == expected
    assert res.stats["kept"] == 3 * expected and res.stats["dropped"] == 3 * (40 - expected)
    assert (res.pairs_used[-1] <= expected).all()   # the policy only reads its subset


def test_reward_gap_selection_model_is_the_unif_runs_final_policy():
    env = TabularEnv.from_seeds([0, 1], contexts=2, actions=5, beta=BETA)
    data = make_dataset(env, [0, 1], 60, tag="k")
    make = lambda name: torch.Generator().manual_seed(len(name))   # a named stream
    unif = sim_for(env, data, batch=4, steps=6, make_generator=make)
    unif.generator = make("unif")
    unif.run(make_selector("unif"))
    sel = make_selector("reward_gap", SelectorConfig(ratio=0.25))
    rg = sim_for(env, data, batch=4, steps=6, make_generator=make)
    sel.setup(rg)
    expected = sel.select(rg, unif.h)
    got = torch.zeros_like(expected).scatter_(1, sel.subset, True)
    assert torch.equal(got, expected) and got.sum(1).tolist() == [15, 15]


# -------------------------------------------------------------------------- per-step selectors keep B

@pytest.mark.parametrize("name", ["unif", "random_subset", "reward_gap_step", "us", "ae", "sams", "borda"])
@pytest.mark.parametrize("ratio", [0.1, 0.25, 1.0])
def test_per_step_selectors_keep_exactly_B_of_B_over_ratio(name, ratio):
    env = TabularEnv.from_seeds([0, 1], contexts=2, actions=5, beta=BETA)
    data = make_dataset(env, [0, 1], 200, tag="k")
    cfg = SelectorConfig(ratio=ratio, sams_ratio=ratio)
    sim = sim_for(env, data, batch=5, make_generator=lambda n: torch.Generator().manual_seed(2))
    sel = make_selector(name, cfg)
    sel.setup(sim)
    b = sel.batch(sim)
    M = {"unif": 5, "borda": 5}.get(name, round(5 / ratio))
    assert b.mask.shape == (2, M)
    assert b.mask.sum(1).tolist() == [5, 5]
    if b.idx is not None:   # distinct candidates from the dataset
        assert all(len(set(row)) == M for row in b.idx.tolist())


# ----------------------------------------------------------------------------------------- us and ae

def test_count_widths():
    unc = CountWidth(1, 1, 4, "cpu")
    x = torch.zeros(1, 3, dtype=torch.long)
    unc.add(x, torch.tensor([[0, 1, 0]]), torch.tensor([[1, 0, 2]]), torch.ones(1, 3, dtype=torch.bool))
    w = unc.pair_width(torch.zeros(1, 4, dtype=torch.long), torch.tensor([[0, 1, 0, 2]]), torch.tensor([[1, 0, 2, 3]]))
    np.testing.assert_allclose(w.numpy(), [[1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(2), 1.0]], rtol=1e-15)
    s = unc.response_width(torch.zeros(1, 4, dtype=torch.long), torch.tensor([[0, 1, 2, 3]]))
    np.testing.assert_allclose(s.numpy(), [[1 / 2, 1 / math.sqrt(3), 1 / math.sqrt(2), 1.0]], rtol=1e-15)
    assert unc.pair_width(x[:, :1], torch.tensor([[2]]), torch.tensor([[2]])).item() == 0.0


def test_us_picks_the_unseen_pairs_first_tabular():
    r = np.zeros((1, 1, 5))
    env = tab_env(r)
    # candidates: pairs (0,1) and (1,2) have been trained on twice (and (0,0), a tie, once); (2,3), (3,4), (0,4) never
    data = dataset([[0] * 8], [[0, 1, 2, 3, 0, 0, 1, 1]], [[1, 2, 3, 4, 4, 1, 2, 0]])
    sim = sim_for(env, data, batch=3)
    sel = make_selector("us", SelectorConfig(ratio=3 / 8))
    sel.setup(sim)
    seen = torch.tensor([[0, 0, 0, 1, 1]]), torch.tensor([[1, 1, 0, 2, 2]]), torch.tensor([[0, 0, 1, 1, 2]])
    sim.unc.add(seen[0] * 0, seen[1], seen[2], torch.ones(1, 5, dtype=torch.bool))
    sim.uniform_indices = lambda pool, m: torch.arange(8)[None]
    b = sel.batch(sim)
    assert set(np.flatnonzero(b.mask[0].numpy())) == {2, 3, 4}


def test_us_picks_the_widest_pair_linear():
    # d = 2; phi(y) = e1, -e1, e2, -e2 (A = 4, one context). V = I + 8 * (2 e1)(2 e1)^T after training
    # pair (0, 1) eight times: the pair (2, 3) along e2 has width 2, pair (0, 1) 2/sqrt(33), and the
    # mixed pairs (0, 2), (1, 3) width sqrt(1/33 + 1).
    phi = torch.tensor([[[[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]]], dtype=DT)
    env = LinearEnv(features=phi, theta_star=torch.zeros(1, 2, dtype=DT),
                    log_ref=torch.full((1, 1, 4), -math.log(4), dtype=DT), beta=BETA)
    unc = DesignWidth(phi, lam=1.0)
    unc.add(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long),
            torch.ones(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.bool))
    yw, yl = torch.tensor([[0, 2, 0, 1]]), torch.tensor([[1, 3, 2, 3]])
    w = unc.pair_width(torch.zeros(1, 4, dtype=torch.long), yw, yl)
    np.testing.assert_allclose(w.numpy(), [[2 / math.sqrt(33), 2.0, math.sqrt(1 / 33 + 1), math.sqrt(1 / 33 + 1)]],
                               rtol=1e-12)
    table = unc.pair_width_table()[0, 0]
    np.testing.assert_allclose(table[yw[0], yl[0]].numpy(), w[0].numpy(), rtol=1e-12)
    data = dataset([[0] * 4], yw, yl)
    sim = sim_for(env, data, batch=1)
    sel = make_selector("us", SelectorConfig(ratio=0.25))
    sel.setup(sim)
    sim.unc = unc
    sim.uniform_indices = lambda pool, m: torch.arange(4)[None]
    assert sel.batch(sim).mask[0].numpy().tolist() == [False, True, False, False]


def test_ae_score_by_hand_and_where_it_differs_from_us():
    """Response widths s = 1/sqrt(1 + n(y)); gamma = 2. Pair (0, 1): action 0 is surely better
    (h 3 vs 0, s 1/4 and 1: 3 - 1/2 >= 0 + 2), so U - L = 2 gamma s(0) = 1, whatever the worse action's width.
    Pair (2, 3): h 0 and 0.5, s 1/sqrt(2) and 1/sqrt(5): U = max(0 + 2/sqrt2, 0.5 + 2/sqrt5),
    L = max(-2/sqrt2, 0.5 - 2/sqrt5)."""
    unc = CountWidth(1, 1, 4, "cpu")
    unc.n_resp[0, 0] = torch.tensor([15.0, 0.0, 1.0, 4.0], dtype=DT)
    h = torch.tensor([[[3.0, 0.0, 0.0, 0.5]]], dtype=DT)
    x = torch.zeros(1, 2, dtype=torch.long)
    got = ae_score(h, unc, x, torch.tensor([[0, 2]]), torch.tensor([[1, 3]]), gamma=2.0)[0].numpy()
    U = max(2 / math.sqrt(2), 0.5 + 2 / math.sqrt(5))
    L = max(-2 / math.sqrt(2), 0.5 - 2 / math.sqrt(5))
    np.testing.assert_allclose(got, [1.0, U - L], rtol=1e-14)
    # symmetric in the order of the pair
    swapped = ae_score(h, unc, x, torch.tensor([[1, 3]]), torch.tensor([[0, 2]]), gamma=2.0)[0].numpy()
    np.testing.assert_allclose(swapped, got, rtol=1e-15)
    # US ranks pair (0, 1) first (never compared: width 1 > 1/sqrt(2)) but AE ranks (2, 3) first (1.81 > 1)
    unc.n_pair[0, 0, 2, 3] = unc.n_pair[0, 0, 3, 2] = 1.0
    us = unc.pair_width(x, torch.tensor([[0, 2]]), torch.tensor([[1, 3]]))[0].numpy()
    assert us[0] > us[1] and got[1] > got[0]


def test_ae_picks_the_least_trained_responses_at_pi_ref():
    # at pi = pi_ref (h = 0) the AE score is gamma (s(y) + s(y')): the pair of the two never-trained actions wins
    env = tab_env(np.zeros((1, 1, 5)))
    data = dataset([[0] * 4], [[0, 1, 3, 0]], [[1, 2, 4, 2]])
    sim = sim_for(env, data, batch=1)
    sel = make_selector("ae", SelectorConfig(ratio=0.25))
    sel.setup(sim)
    sim.unc.add(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, 1]]), torch.tensor([[1, 2]]),
                torch.ones(1, 2, dtype=torch.bool))
    sim.uniform_indices = lambda pool, m: torch.arange(4)[None]
    assert sel.batch(sim).mask[0].numpy().tolist() == [False, False, True, False]


# -------------------------------------------------------------------------------- sams, random_subset

def _sams_setup(name="sams", seed=0):
    env = TabularEnv.from_seeds([0, 1], contexts=2, actions=5, beta=BETA)
    data = make_dataset(env, [0, 1], 100, flip=0.2, tag="s")
    sim = sim_for(env, data, batch=4, lr=0.3, make_generator=lambda n: torch.Generator().manual_seed(seed))
    sel = make_selector(name, SelectorConfig(sams_ratio=0.5))
    sel.setup(sim)
    return sim, sel


def test_sams_picks_exactly_K_and_both_networks_change():
    sim, sel = _sams_setup()
    before = [p.detach().clone() for p in sel.f1.parameters() + sel.f2.parameters()]
    for _ in range(2):
        b = sel.batch(sim)
        assert b.mask.shape == (2, 8) and b.mask.sum(1).tolist() == [4, 4]
        # the kept K are the K highest scores f1 + f2
        s = sel.scores(sel._feats)
        assert (s.masked_fill(~b.mask, math.inf).min(1).values >= s.masked_fill(b.mask, -math.inf).max(1).values).all()
        m0 = margins(sim.h, b.x, b.yw, b.yl)
        sim.step(b)
        sel.update(sim, b, m0, margins(sim.h, b.x, b.yw, b.yl))
    after = sel.f1.parameters() + sel.f2.parameters()
    for i, (p0, p1) in enumerate(zip(before, after)):
        assert p0.shape == p1.shape
        # every parameter tensor of both nets moved, for both seeds
        assert ((p1.detach() - p0).flatten(1).abs().amax(1) > 0).all(), i


def test_sams_reward_is_alignments_formula_observed_one_step_later():
    """The reward of alignment.selection.batch.SamsScheduler (the released code's add_rm_logp, sample term's sigmoid
    once), written out here per seed: y_i = 0.5 sigmoid(50 (L_prev - L_now) + 0.5) + 0.5 sigmoid(0.5 mm(Dh_i) +
    0.5 (1 - mm(log pi(y_w)))), L = 1 - mean sigmoid(Dh) over a candidate batch, L_prev the selection's batch before
    its step, L_now the next batch before its step; then both nets take two Adam steps on it."""
    sig = lambda v: 1 / (1 + math.exp(-v))
    sim, sel = _sams_setup()
    assert sel.batch(sim) is not None and sel.last_reward is None  # nothing to observe yet
    for _ in range(2):  # move the policy off pi_ref first (at pi_ref every Dh and every log pi(y_w) are equal)
        sim.step(sel.batch(sim))
    b1 = sel.batch(sim)
    d, h, lp = sim.data, sim.h.clone(), sim.log_pi.clone()
    want = []
    for s in range(2):
        i = b1.idx[s].tolist()
        dh = [float(h[s, d.x[s, j], d.yw[s, j]] - h[s, d.x[s, j], d.yl[s, j]]) for j in i]
        p = [float(lp[s, d.x[s, j], d.yw[s, j]]) for j in i]
        mm = lambda v: [(a - min(v)) / (max(v) - min(v)) for a in v]
        assert max(dh) > min(dh) and max(p) > min(p)
        sample = [0.5 * a + 0.5 * (1 - c) for a, c in zip(mm(dh), mm(p))]
        want.append((1 - sum(sig(a) for a in dh) / len(dh), [sample[j] for j in range(len(i)) if b1.mask[s, j]]))
    before = [q.detach().clone() for q in sel.f1.parameters()]
    sim.step(b1)
    b2 = sel.batch(sim)
    got = sel.last_reward
    for s in range(2):
        i = b2.idx[s].tolist()  # the next candidates, under the policy after b1's step (b2 is not trained on yet)
        dh2 = [float(sim.h[s, d.x[s, j], d.yw[s, j]] - sim.h[s, d.x[s, j], d.yl[s, j]]) for j in i]
        loss_now = 1 - sum(sig(a) for a in dh2) / len(dh2)
        loss_prev, sample = want[s]
        y = [0.5 * sig(50 * (loss_prev - loss_now) + 0.5) + 0.5 * sig(v) for v in sample]
        np.testing.assert_allclose(got[s].numpy(), y, rtol=1e-12)
    assert got.shape == (2, 4)
    assert all(not torch.equal(a, b) for a, b in zip(before, sel.f1.parameters()))


def test_sams_scores_are_f1_plus_the_exploration_weight_times_f2():
    sim, sel = _sams_setup()
    sel.cfg.sams_explore_weight = 0.25
    b = sel.batch(sim)
    u1, a = sel.f1(sel._feats)
    u2, _ = sel.f2(a)
    torch.testing.assert_close(sel.scores(sel._feats), (u1 + 0.25 * u2).detach(), rtol=0, atol=0)
    # the context: [phi(x, y_w), phi(x, y_l), Dh], 2 E A + 1 numbers in the tabular bandit (E = 2, A = 5)
    assert sel._feats.shape == (2, 8, 2 * 10 + 1)
    torch.testing.assert_close(sel._feats[..., -1], margins(sim.h, b.x, b.yw, b.yl), rtol=0, atol=0)


def test_random_subset_loss_and_step_equal_sams_for_the_same_mask():
    """The same candidates and the same kept mask give the same step: a mean over the K kept pairs."""
    sim_s, sams = _sams_setup("sams")
    sim_r, rs = _sams_setup("random_subset")
    idx = torch.tensor([[3, 10, 50, 7, 22, 90, 41, 64], [5, 6, 70, 80, 12, 33, 2, 99]])
    sim_s.uniform_indices = sim_r.uniform_indices = lambda pool, m: idx
    b_s = sams.batch(sim_s)
    scores = sams.scores(sams._feats)
    sim_r.rand = lambda *shape: scores       # random_subset keeps the top K of its random keys: use SamS's scores
    b_r = rs.batch(sim_r)
    assert torch.equal(b_s.mask, b_r.mask) and torch.equal(b_s.idx, b_r.idx)
    assert not b_s.mask.all()
    # the loss both minimise: (1/K) sum over the kept pairs, written out here
    h = sim_s.h
    d = sim_s.data
    want = []
    for s in range(2):
        kept = idx[s][b_s.mask[s]]
        dh = h[s, d.x[s, kept], d.yw[s, kept]] - h[s, d.x[s, kept], d.yl[s, kept]]
        want.append(-torch.nn.functional.logsigmoid(dh).sum() / 4)
    for b, sim in ((b_s, sim_s), (b_r, sim_r)):
        got = selected_loss(margins(sim.h, b.x, b.yw, b.yl), b.mask, sim.batch)
        torch.testing.assert_close(got, torch.stack(want), rtol=1e-14, atol=0)
    # and the step both take is -lr times the gradient of that loss (autograd through the policy)
    env = sim_s.env
    theta = env.init_params().requires_grad_(True)
    hh = env.beta * (env.log_policy(theta) - env.log_ref)
    loss = 0.0
    for s in range(2):
        kept = idx[s][b_s.mask[s]]
        loss = loss - torch.nn.functional.logsigmoid(hh[s, d.x[s, kept], d.yw[s, kept]]
                                                     - hh[s, d.x[s, kept], d.yl[s, kept]]).sum() / 4
    (grad,) = torch.autograd.grad(loss, theta)
    sim_s.step(b_s)
    sim_r.step(b_r)
    torch.testing.assert_close(sim_s.params, sim_r.params, rtol=0, atol=0)
    torch.testing.assert_close(sim_s.params, env.init_params() - 0.3 * grad, rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------------------------------- borda

def test_borda_picks_the_context_with_the_widest_gap():
    """Three contexts, A = 3, one policy sample set and one reference set each (m = 2).
    Context 0: no width -> U = L, gap 0. Context 1: widths 1 -> the largest gap. Context 2: widths 0.3."""
    h = torch.tensor([[[0.0, 1.0, -1.0], [0.0, 0.5, 0.0], [0.2, 0.0, 0.0]]], dtype=DT)
    width = torch.zeros(1, 3, 3, 3, dtype=DT)
    width[0, 1] = 1.0
    width[0, 2] = 0.3
    for e in range(3):
        width[0, e].fill_diagonal_(0.0)
    x = torch.tensor([[0, 1, 2]])
    y_pi = torch.tensor([[[1, 0], [1, 0], [0, 1]]])
    y_ref = torch.tensor([[[0, 2], [2, 2], [1, 2]]])
    gamma = 2.0
    sig = lambda v: 1 / (1 + math.exp(-v))
    gaps, bests = [], []
    for c in range(3):
        e = int(x[0, c])
        U, L = [], []
        for y in y_pi[0, c].tolist():
            u = [sig(h[0, e, y] - h[0, e, yr] + gamma * width[0, e, y, yr]) for yr in y_ref[0, c].tolist()]
            l = [sig(h[0, e, y] - h[0, e, yr] - gamma * width[0, e, y, yr]) for yr in y_ref[0, c].tolist()]
            U.append(sum(u) / 2)
            L.append(sum(l) / 2)
        gaps.append(max(U) - max(L))
        bests.append(y_pi[0, c, int(np.argmax(U))].item())
    upper, lower = borda_scores(h, width, x, y_pi, y_ref, gamma)
    np.testing.assert_allclose((upper.max(-1).values - lower.max(-1).values)[0].numpy(), gaps, rtol=1e-13)
    assert gaps[0] == 0.0 and int(np.argmax(gaps)) == 1
    mask, best, gap = borda_pick(h, width, x, y_pi, y_ref, gamma, keep=1)
    np.testing.assert_allclose(gap[0].numpy(), gaps, rtol=1e-13)
    assert mask[0].tolist() == [False, True, False]
    assert best[0].tolist() == bests
    mask2, _, _ = borda_pick(h, width, x, y_pi, y_ref, gamma, keep=2)
    assert mask2[0].tolist() == [False, True, True]


def test_borda_runs_online_with_fresh_pairs():
    env = TabularEnv.from_seeds([0, 1], contexts=3, actions=5, beta=BETA)
    data = make_dataset(env, [0, 1], 20, tag="b")
    sim = sim_for(env, data, batch=4, steps=5)
    res = sim.run(make_selector("borda", SelectorConfig(ratio=0.5, borda_samples=3)))
    assert res.pairs_used[:, 0].tolist() == [0, 4, 8, 12, 16, 20]
    assert int(sim.unc.n_pair.sum()) <= 2 * 2 * 4 * 5   # counted both orders, ties not at all
    assert np.isfinite(res.metrics).all()


# ------------------------------------------------------------------------------- runs and reproducibility

@pytest.mark.parametrize("kind", ["tabular", "linear"])
def test_every_selector_runs_and_unif_learns(kind):
    seeds = [0, 1]
    env = (TabularEnv.from_seeds(seeds, 2, 4, 1.0) if kind == "tabular"   # beta 1: a clear gap at pi_ref
           else LinearEnv.from_seeds(seeds, 2, 4, 3, 1.0))
    data = make_dataset(env, seeds, 200, flip=0.1, tag=kind)
    make = lambda n: torch.Generator().manual_seed(len(n))
    for name in SELECTORS:
        res = OfflineSim(env, data, 30, 8, 0.5, make(name), make, flip=0.1).run(
            make_selector(name, SelectorConfig(ratio=0.25)))
        assert res.metrics.shape == (31, len(METRICS), 2) and np.isfinite(res.metrics).all(), name
        assert (np.diff(res.pairs_used, axis=0) >= 0).all()
        if name == "all":
            vg = res.series("value_gap")
            assert (vg[-1] < 0.7 * vg[0]).all()


def test_same_generator_same_numbers():
    env = LinearEnv.from_seeds([0, 1], 2, 4, 3, BETA)
    data = make_dataset(env, [0, 1], 100, tag="r")
    runs = [OfflineSim(env, data, 10, 8, 0.5, torch.Generator().manual_seed(s),
                       lambda n: torch.Generator().manual_seed(7)).run(make_selector("sams")) for s in (5, 5, 6)]
    np.testing.assert_array_equal(runs[0].metrics, runs[1].metrics)
    assert not np.array_equal(runs[0].metrics, runs[2].metrics)


# ------------------------------------------------------------------------------------------ entry point

TINY = ["--seeds", 2, "--steps", 3, "--dataset", 64, "--batch", 8, "--contexts", 2, "--actions", 4, "--dim", 3,
        "--ratio", 0.25]
ROW_KEYS = {"setting", "env", "sampler", "selector", "seed", "flip", "step", *METRICS, "pairs_used"}


def test_entry_point_smoke_writes_the_run(tmp_path, capsys):
    out = tmp_path / "out"
    path = offline_cli.main([str(a) for a in TINY + ["--flip", 0.2, "--out", out]])
    assert Path(path) == out / "both-flip0.2"
    files = {p.name for p in Path(path).iterdir()}
    assert files == {"run.json", "metrics.jsonl", "summary.json", "tabular.png", "tabular.pdf", "linear.png", "linear.pdf"}
    assert not [p for p in out.rglob(".*")]
    rows = [json.loads(line) for line in (Path(path) / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(SELECTORS) * 2 * 4
    for r in rows:
        assert set(r) == ROW_KEYS and r["sampler"] == r["selector"] and r["flip"] == 0.2
        assert r["setting"] == ("online" if r["selector"] == "borda" else "offline")
        assert all(isinstance(r[k], float) and math.isfinite(r[k]) for k in METRICS)
        if r["step"] == 0:
            assert r["pairs_used"] == 0 and r["kl"] == pytest.approx(0.0, abs=1e-12)
    info = json.loads((Path(path) / "run.json").read_text())
    summary = json.loads((Path(path) / "summary.json").read_text())
    assert info["summary"] == summary and info["seeds"] == [0, 1]
    assert list(summary) == ["tabular", "linear"] and list(summary["tabular"]) == list(SELECTORS)
    assert summary["tabular"]["reward_gap"]["subset_size"] == 16
    for env in ("tabular", "linear"):
        rg = summary[env]["reward_gap"]
        assert rg["kept"] == 2 * 16 and rg["dropped"] == 2 * 48
        finals = [r["value_gap"] for r in rows if r["env"] == env and r["selector"] == "us" and r["step"] == 3]
        assert summary[env]["us"]["final_value_gap_mean"] == pytest.approx(np.mean(finals), rel=1e-12)
        assert summary[env]["borda"]["pairs_used_mean"] == 24
    printed = capsys.readouterr().out
    for name in SELECTORS:
        assert name in printed


def test_entry_point_is_reproducible_and_selectors_independent(tmp_path):
    common = [str(a) for a in TINY + ["--env", "linear", "--no-plots", "--name", "r"]]
    offline_cli.main(common + ["--out", str(tmp_path / "a")])
    offline_cli.main(common + ["--out", str(tmp_path / "b")])
    offline_cli.main(common + ["--out", str(tmp_path / "c"), "--selectors", "sams"])
    read = lambda d: (d / "r" / "metrics.jsonl").read_text()
    assert read(tmp_path / "a") == read(tmp_path / "b")
    sams = lambda text: [l for l in text.splitlines() if '"selector": "sams"' in l]
    assert sams(read(tmp_path / "a")) == sams(read(tmp_path / "c")) != []


BAD = [
    (["--selectors", "unif,foo"], "--selectors"),
    (["--selectors", "us,us"], "--selectors"),
    (["--selectors", ","], "--selectors"),
    (["--beta", "0"], "--beta"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--flip", "1.5"], "--flip"),
    (["--flip", "nan"], "--flip"),
    (["--ratio", "0"], "--ratio"),
    (["--ratio", "1.5"], "--ratio"),
    (["--sams-ratio", "0"], "--sams-ratio"),
    (["--steps", "0"], "--steps"),
    (["--batch", "0"], "--batch"),
    (["--dataset", "0"], "--dataset"),
    (["--seeds", "0"], "--seeds"),
    (["--seed", "-1"], "--seed"),
    (["--actions", "1"], "--actions"),
    (["--contexts", "0"], "--contexts"),
    (["--dim", "0"], "--dim"),
    (["--gamma", "-1"], "--gamma"),
    (["--lam", "0"], "--lam"),
    (["--borda-samples", "0"], "--borda-samples"),
    (["--sams-lr", "0"], "--sams-lr"),
    (["--behaviour", "foo"], "--behaviour"),
    (["--env", "foo"], "--env"),
    (["--name", ".x"], "--name"),
    (["--device", "tpu"], "--device"),
    (["--bogus"], "--bogus"),
    (["--batch", "100"], "--batch"),                                   # more than --dataset 64
    (["--ratio", "0.1", "--selectors", "reward_gap"], "--ratio"),      # keeps 6 < batch 8
    (["--ratio", "0.1", "--selectors", "us"], "--ratio"),              # 80 candidates > 64 pairs
    (["--sams-ratio", "0.1", "--selectors", "sams"], "--sams-ratio"),
]


@pytest.mark.parametrize("argv,flag", BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(argv, flag, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        offline_cli.main([str(a) for a in TINY + ["--out", out, "--no-plots"]] + argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and flag in lines[0] and "error" in lines[0], lines
    assert not out.exists()


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        offline_cli.main(["--help"])
    assert exc.value.code in (0, None)
    text = capsys.readouterr().out
    for f in offline_cli.Args.__dataclass_fields__.values():
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        assert f.metadata.get("help"), flag
    for word in ("design matrix", "counts", "one token", "online"):
        assert word in text


@pytest.mark.slow
def test_subprocess_bad_flag_and_smoke(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    run = lambda argv: subprocess.run([sys.executable, str(OFFLINE_PY), *map(str, argv)], cwd=tmp_path, env=env,
                                      capture_output=True, text=True, timeout=120)
    bad = run(["--flip", "2"])
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.splitlines()) == 1 and bad.stderr.startswith("offline.py: error: --flip")
    assert list(tmp_path.iterdir()) == []
    ok = run(TINY + ["--env", "tabular", "--selectors", "unif,reward_gap,borda", "--no-plots"])
    assert ok.returncode == 0, ok.stderr
    run = tmp_path / "runs" / "bandit" / "offline" / "tabular-flip0"
    assert (run / "metrics.jsonl").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert list(summary) == ["tabular"] and list(summary["tabular"]) == ["all", "reward_gap", "borda"]
