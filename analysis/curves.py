"""Per-step summaries over seeds of bandit runs: learning curves, pairs-used curves, convergence tables.

Input: the tidy rows of one task (analysis.runs.Task.rows, or any rows with `method`, `seed`, `step` and the
metric). A seed that diverged (an `"event": "diverged"` row) is left out of curves and fits and counted in
`diverged`, as the bandit entry points' own figures do.

On log axes (`log=True`) the mean and interval are taken over log values (a geometric mean): errors span many
orders of magnitude across seeds, and an arithmetic mean would show only the slowest seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.aggregate import mean_ci, median
from bandit.rates import QUADRATIC, TOL, fitted_order, iterations_to  # the bandit entry points' own definitions

LOG_FLOOR = 1e-17   # float64 noise can make gaps ~0 or slightly negative; clipped before taking logs


@dataclass
class Curve:
    """mean, lo, hi (the CI) of a metric at each x over the seeds; n seeds used; diverged seeds left out."""
    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: int
    diverged: int


def seed_series(rows, metric: str, x: str = "step") -> tuple[dict, int]:
    """{seed: (xs, values)} sorted by x, for the seeds that did not diverge, and the number that did."""
    series: dict = {}
    diverged = set()
    for r in rows:
        if r.get("event") == "diverged":
            diverged.add(r.get("seed"))
            continue
        v, at = r.get(metric), r.get(x)
        if isinstance(v, (int, float)) and isinstance(at, (int, float)):
            series.setdefault(r.get("seed"), []).append((at, float(v)))
    out = {}
    for seed, pts in series.items():
        if seed in diverged:
            continue
        pts.sort()
        out[seed] = (np.array([p[0] for p in pts], dtype=float), np.array([p[1] for p in pts]))
    return out, len(diverged)


def curve(rows, metric: str, x: str = "step", log: bool = False, method: str = "t", level: float = 0.95) -> Curve:
    """Mean and CI over seeds of `metric` at each step (seeds aligned on their step index)."""
    series, diverged = seed_series(rows, metric, "step")
    if not series:
        empty = np.array([])
        return Curve(empty, empty, empty, empty, 0, diverged)
    T = min(len(v) for _, v in series.values())   # seeds cut at a common length
    Y = np.stack([v[:T] for _, v in series.values()], axis=1)
    if log:
        Y = np.log(np.clip(Y, LOG_FLOOR, None))
    stats = np.array([mean_ci(Y[t], method=method, level=level) for t in range(T)])
    mean, lo, hi = stats.T
    if x == "step":
        xs = next(iter(series.values()))[0][:T]
    else:   # e.g. pairs_used: it differs between seeds, so its mean over seeds at each step
        xs = np.stack([s[1][:T] for s in seed_series(rows, x, "step")[0].values()], axis=1).mean(axis=1)
    if len(series) < 2:   # no spread to estimate from one seed: the band is the curve itself
        lo, hi = mean, mean
    if log:
        mean, lo, hi = np.exp(mean), np.exp(lo), np.exp(hi)
    return Curve(xs, mean, lo, hi, len(series), diverged)


def curves(rows, metric: str, x: str = "step", log: bool = False, method: str = "t") -> dict[str, Curve]:
    """One Curve per method (first-seen order)."""
    by: dict[str, list] = {}
    for r in rows:
        by.setdefault(r["method"], []).append(r)
    return {m: curve(rs, metric, x=x, log=log, method=method) for m, rs in by.items()}


def pairs_used_curves(rows, metric: str = "value_gap", log: bool = True, method: str = "t") -> dict[str, Curve]:
    """Selection runs: `metric` against the pairs used so far (mean over seeds at each step)."""
    return curves(rows, metric, x="pairs_used", log=log, method=method)


def convergence_table(rows, metric: str = "param_diff", tol: float = TOL) -> list[dict]:
    """Per (setting, method): fitted convergence order (median over seeds, and the fraction of seeds with an
    order >= 1.8, i.e. quadratic), iterations until `metric` <= tol (median, and how many seeds got there)."""
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r.get("setting"), r["method"]), []).append(r)
    out = []
    for (setting, m), rs in groups.items():
        series, diverged = seed_series(rs, metric)
        # exact runs: the last 3 steps above the float64 floor; empirical runs stall at a sampling-noise plateau, so
        # every step above 10x that plateau (the transient) is fitted (bandit.rates.fitted_order)
        orders = np.array([fitted_order(v, noisy=setting == "empirical") for _, v in series.values()])
        hits = np.array([iterations_to(v, tol) for _, v in series.values()])
        fitted = orders[np.isfinite(orders)]
        reached = hits[np.isfinite(hits)]
        out.append({"setting": setting, "method": m, "seeds": len(series), "diverged": diverged,
                    "order_median": median(fitted), "fitted_seeds": int(fitted.size),
                    "quadratic_fraction": float((fitted >= QUADRATIC).sum() / len(orders)) if len(orders) else math.nan,
                    "iters_to_tol_median": float(np.median(hits)) if len(hits) else math.nan,
                    "reached_tol": int(reached.size), "tol": tol})
    return out
