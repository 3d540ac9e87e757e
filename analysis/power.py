"""Statistical power of a paired comparison over seeds: the minimum detectable difference (issue 15).

A sampler comparison pairs its runs by seed (same SFT policy, reward model and prompts for every sampler of a
seed), so the test is the paired t-test on the per-seed differences d_s = a_s - b_s, with n seeds and standard
deviation sd of the d_s. Its power for a true mean difference delta is exact under normal differences:

    power(delta) = P(|T'| > t_{1-alpha/2, n-1}),   T' ~ noncentral t(df = n - 1, nc = delta * sqrt(n) / sd)

and the minimum detectable difference (MDD) is the delta where the power reaches the target (80% by default).
For large n it tends to (z_{1-alpha/2} + z_{power}) * sd / sqrt(n) = 2.80 sd / sqrt(n) at 5% and 80%.
With m comparisons Holm-adjusted, the first (strictest) one is tested at alpha / m: `comparisons=m` gives the
MDD at that level, the conservative figure for a table of m sampler pairs.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import integrate, optimize, stats


def paired_power(delta: float, n: int, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level alpha, n pairs, differences N(delta, sd^2)."""
    if n < 2 or not sd > 0:
        return float("nan")
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = delta * math.sqrt(n) / sd
    p = stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc)  # the upper tail, and the lower by symmetry
    if math.isfinite(p):
        return float(p)
    # scipy's nct returns NaN in parts of the range (e.g. df 9, nc 7, at the 0.4% level): then the definition,
    # T' = (Z + nc) / sqrt(V / df) with Z normal and V chi-square(df), integrated over V's quantiles u in (0, 1)
    # (over u rather than V, so that the integral sees V's mass for any df)
    def rejects(u):
        c = crit * math.sqrt(stats.chi2.ppf(u, df) / df)
        return stats.norm.sf(c - nc) + stats.norm.cdf(-c - nc)

    return float(min(1.0, integrate.quad(rejects, 0.0, 1.0, epsabs=1e-12, limit=200)[0]))


def min_detectable_difference(n: int, sd: float, alpha: float = 0.05, power: float = 0.8,
                              comparisons: int = 1) -> float:
    """The smallest true paired difference the two-sided paired t-test detects with probability `power` at level
    alpha / comparisons, for n seeds and a per-seed difference standard deviation sd. NaN for n < 2 or sd NaN;
    0 for sd == 0 (every difference is detected)."""
    if n < 2 or not math.isfinite(sd) or sd < 0:
        return float("nan")
    if sd == 0:
        return 0.0
    level = alpha / comparisons
    # the power grows with delta from `level` at 0 to 1: bracket by the normal approximation, doubled until past
    high = (stats.norm.ppf(1 - level / 2) + stats.norm.ppf(power)) * sd / math.sqrt(n)
    while paired_power(high, n, sd, level) < power:
        high *= 2
    return float(optimize.brentq(lambda d: paired_power(d, n, sd, level) - power, 0.0, high, xtol=1e-12 * sd))


def paired_mdd(a: dict, b: dict, alpha: float = 0.05, power: float = 0.8, comparisons: int = 1) -> float:
    """The MDD of comparing two {seed: value} samples paired by their shared seeds, with the sd of their
    per-seed differences as measured (the run's own figure, as toy.sh prints it)."""
    common = sorted(set(a) & set(b), key=str)
    d = np.array([a[s] - b[s] for s in common], dtype=np.float64)
    if d.size < 2:
        return float("nan")
    return min_detectable_difference(d.size, float(d.std(ddof=1)), alpha, power, comparisons)
