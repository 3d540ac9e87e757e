"""The sampler registry (DESIGN.md section 3).

A sampler is a stop-gradient weight w(x, y, y') >= 0 over the A x A ordered pairs of each context,
normalised to sum 1 per context. Every sampler an LLM can run is a product-mixture spec (bandit/spec.py:
offline, unif, on_policy, gshf, mix_r, mix_p); `spec_weights` computes the exact weight of any spec, the
named ones and the settings an LLM recipe runs (alpha, p, temperature) alike. mix_p_star's capped weight is
not a product mixture and has its own function. Each returns the unnormalised weight, shape [..., A, A]
(row y, column y'), up to a positive factor per context chosen so that nothing overflows; `sampler_weights`
normalises. Every weight is built from O(A) exponentials and outer products: no transcendental function over
the A x A grid, which is what the runner's step time is made of.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from bandit.spec import SPECS, UNIFORM, PairSpec, Tilt
from bandit.vocabulary import PAIR_SAMPLER, canonical


@dataclass
class PairState:
    """What a sampler may look at, per context: tensors of shape [..., A]."""

    log_pi: torch.Tensor   # log pi_theta(y|x)
    log_ref: torch.Tensor  # log pi_ref(y|x)
    h: torch.Tensor        # implicit reward beta * log(pi / pi_ref)
    r: torch.Tensor        # true reward (oracle; only mix_r and mix_p_star's cap read it)


def pair_diff(x: torch.Tensor) -> torch.Tensor:
    """[..., A] -> [..., A, A] with entry (y, y') = x[y] - x[y']."""
    return x[..., :, None] - x[..., None, :]


def log_mix_weight(d: torch.Tensor) -> torch.Tensor:
    """log(2 + e^d + e^-d) = |d| + 2 log(1 + e^-|d|), the inverse DPO loss curvature, without overflow."""
    a = d.abs()
    return a + 2.0 * torch.log1p(torch.exp(-a))


def outer(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return u[..., :, None] * v[..., None, :]


_BASES = (("pi", "log_pi"), ("ref", "log_ref"), ("h", "h"), ("r", "r"))


def _tilt_plan(t: Tilt):
    """How to evaluate a tilt, decided once per spec: None (uniform), the name of a normalised base it equals
    (pi or pi_ref themselves), or its [(coefficient, base)] terms."""
    terms = [(getattr(t, c), base) for c, base in _BASES if getattr(t, c) != 0]
    if not terms:
        return None
    if len(terms) == 1 and terms[0][0] == 1.0 and terms[0][1] in ("log_pi", "log_ref"):
        return terms[0][1]
    return terms


def _component(plan, s: PairState, normalised: bool):
    """A tilt's weight per action as (e, m), the weight being e * exp(m): e [..., A] or None (uniform: all ones),
    m [..., 1] or 0.0, chosen so that nothing overflows; with normalised=True, e is the distribution and m = 0.0."""
    if plan is None:
        return (torch.full_like(s.h, 1.0 / s.h.shape[-1]) if normalised else None), 0.0
    if isinstance(plan, str):
        return getattr(s, plan).exp(), 0.0  # pi or pi_ref itself: already a distribution
    (c, base), *rest = plan
    logits = c * getattr(s, base)
    for c, base in rest:
        logits = logits + c * getattr(s, base)
    if normalised:
        return torch.softmax(logits, -1), 0.0
    m = logits.amax(-1, keepdim=True)
    return torch.exp(logits - m), m


def mix_weight(x: torch.Tensor) -> torch.Tensor:
    """(2 + e^(x_y - x_y') + e^(x_y' - x_y)) / e^S with S = max x - min x: every entry is at most 4.

    e^(x_y - x_y' - S) = e^(x_y - max x) e^(min x - x_y'), an outer product of two vectors in (0, 1].
    The natural mixture of (e^x, e^-x) and (uniform, uniform): the Mix samplers' closed form.
    """
    hi, lo = x.amax(-1, keepdim=True), x.amin(-1, keepdim=True)
    m = outer(torch.exp(x - hi), torch.exp(lo - x))
    return (m + m.transpose(-1, -2)).add_(2.0 * torch.exp(lo - hi)[..., None])  # outer(g, a) is m transposed


def spec_weights(spec: PairSpec, s: PairState, closed_forms: bool = True) -> torch.Tensor:
    """The exact pair weight [..., A, A] of a product-mixture spec, up to a factor per context:
    sum_b q_b (P_b(y) Q_b(y') + Q_b(y) P_b(y')), natural q_b being the unnormalised masses Z_P Z_Q.
    closed_forms=False always takes the general path (tests compare the two)."""
    return _compiled(spec, closed_forms)(s)


def _mix_tilt(spec: PairSpec):
    """The tilt t when the spec is the natural mixture of (e^t, e^-t) and (uniform, uniform), else None."""
    if not spec.natural or len(spec.branches) != 2:
        return None
    (a, b), (c, d) = ((x.first, x.second) for x in spec.branches)
    neg = Tilt(-a.pi, -a.ref, -a.h, -a.r)
    return a if b == neg and c == d == UNIFORM and a != UNIFORM else None


def _compiled(spec: PairSpec, closed_forms: bool = True):
    """spec_weights for one spec, its structure analysed once. Each branch is an outer product of O(A)
    exponentials (a uniform x uniform branch is one number per context), scaled by exp(its log-scale - the
    largest); a branch that has the largest scale everywhere is not multiplied at all. For the named samplers
    this computes the closed forms of before operation for operation (tests/test_bandit_spec.py checks they are
    bit-identical), so the bandit's trajectories did not move when the samplers became specs."""
    mix = _mix_tilt(spec) if closed_forms else None
    if mix is not None:  # Mix-P, Mix-R: one outer product instead of two branches (2x faster in the runner)
        plan = _tilt_plan(mix)

        def mixed(s: PairState) -> torch.Tensor:
            if isinstance(plan, str):
                return mix_weight(getattr(s, plan))
            (c, base), *rest = plan
            x = getattr(s, base) if c == 1.0 and not rest else c * getattr(s, base)
            for c, base in rest:
                x = x + c * getattr(s, base)
            return mix_weight(x)

        return mixed
    normalised = not spec.natural and len(spec.branches) > 1  # a single fixed branch: its scale cancels
    plans = [(_tilt_plan(b.first), _tilt_plan(b.second),
              None if spec.natural else (math.log(b.prob) if b.prob > 0 else -math.inf)) for b in spec.branches]

    def weights(s: PairState) -> torch.Tensor:
        parts = []
        for first, second, log_q in plans:
            (eP, mP), (eQ, mQ) = _component(first, s, normalised), _component(second, s, normalised)
            if eP is None and eQ is None:
                m = 1.0  # uniform x uniform: the same weight for every pair
            else:
                ones = lambda: torch.ones_like(s.h)
                m = outer(ones() if eP is None else eP, ones() if eQ is None else eQ)
            parts.append([m, mP + mQ if log_q is None else log_q])
        tensors = [i for i, (_, scale) in enumerate(parts) if torch.is_tensor(scale)]
        if tensors:
            top = parts[tensors[0]][1]
            for i, (_, scale) in enumerate(parts):
                if i != tensors[0]:
                    top = torch.maximum(top, torch.as_tensor(scale, dtype=top.dtype, device=top.device))
            leader = next((i for i in tensors if torch.equal(parts[i][1], top)), None)
        else:
            top, leader = max(scale for _, scale in parts), None
        w = None
        for i, (m, scale) in enumerate(parts):
            if i != leader:
                f = scale - top
                if torch.is_tensor(f):
                    m = m * torch.exp(f)[..., None] if torch.is_tensor(m) else torch.exp(f)[..., None] * m
                elif f != 0:
                    m = m * math.exp(f)
            m = m + m.transpose(-1, -2) if torch.is_tensor(m) and m.shape[-1] > 1 else m + m
            w = m if w is None else w + m
        if not torch.is_tensor(w) or w.shape[-1] == 1:  # uniform only
            w = torch.ones_like(s.h)[..., None] * w * torch.ones_like(s.h)[..., None, :]
        return w

    return weights


def mix_p_star(s: PairState) -> torch.Tensor:
    # mix_p, with each weight capped at 2 + e^R + e^-R, R = max r - min r: the largest weight Mix-R uses.
    # Not a product mixture (the cap is a min): bandit only. In log space: the cap can be e^1000 times smaller
    # than mix_p's largest weight, so no common factor keeps both finite, and the min is not an outer product.
    reward_range = s.r.amax(-1) - s.r.amin(-1)
    logw = torch.minimum(log_mix_weight(pair_diff(s.h)), log_mix_weight(reward_range)[..., None, None])
    return torch.exp(logw - logw.amax((-1, -2), keepdim=True))


def _weights_of(spec: PairSpec):
    weights = _compiled(spec)
    weights.__name__, weights.spec = spec.name, spec
    return weights


SAMPLERS = {name: _weights_of(spec) for name, spec in SPECS.items()} | {"mix_p_star": mix_p_star}
# what the entry points run by default: the paper's six (offline equals unif under the default uniform pi_ref)
DEFAULT_SAMPLERS = ("unif", "on_policy", "gshf", "mix_r", "mix_p", "mix_p_star")


@functools.lru_cache(maxsize=None)
def _spec_sampler(spec: PairSpec):
    return _weights_of(spec)


def get_sampler(name, field: str = "--samplers"):
    """The weight function of a sampler, by canonical name or alias (bandit/vocabulary.py), or of any PairSpec
    (e.g. the LLM's mix_p_llm(alpha, p) at a temperature): specs are compiled once and kept."""
    if isinstance(name, PairSpec):
        return _spec_sampler(name)
    return SAMPLERS[canonical(name, PAIR_SAMPLER, "bandit", field, allowed=tuple(SAMPLERS))]


def drawable(spec: PairSpec) -> bool:
    """Every tilt of the spec is a fusion of pi's and pi_ref's logits: an LLM can draw its components (with
    natural branch probabilities too, which an LLM recipe cannot set but the bandit can)."""
    return all(t.llm_realisable for t in spec.tilts)


def sampler_weights(name, s: PairState) -> torch.Tensor:
    """Normalised weights [..., A, A] summing to 1 per context, detached; `name` a sampler name or a PairSpec."""
    w = get_sampler(name)(s).detach()
    return w.div_(w.sum((-1, -2), keepdim=True))  # in place: every sampler returns a fresh tensor
