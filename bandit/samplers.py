"""The sampler registry (DESIGN.md section 3).

A sampler is a stop-gradient weight w(x, y, y') >= 0 over the A x A ordered pairs of each context,
normalised to sum 1 per context. Each function here returns the unnormalised weight, shape
[..., A, A] (row y, column y'), up to a positive factor per context chosen so that nothing overflows;
`sampler_weights` normalises. Every weight is built from O(A) exponentials and outer products: no
transcendental function over the A x A grid, which is what the runner's step time is made of.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

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


def mix_weight(x: torch.Tensor) -> torch.Tensor:
    """(2 + e^(x_y - x_y') + e^(x_y' - x_y)) / e^S with S = max x - min x: every entry is at most 4.

    e^(x_y - x_y' - S) = e^(x_y - max x) e^(min x - x_y'), an outer product of two vectors in (0, 1].
    """
    hi, lo = x.amax(-1, keepdim=True), x.amin(-1, keepdim=True)
    m = outer(torch.exp(x - hi), torch.exp(lo - x))
    return (m + m.transpose(-1, -2)).add_(2.0 * torch.exp(lo - hi)[..., None])  # outer(g, a) is m transposed


def unif(s: PairState) -> torch.Tensor:
    return torch.ones(s.h.shape + s.h.shape[-1:], dtype=s.h.dtype, device=s.h.device)


def offline(s: PairState) -> torch.Tensor:
    # both responses from pi_ref: unif when pi_ref is uniform (the default)
    ref = s.log_ref.exp()
    return outer(ref, ref)


def on_policy(s: PairState) -> torch.Tensor:
    pi = s.log_pi.exp()
    return outer(pi, pi)


def gshf(s: PairState) -> torch.Tensor:
    # one response from pi_ref, the other from pi, in either order
    m = outer(s.log_ref.exp(), s.log_pi.exp())
    return m + m.transpose(-1, -2)


def mix_r(s: PairState) -> torch.Tensor:
    return mix_weight(s.r)


def mix_p(s: PairState) -> torch.Tensor:
    return mix_weight(s.h)


def mix_p_star(s: PairState) -> torch.Tensor:
    # mix_p, with each weight capped at 2 + e^R + e^-R, R = max r - min r: the largest weight Mix-R uses.
    # In log space: the cap can be e^1000 times smaller than mix_p's largest weight, so no common factor
    # keeps both finite, and the min is not an outer product.
    reward_range = s.r.amax(-1) - s.r.amin(-1)
    logw = torch.minimum(log_mix_weight(pair_diff(s.h)), log_mix_weight(reward_range)[..., None, None])
    return torch.exp(logw - logw.amax((-1, -2), keepdim=True))


SAMPLERS = {f.__name__: f for f in (offline, unif, on_policy, gshf, mix_r, mix_p, mix_p_star)}
# what the entry points run by default: the paper's six (offline equals unif under the default uniform pi_ref)
DEFAULT_SAMPLERS = ("unif", "on_policy", "gshf", "mix_r", "mix_p", "mix_p_star")


def get_sampler(name: str, field: str = "--samplers"):
    """The weight function of a sampler, by canonical name or alias (bandit/vocabulary.py)."""
    return SAMPLERS[canonical(name, PAIR_SAMPLER, "bandit", field, allowed=tuple(SAMPLERS))]


def sampler_weights(name: str, s: PairState) -> torch.Tensor:
    """Normalised weights [..., A, A] summing to 1 per context, detached."""
    w = get_sampler(name)(s).detach()
    return w.div_(w.sum((-1, -2), keepdim=True))  # in place: every sampler returns a fresh tensor
