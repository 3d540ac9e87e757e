"""Summaries over seeds and convergence diagnostics, computed from tidy rows (see analysis.load).

- `mean_ci`: mean with a confidence interval, either Student-t (exact for normal data, the default)
  or a seeded percentile bootstrap (no normality assumption; reproducible for a given seed).
- `t_interval`: the Student-t interval as (mean, half-width), the project's one t-interval: mean_ci's "t"
  method, the evaluation metrics of alignment/evaluate.py, alignment.report's pooled table and the bandit
  offline example's summary all compute it here.
- `aggregate`: group rows by some columns and summarise one metric per group (n, mean, median, CI).
- `select_last`: the last row (largest step) of each series, e.g. final value per run/sampler/seed.
- `convergence_order`, `iterations_to` (and FLOAT64_FLOOR): the order p in e_{t+1} ~ C e_t^p (1 linear,
  2 quadratic) and the first iteration under a tolerance, for an error series such as `param_diff`.
  They are bandit/rates.py's, re-exported: one definition for the bandit entry points' summaries and
  for analysis (bandit.rates is numpy only; importing it loads no torch and no simulation code).
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
from scipy import stats

from bandit.rates import FLOAT64_FLOOR, convergence_order, iterations_to  # noqa: F401 (re-exported)


def _finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def median(values) -> float:
    """Median of the finite values; NaN when there are none."""
    x = _finite(values)
    return float(np.median(x)) if x.size else float("nan")


def t_interval(values, level: float = 0.95, drop_nonfinite: bool = False) -> tuple[float, float]:
    """(mean, half-width) of the Student-t interval: half = t_{(1+level)/2, n-1} * s / sqrt(n), s the sample
    standard deviation (ddof=1). The half-width is NaN with fewer than 2 values, the mean NaN with none.

    drop_nonfinite=False (the default) keeps every value, so a NaN or infinite one makes the result
    non-finite instead of vanishing from it (an evaluation metric must not hide a bad value);
    drop_nonfinite=True leaves them out first, as mean_ci does for logs with divergence events.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if drop_nonfinite:
        x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return float("nan"), float("nan")
    with np.errstate(invalid="ignore"):   # inf - inf in the deviations: NaN, as documented
        m = float(x.mean())
        if n < 2:
            return m, float("nan")
        return m, float(stats.t.ppf((1.0 + level) / 2.0, n - 1) * x.std(ddof=1) / math.sqrt(n))


def mean_ci(values, method: str = "t", level: float = 0.95, n_boot: int = 2000,
            seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi) of the finite values.

    method="t": mean +- t_{(1+level)/2, n-1} * s / sqrt(n), s the sample standard deviation (ddof=1).
    method="bootstrap": percentile interval of `n_boot` resampled means, drawn with
    numpy.random.default_rng(seed), so the same inputs give the same interval.
    The interval is (nan, nan) with fewer than 2 values (no spread to estimate); the mean is NaN
    with none.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = _finite(values)
    n = x.size
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(x.mean())
    if n < 2:
        return m, float("nan"), float("nan")
    if method == "t":
        m, half = t_interval(x, level)
        return m, m - half, m + half
    if method == "bootstrap":
        rng = np.random.default_rng(seed)
        means = x[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
        alpha = (1.0 - level) / 2.0
        lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
        return m, float(lo), float(hi)
    raise ValueError(f"unknown method {method!r} (expected 't' or 'bootstrap')")


def _is_number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def aggregate(rows, by, metric: str, method: str = "t", level: float = 0.95, n_boot: int = 2000,
              seed: int = 0) -> list[dict]:
    """One summary per group of `rows` sharing the values of the `by` columns (first-seen order).

    Each summary holds the `by` values, `metric`, n (finite numeric values used), n_missing (rows
    of the group without a finite numeric value for `metric`, e.g. divergence events), mean,
    median, lo, hi. A row without a `by` column is grouped under None.
    """
    by = [by] if isinstance(by, str) else list(by)
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in by), []).append(row.get(metric))
    out = []
    for key, raw in groups.items():
        vals = [float(v) for v in raw if _is_number(v) and math.isfinite(v)]
        m, lo, hi = mean_ci(vals, method=method, level=level, n_boot=n_boot, seed=seed)
        out.append({**dict(zip(by, key)), "metric": metric, "n": len(vals), "n_missing": len(raw) - len(vals),
                    "mean": m, "median": median(vals), "lo": lo, "hi": hi})
    return out


def select_last(rows, by, step: str = "step", metric: str | None = None) -> list[dict]:
    """The row with the largest `step` in each `by` group (first-seen order), e.g. the final row of
    each (run, setting, sampler, seed). With `metric`, only rows holding a numeric `metric` count,
    so event rows (divergence markers) are not taken as the final value."""
    by = [by] if isinstance(by, str) else list(by)
    last: dict[tuple, dict] = {}
    for row in rows:
        if not _is_number(row.get(step)) or (metric is not None and not _is_number(row.get(metric))):
            continue
        key = tuple(row.get(k) for k in by)
        if key not in last or row[step] >= last[key][step]:
            last[key] = row
    return list(last.values())
