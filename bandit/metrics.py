"""Per-iteration metrics (DESIGN.md section 3) and the summary statistics of a trajectory."""
from __future__ import annotations

import numpy as np
import torch


METRICS = ("param_diff", "value", "value_gap", "kl")
FLOAT64_FLOOR = 1e-13  # param_diff below this is rounding noise (errors of ~1e-16 per logit, summed)


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


def iterations_to(errors: np.ndarray, tol: float) -> float:
    """First iteration with error <= tol, or inf if never."""
    hit = np.flatnonzero(errors <= tol)
    return float(hit[0]) if hit.size else float("inf")


def convergence_order(errors: np.ndarray, floor: float = FLOAT64_FLOOR, tail: int | None = 3,
                      min_decades: float = 1.0) -> float:
    """Slope of log e_{t+1} against log e_t over the tail of the run above `floor`.

    1 means linear convergence, 2 quadratic. The tail is the last `tail` steps above the floor (all of
    them if None), widened backwards until e_t spans `min_decades` decades, since a slope fitted to
    nearly equal points is noise. NaN when the steps above the floor span less than that (a run that
    barely moves has no order) or are fewer than 2. `floor` is the float64 floor for exact runs, the
    sampling-noise plateau for empirical ones.
    """
    e = np.asarray(errors, dtype=np.float64)
    e = e[np.isfinite(e)]
    prev, nxt = e[:-1], e[1:]
    idx = np.flatnonzero((prev > floor) & (nxt > floor))
    x_all, y_all = np.log10(prev[idx]), np.log10(nxt[idx])
    k = len(idx) if tail is None else min(tail, len(idx))
    while k < len(idx) and np.ptp(x_all[-k:]) < min_decades:
        k += 1
    if k < 2 or np.ptp(x_all[-k:]) < min_decades:
        return float("nan")
    return float(np.polyfit(x_all[-k:], y_all[-k:], 1)[0])


def noise_floor(errors: np.ndarray, last: float = 0.1, factor: float = 10.0) -> float:
    """Where a stochastic run stalls: `factor` times the median error over the `last` fraction of the run."""
    e = np.asarray(errors, dtype=np.float64)
    e = e[np.isfinite(e)]
    k = max(1, int(len(e) * last))
    return max(FLOAT64_FLOOR, factor * float(np.median(e[-k:])))
