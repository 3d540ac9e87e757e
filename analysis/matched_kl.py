"""Comparing samplers at matched KL (issue 15): samplers move away from pi_ref at different speeds, so the samplers
paper compares reward at equal KL(pi || pi_ref), not at equal iteration.

Each run is a path of (kl, reward) points, one per iteration, starting at the reference (kl 0, its reward). The
reward at a KL budget b is read off the path by linear interpolation between the two iterations whose KL brackets
b, on the path up to where it first reaches b (a later dip of the KL does not give the run a second reading);
a run that never reaches b has no value there (NaN), and is counted as such, not extrapolated. Over seeds: the mean
reward at each budget with its t-interval (the reward-KL frontier with its CI), and per-seed values that pair by
seed for analysis.leaderboard's paired, Holm-adjusted tests.
"""
from __future__ import annotations

import math

import numpy as np

from analysis.aggregate import t_interval


def reward_at_kl(kl, reward, budget: float) -> float:
    """Reward of one run at KL `budget`, by linear interpolation along its path (kl[i], reward[i]) in iteration
    order; NaN when the path never reaches the budget. The path's first point is usually the reference (kl 0)."""
    kl = np.asarray(kl, dtype=np.float64)
    reward = np.asarray(reward, dtype=np.float64)
    if kl.shape != reward.shape or kl.ndim != 1:
        raise ValueError(f"kl and reward must be 1-D of one length, got {kl.shape} and {reward.shape}")
    ok = np.isfinite(kl) & np.isfinite(reward)
    kl, reward = kl[ok], reward[ok]
    if kl.size == 0 or not math.isfinite(budget):
        return float("nan")
    if budget <= kl[0]:  # the start is already at or past the budget: its own reward (exact at kl[0] == budget)
        return float(reward[0]) if budget == kl[0] else float("nan")
    for i in range(1, kl.size):
        if kl[i] >= budget:  # the first segment that reaches the budget
            k0, k1, r0, r1 = kl[i - 1], kl[i], reward[i - 1], reward[i]
            if k1 == k0:
                return float(r1)
            return float(r0 + (budget - k0) / (k1 - k0) * (r1 - r0))
    return float("nan")


def matched_kl_table(paths: dict, budgets, level: float = 0.95) -> list[dict]:
    """{method: {seed: (kl list, reward list)}} -> one row per (method, budget): mean reward over the seeds that
    reach the budget, its t-interval, how many seeds reached it, and the per-seed values ({seed: reward}) for
    paired tests."""
    rows = []
    for method in sorted(paths):
        for b in budgets:
            per_seed = {s: reward_at_kl(kl, r, b) for s, (kl, r) in paths[method].items()}
            reached = {s: v for s, v in per_seed.items() if math.isfinite(v)}
            mean, half = t_interval(list(reached.values()))
            rows.append({"method": method, "kl_budget": float(b), "reward": mean, "lo": mean - half,
                         "hi": mean + half, "seeds": len(per_seed), "reached": len(reached), "values": reached})
    return rows
