"""Sampler comparisons with the seed as the unit of replication (issue 15).

For one seed every sampler starts from the same SFT policy and reward model, trains on the same prompts in each
iteration and is evaluated on the same prompts with the same evaluation seed (alignment.pipeline's stage seeds),
so two samplers' runs pair by seed: the comparison is the paired t-test on the per-seed differences of each seed's
own mean (analysis.leaderboard.compare), Holm-adjusted over every pair of samplers in the table
(analysis.leaderboard.holm), with its minimum detectable difference (analysis.power) at the run's own spread.
Intervals are t-intervals over seeds (analysis.aggregate.t_interval), not over the pooled evaluation prompts:
seed-to-seed training variance is what decides whether a difference is real.
"""
from __future__ import annotations

import math
import warnings
from itertools import combinations

import numpy as np

from analysis.aggregate import t_interval
from analysis.leaderboard import compare, holm
from analysis.power import paired_mdd

ALPHA = 0.05
POWER = 0.8


def paired_differences(values: dict, order=None, alpha: float = ALPHA, power: float = POWER) -> list[dict]:
    """Every pair (a, b) of {sampler: {seed: value}}, a before b in `order` (default: sorted), as rows:
    a, b, seeds (shared), diff (mean of a_s - b_s), diff_ci (95% t half-width over seeds), p (paired t-test),
    p_holm (Holm over all the pairs), significant (p_holm < alpha), mdd (the minimum detectable paired
    difference at `power` and level alpha, with the measured sd of the differences) and mdd_holm (the same at
    Holm's strictest level alpha / pairs)."""
    names = list(order) if order is not None else sorted(values)
    names = [n for n in names if n in values]
    pairs = list(combinations(names, 2))
    rows = []
    for a, b in pairs:
        common = sorted(set(values[a]) & set(values[b]), key=str)
        d = np.array([values[a][s] - values[b][s] for s in common], dtype=np.float64)
        diff, half = t_interval(d) if d.size else (math.nan, math.nan)
        with warnings.catch_warnings():  # nearly constant differences: scipy warns, its p-value still stands
            warnings.simplefilter("ignore", RuntimeWarning)
            how, p = compare(values[a], values[b])
        if how != "paired":  # fewer than 2 shared seeds: no paired test (a Welch test would not be paired)
            p = math.nan
        rows.append({"a": a, "b": b, "seeds": len(common), "diff": diff, "diff_ci": half, "p": p,
                     "mdd": paired_mdd(values[a], values[b], alpha, power),
                     "mdd_holm": paired_mdd(values[a], values[b], alpha, power, comparisons=max(len(pairs), 1))})
    for row, adjusted in zip(rows, holm([r["p"] for r in rows])):
        row["p_holm"] = adjusted
        row["significant"] = bool(adjusted < alpha) if math.isfinite(adjusted) else False
    return rows


def verdict(row: dict) -> str:
    """What a paired row supports: a direction after Holm, or no detectable difference at this power."""
    if not math.isfinite(row["p_holm"]):
        return "too few shared seeds to test"
    if row["significant"]:
        better, worse = (row["a"], row["b"]) if row["diff"] > 0 else (row["b"], row["a"])
        return f"{better} > {worse}"
    return "no detectable difference at this power"


def kl_budgets(final_kl: dict, fractions=(0.25, 0.5, 0.75, 1.0)) -> list[float]:
    """Default matched-KL budgets: fractions of the smallest sampler mean of the final iteration's KL (so that most
    seeds of every sampler reach them), rounded down to two significant digits to read well in a table."""
    finite = [v for v in final_kl.values() if math.isfinite(v) and v > 0]
    if not finite:
        return []
    top = min(finite)
    out = []
    for f in fractions:
        b = f * top
        step = 10.0 ** (math.floor(math.log10(b)) - 1)
        b = float(f"{math.floor(b / step + 1e-9) * step:.2g}")  # rounded down: the smallest sampler still reaches it
        if b > 0 and b not in out:
            out.append(b)
    return out
