"""Exact and empirical DPO gradients (bandit/dpo.py) against autograd, finite differences and sampling."""
import math

import pytest
import torch

from bandit import dpo
from bandit.envs import LinearEnv, TabularEnv
from bandit.samplers import SAMPLERS, PairState, pair_diff, sampler_weights

DT = torch.float64
pytestmark = pytest.mark.usefixtures("torch_single_thread")
BETA = 3.0


def setup(E=2, A=5, seed=0, sampler="mix_p"):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(1, E, A, generator=g, dtype=DT)
    log_ref = torch.log_softmax(0.3 * torch.randn(1, E, A, generator=g, dtype=DT), -1)
    theta = torch.randn(1, E, A, generator=g, dtype=DT)
    log_pi = torch.log_softmax(theta, -1)
    h = BETA * (log_pi - log_ref)
    w = sampler_weights(sampler, PairState(log_pi, log_ref, h, r))
    p = torch.sigmoid(pair_diff(r))
    return r, log_ref, theta, h, w, p


def design_loss(w, p, h):
    """DESIGN.md: -sum w [p log sig(Dh) + (1-p) log sig(-Dh)], per context, written out directly."""
    d = h[..., :, None] - h[..., None, :]
    return -(w * (p * torch.log(torch.sigmoid(d)) + (1 - p) * torch.log(torch.sigmoid(-d)))).sum((-1, -2))


# --- grad_h vs autograd --------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_grad_h_matches_autograd(sampler):
    r, log_ref, theta, h, w, p = setup(sampler=sampler)
    W, K = dpo.exact_targets(w, p)
    g = dpo.grad_h(W, K, h)
    hh = h.clone().requires_grad_(True)
    (auto_lib,) = torch.autograd.grad(dpo.loss(W, K, hh).sum(), hh)
    hh2 = h.clone().requires_grad_(True)
    (auto_design,) = torch.autograd.grad(design_loss(w, p, hh2).sum(), hh2)
    torch.testing.assert_close(g, auto_lib, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g, auto_design, rtol=1e-12, atol=1e-14)
    # the loss values agree with the formula too
    torch.testing.assert_close(dpo.loss(W, K, h), design_loss(w, p, h), rtol=1e-13, atol=0)
    # grad_h sums to zero over actions
    torch.testing.assert_close(g.sum(-1), torch.zeros(1, 2, dtype=DT), rtol=0, atol=1e-14)


def test_grad_h_with_arbitrary_targets():
    # the (W, K) form for any K <= W, e.g. empirical ones
    g = torch.Generator().manual_seed(3)
    A = 6
    W = torch.rand(2, A, A, generator=g, dtype=DT)
    K = W * torch.rand(2, A, A, generator=g, dtype=DT)
    h = torch.randn(2, A, generator=g, dtype=DT, requires_grad=True)
    (auto,) = torch.autograd.grad(dpo.loss(W, K, h).sum(), h)
    torch.testing.assert_close(dpo.grad_h(W, K, h.detach()), auto, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_chain_rule_through_tabular_logits(sampler):
    r, log_ref, theta, h, w, p = setup(sampler=sampler)
    th = theta.clone().requires_grad_(True)
    hh = BETA * (torch.log_softmax(th, -1) - log_ref)
    (auto,) = torch.autograd.grad(design_loss(w, p, hh).sum(), th)
    torch.testing.assert_close(auto, BETA * dpo.grad_h(*dpo.exact_targets(w, p), h), rtol=1e-11, atol=1e-14)


def test_finite_difference_on_theta():
    r, log_ref, theta, h, w, p = setup(E=1, A=4, sampler="gshf")
    W, K = dpo.exact_targets(w, p)   # weights are stop-gradient: held fixed

    def L(th):
        return dpo.loss(W, K, BETA * (torch.log_softmax(th, -1) - log_ref)).sum().item()

    analytic = BETA * dpo.grad_h(W, K, h)
    eps = 1e-6
    fd = torch.zeros_like(theta)
    for i in range(theta.shape[-1]):
        e = torch.zeros_like(theta)
        e[..., i] = eps
        fd[..., i] = (L(theta + e) - L(theta - e)) / (2 * eps)
    torch.testing.assert_close(fd, analytic, rtol=1e-6, atol=1e-8)


# --- multinomial_counts --------------------------------------------------------------------------
@pytest.mark.parametrize("K", [1, 2, 3, 5, 7, 8, 13])
def test_multinomial_counts_basic(K):
    g = torch.Generator().manual_seed(K)
    probs = torch.rand(4, 3, K, generator=g, dtype=DT)
    if K > 2:
        probs[..., 1] = 0.0
    probs = probs / probs.sum(-1, keepdim=True)
    n = 1000
    c = dpo.multinomial_counts(n, probs, g)
    assert c.shape == probs.shape
    assert torch.equal(c, c.round())
    assert torch.all(c >= 0)
    assert torch.all(c.sum(-1) == n)
    assert torch.all(c[probs == 0] == 0)


def test_multinomial_counts_k1_gets_everything():
    c = dpo.multinomial_counts(17, torch.ones(3, 1, dtype=DT), torch.Generator().manual_seed(0))
    assert torch.equal(c, torch.full((3, 1), 17.0, dtype=DT))


@pytest.mark.parametrize("K", [3, 6, 8])
def test_multinomial_counts_mean_and_variance(K):
    g = torch.Generator().manual_seed(100 + K)
    p = torch.rand(K, generator=g, dtype=DT) + 0.05
    p = p / p.sum()
    n, draws = 500, 4000
    c = dpo.multinomial_counts(n, p.expand(draws, K).contiguous(), g)
    mean = c.mean(0)
    se = torch.sqrt(n * p * (1 - p) / draws)
    assert torch.all((mean - n * p).abs() < 5 * se), (mean, n * p, se)
    # the multinomial covariance n (diag(p) - p p^T), entry by entry within 5 standard errors
    cov = torch.cov(c.T)
    target = n * (torch.diag(p) - torch.outer(p, p))
    v = torch.diag(target)
    se_cov = torch.sqrt((torch.outer(v, v) + target**2) / draws)
    assert torch.all((cov - target).abs() < 5 * se_cov), ((cov - target) / se_cov)


def test_multinomial_counts_unnormalised_probs():
    # only relative masses matter
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    p = torch.tensor([0.2, 0.5, 0.3], dtype=DT)
    assert torch.equal(dpo.multinomial_counts(50, p, g1), dpo.multinomial_counts(50, 7 * p, g2))


# --- empirical vs exact --------------------------------------------------------------------------
DRAWS = 2000
N = 256


def _empirical_batch(sampler, seed=11):
    r, log_ref, theta, h, w, p = setup(E=2, A=4, seed=1, sampler=sampler)
    g = torch.Generator().manual_seed(seed)
    wb = w.expand(DRAWS, *w.shape[1:]).contiguous()
    pb = p.expand(DRAWS, *p.shape[1:]).contiguous()
    hb = h.expand(DRAWS, *h.shape[1:])
    W, K = dpo.empirical_targets(wb, pb, N, g)
    return w, p, h, W, K, hb


def _within_se(samples, target, k):
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    assert torch.all((mean - target).abs() <= k * se), (mean, target, se)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_empirical_targets_are_counts(sampler):
    w, p, h, W, K, hb = _empirical_batch(sampler)
    # W holds the N draws as multiples of 1/N (each unordered pair in its upper-triangle cell, the
    # y == y' draws on the diagonal); K counts wins off the diagonal, 0 <= K <= W
    assert torch.equal(W * N, (W * N).round())
    off = ~torch.eye(W.shape[-1], dtype=torch.bool)
    assert torch.equal((K * N)[..., off], (K * N)[..., off].round())
    assert torch.all(K >= 0) and torch.all(K <= W)
    assert torch.all((W * N).sum((-1, -2)) == N)
    assert torch.all(torch.tril(W, -1) == 0)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_empirical_gradient_is_unbiased(sampler):
    w, p, h, W, K, hb = _empirical_batch(sampler)
    g_emp = dpo.grad_h(W, K, hb)
    g_exact = dpo.grad_h(*dpo.exact_targets(w, p), h)[0]
    _within_se(g_emp, g_exact, 4.5)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_empirical_loss_is_unbiased(sampler):
    w, p, h, W, K, hb = _empirical_batch(sampler)
    L_emp = dpo.loss(W, K, hb)
    L_exact = dpo.loss(*dpo.exact_targets(w, p), h)[0]
    _within_se(L_emp, L_exact, 4.0)


# --- pi* is a fixed point --------------------------------------------------------------------------
def _tabular_env(E=2, A=5):
    g = torch.Generator().manual_seed(7)
    r = torch.randn(2, E, A, generator=g, dtype=DT)
    log_ref = torch.log_softmax(0.5 * torch.randn(2, E, A, generator=g, dtype=DT), -1)
    env = TabularEnv(r, log_ref, BETA)
    return env, log_ref + r / BETA


def _linear_env():
    env = LinearEnv.from_seeds([0, 1], contexts=3, actions=5, dim=4, beta=BETA)
    return env, env.theta_star / BETA


@pytest.mark.parametrize("kind", ["tabular", "linear"])
@pytest.mark.parametrize("rule", ["fixed", "newton"])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_optimum_is_a_fixed_point(kind, rule, sampler):
    env, params = _tabular_env() if kind == "tabular" else _linear_env()
    r, log_ref = env.rewards, env.log_ref
    log_pi = env.log_policy(params)
    h = BETA * (log_pi - log_ref)
    # sanity: this is pi*, i.e. h = r + const per context
    pd = pair_diff(r - h).abs().amax((-1, -2))
    assert torch.all(pd < 1e-12)
    w = sampler_weights(sampler, PairState(log_pi, log_ref, h, r))
    p = torch.sigmoid(pair_diff(r))
    new = env.apply_grad(params, dpo.grad_h(*dpo.exact_targets(w, p), h), env.step_size(rule, 10.0))
    torch.testing.assert_close(new, params, rtol=0, atol=1e-10)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_fused_exact_gradient_equals_the_generic_one(sampler):
    # the runner's exact step uses exact_grad_h, the fused form of grad_h(*exact_targets(w, p), h)
    r, log_ref, theta, h, w, p = setup(E=3, A=6, seed=2, sampler=sampler)
    torch.testing.assert_close(dpo.exact_grad_h(w, p, h), dpo.grad_h(*dpo.exact_targets(w, p), h), rtol=1e-13, atol=1e-15)
