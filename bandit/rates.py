"""Convergence diagnostics of an error series (e.g. param_diff per iteration): numpy only, no torch.

The one home of these definitions: the bandit entry points' summaries (bandit/examples/common.py) and analysis/
(convergence tables and leaderboards of logged runs) both use them, so a logged run and its own summary
always agree. Importing this module loads neither torch nor anything else of the simulation.

- `iterations_to`: the first iteration with error <= tol.
- `convergence_order`: the order p in e_{t+1} ~ C e_t^p (1 linear, 2 quadratic), a least-squares slope.
- `noise_floor`: where a stochastic (empirical) run stalls, the floor its order fit stays above.
- `fitted_order`: the fit each kind of run gets (exact: the last 3 steps above the float64 floor;
  noisy: every step above 10x the sampling-noise plateau).
"""
from __future__ import annotations

import numpy as np

FLOAT64_FLOOR = 1e-13  # param_diff below this is rounding noise (errors of ~1e-16 per logit, summed)
TOL = 1e-8             # "converged": param_diff <= TOL (the entry points' summaries and analysis' tables)
QUADRATIC = 1.8        # a fitted order at least this counts as quadratic


def iterations_to(errors, tol: float) -> float:
    """First index t with errors[t] <= tol, or inf if never (NaN never counts as reached)."""
    e = np.asarray(errors, dtype=np.float64)
    hit = np.flatnonzero(e <= tol)
    return float(hit[0]) if hit.size else float("inf")


def convergence_order(errors, floor: float = FLOAT64_FLOOR, tail: int | None = 3,
                      min_decades: float = 1.0) -> float:
    """Slope of log e_{t+1} against log e_t over the tail of the run above `floor`.

    1 means linear convergence, 2 quadratic. Non-finite errors are left out first. Only consecutive pairs
    with both errors above `floor` are used (below it the error is rounding or sampling noise); of those,
    the last `tail` pairs (all of them if None) are fitted, widened backwards until e_t spans `min_decades`
    decades, since a slope fitted to nearly equal points is noise. NaN when the usable pairs span less
    than that (a run that barely moves has no order) or are fewer than 2. `floor` is the float64 floor for
    exact runs, the sampling-noise plateau (noise_floor) for empirical ones.
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


def noise_floor(errors, last: float = 0.1, factor: float = 10.0) -> float:
    """Where a stochastic run stalls: `factor` times the median error over the `last` fraction of the run."""
    e = np.asarray(errors, dtype=np.float64)
    e = e[np.isfinite(e)]
    k = max(1, int(len(e) * last))
    return max(FLOAT64_FLOOR, factor * float(np.median(e[-k:])))


def fitted_order(errors, noisy: bool) -> float:
    """The order fit of one run. Exact runs (noisy=False): the last 3 steps above the float64 floor. Empirical
    runs (noisy=True) stall at a sampling-noise plateau instead, so every step above 10x that plateau (the
    transient) is fitted."""
    if noisy:
        return convergence_order(errors, floor=noise_floor(errors), tail=None)
    return convergence_order(errors)
