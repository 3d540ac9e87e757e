"""The vectorised simulation loop (bandit/runner.py): divergence handling, reproducibility, batching."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from bandit import SAMPLERS, LinearEnv, TabularEnv, Trajectory, simulate
from bandit.metrics import METRICS
from bandit.runner import DIVERGENCE_THRESHOLD

DT = torch.float64
BETA = 3.0
pytestmark = pytest.mark.usefixtures("torch_single_thread")

# Linear seeds with features scaled by s and theta* by 1/s have the same rewards, but a step lr moves
# their implicit rewards like lr * s^2 would at s = 1. With lr = 1e7, the s = 1 seeds jump to
# param_diff ~ 1e7 > DIVERGENCE_THRESHOLD at once, the s = 1e-4 seeds take ordinary steps (lr 0.1).
SCALES = [1.0, 1e-4, 1.0, 1e-4, 1e-4]
BAD, GOOD = [0, 2], [1, 3, 4]
HUGE_LR = 1e7


def mixed_env():
    base = LinearEnv.from_seeds(range(len(SCALES)), contexts=2, actions=6, dim=4, beta=BETA)
    s = torch.tensor(SCALES, dtype=DT)
    env = dataclasses.replace(base, features=base.features * s[:, None, None, None],
                              theta_star=base.theta_star / s[:, None])
    torch.testing.assert_close(env.rewards, base.rewards, rtol=1e-12, atol=1e-12)
    return env


def _check_divergence_bookkeeping(t: Trajectory, bad, good):
    T = t.metrics.shape[0]
    for b in bad:
        d = t.diverged_at[b]
        assert d >= 1
        assert t.valid_steps(b) == d
        # the iterate of step d exploded or went non-finite; everything before it is finite and sane
        assert not np.isfinite(t.metrics[d, :, b]).all() or t.metrics[d, 0, b] > DIVERGENCE_THRESHOLD
        assert np.isfinite(t.metrics[:d, :, b]).all()
        assert (t.metrics[:d, 0, b] <= DIVERGENCE_THRESHOLD).all()
    for b in good:
        assert t.diverged_at[b] == -1
        assert t.valid_steps(b) == T
    for name in METRICS:
        x = t.series(name)
        assert x.shape == (T, len(bad) + len(good))
        for b in bad:
            d = t.diverged_at[b]
            assert np.isfinite(x[:d, b]).all() and np.isnan(x[d:, b]).all()
        for b in good:
            assert np.isfinite(x[:, b]).all()
    # series does not modify the stored metrics
    assert np.isfinite(t.metrics[0]).all()


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_divergence_is_per_seed_exact(sampler):
    env = mixed_env()
    t = simulate(env, sampler, "exact", 25, lr=HUGE_LR)
    _check_divergence_bookkeeping(t, BAD, GOOD)
    # the good seeds run exactly as they would alone, and make real progress
    alone = simulate(env.select(GOOD), sampler, "exact", 25, lr=HUGE_LR)
    assert (alone.diverged_at == -1).all()
    np.testing.assert_allclose(t.metrics[:, :, GOOD], alone.metrics, rtol=1e-12, atol=1e-15)
    pd = t.series("param_diff")[:, GOOD]
    assert (pd[-1] < 0.5 * pd[0]).all()
    # and a bad seed alone diverges at the same iteration
    for b in BAD:
        assert simulate(env.select([b]), sampler, "exact", 25, lr=HUGE_LR).diverged_at[0] == t.diverged_at[b]


@pytest.mark.parametrize("sampler", ["unif", "mix_p"])
def test_divergence_is_per_seed_empirical(sampler):
    env = mixed_env()
    t = simulate(env, sampler, "empirical", 25, lr=HUGE_LR, num_samples=256,
                 generator=torch.Generator().manual_seed(0))
    _check_divergence_bookkeeping(t, BAD, GOOD)


def _overflow_env():
    r = np.random.default_rng(0).standard_normal((4, 2, 5))
    r[1] = 0.0
    r[3] = 2.5
    r_t = torch.tensor(r, dtype=DT)
    return TabularEnv(rewards=r_t, log_ref=torch.full_like(r_t, -math.log(5)), beta=BETA)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_non_finite_divergence_never_raises(sampler):
    # tabular, lr 5e307 (lr * beta still finite): seeds with any reward gap overflow to inf at the
    # first step; seeds with constant rewards have zero exact gradient at pi_ref (p = 1/2 = sigmoid(0))
    # and never move
    t = simulate(_overflow_env(), sampler, "exact", 6, lr=5e307)
    _check_divergence_bookkeeping(t, [0, 2], [1, 3])
    assert not np.isfinite(t.metrics[1, :, [0, 2]]).all()   # the non-finite path, not the threshold
    np.testing.assert_array_equal(t.metrics[:, :, 1], np.repeat(t.metrics[:1, :, 1], 7, axis=0))


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_non_finite_divergence_never_raises_empirical(sampler):
    # in the empirical setting sampling noise moves even the constant-reward seeds: all four blow up,
    # and drawing pairs from the frozen seeds afterwards must not raise
    t = simulate(_overflow_env(), sampler, "empirical", 6, lr=5e307, num_samples=64,
                 generator=torch.Generator().manual_seed(1))
    _check_divergence_bookkeeping(t, [0, 1, 2, 3], [])


def test_no_divergence_at_paper_settings():
    env = TabularEnv.from_seeds(range(3), contexts=1, actions=20, beta=BETA)
    for sampler in SAMPLERS:
        t = simulate(env, sampler, "exact", 100, lr=10.0)
        assert (t.diverged_at == -1).all()
        assert np.isfinite(t.metrics).all()
        assert t.metrics.shape == (101, len(METRICS), 3)


# --- reproducibility -----------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_empirical_reproducible_with_seeded_generator(sampler):
    env = TabularEnv.from_seeds(range(3), contexts=2, actions=8, beta=BETA)
    kw = dict(lr=0.5, num_samples=512)
    a = simulate(env, sampler, "empirical", 20, generator=torch.Generator().manual_seed(42), **kw)
    b = simulate(env, sampler, "empirical", 20, generator=torch.Generator().manual_seed(42), **kw)
    c = simulate(env, sampler, "empirical", 20, generator=torch.Generator().manual_seed(43), **kw)
    np.testing.assert_array_equal(a.metrics, b.metrics)
    np.testing.assert_array_equal(a.diverged_at, b.diverged_at)
    np.testing.assert_array_equal(a.metrics[0], c.metrics[0])   # same start
    assert np.abs(a.metrics[1:] - c.metrics[1:]).min(axis=(1, 2)).max() > 0
    assert np.abs(a.metrics[-1] - c.metrics[-1]).max() > 1e-6


def test_empirical_approaches_exact_with_many_samples():
    env = TabularEnv.from_seeds([0], contexts=1, actions=6, beta=BETA)
    ex = simulate(env, "mix_p", "exact", 10, lr=0.5)
    em = simulate(env, "mix_p", "empirical", 10, lr=0.5, num_samples=2_000_000,
                  generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(em.metrics, ex.metrics, rtol=2e-2, atol=1e-3)


# --- vectorised == per-seed loop -----------------------------------------------------------------
def _envs():
    return {
        "tabular": TabularEnv.from_seeds(range(5), contexts=2, actions=20, beta=BETA),
        "linear": LinearEnv.from_seeds(range(5), contexts=2, actions=8, dim=5, beta=BETA),
    }


@pytest.mark.parametrize("kind", ["tabular", "linear"])
@pytest.mark.parametrize("rule,lr", [("fixed", 10.0), ("newton", 0.0)])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_batch_equals_per_seed_loop(kind, sampler, rule, lr):
    env = _envs()[kind]
    batch = simulate(env, sampler, "exact", 40, lr=lr, step_rule=rule)
    loop = [simulate(env.select([i]), sampler, "exact", 40, lr=lr, step_rule=rule) for i in range(5)]
    np.testing.assert_allclose(batch.metrics, np.concatenate([t.metrics for t in loop], axis=2), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(batch.diverged_at, np.concatenate([t.diverged_at for t in loop]))


def test_pbar_is_advanced_once_per_iteration():
    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    simulate(TabularEnv.from_seeds([0], 1, 4, BETA), "unif", "exact", 7, lr=1.0, pbar=bar)
    assert bar.n == 7
