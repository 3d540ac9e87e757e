"""Preference bandits for studying DPO samplers (DESIGN.md section 3).

    envs.py      tabular and linear environments, batched over seeds
    samplers.py  the sampler registry: log-weights over ordered pairs (y, y')
    dpo.py       exact and empirical DPO gradients, pair sampling, step rules
    metrics.py   param_diff, value, value_gap, kl; convergence order
    runner.py    the vectorised simulation loop with divergence handling
    experiment.py, plots.py  what the example scripts share: CLI, logs, figures, summary
    offline.py   the offline regime: a fixed labelled dataset, uncertainty widths, one DPO step per selection
    selectors.py the selector registry (unif, random_subset, reward_gap, reward_gap_step, us, ae, sams, borda)
"""
from bandit.envs import TabularEnv, LinearEnv
from bandit.samplers import SAMPLERS, get_sampler, sampler_weights
from bandit.runner import simulate, Trajectory

__all__ = ["TabularEnv", "LinearEnv", "SAMPLERS", "get_sampler", "sampler_weights", "simulate", "Trajectory"]
