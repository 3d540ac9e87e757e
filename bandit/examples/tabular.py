"""Tabular preference bandit: the six online samplers of "The Crucial Role of Samplers in Online DPO".

    python bandit/examples/tabular.py                      # the paper's exact and empirical settings, 20 seeds
    python bandit/examples/tabular.py --step newton --setting exact   # Mix-P's quadratic convergence

Writes runs/bandit/tabular/<name>/{run.json, metrics.jsonl, summary.json, <setting>.png/.pdf}.
"""
from __future__ import annotations

from dataclasses import dataclass

from bandit.envs import TabularEnv, load_rewards
from bandit.examples.common import BanditArgs, arg, resolve, run_experiment
from runlog import ConfigError, exit_on_config_error, parse_dataclass


@dataclass
class Args(BanditArgs):
    actions: int | None = arg(None, "actions per context A (default 20, or the width of --rewards)")
    contexts: int | None = arg(None, "contexts E (default 1, or the rows of --rewards)")
    rewards: str | None = arg(None, "true rewards as a .npy or .json array of shape [A] or [E, A], shared by all "
                              "seeds (default: N(0, 1) drawn per seed)", metavar="FILE")


@exit_on_config_error
def main(argv=None):
    args = parse_dataclass(Args, argv, description=__doc__.split("\n\n")[0])
    rewards = None
    if args.rewards is not None:
        rewards = load_rewards(args.rewards)
        for name, given, actual in (("contexts", args.contexts, rewards.shape[0]), ("actions", args.actions, rewards.shape[1])):
            if given is not None and given != actual:
                raise ConfigError(f"--{name}: {given} disagrees with --rewards, which has {actual}")
    if rewards is not None:
        args.contexts, args.actions = rewards.shape
    args.contexts = 1 if args.contexts is None else args.contexts
    args.actions = 20 if args.actions is None else args.actions
    plan = resolve(args)

    env = TabularEnv.from_seeds(plan.seeds, args.contexts, args.actions, args.beta, plan.device, rewards)
    return run_experiment(args, plan, env, title=f"tabular bandit (A={args.actions}, E={args.contexts})")


if __name__ == "__main__":
    main()
