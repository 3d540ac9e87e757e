"""Offline selection (bandit): value gap against the labelled pairs used, one line and 95% band per selector
(geometric mean over seeds); a column per label-noise level (the flip of the task's config), a row per bandit
(tabular, linear). Offline tasks that differ in something other than the flip get a figure each.

    python paper_figures/offline_selection.py --runs runs/ --out paper_figures/out/
"""
from __future__ import annotations

import re
from paper_figures import common
from runlog import exit_on_config_error

NAME = "offline_selection"
NO_NOISE = "python bandit/examples/offline.py"
NOISE = "python bandit/examples/offline.py --flip 0.2"
COMMAND = f"{NO_NOISE} and {NOISE}"
ENVS = ("tabular", "linear")


def flip_of(task) -> float:
    for r in task.rows:
        if isinstance(r.get("flip"), (int, float)):
            return float(r["flip"])
    return float(common.config_value(task, "flip", 0.0))


def group_name(task) -> str:
    """The task's name without its flip: tasks that differ only in the label noise share a figure."""
    m = re.fullmatch(r"(\w+) \((.*)\)", task.name)
    if not m:
        return task.name
    rest = [p for p in m.group(2).split(", ") if not p.startswith("flip=")]
    return m.group(1) + (f" ({', '.join(rest)})" if rest else "")


def noise_title(flip: float) -> str:
    return "no label noise" if flip == 0 else f"{flip:.0%} of labels flipped"


def env_shape(task, env: str) -> str:
    shape = f"A={common.config_value(task, 'actions')}, E={common.config_value(task, 'contexts')}"
    if env == "linear":
        shape += f", d={common.config_value(task, 'dim')}"
    return shape


def figure(tasks):
    """tasks: one per flip level (sorted), the same settings otherwise."""
    from analysis.curves import pairs_used_curves

    envs = [e for e in ENVS if any(r.get("env") == e for t in tasks for r in t.rows)]
    envs += sorted({r.get("env") for t in tasks for r in t.rows} - set(envs) - {None})
    methods = common.methods_in_order({m for t in tasks for m in t.methods})
    colors = common.sampler_colors(methods)
    fig, axes = common.new_figure(len(envs), len(tasks), 5.3 * len(tasks) + 2.2, 0.9 + 3.7 * len(envs),
                                  sharey="row")
    handles = {}
    for i, env in enumerate(envs):
        for j, task in enumerate(tasks):
            ax = axes[i][j]
            rows = [r for r in task.rows if r.get("env") == env]
            cs = pairs_used_curves(rows, "value_gap")
            seeds = sorted({c.n for c in cs.values()})
            diverged = [f"{m} {c.diverged}" for m, c in cs.items() if c.diverged]
            for k, m in enumerate(common.methods_in_order(cs)):
                online = any(r.get("setting") == "online" for r in rows if r["method"] == m)
                label = f"{m} (online: fresh pairs)" if online else m
                handles[label] = common.draw_curve(ax, cs[m], colors[m], m, index=k, label=label,
                                                   ls="--" if online else "-", positive_x=True)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            n = "/".join(str(s) for s in seeds) or "0"
            title = f"{env} bandit ({env_shape(task, env)}), {noise_title(flip_of(task))}: {n} seeds"
            ax.set_title(title + (f"\ndiverged seeds left out: {', '.join(diverged)}" if diverged else ""),
                         fontsize=10)
            if i == len(envs) - 1:
                ax.set_xlabel("labelled pairs used (distinct pairs trained on; mean over seeds)")
            if j == 0:
                ax.set_ylabel(common.METRIC_LABELS["value_gap"])
    order = sorted(handles, key=lambda lab: common.sampler_key(lab.split(" ")[0]))
    common.legend_outside(axes[0][-1], title="selector", handles=[handles[k] for k in order], labels=order)
    t0 = tasks[0]
    fig.suptitle(f"Offline selection in the bandits: N={common.config_value(t0, 'dataset')} labelled pairs per "
                 f"seed, B={common.config_value(t0, 'batch')} pairs per DPO step, "
                 rf"$\beta$={common.fmt(float(common.config_value(t0, 'beta', 0)))}")
    common.footnote(fig, common.BAND_NOTE + ".\nThe dataset selectors stop at N pairs (more steps reuse them: "
                    "the vertical ends); borda draws fresh pairs every step.")
    return fig


def make(tasks, out_dir, notes=None):
    offline = common.bandit_tasks(tasks, "offline")
    if not offline:
        raise common.MissingLogs("no offline-selection bandit run", COMMAND)
    groups: dict[str, list] = {}
    for t in offline:
        groups.setdefault(group_name(t), []).append(t)
    names = common.stems(NAME, groups)
    paths = []
    with common.house_style():
        for key, members in groups.items():
            members.sort(key=flip_of)
            flips = [flip_of(t) for t in members]
            if len(flips) == 1 and notes is not None:
                other = NOISE if flips[0] == 0 else NO_NOISE
                what = "a 20%-label-noise" if flips[0] == 0 else "a no-label-noise"
                notes.append(f"{names[key]}: only {noise_title(flips[0])} logged ({key}); {other} adds {what} "
                             f"column")
            paths += common.save(figure(members), out_dir, names[key], notes)
    return paths


@exit_on_config_error
def main(argv=None):
    return common.figure_main(NAME, COMMAND, make, argv, __doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
