"""Shared pieces of the paper figures: the command line, picking a figure's tasks, drawing in the house style
(analysis.style), legends outside the axes, output file names, and the layout check.

A figure module defines NAME, COMMAND (the command that produces its logs), `make(tasks, out_dir, notes=None)
-> list[Path]` (raises MissingLogs when no task fits; appends remarks such as "only one noise level logged" to
`notes`) and `main(argv=None)`, which is `figure_main(...)`: load --runs (default runs/), write to --out
(default paper_figures/out/), print what was written; a MissingLogs is one line naming the command, exit 2;
bad flags or a --runs folder that does not exist are one line, exit 2, nothing written.

Output names: `<figure>.png` and `.pdf` when one task fits the figure, `<figure>__<slug of the task>.png/.pdf`
(e.g. tabular_exact__tabular-step-newton.png) when several do.
Reads logs only (analysis.*); never imports bandit.* or alignment.*.
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.style import RC, SAMPLER_MARKERS, sampler_colors, sampler_key, save_figure  # noqa: E402
from runlog import ArgParser, ConfigError, check_out  # noqa: E402

DEFAULT_RUNS = "runs/"
DEFAULT_OUT = "paper_figures/out/"
NO_RUNS = "no run folder"   # analysis.load's Problem reason for a path without runs (not a malformed log)

CI_SEEDS = "95% CI over seeds (t-interval)"
CI_EVAL = "one seed: that run's evaluation 95% CI"
BAND_NOTE = ("lines: geometric mean over seeds; bands: 95% CI over seeds (t-interval on log values); "
             "diverged seeds left out")
SETTING_TITLES = {"exact": "exact setting (expected loss)", "empirical": "empirical setting"}
METRIC_LABELS = {"param_diff": "parameter error (param_diff)", "value_gap": r"value gap $V(\pi^*) - V(\pi)$",
                 "reward_mean": "mean true reward", "win_rate": "win rate vs the initial policy",
                 "kl": r"KL$(\pi\,\|\,\pi_{\mathrm{ref}})$ (nats per response)"}


class MissingLogs(Exception):
    """No logs fit a figure: `reason` says what is missing, `command` produces it."""

    def __init__(self, reason: str, command: str):
        super().__init__(reason)
        self.reason, self.command = reason, command

    def __str__(self) -> str:
        return f"{self.reason}; produce the logs with: {self.command}"


# --------------------------------------------------------------------------------------------- command line

def build_parser(description: str) -> ArgParser:
    parser = ArgParser(description=description)
    parser.add_argument("--runs", default=DEFAULT_RUNS, metavar="FOLDER",
                        help=f"folder holding the run logs (searched recursively; default {DEFAULT_RUNS})")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="FOLDER",
                        help=f"where the figures go (created if needed; default {DEFAULT_OUT})")
    parser.add_argument("--strict", action="store_true",
                        help="a malformed or empty log is an error (default: a warning per run left out)")
    return parser


def check_paths(args) -> None:
    """--runs must be an existing folder, --out a folder or nothing yet (checked before anything is written)."""
    runs = Path(args.runs)
    if not runs.exists():
        raise ConfigError(f"--runs: {args.runs!r} does not exist")
    if not runs.is_dir():
        raise ConfigError(f"--runs: {args.runs!r} is not a folder")
    check_out(args.out)


def load(runs):
    """(tasks, problems) of everything under `runs`; a folder without any run is no problem (figures skip)."""
    from analysis.runs import load_tasks

    tasks, problems = load_tasks([str(runs)])
    return tasks, [p for p in problems if not (p.line is None and p.reason.startswith(NO_RUNS))]


def load_checked(args):
    """load(args.runs), with --strict: the first malformed or empty log is the one error (nothing written yet)."""
    tasks, problems = load(args.runs)
    if problems and getattr(args, "strict", False):
        raise ConfigError(f"--strict: malformed log: {problems[0]}")
    return tasks, problems


def print_warnings(problems, tasks=(), file=None) -> None:
    file = file or sys.stderr
    for p in problems:
        print(f"warning: malformed log: {p}", file=file)
    for t in tasks:
        for note in t.notes:
            print(f"note: {note}", file=file)


def figure_main(name: str, command: str, make, argv=None, description: str | None = None) -> list[Path]:
    """The main() of one figure module (see the module docstring)."""
    from runlog.cli import program_name

    args = build_parser(description or f"Make the {name} figure from run logs.").parse_args(argv)
    check_paths(args)
    tasks, problems = load_checked(args)
    print_warnings(problems, tasks)
    notes: list[str] = []
    try:
        paths = make(tasks, Path(args.out), notes=notes)
    except MissingLogs as e:
        print(f"{program_name()}: {name}: {e}", file=sys.stderr)
        sys.exit(2)
    for p in paths:
        print(f"wrote {p}")
    for n in notes:
        print(f"note: {n}")
    return paths


# ----------------------------------------------------------------------------------------------- tasks

def settings_of(task) -> list[str]:
    """The bandit settings (exact, empirical) a tabular/linear task holds, in that order."""
    present = {r.get("setting") for r in task.rows}
    return [s for s in ("exact", "empirical") if s in present]


def bandit_tasks(tasks, kind: str, setting: str | None = None) -> list:
    """Tasks of `kind` (tabular, linear, offline), with rows of `setting` when given; sorted by name."""
    out = [t for t in tasks if t.kind == kind and (setting is None or setting in settings_of(t))]
    return sorted(out, key=lambda t: t.name)


def is_selection(task) -> bool:
    """Pipeline runs made with --label (the offline-regime selection methods) rather than sampler runs."""
    return any(r.get("label") is not None for r in task.rows)


def pipeline_tasks(tasks, selection: bool) -> list:
    out = [t for t in tasks if t.kind == "pipeline" and is_selection(t) == selection
           and any(isinstance(r.get("iteration"), (int, float)) for r in t.rows)]
    return sorted(out, key=lambda t: t.name)


def slug(name: str) -> str:
    """'tabular (step=newton)' -> 'tabular-step-newton'."""
    return re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.") or "task"


def stems(figure: str, names) -> dict[str, str]:
    """Output stem per task name: the figure's name alone for one task, figure__slug for several."""
    names = list(names)
    if len(names) == 1:
        return {names[0]: figure}
    return {n: f"{figure}__{slug(n)}" for n in names}


def config_value(task, key: str, default=None):
    """A config value of the task's runs (the first run holding it; runs of a task agree on what matters)."""
    for run in task.runs:
        if run.config.get(key) is not None:
            return run.config[key]
    return default


def fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


# --------------------------------------------------------------------------------------------- drawing

def methods_in_order(methods) -> list[str]:
    return sorted(set(methods), key=sampler_key)


def marker(method: str) -> str:
    return SAMPLER_MARKERS.get(method, "o")


def seeds_label(method: str, n: int, diverged: int) -> str:
    """Legend entry naming the seeds used and the diverged ones (left out)."""
    if n == 0 and diverged:
        return f"{method} (all {diverged} seeds diverged)"
    text = f"{method} ({n} seed{'s' if n != 1 else ''}"
    return text + (f"; {diverged} diverged, left out)" if diverged else ")")


def marker_indices(x, index: int = 0, count: int = 8, logx: bool = False) -> list[int]:
    """About `count` points evenly spread along x (log x when `logx`), shifted by `index` so that the markers of
    overlapping lines do not sit on each other; where x stalls (pairs used saturating) one marker, not a pile."""
    pos = np.log(x) if logx else np.asarray(x, dtype=float)
    pos = np.maximum.accumulate(pos)
    span = pos[-1] - pos[0]
    if span <= 0:
        return [0]
    targets = pos[0] + span * (np.arange(count) + 0.15 + 0.7 * ((index * 0.37) % 1.0)) / count
    return sorted({int(i) for i in np.clip(np.searchsorted(pos, targets), 0, x.size - 1)})


def draw_curve(ax, curve, color: str, method: str, index: int = 0, label=None, ls: str = "-", positive_x=False):
    """A Curve (analysis.curves) as a line with sparse markers and its CI band, in the method's colour.
    Markers are staggered by `index` so that overlapping lines stay distinguishable. positive_x: for a log x
    axis (points at x <= 0 dropped, markers spread evenly in log x)."""
    x, mean, lo, hi = (np.asarray(a, dtype=float) for a in (curve.x, curve.mean, curve.lo, curve.hi))
    keep = np.isfinite(mean) & np.isfinite(x) & ((x > 0) if positive_x else True)
    x, mean, lo, hi = x[keep], mean[keep], lo[keep], hi[keep]
    if x.size == 0:   # e.g. every seed diverged: a legend entry without a line
        return ax.plot([], [], color=color, marker=marker(method), ls=ls, lw=1.6, label=label)[0]
    line, = ax.plot(x, mean, color=color, lw=1.6, ls=ls, marker=marker(method), markersize=5,
                    markevery=marker_indices(x, index, logx=positive_x), label=label)
    ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
    return line


def legend_outside(ax, title: str | None = None, handles=None, labels=None, **kw):
    """The legend to the right of `ax`, outside the axes (constrained layout makes room for it)."""
    if handles is not None:
        kw["handles"] = handles
        if labels is not None:
            kw["labels"] = labels
    return ax.legend( loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, frameon=False,
                     title=title, **kw)


def footnote(fig, text: str) -> None:
    """Grey note under the figure (save_figure's tight bounding box keeps it)."""
    fig.text(0.5, 0.0, text, ha="center", va="top", fontsize=9, color="0.3", wrap=False)


def wrap(text: str, width: int = 120) -> str:
    """Each line of `text` filled to `width` characters (long footnotes)."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def robust_limits(centres, lows, highs, stretch: float = 0.6, pad: float = 0.06, floor: float | None = None,
                  fence: float = 3.0) -> tuple[float, float]:
    """Axis limits for points with intervals that keep the bulk readable: centres beyond `fence` interquartile
    ranges outside the quartiles (e.g. one collapsed run) are left outside (mark_outside draws them at the edge),
    and an interval is shown up to `stretch` times the scale (the centres' span, or the median interval width if
    larger) beyond them: a t-interval over 2 or 3 seeds can be huge; cut_intervals lists what was cut.
    `floor`: a bound the quantity cannot cross (KL >= 0)."""
    c = np.array([v for v in centres if finite(v)], dtype=float)
    if c.size == 0:
        return 0.0, 1.0
    q1, q3 = np.percentile(c, [25, 75])
    inside = c[(c >= q1 - fence * (q3 - q1)) & (c <= q3 + fence * (q3 - q1))] if q3 > q1 else c
    c = inside if inside.size else c
    widths = [h - l for l, h in zip(lows, highs) if finite(l) and finite(h)]
    # the scale: the centres' spread, or the typical interval when the intervals dwarf it (few seeds)
    span = max(float(np.ptp(c)), float(np.median(widths)) if widths else 0.0) or max(abs(float(c.max())) * 0.2, 1e-3)
    lo_all = [v for v in lows if finite(v)] + list(c)
    hi_all = [v for v in highs if finite(v)] + list(c)
    lo = max(min(lo_all), float(c.min()) - stretch * span)
    hi = min(max(hi_all), float(c.max()) + stretch * span)
    margin = pad * (hi - lo or 1.0)
    lo, hi = lo - margin, hi + margin
    if floor is not None:
        lo = max(lo, floor - margin)
    return lo, hi


def mark_outside(ax, points, xlim, ylim, show: str = "xy") -> list[str]:
    """Points (x, y, colour, name) beyond the limits: a triangle at the axes' edge pointing their way, labelled
    with the name and the true value(s) (`show`: "xy" both coordinates, "x" or "y" one); returns 'name at ...'
    strings for the footnote."""
    out = []
    xlim, ylim = sorted(xlim), sorted(ylim)   # an inverted axis gives its limits high to low
    for x, y, color, name in points:
        if not (finite(x) and finite(y)):
            continue
        cx, cy = min(max(x, xlim[0]), xlim[1]), min(max(y, ylim[0]), ylim[1])
        if (cx, cy) == (x, y):
            continue
        sym = ">" if x > xlim[1] else "<" if x < xlim[0] else "^" if y > ylim[1] else "v"
        ax.plot([cx], [cy], marker=sym, color=color, markersize=10, clip_on=False, zorder=6, ls="none")
        value = {"xy": f"({fmt(x)}, {fmt(y)})", "x": fmt(x), "y": fmt(y)}[show]
        right = sym == ">" or (sym in "^v" and cx > sum(xlim) / 2)
        offset = (-9 if right else 9, 8 if sym != "^" else -8)
        ax.annotate(f"{name}: {value}" if show != "xy" else f"{name}\n{value}", (cx, cy), xytext=offset,
                    textcoords="offset points", ha="right" if right else "left",
                    va="bottom" if sym != "^" else "top", fontsize=8, color=color)
        out.append(f"{name} at {value}")
    return out


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def cut_intervals(cells, metric: str, limits, name) -> list[str]:
    """'name: [lo, hi]' for cells whose interval of `metric` runs past `limits` (the bars are cut at the axes)."""
    out = []
    for c in cells:
        lo, hi = c.get(f"{metric}_lo"), c.get(f"{metric}_hi")
        if (finite(lo) and lo < limits[0]) or (finite(hi) and hi > limits[1]):
            out.append(f"{name(c)} [{fmt(lo)}, {fmt(hi)}]")
    return out


def error_halves(cells, metric: str):
    """Asymmetric error-bar lengths (below, above) of `metric`; a missing interval draws no bar."""
    below = [c[metric] - c[f"{metric}_lo"] if finite(c.get(f"{metric}_lo")) else 0.0 for c in cells]
    above = [c[f"{metric}_hi"] - c[metric] if finite(c.get(f"{metric}_hi")) else 0.0 for c in cells]
    return [below, above]


def ci_note(table) -> str:
    """What the bars of a per-iteration table are."""
    sources = {r.get("ci_source") for r in table}
    if sources == {"eval"}:
        return "error bars: each run's evaluation 95% CI (one seed per cell)"
    note = f"error bars: {CI_SEEDS}"
    return note + (f"; {CI_EVAL}" if "eval" in sources else "")


def house_style():
    """`with house_style():` around all drawing: the shared fonts (analysis.style.RC)."""
    return plt.rc_context(RC)


def new_figure(nrows: int, ncols: int, width: float, height: float, **kw):
    """A figure with constrained layout (call inside house_style())."""
    return plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, layout="constrained", **kw)


def pipeline_figures(figure: str, command: str, tasks, selection: bool, draw, out_dir, notes=None) -> list[Path]:
    """draw(task) -> Figure for each pipeline task of sampler runs (selection=False) or of selection-method runs
    made with --label (selection=True), saved as figure(.png/.pdf) or figure__<task>."""
    fit = pipeline_tasks(tasks, selection=selection)
    if not fit:
        what = "selection run (made with --label)" if selection else "sampler run"
        raise MissingLogs(f"no alignment pipeline {what}", command)
    names = stems(figure, [t.name for t in fit])
    paths = []
    with house_style():
        for t in fit:
            paths += save(draw(t), out_dir, names[t.name], notes)
    return paths


# ------------------------------------------------------------------------------------------- layout check

def layout_problems(fig) -> list[str]:
    """Legends that overlap an axes (other than one they were placed inside on purpose: none here), another
    legend, or the figure's texts; empty when the layout is clean."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [lg for ax in fig.axes for lg in ([ax.get_legend()] if ax.get_legend() else [])] + list(fig.legends)
    boxes = [(lg, lg.get_window_extent(renderer)) for lg in legends]
    problems = []
    for i, (lg, box) in enumerate(boxes):
        for ax in fig.axes:
            if ax.bbox.overlaps(box):
                where = ax.get_title() or ax.get_ylabel()
                problems.append(f"a legend ({_legend_name(lg)}) overlaps the axes '{where}'")
        for other, obox in boxes[i + 1:]:
            if box.overlaps(obox):
                problems.append(f"legends {_legend_name(lg)} and {_legend_name(other)} overlap")
        for text in fig.texts + ([fig._suptitle] if fig._suptitle else []):
            if text.get_text() and text.get_window_extent(renderer).overlaps(box):
                problems.append(f"a legend ({_legend_name(lg)}) overlaps the text {text.get_text()[:40]!r}")
    return problems


def _legend_name(lg) -> str:
    labels = [t.get_text() for t in lg.get_texts()]
    return labels[0] if labels else "empty"


def save(fig, out_dir, stem: str, notes: list | None = None) -> list[Path]:
    """Write OUT/stem.png and .pdf atomically (analysis.style.save_figure), after the layout check (problems go
    to `notes`, prefixed "layout:"); closes the figure."""
    out_dir = Path(out_dir)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    try:
        for problem in layout_problems(fig):
            if notes is not None:
                notes.append(f"layout: {stem}: {problem}")
        for p in paths:
            save_figure(fig, p)
    finally:
        plt.close(fig)
    return paths


# ------------------------------------------------------------------------------------ bandit learning curves

BANDIT_METRICS = ("param_diff", "value_gap")


def bandit_shape(task) -> str:
    """'A=20, E=1, beta=3' (and d for the linear bandit) from the task's config."""
    parts = [f"A={config_value(task, 'actions')}", f"E={config_value(task, 'contexts')}"]
    if config_value(task, "dim") is not None and task.kind != "tabular":
        parts.append(f"d={config_value(task, 'dim')}")
    beta = config_value(task, "beta")
    if beta is not None:
        parts.append(rf"$\beta$={fmt(float(beta))}")
    return ", ".join(parts)


def setting_detail(task, setting: str) -> str:
    """'exact setting (expected loss), lr 10' / 'empirical setting: 8192 pairs per step, Newton step'."""
    if config_value(task, "step") == "newton":
        step = "Newton step"
    else:
        lr = config_value(task, f"resolved.settings.{setting}.lr", config_value(task, "lr"))
        step = f"lr {fmt(float(lr))}" if lr is not None else "fixed step"
    if setting == "empirical":
        return f"empirical setting: {config_value(task, 'num_samples')} pairs per context and step, {step}"
    return f"{SETTING_TITLES.get(setting, setting)}, {step}"


def bandit_figure(task, settings, label: str):
    """Rows: settings; columns: param_diff, value_gap against iteration (log y); one line + band per sampler,
    a legend per row outside the right panel naming the seeds (and diverged ones)."""
    from analysis.curves import curves

    methods = methods_in_order(task.methods)
    colors = sampler_colors(methods)
    fig, axes = new_figure(len(settings), len(BANDIT_METRICS), 12.5, 0.9 + 3.6 * len(settings))
    for i, setting in enumerate(settings):
        rows = [r for r in task.rows if r.get("setting") == setting]
        for j, metric in enumerate(BANDIT_METRICS):
            ax = axes[i][j]
            cs = curves(rows, metric, log=True)
            for k, m in enumerate(methods_in_order(cs)):
                draw_curve(ax, cs[m], colors[m], m, index=k, label=seeds_label(m, cs[m].n, cs[m].diverged))
            ax.set_yscale("log")
            ax.set_xlabel("iteration")
            ax.set_ylabel(METRIC_LABELS[metric])
            ax.set_title(setting_detail(task, setting), fontsize=10)
            ax.grid(alpha=0.3)
        legend_outside(axes[i][-1], title="sampler")
    fig.suptitle(f"{label} ({bandit_shape(task)})")
    footnote(fig, BAND_NOTE)
    return fig


def bandit_figures(figure: str, command: str, tasks, kind: str, wanted, label: str, out_dir, notes=None):
    """One bandit_figure per task of `kind` holding any of the `wanted` settings."""
    fit = [t for t in bandit_tasks(tasks, kind) if set(wanted) & set(settings_of(t))]
    if not fit:
        raise MissingLogs(f"no {kind} bandit run of the {' or '.join(wanted)} setting", command)
    names = stems(figure, [t.name for t in fit])
    paths = []
    with house_style():
        for t in fit:
            fig = bandit_figure(t, [s for s in settings_of(t) if s in wanted], label)
            paths += save(fig, out_dir, names[t.name], notes)
    return paths
