"""Alignment pipeline runs: per-iteration tables over seeds and the reward-vs-KL frontier.

Input: the tidy rows of one task (analysis.runs.Task.rows): one metrics.jsonl line per run and iteration with
`method`, `seed`, `iteration`, reward_mean / win_rate / kl and their reported 95% half-widths (*_ci).

The interval of a (method, iteration) cell is over the seeds' values (t or bootstrap, as chosen): training
noise included. With one seed there is no spread to estimate, so the cell falls back to that run's own
evaluation interval (value +- its reported *_ci, which covers evaluation sampling only) and says so in
`ci_source` ("seeds" or "eval").
alignment.report gives the other view: per-prompt values pooled over seeds (evaluations.jsonl).
"""
from __future__ import annotations

import math

from analysis.aggregate import mean_ci

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
