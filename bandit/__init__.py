"""Preference bandits for studying DPO samplers (DESIGN.md section 3).

    vocabulary.py the project's method names (both packages and analysis read it; plain data, no torch)
    spec.py      the shared sampler interface: product mixtures of tilts (plain data; alignment builds on it)
    envs.py      tabular and linear environments, batched over seeds
    samplers.py  the sampler registry: exact pair weights of every spec, and mix_p_star
    dpo.py       exact and empirical DPO gradients, pair sampling, step rules
    metrics.py   param_diff, value, value_gap, kl
    rates.py     convergence diagnostics: order fit, iterations to a tolerance, noise floor (numpy only; analysis
                 shares them)
    runner.py    the vectorised simulation loop with divergence handling
    examples/    the entry points (tabular.py, linear.py, offline.py) and what they share (common.py: CLI, logs,
                 summary; plots.py: figures in analysis' style)
    offline.py   the offline regime: a fixed labelled dataset, uncertainty widths, one DPO step per selection
    selectors.py the selector registry (all, random_subset, reward_gap, reward_gap_step, us, ae, sams, borda)

The names below are loaded on first use, so `import bandit.vocabulary` or `import bandit.rates` does not import torch.
"""
import importlib

_EXPORTS = {"TabularEnv": "bandit.envs", "LinearEnv": "bandit.envs", "SAMPLERS": "bandit.samplers",
            "get_sampler": "bandit.samplers", "sampler_weights": "bandit.samplers", "simulate": "bandit.runner",
            "Trajectory": "bandit.runner"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bandit' has no attribute {name!r}")
