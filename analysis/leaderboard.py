"""Rank the samplers of every task by their final metrics, with confidence intervals and significance marks.

    python -m analysis.leaderboard runs/
    python -m analysis.leaderboard runs/bandit/offline/* --metric value_gap --ci bootstrap --csv board.csv

RUNS: run folders, folders holding them, or globs (analysis.runs explains how runs are grouped into tasks).
For each task (and bandit setting or env) and metric, every sampler's final value per seed -- the last step of
a bandit run, the last iteration of a pipeline run -- is summarised over its seeds: mean, 95% CI (t-interval,
or a seeded percentile bootstrap with --ci bootstrap), median. Samplers are ranked by the mean, best first.

Significance: each sampler is compared with the best-ranked one by a two-sided t-test, paired by seed when both
have at least two seeds in common (a bandit seed fixes the environment, so sampler A and B at seed s face the
same rewards), Welch's test otherwise; the p-values of a (task, metric) are Holm-adjusted for the number of
comparisons. A sampler marked "*" differs significantly from the best (adjusted p < --alpha); unmarked ones
cannot be told apart from it with these seeds. Diverged seeds (bandit) have no final value: counted, not ranked.

Default metrics: exact bandit settings iters_to_tol (iterations until param_diff <= 1e-8; a seed that never gets
there counts as its last step + 1) and param_diff -- their final values are rounding noise --; empirical settings
value_gap and param_diff; offline selection value_gap; all lower is better. Pipeline runs: reward_mean and
win_rate, higher is better. --metric NAME[:min|:max] picks others (the direction may be
left out for the known ones: value_gap, param_diff, kl, reward_mean, win_rate).
Output: Markdown on stdout (--format csv for CSV); --markdown PATH / --csv PATH also write files (atomically).
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from analysis.aggregate import iterations_to, mean_ci, median
from analysis.curves import TOL, seed_series
from analysis.runs import load_tasks
from runlog import ArgParser, ConfigError, atomic_write_text, check_out_file, exit_on_config_error

DIRECTIONS = {"value_gap": "min", "param_diff": "min", "kl": "min", "value": "max", "reward_mean": "max",
              "win_rate": "max"}
DIRECTIONS["iters_to_tol"] = "min"
# per (kind, section): exact bandit runs converge to rounding noise, so their final values do not rank anything;
# how fast they get there (iterations until param_diff <= 1e-8) does
DEFAULT_METRICS = {("tabular", "exact"): ("iters_to_tol", "param_diff"), ("linear", "exact"): ("iters_to_tol", "param_diff"),
                   "tabular": ("value_gap", "param_diff"), "linear": ("value_gap", "param_diff"),
                   "offline": ("value_gap",), "pipeline": ("reward_mean", "win_rate")}
CSV_FIELDS = ["task", "metric", "direction", "rank", "method", "n", "diverged", "at", "mean", "lo", "hi", "median",
              "test", "p", "p_holm", "significant"]


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str  # "min" or "max": which end is best

    @classmethod
    def parse(cls, text: str) -> "Metric":
        name, _, direction = text.partition(":")
        direction = direction or DIRECTIONS.get(name, "")
        if not name or direction not in ("min", "max"):
            known = ", ".join(DIRECTIONS)
            raise ConfigError(f"--metric: {text!r} needs a direction, NAME:min or NAME:max (known without one: {known})")
        return cls(name, direction)


def iters_to_tol(rows, tol: float = TOL) -> tuple[dict, dict, dict]:
    """Per method: {seed: first step with param_diff <= tol}; a seed that never gets there counts as its last
    step + 1 (censored: the true value is larger). Same return shape as final_values."""
    values: dict[str, dict] = {}
    diverged: dict[str, int] = {}
    by: dict[str, list] = {}
    for r in rows:
        by.setdefault(r["method"], []).append(r)
    for m, rs in by.items():
        series, diverged[m] = seed_series(rs, "param_diff")
        for seed, (steps, errors) in series.items():
            hit = iterations_to(errors, tol)
            values.setdefault(m, {})[seed] = float(steps[int(hit)]) if math.isfinite(hit) else float(steps[-1] + 1)
    return values, diverged, {m: (f"param_diff <= {tol:g}",) * 2 for m in values}


def final_values(rows, metric: str, step: str) -> tuple[dict, dict, dict]:
    """Per method: {seed: final value}, number of diverged seeds, and the (min, max) step of the final values."""
    if metric == "iters_to_tol":
        return iters_to_tol(rows)
    last: dict[tuple, tuple] = {}
    diverged: dict[str, set] = {}
    for r in rows:
        if r.get("event") == "diverged":
            diverged.setdefault(r["method"], set()).add(r.get("seed"))
            continue
        v, t = r.get(metric), r.get(step)
        if isinstance(v, (int, float)) and isinstance(t, (int, float)) and math.isfinite(v):
            key = (r["method"], r.get("seed"))
            if key not in last or t >= last[key][0]:
                last[key] = (t, float(v))
    values: dict[str, dict] = {}
    steps: dict[str, list] = {}
    for (m, seed), (t, v) in last.items():
        if seed in diverged.get(m, ()):
            continue
        values.setdefault(m, {})[seed] = v
        steps.setdefault(m, []).append(t)
    return values, {m: len(s) for m, s in diverged.items()}, {m: (min(s), max(s)) for m, s in steps.items()}


def compare(a: dict, b: dict) -> tuple[str, float]:
    """Two-sided p-value of "same mean" for two {seed: value} samples: paired by seed where >= 2 are shared."""
    common = sorted(set(a) & set(b), key=str)
    if len(common) >= 2:
        d = np.array([a[s] - b[s] for s in common])
        if np.all(d == 0):
            return "paired", 1.0
        return "paired", float(stats.ttest_rel([a[s] for s in common], [b[s] for s in common]).pvalue)
    if len(a) >= 2 and len(b) >= 2:
        return "welch", float(stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False).pvalue)
    return "", math.nan


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count as a comparison)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    out = list(pvalues)
    running = 0.0
    for k, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (len(idx) - k) * pvalues[i]))
        out[i] = running
    return out


def rank(values: dict[str, dict], metric: Metric, ci: str = "t", level: float = 0.95, alpha: float = 0.05) -> list[dict]:
    """Rows of one (task, metric) ranking from {method: {seed: final value}}, best first."""
    rows = []
    for m, by_seed in values.items():
        mean, lo, hi = mean_ci(list(by_seed.values()), method=ci, level=level)
        rows.append({"method": m, "n": len(by_seed), "mean": mean, "lo": lo, "hi": hi,
                     "median": median(list(by_seed.values()))})
    sign = 1.0 if metric.direction == "min" else -1.0
    rows.sort(key=lambda r: (math.isnan(r["mean"]), sign * r["mean"] if not math.isnan(r["mean"]) else 0.0))
    best = rows[0]["method"] if rows else None
    tests = [compare(values[best], values[r["method"]]) if r["method"] != best else ("", math.nan) for r in rows]
    adjusted = holm([p for _, p in tests])
    for i, (r, (test, p), p_adj) in enumerate(zip(rows, tests, adjusted), start=1):
        r |= {"rank": i, "metric": metric.name, "direction": metric.direction, "test": test, "p": p, "p_holm": p_adj,
              "significant": bool(p_adj < alpha) if not math.isnan(p_adj) else False}
    return rows


def _sections(task) -> list[tuple[str, list, tuple]]:
    """A task's rows split by bandit setting (tabular/linear) or env (offline), each with its default metrics;
    pipeline tasks are one section."""
    key = {"tabular": "setting", "linear": "setting", "offline": "env"}.get(task.kind)
    if key is None:
        return [(task.name, task.rows, DEFAULT_METRICS.get(task.kind, ()))]
    parts: dict = {}
    for r in task.rows:
        parts.setdefault(r.get(key), []).append(r)
    return [(f"{task.name} / {k}", rs, DEFAULT_METRICS.get((task.kind, k), DEFAULT_METRICS[task.kind]))
            for k, rs in parts.items()]


def leaderboard(tasks, metrics=None, ci: str = "t", level: float = 0.95, alpha: float = 0.05) -> list[dict]:
    """Ranking rows (CSV_FIELDS) of every task section and metric. `metrics`: Metric or "name[:dir]" strings;
    None uses each kind's DEFAULT_METRICS. Metrics a section does not log are left out of it."""
    chosen = None if metrics is None else [m if isinstance(m, Metric) else Metric.parse(m) for m in metrics]
    out = []
    for task in tasks:
        step = "iteration" if task.kind == "pipeline" else "step"
        for label, rows, defaults in _sections(task):
            for metric in chosen or [Metric.parse(m) for m in defaults]:
                values, diverged, at = final_values(rows, metric.name, step)
                if not values:
                    continue
                for r in rank(values, metric, ci=ci, level=level, alpha=alpha):
                    lo_at, hi_at = at[r["method"]]
                    where = lo_at if isinstance(lo_at, str) else f"final {step} {lo_at:g}" + (
                        f"..{hi_at:g}" if hi_at != lo_at else "")
                    r |= {"task": label, "diverged": diverged.get(r["method"], 0), "at": where}
                    out.append(r)
    return out


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def to_markdown(rows: list[dict], ci_label: str = "95% CI") -> str:
    """One Markdown table per (task, metric), best first; '*' marks a significant difference from rank 1."""
    lines = []
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["task"], r["metric"]), []).append(r)
    for (task, metric), rs in groups.items():
        better = "lower" if rs[0]["direction"] == "min" else "higher"
        lines += [f"### {task}: {metric} ({better} is better; {rs[0]['at']})", "",
                  f"| rank | method | mean [{ci_label}] | median | seeds | vs best: p (Holm) |",
                  "|---:|:---|:---|---:|---:|:---|"]
        for r in rs:
            seeds = f"{r['n']}" + (f" (+{r['diverged']} diverged)" if r["diverged"] else "")
            if r["rank"] == 1:
                vs = "best"
            elif math.isnan(r["p_holm"]):
                vs = "n/a (too few seeds)"
            else:
                vs = f"{_fmt(r['p_holm'])} ({r['test']})" + (" *" if r["significant"] else "")
            lines.append(f"| {r['rank']} | {r['method']} | {_fmt(r['mean'])} [{_fmt(r['lo'])}, {_fmt(r['hi'])}] | "
                         f"{_fmt(r['median'])} | {seeds} | {vs} |")
        lines.append("")
    if rows:
        lines.append("\\* significantly different from rank 1 (two-sided t-test, paired by seed where possible, "
                     "Holm-adjusted over the comparisons of the table).")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if isinstance(r.get(k), float) and math.isnan(r[k]) else r.get(k)) for k in CSV_FIELDS})
    return buf.getvalue()


def build_parser() -> ArgParser:
    p = ArgParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUNS", help="run folders, folders holding them, or globs")
    p.add_argument("--metric", action="append", metavar="NAME[:min|:max]",
                   help="metric to rank by (repeatable); default: per kind, see below")
    p.add_argument("--ci", choices=("t", "bootstrap"), default="t", help="confidence interval (default t)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the interval (default 0.95)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the marks (default 0.05)")
    p.add_argument("--format", choices=("markdown", "csv"), default="markdown", help="what stdout gets")
    p.add_argument("--markdown", metavar="PATH", help="also write the Markdown tables here")
    p.add_argument("--csv", metavar="PATH", help="also write the CSV here")
    p.add_argument("--strict", action="store_true", help="a malformed log line is an error (default: a warning)")
    return p


@exit_on_config_error
def main(argv=None) -> list[dict]:
    args = build_parser().parse_args(argv)
    if not 0.0 < args.level < 1.0:
        raise ConfigError(f"--level: must be in (0, 1), got {args.level}")
    if not 0.0 < args.alpha < 1.0:
        raise ConfigError(f"--alpha: must be in (0, 1), got {args.alpha}")
    metrics = None if args.metric is None else [Metric.parse(m) for m in args.metric]
    for flag, path in (("--markdown", args.markdown), ("--csv", args.csv)):
        if path is not None:
            check_out_file(path, flag)
    tasks, problems = load_tasks(args.runs)
    missing = [p for p in problems if p.line is None and "no run folder" in p.reason]
    if missing:
        raise ConfigError(f"RUNS: {missing[0].file!r}: no run folder (run.json + metrics.jsonl) found")
    if problems and args.strict:
        raise ConfigError(f"malformed log: {problems[0]}")
    for p in problems:
        print(f"warning: {p}", file=sys.stderr)
    for task in tasks:
        for note in task.notes:
            print(f"note: {note}", file=sys.stderr)
    if not tasks:
        raise ConfigError("RUNS: no bandit (tabular, linear, offline) or alignment pipeline run found")
    rows = leaderboard(tasks, metrics, ci=args.ci, level=args.level, alpha=args.alpha)
    if not rows:
        names = ", ".join(m.name for m in metrics or [])
        raise ConfigError(f"--metric: no run logs {names}")
    label = f"{args.level:.0%} CI" + (" (bootstrap)" if args.ci == "bootstrap" else "")
    markdown, table = to_markdown(rows, label), to_csv(rows)
    if problems:  # the table says what it does not cover; each one is a warning line above
        markdown += f"\n{len(problems)} malformed or empty log(s) left out (see the warnings).\n"
    if args.markdown:
        atomic_write_text(args.markdown, markdown)
    if args.csv:
        atomic_write_text(args.csv, table)
    sys.stdout.write(markdown if args.format == "markdown" else table)
    return rows


if __name__ == "__main__":
    main()
