"""Per-iteration metrics (DESIGN.md section 3) and the summary statistics of a trajectory."""
from __future__ import annotations

import numpy as np
import torch

from bandit.samplers import pair_diff

METRICS = ("param_diff", "value", "value_gap", "kl")
FLOAT64_FLOOR = 1e-13  # param_diff below this is rounding noise (errors of ~1e-16 per logit, summed)


def policy_metrics(log_pi: torch.Tensor, log_ref: torch.Tensor, r: torch.Tensor, beta: float) -> torch.Tensor:
    """[len(METRICS), B]: each metric averaged over contexts, for inputs [B, E, A]."""
    h = beta * (log_pi - log_ref)
    param_diff = pair_diff(r - h).abs().mean((-1, -2))
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


def convergence_order(errors: np.ndarray, floor: float = FLOAT64_FLOOR, tail: int = 3) -> float:
    """Slope of log e_{t+1} against log e_t over the last `tail` decreasing steps above the float64 floor.

    1 means linear convergence, 2 quadratic. NaN when fewer than 2 such steps exist.
    """
    e = np.asarray(errors, dtype=np.float64)
    e = e[np.isfinite(e)]
    prev, nxt = e[:-1], e[1:]
    ok = (prev > floor) & (nxt > floor) & (nxt < prev)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return float("nan")
    # the tail: the last run of consecutive decreasing steps above the floor
    start = idx.size - 1
    while start > 0 and idx[start - 1] == idx[start] - 1:
        start -= 1
    idx = idx[start:][-tail:]
    if idx.size < 2:
        return float("nan")
    x, y = np.log(prev[idx]), np.log(nxt[idx])
    return float(np.polyfit(x, y, 1)[0])
