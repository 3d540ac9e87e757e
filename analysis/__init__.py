"""Analysis of run logs (DESIGN.md section 5).

Reads only what runs leave on disk -- `run.json` and `metrics.jsonl` -- never in-memory objects from
bandit/ or alignment/, so any finished (or partly finished) run can be analysed after the fact.

- `load`: find run folders and turn their logs into tidy rows (one dict per metrics line, with the
  run's flattened config attached), reporting malformed lines instead of dropping them.
- `aggregate`: means, medians and confidence intervals over seeds (`t_interval` is the project's one
  Student-t interval), and convergence diagnostics (fitted order, iterations to a tolerance) of an error series.
- `runs`: which experiment a run folder holds (from run.json) and which runs form one task.
- `curves`: bandit learning curves and pairs-used curves over seeds, convergence tables.
- `iterations`: alignment per-iteration tables over seeds and the reward-vs-KL frontier.
- `leaderboard`: `python -m analysis.leaderboard RUNS...`, samplers ranked per task and metric.
- `style`: the fixed colour and marker of each sampler, shared by every figure.
"""

from analysis.aggregate import aggregate, convergence_order, iterations_to, mean_ci, median, select_last, t_interval
from analysis.load import Loaded, LoadError, Problem, find_runs, load_runs

__all__ = [
    "Loaded", "LoadError", "Problem", "find_runs", "load_runs",
    "aggregate", "convergence_order", "iterations_to", "mean_ci", "median", "select_last", "t_interval",
]
