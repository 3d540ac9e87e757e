"""Selection methods on the toy task (pipeline runs made with --label on one offline preference set): the final
iteration's true reward and KL per method, 95% CI bars over seeds and each seed's value, methods in the house
order, the "all" baseline (all pairs) as a reference line with its CI as a band; a figure per such task.

    python paper_figures/selection_toy.py --runs runs/ --out paper_figures/out/
"""
from __future__ import annotations

from matplotlib.ticker import MaxNLocator

from paper_figures import common
from runlog import exit_on_config_error

NAME = "selection_toy"
COMMAND = "bash alignment/toy_selection.sh"
PANELS = ("reward_mean", "kl")
BASELINE = "all"


def final_cells(rows) -> list[dict]:
    """Per method, the iteration_table cell of its last iteration."""
    from analysis.iterations import iteration_table

    last: dict[str, dict] = {}
    for cell in iteration_table(rows):
        if cell["method"] not in last or cell["iteration"] > last[cell["method"]]["iteration"]:
            last[cell["method"]] = cell
    return [last[m] for m in common.methods_in_order(last)]


def figure(task):
    """A panel per metric: methods as rows (house order, top to bottom), the metric along x."""
    from analysis.iterations import final_rows

    cells = final_cells(task.rows)
    methods = [c["method"] for c in cells]
    colors = common.sampler_colors(methods)
    finals = final_rows(task.rows)
    fig, axes = common.new_figure(1, len(PANELS), 5.0 * len(PANELS) + 2.4, max(3.2, 1.6 + 0.55 * len(cells)),
                                  sharey=True)
    notes = []
    for ax, metric in zip(axes[0], PANELS):
        seed_values = [(i, float(r[metric]), c["method"]) for i, c in enumerate(cells) for r in finals
                       if r["method"] == c["method"] and isinstance(r.get(metric), (int, float))]
        lim = common.robust_limits([c[metric] for c in cells] + [v for _, v, _ in seed_values],
                                   [c[f"{metric}_lo"] for c in cells], [c[f"{metric}_hi"] for c in cells],
                                   floor=0.0 if metric == "kl" else None)
        handles = []
        base = next((c for c in cells if c["method"] == BASELINE), None)
        if base is not None:
            handles.append(ax.axvline(base[metric], color=colors[BASELINE], lw=1.2, ls="--", zorder=1,
                                      label=f"{BASELINE} (all pairs): mean"))
            if common.finite(base.get(f"{metric}_lo")):
                handles.append(ax.axvspan(base[f"{metric}_lo"], base[f"{metric}_hi"], color=colors[BASELINE],
                                          alpha=0.12, lw=0, zorder=0, label=f"{BASELINE}: 95% CI"))
        for i, c in enumerate(cells):
            m = c["method"]
            bar = ax.errorbar([c[metric]], [i], xerr=common.error_halves([c], metric), color=colors[m],
                              marker=common.marker(m), markersize=9, elinewidth=1.6, capsize=5, ls="none", zorder=4)
            if i == 0:
                bar.set_label("mean, 95% CI")
                handles.append(bar)
        handles.append(ax.scatter([v for _, v, _ in seed_values], [i + 0.25 for i, _, _ in seed_values], s=24,
                                  facecolors="none", edgecolors=[colors[m] for _, _, m in seed_values],
                                  linewidths=1.1, zorder=5, label="each seed"))
        ax.set_xlim(*lim)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.set_ylim(len(cells) - 0.4, -0.6)   # the first method on top
        ax.set_yticks(range(len(cells)))
        ax.set_yticklabels([f"{c['method']} ({c['seeds']} seed{'s' if c['seeds'] != 1 else ''})" for c in cells])
        for tick, c in zip(ax.get_yticklabels(), cells):
            tick.set_color(colors[c["method"]] if colors[c["method"]] != "#949494" else "0.35")
        ax.set_xlabel(common.METRIC_LABELS[metric])
        ax.grid(alpha=0.3, axis="x")
        outside = common.mark_outside(ax, [(c[metric], i, colors[c["method"]], c["method"]) for i, c in
                                           enumerate(cells)], lim, ax.get_ylim(), show="x")
        outside += [f"{m} seed value {common.fmt(v)}" for _, v, m in seed_values if not lim[0] <= v <= lim[1]]
        cut = common.cut_intervals(cells, metric, lim, lambda c: c["method"])
        label = "reward" if metric == "reward_mean" else "KL"
        if outside:
            notes.append(f"{label} beyond the axes: " + "; ".join(outside))
        if cut:
            notes.append(f"{label} bars cut at the axes: " + "; ".join(cut))
    common.legend_outside(axes[0][-1], handles=handles)
    its = sorted({c["iteration"] for c in cells})
    at = f"iteration {its[0]}" if len(its) == 1 else "iterations " + ", ".join(map(str, its))
    fig.suptitle(f"{task.name}: selection methods after the final DPO {at}")
    common.footnote(fig, "\n".join([common.ci_note(cells) + "; hollow dots: each seed's final value"] + notes))
    return fig


def make(tasks, out_dir, notes=None):
    return common.pipeline_figures(NAME, COMMAND, tasks, True, figure, out_dir, notes)


@exit_on_config_error
def main(argv=None):
    return common.figure_main(NAME, COMMAND, make, argv, __doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
