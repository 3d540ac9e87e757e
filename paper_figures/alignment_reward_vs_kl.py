"""Alignment pipeline (sampler runs): mean true reward against KL(pi || pi_ref), one marker per sampler and
iteration (numbers annotated), 95% CI bars both ways, the reward-KL frontier as a thin dashed line; a figure per
pipeline task whose runs are samplers (not --label selection runs).

    python paper_figures/alignment_reward_vs_kl.py --runs runs/ --out paper_figures/out/
"""
from __future__ import annotations

from paper_figures import common
from runlog import exit_on_config_error

NAME = "alignment_reward_vs_kl"
COMMAND = "bash alignment/toy.sh"
OFFSETS = ((7, 7), (7, -8), (-7, 7), (-7, -8))   # points (right/left, up/down) of the iteration numbers


def figure(task):
    from analysis.iterations import frontier, iteration_table

    table = iteration_table(task.rows)
    methods = common.methods_in_order(r["method"] for r in table)
    colors = common.sampler_colors(methods)
    fig, axes = common.new_figure(1, 1, 8.8, 5.6)
    ax = axes[0][0]
    xlim = common.robust_limits([r["kl"] for r in table], [r["kl_lo"] for r in table], [r["kl_hi"] for r in table],
                                floor=0.0)
    ylim = common.robust_limits([r["reward_mean"] for r in table], [r["reward_mean_lo"] for r in table],
                                [r["reward_mean_hi"] for r in table])
    labelled, handles = set(), []
    for k, m in enumerate(methods):
        offset = OFFSETS[k % len(OFFSETS)]   # each sampler's iteration numbers on its own side of the markers
        cells = [r for r in table if r["method"] == m]
        seeds = max(r["seeds"] for r in cells)
        bar = ax.errorbar(
            [r["kl"] for r in cells], [r["reward_mean"] for r in cells], xerr=common.error_halves(cells, "kl"),
            yerr=common.error_halves(cells, "reward_mean"), color=colors[m], marker=common.marker(m), markersize=7,
            lw=1.6, elinewidth=1, capsize=3, label=f"{m} ({seeds} seed{'s' if seeds != 1 else ''})")
        handles.append(bar)
        for artist in (*bar[1], *bar[2]):
            artist.set_alpha(0.5)  # the lines and markers stay in front of the (often overlapping) bars
        for r in cells:
            spot = (round(r["kl"], 6), round(r["reward_mean"], 6), r["iteration"])
            if spot in labelled:   # iteration 0 is the same initial policy for every sampler: one label
                continue
            labelled.add(spot)
            ax.annotate(str(r["iteration"]), (r["kl"], r["reward_mean"]), xytext=offset if r["iteration"] else (6, 5),
                        textcoords="offset points", fontsize=9, color=colors[m] if r["iteration"] else "0.2",
                        fontweight="bold", ha="left" if offset[0] > 0 else "right", va="center")
    front = frontier(table)
    handles += ax.plot([r["kl"] for r in front], [r["reward_mean"] for r in front], ls=(0, (4, 3)), lw=1.1,
                       color="black", alpha=0.8, zorder=5, label="reward-KL frontier")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    outside = common.mark_outside(ax, [(r["kl"], r["reward_mean"], colors[r["method"]],
                                        f"{r['method']} it {r['iteration']}") for r in table], xlim, ylim)
    ax.set_xlabel(common.METRIC_LABELS["kl"])
    ax.set_ylabel(common.METRIC_LABELS["reward_mean"])
    ax.grid(alpha=0.3)
    common.legend_outside(ax, title="sampler", handles=handles)
    ax.set_title(f"{task.name}: reward vs KL over DPO iterations")
    cut = (common.cut_intervals(table, "kl", xlim, lambda c: f"{c['method']} it {c['iteration']} KL")
           + common.cut_intervals(table, "reward_mean", ylim, lambda c: f"{c['method']} it {c['iteration']} reward"))
    note = (f"numbers: iteration (0 = the initial policy); {common.ci_note(table)}; dashed: the frontier (no other "
            "point has at most its KL and at least its reward)")
    if outside:
        note += "\npoints beyond the axes, drawn at the edge (KL, reward): " + "; ".join(outside)
    if cut:
        note += "\nbars cut at the axes: " + "; ".join(cut)
    common.footnote(fig, common.wrap(note))
    return fig



def make(tasks, out_dir, notes=None):
    return common.pipeline_figures(NAME, COMMAND, tasks, False, figure, out_dir, notes)


@exit_on_config_error
def main(argv=None):
    return common.figure_main(NAME, COMMAND, make, argv, __doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
