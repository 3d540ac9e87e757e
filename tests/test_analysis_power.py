"""The toy comparison's statistics (issue 15): the minimum detectable paired difference, against closed forms and a
known table value, and matched-KL interpolation, against hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.matched_kl import matched_kl_table, reward_at_kl
from analysis.power import min_detectable_difference, paired_mdd, paired_power


def test_power_matches_the_published_table_value_and_the_level_at_zero():
    # pwr.t.test(n = 10, d = 1, sig.level = 0.05, type = "paired") in R's pwr package: power = 0.8030969
    assert paired_power(1.0, 10, 1.0) == pytest.approx(0.8030969, abs=1e-6)
    assert paired_power(0.0, 10, 1.0) == pytest.approx(0.05, abs=1e-9)  # no difference: rejects at the level
    assert paired_power(2.0, 10, 2.0) == pytest.approx(paired_power(1.0, 10, 1.0))  # only delta / sd matters


def test_power_where_scipys_noncentral_t_gives_nan_still_agrees_with_monte_carlo():
    """df 9, nc ~7, level 0.05 / 6: scipy's nct.sf is NaN there; the integral must agree with simulation."""
    delta, n, level = 2.2008684125886497, 10, 0.05 / 6
    rng = np.random.default_rng(0)
    d = rng.normal(delta, 1.0, size=(200_000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    simulated = float(np.mean(np.abs(t) > stats.t.ppf(1 - level / 2, n - 1)))
    assert paired_power(delta, n, 1.0, level) == pytest.approx(simulated, abs=0.002)


def test_mdd_tends_to_the_normal_closed_form_and_is_where_the_power_is_80_percent():
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)  # 2.8016 by the normal approximation, exact as n grows
    assert min_detectable_difference(10**6, 1.0) * 1000 == pytest.approx(z, rel=1e-4)
    for n, sd in ((3, 0.7), (10, 1.0), (30, 0.25)):
        mdd = min_detectable_difference(n, sd)
        assert paired_power(mdd, n, sd) == pytest.approx(0.8, abs=1e-9)
        assert mdd > z * sd / math.sqrt(n)  # the t-test needs more than the normal test at small n
    # with 6 Holm comparisons the first is tested at 0.05 / 6: a larger difference is needed
    assert min_detectable_difference(10, 1.0, comparisons=6) > min_detectable_difference(10, 1.0)
    assert min_detectable_difference(10, 0.0) == 0.0 and math.isnan(min_detectable_difference(1, 1.0))


def test_paired_mdd_uses_the_sd_of_the_per_seed_differences():
    a = {s: float(s) + 0.5 * (-1) ** s for s in range(10)}  # per-seed differences alternate +1 and -1
    b = {s: float(s) - 0.5 * (s % 2 == 0) + 0.5 * (s % 2 == 1) for s in range(10)}
    d = np.array([a[s] - b[s] for s in range(10)])
    assert paired_mdd(a, b) == pytest.approx(min_detectable_difference(10, float(d.std(ddof=1))))
    assert math.isnan(paired_mdd({0: 1.0}, {0: 2.0}))


def test_reward_at_kl_interpolates_along_the_path_by_hand():
    kl, r = [0.0, 1.0, 3.0], [0.0, 2.0, 3.0]
    assert reward_at_kl(kl, r, 0.5) == pytest.approx(1.0)    # halfway along the first segment: 0 + 0.5 * 2
    assert reward_at_kl(kl, r, 2.0) == pytest.approx(2.5)    # 2 + (2 - 1) / (3 - 1) * (3 - 2)
    assert reward_at_kl(kl, r, 3.0) == pytest.approx(3.0)
    assert reward_at_kl(kl, r, 0.0) == pytest.approx(0.0)    # the reference itself
    assert math.isnan(reward_at_kl(kl, r, 4.0))              # never reached: no value, not extrapolated
    # a path whose KL dips: the first segment to reach the budget counts
    kl, r = [0.0, 2.0, 1.0, 4.0], [0.0, 1.0, 5.0, 2.0]
    assert reward_at_kl(kl, r, 1.5) == pytest.approx(0.75)   # on 0 -> 2: 1.5 / 2 * 1
    assert reward_at_kl(kl, r, 3.0) == pytest.approx(3.0)    # on 1 -> 4: 5 + (3 - 1) / 3 * (2 - 5)


def test_matched_kl_table_means_over_the_seeds_that_reach_the_budget_with_a_t_interval():
    paths = {"mix_p": {0: ([0, 1, 2], [0, 1, 2]), 1: ([0, 1, 2], [0, 3, 4]), 2: ([0, 0.5], [0, 9])}}
    [row] = matched_kl_table(paths, [1.0])
    assert row["reached"] == 2 and row["seeds"] == 3 and row["values"] == {0: 1.0, 1: 3.0}
    half = stats.t.ppf(0.975, 1) * math.sqrt(2) / math.sqrt(2)  # values 1 and 3: sd sqrt(2), n 2
    assert row["reward"] == pytest.approx(2.0) and row["hi"] - row["reward"] == pytest.approx(half)
