"""Sampler registry (DESIGN.md section 3): normalisation, symmetry, closed forms, the Mix-P* cap."""
import math

import numpy as np
import pytest
import torch

from bandit.samplers import SAMPLERS, PairState, get_sampler, log_mix_weight, mix_p_star, sampler_weights
from runlog import ConfigError

DT = torch.float64
pytestmark = pytest.mark.usefixtures("torch_single_thread")
SYMMETRIC = ["offline", "unif", "on_policy", "gshf", "mix_r", "mix_p", "mix_p_star"]


def make_state(B=3, E=2, A=5, beta=3.0, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(B, E, A, generator=g, dtype=DT)
    log_ref = torch.log_softmax(torch.randn(B, E, A, generator=g, dtype=DT), -1)
    r = torch.randn(B, E, A, generator=g, dtype=DT)
    if requires_grad:
        theta.requires_grad_(True)
        r.requires_grad_(True)
    log_pi = torch.log_softmax(theta, -1)
    h = beta * (log_pi - log_ref)
    return PairState(log_pi, log_ref, h, r)


def test_registry_has_the_six_samplers_and_offline():
    assert set(SAMPLERS) == set(SYMMETRIC)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_weights_are_a_distribution_per_context(name):
    s = make_state(B=3, E=2, A=5)
    w = sampler_weights(name, s)
    assert w.shape == (3, 2, 5, 5)
    assert w.dtype == DT
    assert torch.all(w >= 0)
    torch.testing.assert_close(w.sum((-1, -2)), torch.ones(3, 2, dtype=DT), rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_weights_are_detached(name):
    s = make_state(requires_grad=True)
    assert s.h.requires_grad and s.log_pi.requires_grad
    w = sampler_weights(name, s)
    assert not w.requires_grad
    assert w.grad_fn is None


@pytest.mark.parametrize("name", SYMMETRIC)
def test_weights_are_symmetric(name):
    w = sampler_weights(name, make_state(seed=1))
    torch.testing.assert_close(w, w.transpose(-1, -2), rtol=1e-14, atol=1e-16)


# --- closed forms at a hand-made point (A = 3), written out with numpy --------------------------
R3 = np.array([0.3, -1.2, 0.8])
THETA3 = np.array([0.5, -0.4, 1.1])
REF3 = np.array([0.2, 0.5, 0.3])
BETA3 = 2.0


def _state3():
    log_pi = torch.log_softmax(torch.tensor(THETA3, dtype=DT), -1)
    log_ref = torch.log(torch.tensor(REF3, dtype=DT))
    return PairState(log_pi, log_ref, BETA3 * (log_pi - log_ref), torch.tensor(R3, dtype=DT))


def _expected3(name):
    pi = np.exp(THETA3) / np.exp(THETA3).sum()
    ref = REF3
    h = BETA3 * np.log(pi / ref)
    W = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            dr, dh = R3[i] - R3[j], h[i] - h[j]
            W[i, j] = {
                "offline": ref[i] * ref[j],
                "unif": 1.0,
                "on_policy": pi[i] * pi[j],
                "gshf": ref[i] * pi[j] + pi[i] * ref[j],
                "mix_r": 2 + math.exp(dr) + math.exp(-dr),
                "mix_p": 2 + math.exp(dh) + math.exp(-dh),
            }[name]
    return W / W.sum()


@pytest.mark.parametrize("name", ["offline", "unif", "on_policy", "gshf", "mix_r", "mix_p"])
def test_closed_forms_A3(name):
    w = sampler_weights(name, _state3()).numpy()
    np.testing.assert_allclose(w, _expected3(name), rtol=1e-12, atol=0)


def test_unif_is_one_ninth():
    np.testing.assert_allclose(sampler_weights("unif", _state3()).numpy(), np.full((3, 3), 1 / 9), rtol=1e-14)


def test_on_policy_is_product_of_pi():
    # on_policy is already normalised: sum_{y,y'} pi(y) pi(y') = 1
    pi = np.exp(THETA3) / np.exp(THETA3).sum()
    np.testing.assert_allclose(sampler_weights("on_policy", _state3()).numpy(), np.outer(pi, pi), rtol=1e-13)


# --- Mix-P* cap ----------------------------------------------------------------------------------
def _np_log_mix(d):
    return np.logaddexp(np.logaddexp(math.log(2.0), d), -d)


def test_mix_p_star_caps_large_h_gaps():
    r = np.array([[0.0, 0.7, -0.5, 1.0]])        # R = 1.5
    h = np.array([[0.0, 40.0, -35.0, 0.3]])      # |Dh| up to 75 >> R
    s = PairState(log_pi=torch.zeros(1, 4, dtype=DT), log_ref=torch.zeros(1, 4, dtype=DT),
                  h=torch.tensor(h, dtype=DT), r=torch.tensor(r, dtype=DT))
    R = r.max() - r.min()
    dh = h[0][:, None] - h[0][None, :]
    expected = np.minimum(np.log(2 + np.exp(dh) + np.exp(-dh)), math.log(2 + math.exp(R) + math.exp(-R)))
    # samplers return weights up to a positive factor per context: compare ratios to the largest
    got = mix_p_star(s).numpy()[0]
    np.testing.assert_allclose(np.log(got / got.max()), expected - expected.max(), rtol=1e-13, atol=1e-12)
    # the cap is actually active somewhere and not everywhere
    capped = np.abs(dh) > R
    assert capped.any() and (~capped).any()
    # and the normalised weights are the normalised capped weights
    W = np.exp(expected)
    np.testing.assert_allclose(sampler_weights("mix_p_star", s).numpy()[0], W / W.sum(), rtol=1e-12)


def test_mix_p_star_caps_per_context():
    # two contexts with different reward ranges get different caps
    r = torch.tensor([[0.0, 1.0, 0.5], [0.0, 3.0, -1.0]], dtype=DT)  # R = 1, 4
    h = torch.tensor([[0.0, 10.0, -10.0], [0.0, 10.0, -10.0]], dtype=DT)
    s = PairState(torch.zeros_like(h), torch.zeros_like(h), h, r)
    # largest over smallest weight: the cap over the diagonal's 4
    got = mix_p_star(s).numpy()
    ratio = got.max(axis=(-1, -2)) / got.min(axis=(-1, -2))
    assert ratio[0] == pytest.approx((2 + math.e + 1 / math.e) / 4, rel=1e-13)
    assert ratio[1] == pytest.approx((2 + math.exp(4) + math.exp(-4)) / 4, rel=1e-13)


def test_mix_p_star_equals_mix_p_when_gaps_within_range():
    r = torch.tensor([[0.0, 2.0, -1.0, 0.5]], dtype=DT)           # R = 3
    h = torch.tensor([[0.1, 1.2, -0.9, 2.0]], dtype=DT)           # |Dh| <= 2.9 <= R
    s = PairState(torch.zeros_like(h), torch.zeros_like(h), h, r)
    assert (h[0][:, None] - h[0][None, :]).abs().max() <= r.max() - r.min()
    torch.testing.assert_close(sampler_weights("mix_p_star", s), sampler_weights("mix_p", s), rtol=1e-13, atol=0)


# --- log_mix_weight ------------------------------------------------------------------------------
def test_log_mix_weight_no_overflow():
    d = torch.tensor([1000.0, -1000.0, 710.0, -5000.0], dtype=DT)
    out = log_mix_weight(d)
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.numpy(), np.abs(d.numpy()), rtol=1e-15)


def test_log_mix_weight_moderate_values():
    d = np.array([0.0, 1e-8, -0.3, 1.0, 2.5, -7.0, 20.0, 35.0])
    got = log_mix_weight(torch.tensor(d, dtype=DT)).numpy()
    np.testing.assert_allclose(got, np.log(2 + np.exp(d) + np.exp(-d)), rtol=1e-14, atol=0)
    assert got[0] == pytest.approx(math.log(4.0), rel=1e-15)


def test_mix_weights_stable_for_huge_h():
    # normalising must not produce NaN even when exp(Dh) overflows
    h = torch.tensor([[0.0, 900.0, -900.0]], dtype=DT)
    s = PairState(torch.zeros_like(h), torch.zeros_like(h), h, torch.tensor([[0.0, 1.0, 2.0]], dtype=DT))
    for name in ("mix_p", "mix_p_star"):
        w = sampler_weights(name, s)
        assert torch.isfinite(w).all()
        torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=DT))


# --- registry errors -----------------------------------------------------------------------------
def test_unknown_sampler_is_config_error_listing_names():
    with pytest.raises(ConfigError) as e:
        get_sampler("nope")
    msg = str(e.value)
    assert "nope" in msg
    for name in SAMPLERS:
        assert name in msg
    with pytest.raises(ConfigError):
        sampler_weights("nope", make_state())


def test_aliases_name_the_canonical_sampler():
    # the seed repositories' names (bandit/vocabulary.py) are the same weight functions
    assert get_sampler("online") is get_sampler("on_policy") and get_sampler("mixp") is get_sampler("mix_p")
    assert get_sampler("vanilla") is get_sampler("offline") is get_sampler("ref")
    with pytest.raises(ConfigError, match="not available here"):
        get_sampler("mixp_seq")  # an LLM-only pair sampler
