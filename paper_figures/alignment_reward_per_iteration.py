"""Alignment pipeline (sampler runs): mean true reward and win rate against the initial policy per DPO iteration,
one line per sampler with 95% CI bars (slightly dodged so that they do not cover each other); a figure per
pipeline task whose runs are samplers (not --label selection runs).

    python paper_figures/alignment_reward_per_iteration.py --runs runs/ --out paper_figures/out/
"""
from __future__ import annotations

from paper_figures import common
from runlog import exit_on_config_error

NAME = "alignment_reward_per_iteration"
COMMAND = "bash alignment/toy.sh"
PANELS = ("reward_mean", "win_rate")


def figure(task):
    from analysis.iterations import iteration_table

    table = iteration_table(task.rows)
    methods = common.methods_in_order(r["method"] for r in table)
    colors = common.sampler_colors(methods)
    fig, axes = common.new_figure(1, len(PANELS), 12.5, 4.8)
    width = 0.08 * min(len(methods), 5)
    notes = []
    for ax, metric in zip(axes[0], PANELS):
        lim = common.robust_limits([r[metric] for r in table], [r[f"{metric}_lo"] for r in table],
                                   [r[f"{metric}_hi"] for r in table], floor=0.0 if metric == "win_rate" else None)
        if metric == "win_rate":
            lim = (lim[0], min(lim[1], 1.0 + 0.03))
            ax.axhline(0.5, color="0.4", lw=0.9, ls=":", zorder=1)
            ax.annotate("0.5: as good as the initial policy", (0.99, 0.5), xycoords=("axes fraction", "data"),
                        xytext=(0, -3), textcoords="offset points", fontsize=8, color="0.35", ha="right", va="top")
        for k, m in enumerate(methods):
            cells = [r for r in table if r["method"] == m]
            shift = (k - (len(methods) - 1) / 2) * width / max(len(methods) - 1, 1)
            seeds = max(r["seeds"] for r in cells)
            bar = ax.errorbar([r["iteration"] + shift for r in cells], [r[metric] for r in cells],
                              yerr=common.error_halves(cells, metric), color=colors[m], marker=common.marker(m),
                              markersize=6, lw=1.6, elinewidth=1.1, capsize=3,
                              label=f"{m} ({seeds} seed{'s' if seeds != 1 else ''})")
            for artist in (*bar[1], *bar[2]):
                artist.set_alpha(0.6)
        ax.set_ylim(*lim)
        outside = common.mark_outside(ax, [(r["iteration"], r[metric], colors[r["method"]],
                                            f"{r['method']} it {r['iteration']}") for r in table],
                                      ax.get_xlim(), lim)
        cut = common.cut_intervals(table, metric, lim, lambda c: f"{c['method']} it {c['iteration']}")
        label = "reward" if metric == "reward_mean" else "win rate"
        if outside:
            notes.append(f"{label} beyond the axes: " + "; ".join(outside))
        if cut:
            notes.append(f"{label} bars cut at the axes: " + "; ".join(cut))
        iterations = sorted({r["iteration"] for r in table})
        ax.set_xticks(iterations)
        ax.set_xlabel("DPO iteration (0 = the initial policy)")
        ax.set_ylabel(common.METRIC_LABELS[metric])
        ax.grid(alpha=0.3)
    common.legend_outside(axes[0][-1], title="sampler")
    fig.suptitle(f"{task.name}: true reward and win rate per DPO iteration")
    note = common.ci_note(table) + "; points of one iteration dodged sideways"
    common.footnote(fig, "\n".join([note] + [common.wrap(n, 150) for n in notes]))
    return fig



def make(tasks, out_dir, notes=None):
    return common.pipeline_figures(NAME, COMMAND, tasks, False, figure, out_dir, notes)


@exit_on_config_error
def main(argv=None):
    return common.figure_main(NAME, COMMAND, make, argv, __doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
