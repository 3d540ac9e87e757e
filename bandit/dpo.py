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

    Binary splitting: the n draws of a node go to its left half with Binomial(n, mass_left / mass),
    the rest to the right half; log2(K) levels of vectorised binomials give the exact multinomial law.
    """
    K = probs.shape[-1]
    width = 1 << max(K - 1, 0).bit_length()
    mass = torch.nn.functional.pad(probs.clamp_min(0), (0, width - K))
    levels = [mass]  # levels[i] has width / 2**i nodes
    while levels[-1].shape[-1] > 1:
        m = levels[-1]
        levels.append(m[..., 0::2] + m[..., 1::2])
    counts = torch.full_like(levels[-1], float(n))
    for m in reversed(levels[:-1]):
        left, parent = m[..., 0::2], m[..., 0::2] + m[..., 1::2]
        p_left = torch.where(parent > 0, left / parent.clamp_min(torch.finfo(m.dtype).tiny), 0.0).clamp(0.0, 1.0)
        n_left = torch.binomial(counts, p_left, generator=generator)
        counts = torch.stack([n_left, counts - n_left], dim=-1).flatten(-2)
    return counts[..., :K]


def exact_targets(w: torch.Tensor, p: torch.Tensor):
    return w, w * p


def empirical_targets(w: torch.Tensor, p: torch.Tensor, num_samples: int, generator=None):
    """(W, K) of `num_samples` labelled pairs drawn from w [..., A, A], in O(A^2) work.

    Drawing (y', y) labelled "y' wins" gives the same loss term as (y, y') labelled "y loses", so the
    draws are counted per unordered pair {y < y'} (weight w(y,y') + w(y',y), wins of y ~ Binomial(n, p)),
    plus one cell for all y = y' pairs, which carry no gradient. This halves the binomial draws and
    has exactly the law of N ordered draws as far as the loss is concerned.
    """
    A = w.shape[-1]
    iu, ju = torch.triu_indices(A, A, 1, device=w.device)
    cells = torch.cat([(w + w.transpose(-1, -2))[..., iu, ju], w.diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True)], -1)
    n = multinomial_counts(num_samples, cells, generator)[..., :-1]
    k = torch.binomial(n, p[..., iu, ju].expand(n.shape).contiguous(), generator=generator)
    W = torch.zeros_like(w)
    K = torch.zeros_like(w)
    W[..., iu, ju] = n / num_samples
    K[..., iu, ju] = k / num_samples
    return W, K


def grad_h(W: torch.Tensor, K: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """dL/dh [..., A] of the loss above; it sums to 0 over actions."""
    G = W * torch.sigmoid(pair_diff(h)) - K
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
