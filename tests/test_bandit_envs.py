"""Environments, reward files, metrics and convergence diagnostics (bandit/envs.py, bandit/metrics.py, bandit/rates.py)."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from bandit import LinearEnv, SAMPLERS, TabularEnv, simulate
from bandit.envs import load_rewards
from bandit.metrics import METRICS, optimal_value, policy_metrics
from bandit.rates import FLOAT64_FLOOR, convergence_order, fitted_order, iterations_to, noise_floor
from runlog import ConfigError

DT = torch.float64
pytestmark = pytest.mark.usefixtures("torch_single_thread")
E, A, BETA = 2, 20, 3.0


def _pair(seeds=1):
    """A tabular env and the one-hot linear env that should reproduce it."""
    r = torch.tensor(np.random.default_rng(4).standard_normal((seeds, E, A)), dtype=DT)
    log_ref = torch.full((seeds, E, A), -math.log(A), dtype=DT)
    tab = TabularEnv(rewards=r, log_ref=log_ref, beta=BETA)
    features = torch.eye(E * A, dtype=DT).reshape(1, E, A, E * A).expand(seeds, -1, -1, -1)  # phi(x, y) = e_{x*A+y}
    lin = LinearEnv(features=features, theta_star=r.reshape(seeds, E * A).clone(), log_ref=log_ref.clone(), beta=BETA)
    return tab, lin


def test_one_hot_linear_env_has_the_same_rewards_and_start():
    tab, lin = _pair()
    torch.testing.assert_close(lin.rewards, tab.rewards, rtol=0, atol=0)
    torch.testing.assert_close(lin.log_policy(lin.init_params()), tab.log_policy(tab.init_params()), rtol=0, atol=1e-15)


@pytest.mark.parametrize("rule,lr", [("fixed", 10.0), ("newton", 0.0)])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_one_hot_linear_reproduces_tabular_exact(sampler, rule, lr):
    tab, lin = _pair()
    a = simulate(tab, sampler, "exact", 30, lr=lr, step_rule=rule)
    b = simulate(lin, sampler, "exact", 30, lr=lr, step_rule=rule)
    assert (a.diverged_at == -1).all() and (b.diverged_at == -1).all()
    # atol: metrics that converge to ~1e-16 (newton) carry rounding noise only
    np.testing.assert_allclose(b.metrics, a.metrics, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_one_hot_linear_reproduces_tabular_empirical(sampler):
    # Same generator seed, same drawing code. At the start both policies are exactly pi_ref, so the
    # first step's draws are identical; later the weights agree only to rounding (the linear policy
    # goes through log_ref + Phi w), and a binomial draw can flip on a last-bit difference, so later
    # steps are compared in law: mean param_diff over seeds within a few standard errors.
    tab, lin = _pair(seeds=16)
    a = simulate(tab, sampler, "empirical", 30, lr=0.5, num_samples=512, generator=torch.Generator().manual_seed(3))
    b = simulate(lin, sampler, "empirical", 30, lr=0.5, num_samples=512, generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(b.metrics[:2], a.metrics[:2], rtol=1e-9, atol=1e-13)
    ea, eb = a.metrics[-1, 0], b.metrics[-1, 0]
    se = np.sqrt(ea.var(ddof=1) / ea.size + eb.var(ddof=1) / eb.size)
    assert abs(ea.mean() - eb.mean()) <= 4 * se
    # and a different seed really does give a different trajectory (the comparison is not vacuous)
    c = simulate(lin, sampler, "empirical", 30, lr=0.5, num_samples=512, generator=torch.Generator().manual_seed(4))
    assert np.abs(c.metrics[1:] - a.metrics[1:]).max() > 1e-6


def test_one_hot_newton_step_equals_tabular_step():
    tab, lin = _pair()
    g = torch.randn(1, E, A, dtype=DT, generator=torch.Generator().manual_seed(0))
    g = g - g.mean(-1, keepdim=True)   # a gradient wrt h sums to 0 over actions
    t_new = tab.apply_grad(tab.init_params(), g, tab.step_size("newton", 0.0))
    l_new = lin.apply_grad(lin.init_params(), g, lin.step_size("newton", 0.0))
    torch.testing.assert_close(lin.log_policy(l_new), tab.log_policy(t_new), rtol=1e-12, atol=1e-13)


def test_tabular_from_seeds_copies_given_rewards():
    r = np.random.default_rng(0).standard_normal((2, 4))
    env = TabularEnv.from_seeds([0], 2, 4, BETA, rewards=r)
    before = env.rewards.clone()
    r[0, 0] = 100.0
    torch.testing.assert_close(env.rewards, before, rtol=0, atol=0)


def test_tabular_from_seeds_is_per_seed():
    a = TabularEnv.from_seeds([3, 5], 2, 4, BETA)
    b = TabularEnv.from_seeds([5], 2, 4, BETA)
    torch.testing.assert_close(a.rewards[1:], b.rewards, rtol=0, atol=0)
    torch.testing.assert_close(a.select([1]).rewards, b.rewards, rtol=0, atol=0)
    assert a.rewards.dtype == DT and a.log_ref.shape == (2, 2, 4)
    torch.testing.assert_close(a.log_ref.exp().sum(-1), torch.ones(2, 2, dtype=DT))


# --- load_rewards --------------------------------------------------------------------------------
def test_load_rewards_npy_and_json(tmp_path):
    one = np.array([0.5, -1.0, 2.0])
    two = np.arange(6, dtype=float).reshape(2, 3)
    np.save(tmp_path / "one.npy", one)
    np.save(tmp_path / "two.npy", two)
    (tmp_path / "one.json").write_text(json.dumps(one.tolist()))
    (tmp_path / "two.json").write_text(json.dumps(two.tolist()))
    for suffix in ("npy", "json"):
        a = load_rewards(tmp_path / f"one.{suffix}")
        assert a.shape == (1, 3) and a.dtype == np.float64
        np.testing.assert_array_equal(a[0], one)
        b = load_rewards(str(tmp_path / f"two.{suffix}"))
        assert b.shape == (2, 3)
        np.testing.assert_array_equal(b, two)
    # integer json is fine
    (tmp_path / "int.json").write_text("[1, 2, 3]")
    assert load_rewards(tmp_path / "int.json").dtype == np.float64


def _bad_files(tmp_path):
    np.save(tmp_path / "ndim3.npy", np.zeros((2, 2, 2)))
    np.save(tmp_path / "scalar.npy", np.array(1.0))
    np.save(tmp_path / "a1.npy", np.array([1.0]))
    np.save(tmp_path / "a1x2.npy", np.zeros((3, 1)))
    np.save(tmp_path / "nan.npy", np.array([1.0, np.nan]))
    np.save(tmp_path / "inf.npy", np.array([[1.0, 2.0], [np.inf, 0.0]]))
    (tmp_path / "nan.json").write_text("[1.0, NaN, 2.0]")
    (tmp_path / "inf.json").write_text("[[1.0, Infinity], [0.0, 1.0]]")
    (tmp_path / "ragged.json").write_text("[[1, 2], [3]]")
    (tmp_path / "text.json").write_text('["a", "b"]')
    (tmp_path / "broken.json").write_text("[1, 2")
    (tmp_path / "empty.json").write_text("[]")
    (tmp_path / "r.txt").write_text("1 2 3")
    (tmp_path / "r.csv").write_text("1,2,3")
    return ["ndim3.npy", "scalar.npy", "a1.npy", "a1x2.npy", "nan.npy", "inf.npy", "nan.json", "inf.json",
            "ragged.json", "text.json", "broken.json", "empty.json", "r.txt", "r.csv", "missing.npy", "missing.json"]


def test_load_rewards_errors(tmp_path):
    for name in _bad_files(tmp_path):
        with pytest.raises(ConfigError, match="--rewards") as e:
            load_rewards(tmp_path / name)
        assert "\n" not in str(e.value), name
    with pytest.raises(ConfigError, match="--rewards"):
        load_rewards(tmp_path)  # a folder is not a file


# --- metrics -------------------------------------------------------------------------------------
def _random_policy(seed=0, B=3, E=2, A=6):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(B, E, A, generator=g, dtype=DT)
    log_ref = torch.log_softmax(torch.randn(B, E, A, generator=g, dtype=DT), -1)
    log_pi = torch.log_softmax(2 * torch.randn(B, E, A, generator=g, dtype=DT), -1)
    return r, log_ref, log_pi


def test_metrics_shape_and_names():
    r, log_ref, log_pi = _random_policy()
    m = policy_metrics(log_pi, log_ref, r, BETA)
    assert m.shape == (len(METRICS), 3)
    assert METRICS == ("param_diff", "value", "value_gap", "kl")


def test_value_gap_is_optimal_value_minus_value():
    r, log_ref, log_pi = _random_policy()
    m = policy_metrics(log_pi, log_ref, r, BETA)
    value, value_gap = m[METRICS.index("value")], m[METRICS.index("value_gap")]
    torch.testing.assert_close(value_gap, optimal_value(log_ref, r, BETA) - value, rtol=0, atol=1e-10)
    assert torch.all(value_gap > 0)
    # and against formulas written out here
    pi = log_pi.exp()
    h = BETA * (log_pi - log_ref)
    V = (pi * (r - h)).sum(-1).mean(-1)
    Vstar = (BETA * torch.logsumexp(log_ref + r / BETA, -1)).mean(-1)
    kl = (pi * (log_pi - log_ref)).sum(-1).mean(-1)
    pd = (h[..., :, None] - h[..., None, :] - r[..., :, None] + r[..., None, :]).abs().mean((-1, -2)).mean(-1)
    torch.testing.assert_close(m[1], V, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(m[2], Vstar - V, rtol=0, atol=1e-12)
    torch.testing.assert_close(m[3], kl, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(m[0], pd, rtol=1e-13, atol=1e-15)


def test_kl_nonnegative_and_zero_at_reference():
    for seed in range(5):
        r, log_ref, log_pi = _random_policy(seed)
        assert torch.all(policy_metrics(log_pi, log_ref, r, BETA)[3] >= 0)
    m = policy_metrics(log_ref, log_ref, r, BETA)
    assert torch.all(m[3].abs() < 1e-15)


def test_metrics_vanish_at_optimum():
    r, log_ref, _ = _random_policy()
    log_opt = torch.log_softmax(log_ref + r / BETA, -1)
    m = policy_metrics(log_opt, log_ref, r, BETA)
    assert torch.all(m[0].abs() < 1e-12)
    assert torch.all(m[2].abs() < 1e-12)
    torch.testing.assert_close(m[1], optimal_value(log_ref, r, BETA), rtol=0, atol=1e-12)


# --- convergence_order / iterations_to ------------------------------------------------------------
def test_convergence_order_linear():
    e = 0.5 * 0.3 ** np.arange(20)
    assert convergence_order(e) == pytest.approx(1.0, abs=1e-6)


def test_convergence_order_quadratic():
    e = [0.1]
    while e[-1] > 1e-12:
        e.append(e[-1] ** 2)
    e = np.array(e)   # 0.1, 1e-2, 1e-4, 1e-8, 1e-16
    assert convergence_order(e) == pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize("floor_tail", [[4e-16] * 10, [4e-16, 3e-16, 5e-16, 2e-16, 4e-16, 1e-16]])
def test_convergence_order_ignores_float_floor(floor_tail):
    lin = 0.5 * 0.3 ** np.arange(15)          # down to ~2e-8
    assert convergence_order(np.concatenate([lin, floor_tail])) == pytest.approx(1.0, abs=1e-6)
    quad = np.array([0.1, 1e-2, 1e-4, 1e-8])
    assert convergence_order(np.concatenate([quad, floor_tail])) == pytest.approx(2.0, abs=1e-6)


def test_convergence_order_nan_when_too_short():
    assert math.isnan(convergence_order(np.array([])))
    assert math.isnan(convergence_order(np.array([1.0])))
    assert math.isnan(convergence_order(np.array([1.0, 1e-3])))              # one step only
    assert math.isnan(convergence_order(np.array([1e-15, 1e-16, 1e-17])))   # all below the floor
    assert math.isnan(convergence_order(np.array([1.0, 1e-3, 1e-15, 1e-16])))  # one step above the floor
    assert math.isnan(convergence_order(np.array([1.0, 1.0, 1.0, 1.0])))    # no progress: no order
    assert not math.isnan(convergence_order(np.array([1.0, 1e-2, 1e-4])))
    assert FLOAT64_FLOOR > 1e-15


def test_convergence_order_ignores_nan_entries():
    e = 0.5 * 0.3 ** np.arange(20)
    e[[3, 7]] = np.nan
    assert convergence_order(e) == pytest.approx(1.0, abs=1e-6)


def test_convergence_order_uses_last_decreasing_run():
    # an early quadratic phase, a bump, then a linear tail: the tail decides
    e = np.concatenate([[0.5, 0.25, 0.0625], [1.0], 0.9 * 0.5 ** np.arange(10)])
    assert convergence_order(e) == pytest.approx(1.0, abs=1e-6)


def test_iterations_to():
    e = np.array([1.0, 0.5, 0.1, 0.01, 0.001])
    assert iterations_to(e, 0.1) == 2.0
    assert iterations_to(e, 0.05) == 3.0
    assert iterations_to(e, 2.0) == 0.0
    assert iterations_to(e, 1e-9) == math.inf
    assert iterations_to(np.array([1.0, np.nan, 0.01]), 0.1) == 2.0


def test_noisy_fit_stops_at_the_noise_plateau():
    rng = np.random.default_rng(0)
    lin = 0.5 * 0.3 ** np.arange(10)                      # linear down to ~1e-5.5
    plateau = 1e-7 * (1 + 0.5 * rng.random(90))            # then sampling noise around 1.25e-7
    e = np.concatenate([lin, plateau])
    assert noise_floor(e) == pytest.approx(10 * np.median(plateau[-10:]), rel=1e-12)   # 10x the last 10%'s median
    assert noise_floor(np.full(10, 1e-20)) == FLOAT64_FLOOR                          # never below the float64 floor
    assert fitted_order(e, noisy=True) == pytest.approx(1.0, abs=1e-6)               # the transient only
    assert fitted_order(e, noisy=False) == convergence_order(e)                      # exact: the last 3 steps
    assert abs(fitted_order(e, noisy=False) - 1.0) > 0.05                            # ... which sit on the plateau


def test_rates_and_analysis_load_no_torch():
    code = "import sys, bandit.rates, analysis.aggregate, analysis.curves; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
