"""DPO in a bandit: the gradient with respect to the implicit reward h, exact and empirical.

Both settings reduce to the same per-pair quantity. With W the pair weights and K the weight of
"y beats y'" labels, the loss of one context is

    L = - sum_{y,y'} [ K log sigmoid(Dh) + (W - K) log sigmoid(-Dh) ],   Dh = h(y) - h(y'),

so dL/dDh = W sigmoid(Dh) - K =: G, and dL/dh(y) = sum_y' G(y, y') - sum_y' G(y', y).

- exact:     W = w,        K = w * p,     p = sigmoid(Dr)   (expected loss under the sampler)
- empirical: W = n / N,    K = k / N,     n ~ Multinomial(N, w) pair counts, k ~ Binomial(n, p) wins
  (drawing per-cell counts then per-cell labels is the law of N separate draws, at O(A^2) cost)
"""
from __future__ import annotations

import torch

from bandit.samplers import pair_diff


def multinomial_counts(n: int, probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Counts of n draws from each row of probs [..., K], in O(K) work per row rather than O(n).

    Binary splitting: the draws of a node go to its left child with Binomial(count, mass_left / mass),
    the rest to its right child. A tree over the K cells (an odd node out is carried up unsplit) needs
    K - 1 binomials in about log2(K) vectorised calls, and gives exactly the multinomial law.
    """
    levels = [probs.clamp_min(0)]  # node masses, leaves first
    while levels[-1].shape[-1] > 1:
        m = levels[-1]
        even = m.shape[-1] // 2 * 2
        levels.append(torch.cat([m[..., 0:even:2] + m[..., 1:even:2], m[..., even:]], dim=-1))
    counts = torch.full_like(levels[-1], float(n))
    for m in reversed(levels[:-1]):
        even = m.shape[-1] // 2 * 2
        left, parent = m[..., 0:even:2], counts[..., : even // 2]
        mass = left + m[..., 1:even:2]
        p_left = torch.where(mass > 0, left / mass.clamp_min(torch.finfo(m.dtype).tiny), 0.0).clamp(0.0, 1.0)
        n_left = torch.binomial(parent, p_left, generator=generator)
        split = torch.stack([n_left, parent - n_left], dim=-1).flatten(-2)
        counts = torch.cat([split, counts[..., even // 2:]], dim=-1)
    return counts


def exact_targets(w: torch.Tensor, p: torch.Tensor):
    return w, w * p


def empirical_targets(w: torch.Tensor, p: torch.Tensor, num_samples: int, generator=None):
    """(W, K) of `num_samples` labelled pairs drawn from w [..., A, A], in O(A^2) work.

    Drawing (y', y) labelled "y' wins" gives the same loss term as (y, y') labelled "y loses", so the
    draws are counted per unordered pair {y < y'} (weight w(y,y') + w(y',y), wins of y ~ Binomial(n, p))
    and per diagonal cell (y, y), whose draws add log 2 each to the loss and nothing to its gradient.
    This has exactly the law of N ordered draws as far as the loss is concerned, with about half the
    binomial draws.
    """
    A = w.shape[-1]
    iu, ju = torch.triu_indices(A, A, 1, device=w.device)
    diag = w.diagonal(dim1=-2, dim2=-1)
    cells = torch.cat([(w + w.transpose(-1, -2))[..., iu, ju], diag], -1)
    n = multinomial_counts(num_samples, cells, generator)
    n_pair, n_diag = n[..., : iu.numel()], n[..., iu.numel():]
    k = torch.binomial(n_pair, p[..., iu, ju].expand(n_pair.shape).contiguous(), generator=generator)
    W = torch.zeros_like(w)
    K = torch.zeros_like(w)
    W[..., iu, ju] = n_pair / num_samples
    K[..., iu, ju] = k / num_samples
    W.diagonal(dim1=-2, dim2=-1).copy_(n_diag / num_samples)
    K.diagonal(dim1=-2, dim2=-1).copy_(0.5 * n_diag / num_samples)  # label irrelevant: sigmoid(0) either way
    return W, K


def grad_h(W: torch.Tensor, K: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """dL/dh [..., A] of the loss above; it sums to 0 over actions."""
    G = W * torch.sigmoid(pair_diff(h)) - K
    return G.sum(-1) - G.sum(-2)


def exact_grad_h(w: torch.Tensor, p: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """grad_h(*exact_targets(w, p), h) with G = w (sigmoid(Dh) - p), in fewer passes over the A x A grid."""
    G = torch.sigmoid(pair_diff(h)).sub_(p).mul_(w)
    return G.sum(-1) - G.sum(-2)


def loss(W: torch.Tensor, K: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The loss above, per context [...]: for logging and tests."""
    d = pair_diff(h)
    ls = torch.nn.functional.logsigmoid
    return -(K * ls(d) + (W - K) * ls(-d)).sum((-1, -2))


def mix_r_normaliser(r: torch.Tensor) -> torch.Tensor:
    """S = sum over ordered pairs of 2 + e^Dr + e^-Dr, per context [...]."""
    d = pair_diff(r)
    return (2.0 + torch.exp(d) + torch.exp(-d)).sum((-1, -2))
