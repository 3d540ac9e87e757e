"""Every paper figure (PNG and PDF) and table from the run logs, with a list of what was made and what was skipped.

    python paper_figures/make_all.py --runs runs/ --out paper_figures/out/ [--only NAME,NAME]

Loads the logs once (analysis.runs.load_tasks), runs each figure module's make() (paper_figures.FIGURES), and
writes the tables into OUT/tables/: convergence.md/.csv (analysis.curves.convergence_table of every tabular and
linear task), alignment_iterations.md/.csv (analysis.iterations.iteration_table of every pipeline task, the
reward-KL frontier cells marked) and leaderboard.md/.csv (analysis.leaderboard). A figure whose logs do not exist
is skipped and the list says which command produces them; malformed log lines are warnings (file:line).
--only takes figure names and "tables". Exit 0 when the run succeeded (skips included), 1 when a figure failed,
2 on bad input (nothing written).
"""
from __future__ import annotations

import csv
import importlib
import inspect
import io
import math
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from paper_figures import FIGURES, common
from runlog import ConfigError, atomic_write_text, exit_on_config_error

TABLES = "tables"
BANDIT_COMMAND = "python bandit/examples/tabular.py and python bandit/examples/linear.py"
PIPELINE_COMMAND = "bash alignment/toy.sh (or bash alignment/toy_selection.sh)"


@dataclass
class Report:
    made: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (figure or table, reason with the command)
    failed: list[tuple[str, str]] = field(default_factory=list)    # (figure, error)
    notes: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)              # malformed or empty logs not used (file: why)


def parse_only(text: str | None) -> list[str]:
    """--only NAME,NAME -> the figure names (and "tables") in make_all's order; everything when not given."""
    known = list(FIGURES) + [TABLES]
    if text is None:
        return known
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(f"--only: unknown name {', '.join(map(repr, unknown)) or repr(text)}; known: "
                          f"{', '.join(known)}")
    return [n for n in known if n in names]


# ------------------------------------------------------------------------------------------------- tables

def _csv(rows: list[dict]) -> str:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()})
    return buf.getvalue()


def _interval(row: dict, metric: str) -> str:
    lo, hi = common.fmt(row.get(f"{metric}_lo")), common.fmt(row.get(f"{metric}_hi"))
    return f"{common.fmt(row.get(metric))} [{lo}, {hi}]"


def convergence_rows(tasks) -> list[dict]:
    from analysis.curves import convergence_table

    out = []
    for t in sorted((t for t in tasks if t.kind in ("tabular", "linear")), key=lambda t: t.name):
        rows = convergence_table(t.rows)
        rows.sort(key=lambda r: (["exact", "empirical"].index(r["setting"]) if r["setting"] in ("exact", "empirical")
                                 else 2, common.sampler_key(r["method"])))
        out += [{"task": t.name, **r} for r in rows]
    return out


def convergence_markdown(rows: list[dict]) -> str:
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        tol = next(r["tol"] for r in rows if r["task"] == task)
        lines += [f"### {task}", "",
                  "| setting | method | seeds | diverged | order (median) | quadratic | "
                  f"iterations to {tol:g} (median) | reached |", "|:---|:---|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in rows if r["task"] == task):
            iters = r["iters_to_tol_median"]
            iters = "not reached" if iters == math.inf else common.fmt(iters)
            quad = "n/a" if math.isnan(r["quadratic_fraction"]) else f"{r['quadratic_fraction']:.0%}"
            lines.append(f"| {r['setting']} | {r['method']} | {r['seeds']} | {r['diverged']} | "
                         f"{common.fmt(r['order_median'])} ({r['fitted_seeds']} fitted) | {quad} | {iters} | "
                         f"{r['reached_tol']}/{r['seeds']} |")
        lines.append("")
    lines.append("order: fitted convergence order of param_diff (1 linear, 2 quadratic), median over the seeds with "
                 "a fit; quadratic: share of seeds with order >= 1.8; reached: seeds with param_diff <= the tolerance.")
    return "\n".join(lines) + "\n"


def iteration_rows(tasks) -> list[dict]:
    from analysis.iterations import frontier, iteration_table

    out = []
    for t in sorted((t for t in tasks if t.kind == "pipeline"), key=lambda t: t.name):
        table = iteration_table(t.rows)
        front = {id(r) for r in frontier(table)}
        table.sort(key=lambda r: (common.sampler_key(r["method"]), r["iteration"]))
        out += [{"task": t.name, **r, "frontier": id(r) in front} for r in table]
    return out


def iteration_markdown(rows: list[dict]) -> str:
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        lines += [f"### {task}", "", "| method | iteration | seeds | true reward [95% CI] | win rate [95% CI] | "
                  "KL [95% CI] | CI | frontier |", "|:---|---:|---:|:---|:---|:---|:---|:---:|"]
        for r in (r for r in rows if r["task"] == task):
            lines.append(f"| {r['method']} | {r['iteration']} | {r['seeds']} | {_interval(r, 'reward_mean')} | "
                         f"{_interval(r, 'win_rate')} | {_interval(r, 'kl')} | {r['ci_source']} | "
                         f"{'**yes**' if r['frontier'] else ''} |")
        lines.append("")
    lines.append("CI: seeds = 95% t-interval over the seeds' values; eval = one seed, that run's evaluation CI. "
                 "frontier: no other cell of the task has at most its KL and at least its reward.")
    return "\n".join(lines) + "\n"


def write_tables(tasks, folder: Path, report: Report) -> None:
    def write(stem: str, markdown: str, table: str) -> None:
        for suffix, text in ((".md", markdown), (".csv", table)):
            atomic_write_text(folder / f"{stem}{suffix}", text)
            report.made.append(folder / f"{stem}{suffix}")

    rows = convergence_rows(tasks)
    if rows:
        write("convergence", convergence_markdown(rows), _csv(rows))
    else:
        report.skipped.append((f"{TABLES}/convergence", str(common.MissingLogs(
            "no tabular or linear bandit run", BANDIT_COMMAND))))
    rows = iteration_rows(tasks)
    if rows:
        write("alignment_iterations", iteration_markdown(rows), _csv(rows))
    else:
        report.skipped.append((f"{TABLES}/alignment_iterations", str(common.MissingLogs(
            "no alignment pipeline run", PIPELINE_COMMAND))))
    from analysis.leaderboard import leaderboard, to_csv, to_markdown

    rows = leaderboard(tasks, metrics=None, ci="t")
    if rows:
        write("leaderboard", to_markdown(rows), to_csv(rows))
    else:
        report.skipped.append((f"{TABLES}/leaderboard", str(common.MissingLogs(
            "no bandit or alignment pipeline run", f"{BANDIT_COMMAND}, or {PIPELINE_COMMAND}"))))


# ------------------------------------------------------------------------------------------------- main

def make_all(tasks, out_dir, only=None, runs=None) -> Report:
    """Run the chosen figures' make() and the tables on loaded tasks; never raises for a figure's failure.
    A figure whose make() takes `runs` (alpha_p: its study's runs are no analysis task) also gets the runs folder."""
    report = Report()
    out_dir = Path(out_dir)
    for name in only or list(FIGURES) + [TABLES]:
        if name == TABLES:
            write_tables(tasks, out_dir / TABLES, report)
            continue
        module = importlib.import_module(f"paper_figures.{name}")
        try:
            extra = {"runs": runs} if "runs" in inspect.signature(module.make).parameters else {}
            report.made += module.make(tasks, out_dir, notes=report.notes, **extra)
        except common.MissingLogs as e:
            report.skipped.append((name, str(e)))
        except Exception as e:  # one broken figure must not cost the others
            report.failed.append((name, f"{type(e).__name__}: {e}"))
            traceback.print_exc(file=sys.stderr)
    return report


def print_report(report: Report, file=None) -> None:
    file = file or sys.stdout
    print(f"made ({len(report.made)} files):", file=file)
    for p in report.made:
        print(f"  {p}", file=file)
    print(f"skipped ({len(report.skipped)}):" + ("" if report.skipped else " nothing"), file=file)
    for name, reason in report.skipped:
        print(f"  {name}: {reason}", file=file)
    if report.left_out:
        print(f"left out ({len(report.left_out)} malformed or empty logs):", file=file)
        for p in report.left_out:
            print(f"  {p}", file=file)
    if report.notes:
        print("notes:", file=file)
        for n in report.notes:
            print(f"  {n}", file=file)
    if report.failed:
        print(f"failed ({len(report.failed)}):", file=file)
        for name, err in report.failed:
            print(f"  {name}: {err}", file=file)


def build_parser():
    parser = common.build_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--only", metavar="NAME,NAME",
                        help=f"make only these (comma-separated): {', '.join(FIGURES)}, {TABLES}")
    return parser


@exit_on_config_error
def main(argv=None) -> Report:
    args = build_parser().parse_args(argv)
    only = parse_only(args.only)
    common.check_paths(args)
    tasks, problems = common.load_checked(args)
    common.print_warnings(problems, tasks)
    if not tasks:
        print(f"warning: no bandit or alignment pipeline run under {args.runs}", file=sys.stderr)
    report = make_all(tasks, Path(args.out), only, runs=args.runs)
    report.left_out = [str(p) for p in problems]
    print_report(report)
    if report.failed:
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
