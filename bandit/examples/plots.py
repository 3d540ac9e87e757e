"""Figures of a bandit run: param_diff, value and value_gap against iteration, mean and 95% band over seeds.

On log axes the mean and band are taken over log values (a geometric mean): errors span many orders
of magnitude across seeds, and an arithmetic mean would show only the slowest seed.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import numpy as np
from scipy import stats

from analysis.style import sampler_colors

PANELS = (("param_diff", "parameter error (param_diff)", True),
          ("value", "value V(pi)", False),
          ("value_gap", "value gap V(pi*) - V(pi)", True))
LOG_FLOOR = 1e-17  # float64 noise can make gaps ~0 or slightly negative; clip for log axes


def mean_band(x: np.ndarray, level: float = 0.95):
    """Mean over seeds (axis 1) and its `level` t-confidence band; the band is the mean itself for one seed."""
    n = x.shape[1]
    mean = x.mean(1)
    if n < 2:
        return mean, mean, mean
    half = stats.t.ppf(0.5 + level / 2, n - 1) * x.std(1, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def plot_setting(results: dict, title: str, paths, v_star: float | None = None) -> None:
    """results: sampler -> Trajectory. Diverged seeds are left out of the mean and band (the legend says how many)."""
    colors = sampler_colors(results)  # the fixed colour of each sampler, as in every figure of the project
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4), constrained_layout=True)
    for ax, (metric, label, log) in zip(axes, PANELS):
        for sampler, traj in results.items():
            ok = traj.diverged_at < 0
            n_div = int((~ok).sum())
            if not ok.any():
                ax.plot([], [], color=colors[sampler], label=f"{sampler} (all {n_div} seeds diverged)")
                continue
            x = traj.series(metric)[:, ok]
            if log:
                x = np.clip(x, LOG_FLOOR, None)
            steps = np.arange(x.shape[0])
            mean, lo, hi = mean_band(np.log(x) if log else x)
            if log:
                mean, lo, hi = np.exp(mean), np.exp(lo), np.exp(hi)
            name = sampler + (f" ({n_div} of {ok.size} seeds diverged, not shown)" if n_div else "")
            ax.plot(steps, mean, color=colors[sampler], label=name, lw=1.5)
            ax.fill_between(steps, lo, hi, color=colors[sampler], alpha=0.2, lw=0)
        if metric == "value" and v_star is not None:
            ax.axhline(v_star, color="black", ls="--", lw=1, label="V(pi*)")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}\nmean (geometric on log axes) and 95% confidence band over seeds", fontsize=10)
    for p in paths:
        fig.savefig(p, dpi=120)
    plt.close(fig)
