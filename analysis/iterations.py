"""Alignment pipeline runs: per-iteration tables over seeds and the reward-vs-KL frontier.

Input: the tidy rows of one task (analysis.runs.Task.rows): one metrics.jsonl line per run and iteration with
`method`, `seed`, `iteration`, reward_mean / win_rate / kl and their reported 95% half-widths (*_ci).

The interval of a (method, iteration) cell is over the seeds' values (t or bootstrap, as chosen): training
noise included. With one seed there is no spread to estimate, so the cell falls back to that run's own
evaluation interval (value +- its reported *_ci, which covers evaluation sampling only) and says so in
`ci_source` ("seeds" or "eval").
`pooled_cell` gives the other view, alignment.report's: the per-prompt values of every seed's evaluation
(iter_T/evaluate/evaluations.jsonl) pooled into one t-interval, with a fallback where a seed lacks them.
"""
from __future__ import annotations

import math

from analysis.aggregate import mean_ci, t_interval

# metric column -> the column holding its reported 95% half-width in metrics.jsonl
METRICS = {"reward_mean": "reward_ci", "win_rate": "win_rate_ci", "kl": "kl_ci"}


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def iteration_table(rows, metrics=tuple(METRICS), method: str = "t", level: float = 0.95) -> list[dict]:
    """One dict per (method, iteration), sorted by method (first-seen) then iteration: `seeds`, and for each
    metric M: M (mean over seeds), M_lo, M_hi, M_n; `ci_source` "seeds" (>= 2 seeds) or "eval" (one seed)."""
    groups: dict[tuple, list] = {}
    for r in rows:
        if _num(r.get("iteration")):
            groups.setdefault((r["method"], int(r["iteration"])), []).append(r)
    order = list(dict.fromkeys(m for m, _ in groups))
    out = []
    for (m, it) in sorted(groups, key=lambda k: (order.index(k[0]), k[1])):
        rs = groups[(m, it)]
        row = {"method": m, "iteration": it, "seeds": len({r.get("seed") for r in rs}),
               "ci_source": "seeds" if len(rs) > 1 else "eval"}
        for metric in metrics:
            vals = [float(r[metric]) for r in rs if _num(r.get(metric))]
            mean, lo, hi = mean_ci(vals, method=method, level=level)
            if len(vals) == 1:
                half = rs[0].get(METRICS.get(metric, ""), math.nan)
                half = float(half) if _num(half) else math.nan
                lo, hi = mean - half, mean + half
            row |= {metric: mean, f"{metric}_lo": lo, f"{metric}_hi": hi, f"{metric}_n": len(vals)}
        out.append(row)
    return out


def frontier(table, x: str = "kl", y: str = "reward_mean") -> list[dict]:
    """The reward-vs-KL Pareto frontier of a per-iteration table: the cells no other cell beats on both counts
    (at most the KL and at least the reward, one of them strictly), sorted by KL."""
    pts = [r for r in table if _num(r.get(x)) and _num(r.get(y))]
    front = [p for p in pts if not any(q[x] <= p[x] and q[y] >= p[y] and (q[x] < p[x] or q[y] > p[y]) for q in pts)]
    return sorted(front, key=lambda r: (r[x], -r[y]))


def final_rows(rows) -> list[dict]:
    """Each run's last iteration (the largest `iteration` of each (method, seed))."""
    last: dict[tuple, dict] = {}
    for r in rows:
        if not _num(r.get("iteration")):
            continue
        key = (r["method"], r.get("seed"))
        if key not in last or r["iteration"] > last[key]["iteration"]:
            last[key] = r
    return list(last.values())


def pooled_cell(members, metrics, level: float = 0.95) -> dict:
    """One (method, iteration) cell over its seeds, from the per-prompt values pooled across the seeds.

    members: one (metrics row, per-prompt values or None) per seed, where per-prompt values are
    {field: [value per prompt]} (an evaluations.jsonl) and the metrics row holds the seed's reported mean and
    95% half-width. metrics: one (name, mean key, CI key, per-prompt field) per metric.

    Returns ci_method, n and, per metric name, name (mean), name_ci (half-width), name_seed_min/_max (the
    range of the seeds' own means; NaN if one of them is NaN):
    - every seed has per-prompt values: ci_method "pooled", n = seeds x prompts (the first metric's values),
      mean and t-interval (t_interval, `level`) of all of them pooled, seed means of each seed's values;
    - otherwise: ci_method "seed_ci", n = the sum of the rows' num_prompts (None if one lacks it), mean =
      the mean of the k seeds' reported means, CI = sqrt(sum ci^2) / k (the half-width of the mean of k
      independent means), seed means the reported ones.
    """
    rows = [row for row, _ in members]
    evals = [e for _, e in members]
    pooled = all(e is not None for e in evals)
    k = len(members)
    out = {"ci_method": "pooled" if pooled else "seed_ci"}
    if pooled:
        out["n"] = sum(len(e[metrics[0][3]]) for e in evals)
    else:
        counts = [row.get("num_prompts") for row in rows]
        out["n"] = sum(counts) if all(_number(c) for c in counts) else None
    for name, mean_key, ci_key, field in metrics:
        if pooled:
            mean, ci = t_interval([x for e in evals for x in e[field]], level)
            seed_means = [t_interval(e[field])[0] for e in evals]
        else:
            seed_means = [row[mean_key] for row in rows]
            mean = math.fsum(seed_means) / k
            ci = math.sqrt(math.fsum(row[ci_key] ** 2 for row in rows)) / k
        out[name], out[name + "_ci"] = mean, ci
        out[name + "_seed_min"], out[name + "_seed_max"] = min(seed_means), max(seed_means)
        if any(math.isnan(x) for x in seed_means):
            out[name + "_seed_min"] = out[name + "_seed_max"] = math.nan
    return out


def _number(v) -> bool:
    """An int or float, not a bool (NaN and inf count: a count is checked, not its finiteness)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)
