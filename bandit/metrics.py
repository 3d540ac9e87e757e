"""Per-iteration metrics (DESIGN.md section 3). The convergence diagnostics of a trajectory (order fit, iterations to
a tolerance, noise floor) are in bandit/rates.py, numpy only, which analysis/ shares."""
from __future__ import annotations

import torch


METRICS = ("param_diff", "value", "value_gap", "kl")


def mean_abs_pair_diff(x: torch.Tensor) -> torch.Tensor:
    """Mean over all A x A ordered pairs of |x[y] - x[y']|, in O(A log A) instead of O(A^2):
    for sorted values, sum_{y,y'} |x_y - x_y'| = 2 sum_i (2i - A + 1) x_(i)."""
    A = x.shape[-1]
    coef = 2.0 * torch.arange(A, dtype=x.dtype, device=x.device) - (A - 1)
    return 2.0 * (x.sort(dim=-1).values * coef).sum(-1) / A**2


def policy_metrics(log_pi: torch.Tensor, log_ref: torch.Tensor, r: torch.Tensor, beta: float) -> torch.Tensor:
    """[len(METRICS), B]: each metric averaged over contexts, for inputs [B, E, A]."""
    h = beta * (log_pi - log_ref)
    param_diff = mean_abs_pair_diff(r - h)
    pi = log_pi.exp()
    value = (pi * (r - h)).sum(-1)
    # V(pi*) - V(pi) = beta KL(pi || pi*), computed this way to avoid cancelling two close values
    log_opt = torch.log_softmax(log_ref + r / beta, dim=-1)
    value_gap = beta * (pi * (log_pi - log_opt)).sum(-1)
    kl = (pi * (log_pi - log_ref)).sum(-1)
    return torch.stack([param_diff, value, value_gap, kl]).mean(-1)


def optimal_value(log_ref: torch.Tensor, r: torch.Tensor, beta: float) -> torch.Tensor:
    """V(pi*) = beta log sum_y pi_ref(y) exp(r(y) / beta), averaged over contexts: [B]."""
    return (beta * torch.logsumexp(log_ref + r / beta, dim=-1)).mean(-1)
