"""The LLM's Mix-P in the bandit (bandit/examples/alpha_p.py): iterations to param_diff <= 1e-8 and the fitted
convergence order for every (alpha, p), one panel per base measure and temperature, with the LLM recipes'
settings boxed; and the value gap against iteration of the paper's mix_p, on-policy pairs and the LLM settings.

    python paper_figures/alpha_p.py --runs runs/ --out paper_figures/out/
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from paper_figures import common
from runlog import exit_on_config_error

NAME = "alpha_p"
COMMAND = "python bandit/examples/alpha_p.py"
REFERENCE = "mix_p (paper)"
LLM_SETTINGS = (("0.5", "0.7"), ("0.5", "1"))


def study_runs(runs) -> list[Path]:
    """Run folders under `runs` written by bandit/examples/alpha_p.py (run.json's resolved.study, or its command)."""
    from analysis.load import find_runs, read_json_strict

    out = []
    for folder in find_runs([str(runs)], problems=[]):
        try:
            meta = read_json_strict(Path(folder) / "run.json")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        command = (meta.get("command") or [""])[0]
        resolved = (meta.get("config") or {}).get("resolved") or {}
        ours = (isinstance(resolved, dict) and resolved.get("study") == NAME) or Path(str(command)).stem == NAME
        if ours and (Path(folder) / "metrics.jsonl").exists():
            out.append(Path(folder))
    return out


def load_rows(folder: Path, step_rule: str | None = None):
    """label -> {fields, seeds: {seed: {metric: [values per step]}}} of one study run (its first step rule, or
    `step_rule`), and the step rule drawn."""
    from analysis.load import read_jsonl

    per, rule = {}, step_rule
    for _, row in read_jsonl(folder / "metrics.jsonl", lambda problem: None):
        if row.get("event") or "param_diff" not in row:
            continue
        rule = rule or row.get("step_rule")
        if row.get("step_rule") != rule:
            continue
        entry = per.setdefault(row["label"], {"fields": {k: row.get(k) for k in ("alpha", "p", "temperature", "base")},
                                              "seeds": {}})
        series = entry["seeds"].setdefault(row["seed"], {"param_diff": [], "value_gap": []})
        series["param_diff"].append(row["param_diff"])
        series["value_gap"].append(row["value_gap"])
    return per, rule


def summary_of(entry) -> tuple[float, float]:
    """(median fitted order, median iterations to 1e-8) over the seeds (bandit/rates.py, exact fit)."""
    from bandit.rates import TOL, fitted_order, iterations_to

    orders = [fitted_order(s["param_diff"], noisy=False) for s in entry["seeds"].values()]
    hits = [iterations_to(s["param_diff"], TOL) for s in entry["seeds"].values()]
    orders = [o for o in orders if math.isfinite(o)]
    return (float(np.median(orders)) if orders else math.nan), float(np.median(hits))


def _num(x) -> str:
    return "natural" if x in (None, "natural") else f"{float(x):g}"


def draw_heatmap(ax, per, base, temperature, vmax):
    cells = {(_num(e["fields"]["alpha"]), _num(e["fields"]["p"])): summary_of(e) for lab, e in per.items()
             if lab != REFERENCE and e["fields"]["base"] == base and float(e["fields"]["temperature"]) == temperature}
    alphas = sorted({a for a, _ in cells}, key=float)
    ps = sorted({p for _, p in cells}, key=lambda p: (p == "natural", float(p) if p != "natural" else 0.0))
    grid = np.full((len(alphas), len(ps)), np.nan)
    for (a, p), (order, iters) in cells.items():
        grid[alphas.index(a), ps.index(p)] = iters if math.isfinite(iters) else np.nan
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("viridis_r").with_extremes(bad="0.85")
    im = ax.imshow(grid, cmap=cmap, vmin=0, vmax=vmax, aspect="auto", origin="lower")
    for (a, p), (order, iters) in cells.items():
        i, j = alphas.index(a), ps.index(p)
        text = f"{'-' if not math.isfinite(order) else f'{order:.2f}'}\n{'never' if not math.isfinite(iters) else f'{iters:g}'}"
        ax.text(j, i, text, ha="center", va="center", fontsize=7,
                color="black" if not math.isfinite(iters) or iters < 0.6 * vmax else "white",
                fontweight="bold" if math.isfinite(order) and order >= 1.8 else "normal")
        if (a, p) in LLM_SETTINGS:
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="black", lw=2))
    ax.set_xticks(range(len(ps)), ps)
    ax.set_yticks(range(len(alphas)), alphas)
    ax.set_xlabel("p (probability of the fused branch)")
    ax.set_ylabel(r"$\alpha$")
    name = r"$\pi$" if base == "pi" else r"$\pi_{\mathrm{ref}}$"
    ax.set_title(f"base {name}, T = {temperature:g}")
    return im


def _gap_curve(entry):
    """Median over seeds of the value gap per iteration (floored at 1e-16 for the log axis)."""
    n = min(len(s["value_gap"]) for s in entry["seeds"].values())
    v = np.array([s["value_gap"][:n] for s in entry["seeds"].values()])
    return np.arange(n), np.maximum(np.median(v, 0), 1e-16)


def draw(folder: Path):
    import matplotlib.pyplot as plt

    from analysis.style import OTHER_COLORS, SAMPLER_COLORS

    per, rule = load_rows(folder)
    groups = sorted({(e["fields"]["base"], float(e["fields"]["temperature"])) for lab, e in per.items()
                     if lab != REFERENCE}, key=lambda g: (g[0] != "pi", -g[1]))
    ncols = max(1, math.ceil(len(groups) / 2))
    mosaic = [[f"h{r * ncols + c}" if r * ncols + c < len(groups) else "." for c in range(ncols)] + ["curve"]
              for r in range(2 if len(groups) > 1 else 1)]
    fig = plt.figure(figsize=(4.2 * ncols + 6.0, 7.6 if len(mosaic) > 1 else 4.2), layout="constrained")
    axes = fig.subplot_mosaic(mosaic)
    iters = [summary_of(e)[1] for e in per.values()]
    vmax = max([i for i in iters if math.isfinite(i)] or [1.0])
    im = None
    for k, (base, t) in enumerate(groups):
        im = draw_heatmap(axes[f"h{k}"], per, base, t, vmax)
    if im is not None:
        fig.colorbar(im, ax=[axes[f"h{k}"] for k in range(len(groups))], shrink=0.6,
                     label="iterations to param_diff ≤ 1e-8 (grey: never)")
    ax = axes["curve"]
    wanted = [(REFERENCE, SAMPLER_COLORS["mix_p"], "-", "mix_p (paper, bandit)"),
              ("mix_p(a=0,p=1,T=1,B=pi)", SAMPLER_COLORS["on_policy"], "-", r"on_policy ($\alpha$ = 0)"),
              ("mix_p(a=0.5,p=0.7,T=1,B=pi)", OTHER_COLORS[0], "-", r"LLM $\alpha$ 0.5, p 0.7, T 1"),
              ("mix_p(a=0.5,p=0.7,T=0.7,B=pi)", OTHER_COLORS[0], "--", r"LLM $\alpha$ 0.5, p 0.7, T 0.7"),
              ("mix_p(a=0.5,p=1,T=0.7,B=pi)", OTHER_COLORS[1], "--", r"LLM $\alpha$ 0.5, p 1, T 0.7"),
              ("mix_p(a=3,p=natural,T=1,B=pi)", "0.35", "-", r"$\alpha=\beta$, natural p, base $\pi$"),
              ("mix_p(a=3,p=natural,T=1,B=pi_ref)", "black", ":", r"$\alpha=\beta$, natural p, base $\pi_{ref}$")]
    for lab, color, ls, name in wanted:
        if lab in per:
            x, y = _gap_curve(per[lab])
            ax.plot(x, y, color=color, ls=ls, lw=3.5 if lab == REFERENCE else 1.8, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(common.METRIC_LABELS["value_gap"] + " (median over seeds)")
    ax.set_title("value gap")
    common.legend_outside(ax, fontsize=8)
    fig.suptitle(f"LLM Mix-P in the tabular bandit: cell = fitted order / iterations to 1e-8 "
                 f"(step {rule}; boxed: the LLM recipes' settings)")
    return fig


def make(tasks, out_dir, notes=None, runs=None):
    folders = study_runs(runs) if runs is not None else []
    if not folders:
        raise common.MissingLogs("no alpha-p study run", COMMAND)
    folder = max(folders, key=lambda f: json.loads((f / "run.json").read_text()).get("started", ""))
    if notes is not None and len(folders) > 1:
        notes.append(f"{NAME}: {len(folders)} study runs; drew the latest, {folder}")
    with common.house_style():
        return common.save(draw(folder), out_dir, NAME, notes)


@exit_on_config_error
def main(argv=None):
    args = common.build_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    return common.figure_main(NAME, COMMAND, lambda tasks, out, notes: make(tasks, out, notes, runs=args.runs), argv,
                              __doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
