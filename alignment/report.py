"""Report of pipeline runs: a sampler x iteration table of reward, win rate and KL, and a reward-vs-KL figure.

    python -m alignment.report runs/alignment/pipeline
    python -m alignment.report runs/toy/on_policy-seed0 runs/toy/mix_p-seed0 ... --figure runs/toy/reward_vs_kl.png \\
        --csv runs/toy/report.csv --markdown runs/toy/report.md

Runs: each argument is a pipeline run folder (alignment.pipeline's OUT: metrics.jsonl and pipeline.json), or a
folder whose subfolders, or their subfolders (one or two levels down), are such runs. Runs are grouped by
(sampler, iteration) over their seeds; sampler and seed come from pipeline.json. Two runs with the same sampler
and seed are an error (one seed would count twice).

Numbers, per sampler and iteration, for the true reward, the win rate against the reference and KL(pi || pi_ref):
    mean +- CI   the per-prompt values of every seed (iter_T/evaluate/evaluations.jsonl) pooled, n = seeds x
                 prompts, and mean +- t_{0.975, n-1} * sd / sqrt(n): a 95% interval of the evaluation sampling
                 (prompts and responses). It does not contain the seed-to-seed variance of training, so the
                 table also gives
    seed range   min..max over the seeds of each seed's own mean, and the number of seeds: with 2 or 3 seeds a
                 between-seed t-interval would be uninformative (t_{0.975,1} = 12.7), the range shows the spread.
    fallback     where a seed lacks evaluations.jsonl, the group's mean is the mean of the seeds' means and its
                 CI combines the seeds' reported 95% half-widths (metrics.jsonl *_ci) as sqrt(sum ci^2) / k,
                 the half-width of the mean of k independent means; such rows are marked '*'.
Iteration 0 is the initial policy (pi = pi_ref, KL 0), evaluated by each run.

Over seeds (the seed is the unit of replication; analysis.seed_comparison), after the table:
    over seeds   reward and KL per sampler and iteration as the mean of the seeds' own means +- the 95% t-interval
                 over the seeds
    paired       for the last iteration every sampler reached, each pair of samplers' true-reward difference,
                 paired by seed (same SFT policy, prompts and evaluation seed), its t-interval over seeds, the
                 paired t-test's p, Holm-adjusted over the pairs, the minimum detectable difference (MDD, 80%
                 power at 5%, from the measured spread of the differences), and the verdict: a direction only
                 where the Holm-adjusted test supports it, else "no detectable difference at this power"
    matched KL   the reward at KL budgets (--kl-budgets), interpolated along each seed's per-iteration path
                 (analysis.matched_kl), over the seeds that reach the budget, and its paired tests

Outputs: the table on stdout (plain text); --markdown the same table in Markdown, --csv one row per sampler and
iteration with full precision, --figure PATH.png the reward-vs-KL figure (and PATH.pdf next to it): one line per
sampler through its iterations (the mean of the seeds' means), 95% t-intervals over the seeds as error bars in both
directions (with one seed: its evaluation-sampling CI), and the differences significant after Holm (see below)
named above the plot. Everything is checked and computed before anything is written; each file is written
atomically.
"""
from __future__ import annotations

# Built on analysis/: analysis.load finds the runs and reads the JSON-lines logs, analysis.iterations.pooled_cell
# computes each cell (analysis.aggregate.t_interval), analysis.style gives colours, markers and atomic saving.
# What stays here is the report's own contract: pipeline.json, strict checks with one located error, the output
# formats.

import csv
import glob
import io
import json
import math
import os
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import numpy as np

from analysis import load
from analysis.aggregate import t_interval
from analysis.iterations import pooled_cell
from analysis.matched_kl import matched_kl_table
from analysis.seed_comparison import ALPHA, POWER, kl_budgets, paired_differences, verdict
from analysis.style import SAMPLER_MARKERS, sampler_colors, sampler_key, save_figure
from bandit.vocabulary import normalise
from runlog import ArgParser, ConfigError, atomic_write_text, check_number, check_out_file, exit_on_config_error

METRICS_FILE = "metrics.jsonl"
PIPELINE_FILE = "pipeline.json"
EVALUATIONS = Path("evaluate") / "evaluations.jsonl"   # under iter_T/
CONFIDENCE = 0.95
# report name, metrics.jsonl mean key, its CI key, the per-prompt field of evaluations.jsonl, label
METRICS = (("reward", "reward_mean", "reward_ci", "reward", "reward"),
           ("win_rate", "win_rate", "win_rate_ci", "win", "win rate"),
           ("kl", "kl", "kl_ci", "kl", "KL"))
RUN_MARKERS = (METRICS_FILE, PIPELINE_FILE)  # what makes a folder a pipeline run here
SEARCH_DEPTH = 2                              # runs are looked for one or two levels below a RUNS argument
FOOTER_WIDTH = 110  # the plain-text table's notes are wrapped at this width
CI_NOTE = ("mean +- 95% CI: t_{0.975,n-1} * sd / sqrt(n) over the n = seeds x prompts per-prompt values "
           "pooled from iter_T/evaluate/evaluations.jsonl (evaluation-sampling interval; it leaves out "
           "seed-to-seed training variance, see the seed range)")
SEED_NOTE = "seed range: min..max over the seeds of each seed's mean"
FALLBACK_NOTE = ("* evaluations.jsonl missing for a seed: mean of the seeds' means, CI = sqrt(sum ci^2) / k from "
                 "the seeds' reported metrics.jsonl *_ci (k seeds)")


# ------------------------------------------------------------------------------------------------ finding runs

def is_run(path: Path) -> bool:
    return load.is_run_folder(path, RUN_MARKERS)


def _runs_under(paths: list[Path]) -> list[str]:
    # glob.escape: a RUNS argument is a folder name, never a pattern
    return load.find_runs([glob.escape(str(p)) for p in paths], markers=RUN_MARKERS, depth=SEARCH_DEPTH)


def find_runs(paths) -> list[Path]:
    """The pipeline run folders among paths: each a run itself, or a folder with runs one or two levels down.

    A path that does not exist or holds no run is a ConfigError naming it. Folders whose name starts with '.'
    (half-written temporaries) are skipped, and a run's own subfolders are not searched (analysis.load.find_runs).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ConfigError("RUNS: give at least one pipeline run folder or a parent folder of runs")
    folders = []
    for arg in paths:
        path = Path(arg).expanduser()
        if not path.exists():
            raise ConfigError(f"RUNS: {str(arg)!r} does not exist")
        if path.is_file() and path.name in (METRICS_FILE, PIPELINE_FILE):
            path = path.parent  # a run's own metrics.jsonl or pipeline.json stands for the run
        if not _runs_under([path]):
            raise ConfigError(f"RUNS: {str(arg)!r} holds no pipeline run (a folder with {METRICS_FILE} and "
                              f"{PIPELINE_FILE}, or a folder of such runs one or two levels down)")
        folders.append(path)
    return [Path(run) for run in _runs_under(folders)]  # in order, each run once


# ------------------------------------------------------------------------------------------------ reading

def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _fail(problem: load.Problem):
    """The report reads strictly: the first malformed line is the one error, worded as alignment/ words it."""
    where = problem.file if problem.line is None else f"{problem.file} line {problem.line}"
    reason = {"json": f"not valid JSON ({problem.detail})",
              "object": f"expected a JSON object, got {problem.detail}"}.get(problem.kind, problem.reason)
    raise ConfigError(f"{where}: {reason}")


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) of every non-empty line (analysis.load.read_jsonl); a bad line is a ConfigError."""
    try:
        return load.read_jsonl(path, _fail)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e})") from None


def _read_pipeline(run: Path) -> dict:
    path = run / PIPELINE_FILE
    try:
        recipe = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(recipe, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return recipe


def _read_metrics(run: Path) -> dict[int, dict]:
    """iteration -> metrics row (null values as NaN); a malformed line is a ConfigError naming file and line."""
    path = run / METRICS_FILE
    rows = {}
    for number, row in _read_jsonl(path):
        t = row.get("iteration")
        if not isinstance(t, int) or isinstance(t, bool) or t < 0:
            raise ConfigError(f"{path} line {number}: 'iteration' must be an integer >= 0, got {t!r}")
        if t in rows:
            raise ConfigError(f"{path} line {number}: iteration {t} appears twice")
        clean = dict(row)
        for _, mean_key, ci_key, _, _ in METRICS:
            if mean_key not in row:
                raise ConfigError(f"{path} line {number}: missing {mean_key!r}")
            for key in (mean_key, ci_key):
                value = row.get(key)
                if value is None:
                    clean[key] = math.nan
                elif not _is_number(value):
                    raise ConfigError(f"{path} line {number}: {key!r} must be a number or null, got {value!r}")
                else:
                    clean[key] = float(value)
        rows[t] = clean
    return rows


def _read_evaluations(path: Path) -> dict[str, list[float]]:
    """Per-prompt values of one evaluation: field -> list over prompts."""
    fields = [m[3] for m in METRICS]
    out = {f: [] for f in fields}
    for number, row in _read_jsonl(path):
        for f in fields:
            value = row.get(f)
            if not _is_number(value) or not math.isfinite(value):
                raise ConfigError(f"{path} line {number}: {f!r} must be a finite number, got {value!r}")
            out[f].append(float(value))
    return out


class _Run:
    def __init__(self, path: Path):
        self.path = path
        recipe = _read_pipeline(path)
        self.metrics = _read_metrics(path)
        first = self.metrics[min(self.metrics)] if self.metrics else {}
        # label: e.g. a selection method; older runs' aliases (online, mixp, full) become canonical names
        self.sampler = normalise(recipe.get("label") or recipe.get("sampler", first.get("sampler")))
        self.seed = recipe.get("seed", first.get("seed"))
        if not isinstance(self.sampler, str) or not self.sampler:
            raise ConfigError(f"{path / PIPELINE_FILE}: no 'sampler' (a name) in the recipe or the metrics")
        if self.seed is None or isinstance(self.seed, (dict, list, bool)):
            raise ConfigError(f"{path / PIPELINE_FILE}: no 'seed' in the recipe or the metrics")

    def evaluations(self, t: int) -> dict[str, list[float]] | None:
        path = self.path / f"iter_{t}" / EVALUATIONS
        return _read_evaluations(path) if path.is_file() else None


# ------------------------------------------------------------------------------------------------ statistics

def _seed_key(seed):
    return (0, seed, "") if _is_number(seed) else (1, 0, str(seed))


def load_table(runs) -> list[dict]:
    """One row per (sampler, iteration), over the seeds; rows in sampler order, then by iteration.

    Keys: sampler, iteration, seeds (how many), seed_list, and analysis.iterations.pooled_cell's: n (pooled
    per-prompt values; with the fallback the sum of the seeds' num_prompts, or None), ci_method ("pooled" or
    "seed_ci", see the module doc), and for each metric M of reward, win_rate, kl: M (mean), M_ci (95%
    half-width), M_seed_min, M_seed_max; M_over_seeds and M_over_seeds_ci (the mean of the seeds' own means and
    its 95% t-interval over the seeds), and values: {M: {seed: that seed's mean}} for the paired comparisons.
    """
    loaded = [_Run(Path(r)) for r in runs]
    owner = {}
    for run in loaded:
        key = (run.sampler, run.seed)
        if key in owner:
            raise ConfigError(f"RUNS: {str(owner[key])!r} and {str(run.path)!r} are both sampler {run.sampler!r} "
                              f"seed {run.seed!r}; give each (sampler, seed) once")
        owner[key] = run.path
    groups = defaultdict(list)
    for run in loaded:
        for t, row in run.metrics.items():
            groups[(run.sampler, t)].append((run, row))
    if not groups:
        raise ConfigError("RUNS: no iteration is logged yet in " + ", ".join(repr(str(r.path)) for r in loaded))
    cell_metrics = [(name, mean_key, ci_key, field) for name, mean_key, ci_key, field, _ in METRICS]
    table = []
    for (sampler, t), members in sorted(groups.items(), key=lambda kv: (sampler_key(kv[0][0]), kv[0][1])):
        members.sort(key=lambda m: _seed_key(m[0].seed))
        out = {"sampler": sampler, "iteration": t, "seeds": len(members), "seed_list": [run.seed for run, _ in members]}
        out |= pooled_cell([(row, run.evaluations(t)) for run, row in members], cell_metrics, CONFIDENCE)
        # the seed as the unit of replication: each seed's own mean, and the t-interval over the seeds
        out["values"] = {name: {run.seed: row[mean_key] for run, row in members} for name, mean_key, *_ in METRICS}
        for name, *_ in METRICS:
            out[name + "_over_seeds"], out[name + "_over_seeds_ci"] = t_interval(list(out["values"][name].values()),
                                                                                  CONFIDENCE)
        table.append(out)
    return table


# ------------------------------------------------------------------------------------------------ tables

def _num(x, digits: int = 3) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _cells(row: dict) -> dict:
    """The row's printed pieces: mean and ci, seed min and max, per metric (aligned by the caller)."""
    mark = "" if row["ci_method"] == "pooled" else "*"
    cells = {"sampler": row["sampler"], "iter": str(row["iteration"]), "seeds": str(row["seeds"]),
             "n": ("?" if row["n"] is None else str(row["n"])) + mark}
    for name, *_ in METRICS:
        cells[name] = (_num(row[name]), _num(row[name + "_ci"]))
        one_seed = row["seeds"] < 2
        cells[name + "_range"] = ("-", "") if one_seed else (_num(row[name + "_seed_min"]),
                                                             _num(row[name + "_seed_max"]))
    return cells


def _footer(rows: list[dict]) -> list[str]:
    lines = [CI_NOTE + ".", SEED_NOTE + "."]
    if any(r["ci_method"] != "pooled" for r in rows):
        lines.append(FALLBACK_NOTE + ".")
    return lines


def _columns(rows: list[dict], pm: str, align: bool) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header, body (strings) and which columns are right-aligned. align: pad means and CIs to a common width,
    so the pm signs line up in a column."""
    cells = [_cells(r) for r in rows]
    header = ["sampler", "iter", "seeds", "n"]
    body = [[c["sampler"], c["iter"], c["seeds"], c["n"]] for c in cells]
    right = [False, True, True, True]
    for name, *_, label in METRICS:
        a_width = max(len(c[name][0]) for c in cells) if align else 0
        b_width = max(len(c[name][1]) for c in cells) if align else 0
        for line, c in zip(body, cells):
            mean, ci = c[name]
            lo, hi = c[name + "_range"]
            line += [mean.rjust(a_width) + pm + ci.rjust(b_width), lo + ".." + hi if hi else lo]
        header += [f"{label} (95% CI)", "seed range"]
        right += [True, True]
    return header, body, right


def _aligner(header: list[str], body: list[list[str]], right: list[bool]):
    """line(cells) -> the cells padded to their column's width (right-aligned where `right`), and the rule line
    under the header: the plain-text tables' one layout."""
    widths = [max(len(x) for x in col) for col in zip(header, *body)]

    def line(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return line, line(["-" * w for w in widths])


def format_table(rows: list[dict]) -> str:
    """The table as aligned plain text (one line per sampler and iteration), with the CI method as a footer."""
    header, body, right = _columns(rows, " +- ", align=True)
    line, rule = _aligner(header, body, right)
    out = [line(header), rule]
    previous = None
    for row, cells in zip(rows, body):
        if previous is not None and row["sampler"] != previous:
            out.append("")
        previous = row["sampler"]
        out.append(line(cells))
    footer = [textwrap.fill(x, FOOTER_WIDTH, subsequent_indent="  ") for x in _footer(rows)]
    return "\n".join(out + [""] + footer) + "\n"


def format_markdown(rows: list[dict]) -> str:
    """The table in Markdown (one row per sampler and iteration), the CI method below it."""
    header, body, right = _columns(rows, " ± ", align=False)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in body]
    notes = [x.replace(" +- ", " ± ") + "  " for x in _footer(rows)]
    return "\n".join(out + [""] + notes).rstrip() + "\n"


CSV_FIELDS = ["sampler", "iteration", "seeds", "seed_list", "n", "ci_method"] + [
    name + s for name, *_ in METRICS for s in ("", "_ci", "_seed_min", "_seed_max", "_over_seeds", "_over_seeds_ci")]


def format_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "seed_list": ";".join(str(s) for s in row["seed_list"]),
                         "n": "" if row["n"] is None else row["n"]})
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ over seeds

def compare_seeds(rows: list[dict], budgets=None) -> dict:
    """The comparison with the seed as the unit of replication (analysis.seed_comparison), from load_table's rows:

    over_seeds   per sampler and iteration: reward and KL as the mean of the seeds' own means +- the 95% t-interval
                 over the seeds
    final        the last iteration every sampler reached; paired: the paired, Holm-adjusted differences of the
                 true reward there, each with its minimum detectable difference (80% power, 5% level)
    matched_kl   the reward at each KL budget (linear interpolation along each seed's per-iteration path, seeds
                 that reach it), mean +- t-interval over those seeds; matched_paired: paired differences per budget
    budgets      the KL budgets: `budgets`, or fractions of the smallest sampler mean of the final KL
    """
    samplers = sorted({r["sampler"] for r in rows}, key=sampler_key)
    by = {(r["sampler"], r["iteration"]): r for r in rows}
    final = min(max(t for (s, t) in by if s == sampler) for sampler in samplers)
    paired = paired_differences({s: by[(s, final)]["values"]["reward"] for s in samplers}, order=samplers)
    paths = {}
    for s in samplers:
        seeds = {}
        for t in sorted(t for (name, t) in by if name == s):
            for seed, kl in by[(s, t)]["values"]["kl"].items():
                path = seeds.setdefault(seed, ([], []))
                path[0].append(kl)
                path[1].append(by[(s, t)]["values"]["reward"][seed])
        paths[s] = seeds
    if budgets is None:
        budgets = kl_budgets({s: by[(s, final)]["kl_over_seeds"] for s in samplers})
    matched = matched_kl_table(paths, budgets, CONFIDENCE)
    matched.sort(key=lambda r: (r["kl_budget"], sampler_key(r["method"])))
    matched_paired = {b: paired_differences({r["method"]: r["values"] for r in matched if r["kl_budget"] == b},
                                            order=samplers) for b in budgets}
    return {"final": final, "paired": paired, "budgets": list(budgets), "matched_kl": matched,
            "matched_paired": matched_paired, "over_seeds": rows}


def _pm(mean, half, digits: int = 3) -> tuple[str, str]:
    return _num(mean, digits), _num(half, digits)


def _p(x) -> str:
    return "-" if x is None or not math.isfinite(x) else (f"{x:.3f}" if x >= 0.001 else "<0.001")


def _signed(x) -> str:
    return "nan" if not math.isfinite(x) else f"{x:+.3f}"


def _mdd_line(c: dict) -> str:
    paired = [r for r in c["paired"] if math.isfinite(r["mdd"])]
    if not paired:
        return "minimum detectable paired difference: needs at least 2 shared seeds per pair"
    mdd = sorted(r["mdd"] for r in paired)
    holm_mdd = sorted(r["mdd_holm"] for r in paired)
    seeds = min(r["seeds"] for r in paired)
    return (f"minimum detectable paired difference of the true reward at iteration {c['final']} ({POWER:.0%} power, "
            f"{ALPHA:.0%} level, {seeds} seeds, the run's own spread): median {np.median(mdd):.3f} over the "
            f"{len(mdd)} pairs (range {mdd[0]:.3f}..{mdd[-1]:.3f}); at Holm's strictest level "
            f"{ALPHA:.0%}/{len(c['paired'])}: median {np.median(holm_mdd):.3f} (range {holm_mdd[0]:.3f}..{holm_mdd[-1]:.3f})")


def _seed_tables(c: dict) -> list[tuple[str, list[str], list[list[str]], list[bool]]]:
    """The over-seeds sections as (title, header, body, right-aligned) tables."""
    over = [[r["sampler"], str(r["iteration"]), str(r["seeds"]), *_pm(r["reward_over_seeds"], r["reward_over_seeds_ci"]),
             *_pm(r["kl_over_seeds"], r["kl_over_seeds_ci"])] for r in c["over_seeds"]]
    tables = [("Over seeds: each seed's own mean, 95% t-interval over the seeds (the seed is the unit of replication)",
               ["sampler", "iter", "seeds", "reward", "+- (seeds)", "KL", "+- (seeds)"], over,
               [False, True, True, True, True, True, True])]

    def pair_rows(rows):
        return [[f"{r['a']} - {r['b']}", str(r["seeds"]), _signed(r["diff"]), _num(r["diff_ci"]), _p(r["p"]),
                 _p(r["p_holm"]), _num(r["mdd"]), verdict(r)] for r in rows]

    header = ["pair (a - b)", "seeds", "diff", "+- (seeds)", "p", "p Holm", "MDD", "verdict"]
    right = [False, True, True, True, True, True, True, False]
    tables.append((f"Paired by seed, true reward at iteration {c['final']} (paired t-test, Holm over "
                   f"{len(c['paired'])} pairs; MDD: minimum detectable difference, {POWER:.0%} power, {ALPHA:.0%})",
                   header, pair_rows(c["paired"]), right))
    if c["budgets"]:
        matched = [[f"{r['kl_budget']:g}", r["method"], f"{r['reached']}/{r['seeds']}", *_pm(r["reward"], r["hi"] - r["reward"])]
                   for r in c["matched_kl"]]
        tables.append(("Reward at matched KL (linear interpolation along each seed's per-iteration path; seeds that "
                       "reach the budget; 95% t-interval over them)",
                       ["KL budget", "sampler", "reached", "reward", "+- (seeds)"], matched,
                       [True, False, True, True, True]))
        rows = [[f"{b:g}"] + line for b in c["budgets"] for line in pair_rows(c["matched_paired"][b])]
        tables.append(("Paired by seed at matched KL (Holm within each budget)", ["KL budget"] + header, rows,
                       [True] + right))
    return tables


def format_seed_text(c: dict) -> str:
    out = []
    for title, header, body, right in _seed_tables(c):
        line, rule = _aligner(header, body, right)
        out += ["", textwrap.fill(title, FOOTER_WIDTH), line(header), rule]
        out += [line(cells) for cells in body]
    out += ["", textwrap.fill(_mdd_line(c), FOOTER_WIDTH, subsequent_indent="  ")]
    return "\n".join(out) + "\n"


def format_seed_markdown(c: dict) -> str:
    out = []
    for title, header, body, right in _seed_tables(c):
        out += ["", f"**{title}**", "", "| " + " | ".join(h.replace("+-", "±") for h in header) + " |",
                "|" + "|".join("---:" if r else "---" for r in right) + "|"]
        out += ["| " + " | ".join(body_cell.replace("<", "&lt;") for body_cell in cells) + " |" for cells in body]
    out += ["", _mdd_line(c)]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------ figure

def significant_lines(c: dict) -> list[str]:
    """The differences compare_seeds finds significant after Holm: at the final iteration and at each KL budget."""
    out = [f"iteration {c['final']}: {verdict(r)}" for r in c["paired"] if r["significant"]]
    for b in c["budgets"]:
        out += [f"KL {b:g}: {verdict(r)}" for r in c["matched_paired"][b] if r["significant"]]
    return out


def plot_reward_vs_kl(rows: list[dict], path, significant: list[str] | None = None) -> list[Path]:
    """Mean true reward against KL(pi || pi_ref), one line per sampler through its iterations, 95% intervals (over
    seeds, see the module doc) as error bars both ways, each point labelled with its iteration. Writes PATH (PNG) and PATH with .pdf; returns both."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    path = Path(path)
    pdf = path.with_suffix(".pdf")
    samplers = sorted({r["sampler"] for r in rows}, key=sampler_key)
    colors = sampler_colors(samplers)
    over_seeds = min(r["seeds"] for r in rows) >= 2
    nan0 = lambda x: 0.0 if math.isnan(x) else x  # a NaN half-width (one prompt) draws no bar
    with plt.rc_context({"font.size": 11, "axes.titlesize": 13, "axes.labelsize": 12, "legend.fontsize": 10}):
        fig, ax = plt.subplots(figsize=(8, 5.2))
        for sampler in samplers:
            mine = sorted((r for r in rows if r["sampler"] == sampler), key=lambda r: r["iteration"])
            seeds = max(r["seeds"] for r in mine)
            # intervals over seeds where there are several (the seed is the unit of replication), else the
            # one seed's evaluation-sampling interval
            suffix, ci = ("_over_seeds", "_over_seeds_ci") if over_seeds else ("", "_ci")
            x = [r["kl" + suffix] for r in mine]
            y = [r["reward" + suffix] for r in mine]
            _, caps, bars = ax.errorbar(
                x, y, xerr=[nan0(r["kl" + ci]) for r in mine], yerr=[nan0(r["reward" + ci]) for r in mine],
                color=colors[sampler], marker=SAMPLER_MARKERS.get(sampler, "o"), markersize=6, lw=1.8,
                elinewidth=1, capsize=3, label=f"{sampler} ({seeds} seed{'s' if seeds != 1 else ''})")
            for artist in (*caps, *bars):
                artist.set_alpha(0.55)  # the lines and markers stay in front of the (often overlapping) bars
            for r, xi, yi in zip(mine, x, y):
                ax.annotate(str(r["iteration"]), (xi, yi), xytext=(5, 5), textcoords="offset points",
                            fontsize=8, color=colors[sampler])
        ax.set_xlabel(r"KL$(\pi\,\|\,\pi_{\mathrm{ref}})$ (nats per response)")
        ax.set_ylabel("mean true reward")
        note = ("points: iterations (0 = initial policy); error bars: 95% t-interval over the seeds' own means"
                if over_seeds else "points: iterations (0 = initial policy); error bars: 95% CI of the evaluation "
                                   "sampling (one seed)")
        if significant is not None and over_seeds:
            note += ("\nsignificant after Holm, paired by seed: " + "; ".join(significant) if significant
                     else "\nno difference significant after Holm (paired by seed)")
        if not over_seeds and any(r["ci_method"] != "pooled" for r in rows):
            note += "\n(some CIs combine the seeds' reported CIs: evaluations.jsonl missing)"
        ax.set_title("Reward vs KL over DPO iterations", pad=10 + 12 * (note.count("\n") + 1))  # room for the note
        ax.text(0.5, 1.01, note, transform=ax.transAxes, ha="center", va="bottom", fontsize=9, color="0.3")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, title="sampler", frameon=False)
        fig.tight_layout()
        try:
            for target in (path, pdf):
                save_figure(fig, target)
        finally:
            plt.close(fig)
    return [path, pdf]


# ------------------------------------------------------------------------------------------------ command line

def _check_output(option: str, value: str | None, suffixes: tuple[str, ...] = ()) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if suffixes and path.suffix.lower() not in suffixes:
        raise ConfigError(f"{option}: {value!r} must end in {' or '.join(suffixes)}")
    return check_out_file(path, option)


def build_parser() -> ArgParser:
    import argparse

    doc = __doc__.split("\n\n")
    parser = ArgParser(description=doc[0], epilog="\n\n".join(doc[1:]),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUNS",
                        help="pipeline run folders, or folders holding runs one or two levels down")
    parser.add_argument("--figure", metavar="PATH.png", help="write the reward-vs-KL figure here (and PATH.pdf)")
    parser.add_argument("--csv", metavar="PATH", help="write the table as CSV (full precision)")
    parser.add_argument("--markdown", metavar="PATH", help="write the table as Markdown")
    parser.add_argument("--kl-budgets", metavar="B,B,...", default=None,
                        help="KL budgets of the matched-KL table, comma-separated numbers > 0 (default: 0.25, 0.5, "
                             "0.75 and 1 times the smallest sampler mean of the final iteration's KL)")
    return parser


def _budgets(text: str | None) -> list[float] | None:
    if text is None:
        return None
    out = []
    for part in text.split(","):
        try:
            b = float(part)
        except ValueError:
            raise ConfigError(f"--kl-budgets: each budget must be a number, got {part.strip()!r}") from None
        check_number("kl-budgets", b, low=0, low_open=True)
        out.append(b)
    return out


@exit_on_config_error
def main(argv=None) -> list[dict]:
    args = build_parser().parse_args(argv)
    figure = _check_output("--figure", args.figure, (".png",))
    csv_path = _check_output("--csv", args.csv)
    markdown = _check_output("--markdown", args.markdown)
    outputs = [p.resolve() for p in (figure, figure.with_suffix(".pdf") if figure else None, csv_path, markdown) if p]
    if len(set(outputs)) < len(outputs):
        raise ConfigError("--figure, --csv, --markdown: give each output its own file (PATH.pdf is the figure's too)")
    budgets = _budgets(args.kl_budgets)
    rows = load_table(find_runs(args.runs))
    seeds = compare_seeds(rows, budgets)
    text = format_table(rows) + format_seed_text(seeds)
    md = format_markdown(rows) + format_seed_markdown(seeds) if markdown else None
    table_csv = format_csv(rows) if csv_path else None
    written = []
    if figure:
        written += plot_reward_vs_kl(rows, figure, significant_lines(seeds))
    if csv_path:
        atomic_write_text(csv_path, table_csv)
        written.append(csv_path)
    if markdown:
        atomic_write_text(markdown, md)
        written.append(markdown)
    sys.stdout.write(text)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
