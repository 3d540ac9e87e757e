"""The shared sampler interface (bandit/spec.py): product mixtures of tilts, evaluated exactly by the bandit.

The named samplers' weights are checked against the closed forms the bandit used before they became specs
(written out again here), bit for bit, so the bandit's trajectories cannot have moved; the LLM's forms
(alpha, p, temperature) against a hand computation with numpy."""
import math

import numpy as np
import pytest
import torch

from bandit.samplers import SAMPLERS, PairState, sampler_weights, spec_weights
from bandit.spec import POLICY, REF, SPECS, UNIFORM, Branch, PairSpec, Tilt, mix_p_llm

DT = torch.float64
pytestmark = pytest.mark.usefixtures("torch_single_thread")


# the closed forms of bandit/samplers.py before the specs, verbatim in their arithmetic
def _outer(u, v):
    return u[..., :, None] * v[..., None, :]


def _mix_weight(x):
    hi, lo = x.amax(-1, keepdim=True), x.amin(-1, keepdim=True)
    m = _outer(torch.exp(x - hi), torch.exp(lo - x))
    return (m + m.transpose(-1, -2)).add_(2.0 * torch.exp(lo - hi)[..., None])


def _gshf(s):
    m = _outer(s.log_ref.exp(), s.log_pi.exp())
    return m + m.transpose(-1, -2)


CLOSED = {
    "offline": lambda s: _outer(s.log_ref.exp(), s.log_ref.exp()),
    "unif": lambda s: torch.ones(s.h.shape + s.h.shape[-1:], dtype=s.h.dtype),
    "on_policy": lambda s: _outer(s.log_pi.exp(), s.log_pi.exp()),
    "gshf": _gshf,
    "mix_r": lambda s: _mix_weight(s.r),
    "mix_p": lambda s: _mix_weight(s.h),
}


def state(B=4, E=3, A=20, beta=3.0, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    log_pi = torch.log_softmax(scale * torch.randn(B, E, A, generator=g, dtype=DT), -1)
    log_ref = torch.log_softmax(torch.randn(B, E, A, generator=g, dtype=DT), -1)
    return PairState(log_pi, log_ref, beta * (log_pi - log_ref), torch.randn(B, E, A, generator=g, dtype=DT))


def test_every_product_mixture_sampler_is_a_spec():
    assert set(SPECS) == {"offline", "unif", "on_policy", "gshf", "mix_r", "mix_p"}
    assert set(SAMPLERS) - set(SPECS) == {"mix_p_star"}  # a capped weight: bandit only
    assert all(SAMPLERS[n].spec is SPECS[n] for n in SPECS)


@pytest.mark.parametrize("name", sorted(CLOSED))
@pytest.mark.parametrize("seed,scale", [(0, 1.0), (1, 30.0), (2, 300.0)])  # up to |h| in the thousands
def test_spec_weights_are_the_closed_forms_bit_for_bit(name, seed, scale):
    s = state(seed=seed, scale=scale)
    closed = CLOSED[name](s)
    assert torch.equal(sampler_weights(name, s), closed / closed.sum((-1, -2), keepdim=True))


@pytest.mark.parametrize("name", ["mix_r", "mix_p"])
def test_general_path_is_the_closed_form_too(name):
    # the Mix samplers run a one-product closed form; the general evaluation of the same spec gives the same bits
    s = state(seed=7, scale=30.0)
    assert torch.equal(spec_weights(SPECS[name], s, closed_forms=False), CLOSED[name](s))


def test_natural_mixture_by_hand():
    # q_b proportional to Z_P Z_Q: sum of the unnormalised products, symmetrised
    spec = PairSpec("x", (Branch(Tilt(h=1.0), Tilt(h=-1.0)), Branch(UNIFORM, UNIFORM), Branch(POLICY, Tilt(r=0.5))))
    s = state(B=1, E=1, A=5, seed=8)
    h, pi, r = s.h[0, 0].numpy(), s.log_pi[0, 0].exp().numpy(), s.r[0, 0].numpy()
    m = np.exp(h[:, None] - h[None, :]) + 1.0 + np.outer(pi, np.exp(0.5 * r))
    want = m + m.T
    w = spec_weights(spec, s)
    np.testing.assert_allclose((w / w.sum()).numpy()[0, 0], want / want.sum(), rtol=1e-12)


def _np_tilt(c_pi, c_ref, log_pi, log_ref):
    x = c_pi * log_pi + c_ref * log_ref
    return np.exp(x - x.max()) / np.exp(x - x.max()).sum()


@pytest.mark.parametrize("alpha,p,temperature", [(0.5, 1.0, 1.0), (0.3, 0.7, 1.0), (1.0, 0.4, 0.7)])
def test_llm_mix_p_weight_by_hand(alpha, p, temperature):
    s = state(B=1, E=1, A=6, seed=3)
    lp, lr = s.log_pi[0, 0].numpy(), s.log_ref[0, 0].numpy()
    T = temperature
    plus = _np_tilt((1 + alpha) / T, -alpha / T, lp, lr)
    minus = _np_tilt((1 - alpha) / T, alpha / T, lp, lr)
    pol = _np_tilt(1 / T, 0, lp, lr)
    want = p * (np.outer(plus, minus) + np.outer(minus, plus)) / 2 + (1 - p) * np.outer(pol, pol)
    spec = mix_p_llm(alpha, p).at_temperature(T)
    w = spec_weights(spec, s)
    got = (w / w.sum()).numpy()[0, 0]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_natural_branch_probabilities_give_the_paper_mix_p():
    # q_b proportional to Z_P Z_Q: (e^h, e^-h) has mass sum e^h sum e^-h, (u, u) has A^2
    s = state(B=1, E=1, A=5, seed=4)
    h = s.h[0, 0].numpy()
    want = 2 + np.exp(h[:, None] - h[None, :]) + np.exp(h[None, :] - h[:, None])
    w = sampler_weights("mix_p", s).numpy()[0, 0]
    np.testing.assert_allclose(w, want / want.sum(), rtol=1e-13)


def test_tilts_at_a_temperature_and_their_logit_weights():
    assert Tilt(pi=1.5, ref=-0.5).at_temperature(0.5) == Tilt(pi=3.0, ref=-1.0)
    assert Tilt(pi=1.5, ref=-0.5).logit_weights() == {"policy": 1.5, "ref": -0.5}
    assert POLICY.logit_weights() == {"policy": 1.0} and REF.logit_weights() == {"ref": 1.0}
    for t in (UNIFORM, Tilt(h=1.0), Tilt(r=1.0)):
        assert not t.llm_realisable
        with pytest.raises(ValueError):
            t.logit_weights()
    assert mix_p_llm(0.5).llm_realisable and SPECS["gshf"].llm_realisable
    assert not SPECS["mix_p"].llm_realisable and not SPECS["unif"].llm_realisable
    assert mix_p_llm(0.5, 0.7).tilts == (Tilt(pi=1.5, ref=-0.5), Tilt(pi=0.5, ref=0.5), POLICY)


def test_bad_specs_are_refused():
    with pytest.raises(ValueError):
        PairSpec("x", (Branch(POLICY, POLICY, 0.5), Branch(REF, REF)))  # fixed and natural mixed
    with pytest.raises(ValueError):
        PairSpec("x", (Branch(POLICY, POLICY, 0.5),))  # probabilities do not sum to 1
    with pytest.raises(ValueError):
        PairSpec("x", ())


def test_offline_is_unif_under_a_uniform_reference():
    s = state(seed=5)
    uniform = torch.full_like(s.log_ref, -math.log(s.log_ref.shape[-1]))
    s = PairState(s.log_pi, uniform, 3.0 * (s.log_pi - uniform), s.r)
    torch.testing.assert_close(sampler_weights("offline", s), sampler_weights("unif", s), rtol=1e-14, atol=0)


# ------------------------------------------------------------------------------------------ the LLM's mix_p
def _one_token(seed=11, A=7):
    s = state(B=1, E=1, A=A, seed=seed)
    return s, s.log_pi[0, 0].numpy(), s.log_ref[0, 0].numpy()


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_llm_mix_p_at_natural_p_is_the_closed_form(alpha):
    # natural branch probabilities: pi(y) pi(y') (2 + e^(a D) + e^(-a D)), D = log(pi/pi_ref)(y) - log(pi/pi_ref)(y')
    s, lp, lr = _one_token()
    pi, lpr = np.exp(lp), lp - lr
    D = lpr[:, None] - lpr[None, :]
    want = np.outer(pi, pi) * (2 + np.exp(alpha * D) + np.exp(-alpha * D))
    w = spec_weights(mix_p_llm(alpha, None), s)
    np.testing.assert_allclose((w / w.sum()).numpy()[0, 0], want / want.sum(), rtol=1e-12)
    # base pi_ref: pi_ref(y) pi_ref(y') times the same factor
    want = np.outer(np.exp(lr), np.exp(lr)) * (2 + np.exp(alpha * D) + np.exp(-alpha * D))
    w = spec_weights(mix_p_llm(alpha, None, base="pi_ref"), s)
    np.testing.assert_allclose((w / w.sum()).numpy()[0, 0], want / want.sum(), rtol=1e-12)


def test_llm_mix_p_base_pi_ref_at_alpha_beta_is_the_paper_mix_p_under_a_uniform_reference():
    # a = beta, base pi_ref uniform, natural p: (2 + e^Dh + e^-Dh) up to a constant, since a D = Dh
    beta, A = 3.0, 6
    g = torch.Generator().manual_seed(12)
    log_pi = torch.log_softmax(torch.randn(1, 1, A, generator=g, dtype=DT), -1)
    uniform = torch.full_like(log_pi, -math.log(A))
    s = PairState(log_pi, uniform, beta * (log_pi - uniform), torch.zeros_like(log_pi))
    h = s.h[0, 0].numpy()
    want = 2 + np.exp(h[:, None] - h[None, :]) + np.exp(h[None, :] - h[:, None])
    w = spec_weights(mix_p_llm(beta, None, base="pi_ref"), s)
    np.testing.assert_allclose((w / w.sum()).numpy()[0, 0], want / want.sum(), rtol=1e-12)


@pytest.mark.parametrize("base", ["pi", "pi_ref"])
def test_llm_mix_p_at_a_given_p_is_the_hand_mixture(base):
    # q * (fused pair, symmetrised) + (1 - q) * (B, B) pair, B the base; each component normalised on its own
    q, alpha = 0.4, 0.5
    s, lp, lr = _one_token(seed=13)
    B = lp if base == "pi" else lr
    plus = np.exp(B + alpha * (lp - lr)); plus /= plus.sum()
    minus = np.exp(B - alpha * (lp - lr)); minus /= minus.sum()
    b = np.exp(B)
    want = q * (np.outer(plus, minus) + np.outer(minus, plus)) / 2 + (1 - q) * np.outer(b, b)
    w = spec_weights(mix_p_llm(alpha, q, base=base), s)
    np.testing.assert_allclose((w / w.sum()).numpy()[0, 0], want, rtol=1e-12, atol=1e-15)


def test_temperature_divides_every_llm_coefficient():
    T = 0.7
    spec = mix_p_llm(0.5, 0.7).at_temperature(T)
    assert spec.tilts == (Tilt(pi=1.5 / T, ref=-0.5 / T), Tilt(pi=0.5 / T, ref=0.5 / T), Tilt(pi=1 / T))
    assert [b.prob for b in spec.branches] == [0.7, pytest.approx(0.3)]
    # the on-policy branch at T: pi^(1/T) normalised, by hand
    s, lp, _ = _one_token(seed=14)
    t = np.exp(lp / T) / np.exp(lp / T).sum()
    w = spec_weights(SPECS["on_policy"].at_temperature(T), s)
    np.testing.assert_allclose((w / w.sum()).numpy()[0, 0], np.outer(t, t), rtol=1e-12)


def test_old_mix_p_llm_calls_are_unchanged():
    # alignment calls mix_p_llm(alpha, name=...): one fused branch, the tilts of before
    spec = mix_p_llm(0.5, name="mix_p_seq")
    assert spec.name == "mix_p_seq" and len(spec.branches) == 1 and spec.branches[0].prob == 1.0
    assert spec.tilts == (Tilt(pi=1.5, ref=-0.5), Tilt(pi=0.5, ref=0.5))
    assert mix_p_llm(0.5, None).natural and not mix_p_llm(0.5, None).llm_realisable
    with pytest.raises(ValueError):
        mix_p_llm(0.5, base="uniform")
