"""The sampler registry (DESIGN.md section 3).

A sampler is a stop-gradient weight w(x, y, y') >= 0 over the A x A ordered pairs of each context,
normalised to sum 1 per context. Each function here returns the *log* of the unnormalised weight,
shape [..., A, A] (row y, column y'), so that normalising is a stable softmax even when
exp(Delta_h) would overflow.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from runlog import ConfigError


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


def unif(s: PairState) -> torch.Tensor:
    return torch.zeros(s.h.shape + s.h.shape[-1:], dtype=s.h.dtype, device=s.h.device)


def on_policy(s: PairState) -> torch.Tensor:
    return s.log_pi[..., :, None] + s.log_pi[..., None, :]


def gshf(s: PairState) -> torch.Tensor:
    # one response from pi_ref, the other from pi, in either order
    return torch.logaddexp(s.log_ref[..., :, None] + s.log_pi[..., None, :],
                           s.log_pi[..., :, None] + s.log_ref[..., None, :])


def mix_r(s: PairState) -> torch.Tensor:
    return log_mix_weight(pair_diff(s.r))


def mix_p(s: PairState) -> torch.Tensor:
    return log_mix_weight(pair_diff(s.h))


def mix_p_star(s: PairState) -> torch.Tensor:
    # mix_p, with each weight capped at 2 + e^R + e^-R, R = max r - min r: the largest weight Mix-R uses
    reward_range = s.r.amax(-1) - s.r.amin(-1)
    cap = log_mix_weight(reward_range)[..., None, None]
    return torch.minimum(mix_p(s), cap)


SAMPLERS = {f.__name__: f for f in (unif, on_policy, gshf, mix_r, mix_p, mix_p_star)}


def get_sampler(name: str):
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ConfigError(f"--samplers: unknown sampler {name!r}; known: {', '.join(SAMPLERS)}") from None


def sampler_weights(name: str, s: PairState) -> torch.Tensor:
    """Normalised weights [..., A, A] summing to 1 per context, detached."""
    logw = get_sampler(name)(s).detach()
    shape = logw.shape
    return torch.softmax(logw.flatten(-2), dim=-1).view(shape)
