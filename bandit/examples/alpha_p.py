"""The LLM's Mix-P in the bandit: a sweep of its strength alpha and fused-branch probability p (issue 12).

The LLM recipes draw pairs from mix_p_llm(alpha, p) (bandit/spec.py): with probability p the fused pair
(B (pi/pi_ref)^a, B (pi/pi_ref)^-a), else a (B, B) pair, B = pi (the LLM's base measure), at temperature 0.7.
That is a different pair distribution from the paper's bandit mix_p (weight 2 + e^Dh + e^-Dh). This study runs
exact (or empirical) DPO under every (alpha, p, temperature, base) of the grid, with the paper's mix_p at the
same beta as the reference row, and reports per setting: the fitted convergence order of param_diff
(bandit/rates.py), the iterations to param_diff <= 1e-8, and the value gap per iteration (in the log).

    python bandit/examples/alpha_p.py                          # the default grid, exact setting, Newton step (~15-40 s on 2 cores)
    python bandit/examples/alpha_p.py --bases pi,pi_ref --alphas 0.5,3 --ps 0.7,1,natural

p is the probability of the fused branch; 'natural' means branch probabilities proportional to the components'
normalisers, which gives the pair weight B(y) B(y') (2 + e^(a D) + e^(-a D)), D = Dh / beta: with B = pi_ref
(uniform here) and a = beta that is the paper's mix_p exactly; with B = pi it is pi(y) pi(y') times it.

The Newton step is sized for the paper's weight: with base pi at T 0.7 it overshoots (a period-2 cycle, the value
gap stalls near 1e-2), so for the temperature question also run the smaller fixed step, stable on the whole grid:

    python bandit/examples/alpha_p.py --steps fixed --lr 3 --iters 300 --name fixed-lr3

Writes runs/bandit/alpha_p/<name>/{run.json, metrics.jsonl, summary.json}; one metrics line per (row, seed,
iteration) with sampler mix_p, a label naming the row, and its alpha, p, temperature, base and step rule.
paper_figures/alpha_p.py draws the figure from it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from bandit.envs import TabularEnv
from bandit.examples.common import (PAPER, bandit_bytes, check_alpha, llm_mix_p, metric_lines, parse_p, resolve_device, run_generator,
                                    summarise)
from bandit.rates import TOL
from bandit.runner import simulate
from bandit.spec import BASES, SPECS
from runlog import ConfigError, RunDir, arg, atomic_write_json, check_memory, check_name, check_out, check_positive, check_seed, entry_point

STEPS = ("newton", "fixed")
REFERENCE = "mix_p (paper)"      # the label of the paper's bandit mix_p row
LLM_SETTINGS = ((0.5, 0.7), (0.5, 1.0))  # (alpha, p) of the LLM recipes (iterative_prompt, safe_rlhf), at T 0.7


@dataclass
class Args:
    alphas: str = arg("0,0.5,1,2,3,4", "comma-separated Mix-P strengths a >= 0 (a = 0: on-policy pairs)")
    ps: str = arg("0.3,0.7,1,natural", "comma-separated fused-branch probabilities in [0, 1], or 'natural'")
    temperatures: str = arg("1,0.7", "comma-separated sampling temperatures T > 0 (each tilt's pi and pi_ref "
                            "coefficients times 1/T)")
    bases: str = arg("pi,pi_ref", "comma-separated base measures B of the tilts: pi (the LLM's), pi_ref")
    steps: str = arg("newton", "comma-separated step rules: newton (lr = S / (2 A beta^2), S the sum of "
                     "2+e^Dr+e^-Dr: the paper's mix_p converges quadratically) and fixed (--lr)")
    setting: str = arg("exact", "exact: expected loss under the sampler; empirical: num-samples labelled pairs "
                       "per step", choices=["exact", "empirical"])
    seeds: int = arg(20, "number of seeds (reward draws N(0, 1))")
    seed: int = arg(0, "first seed")
    iters: int = arg(100, "DPO iterations")
    lr: float | None = arg(None, "step size of --steps fixed (default: the paper's, 10 exact and 0.05 empirical)")
    beta: float = arg(3.0, "DPO beta")
    actions: int = arg(20, "actions A")
    num_samples: int = arg(8192, "labelled pairs per step in the empirical setting")
    device: str = arg("cpu", "torch device: cpu, cuda, cuda:N")
    out: str = arg("runs/bandit/alpha_p", "output folder; the run is written to OUT/NAME")
    name: str | None = arg(None, "run name (default: the setting); an older run of that name is replaced")


def _floats(text: str, flag: str, check) -> list:
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    if not items:
        raise ConfigError(f"--{flag}: give at least one value")
    out = []
    for s in items:
        try:
            v = check(s)
        except ValueError:
            raise ConfigError(f"--{flag}: {s!r} is not a number") from None
        if v in out:
            raise ConfigError(f"--{flag}: {s} is listed twice")
        out.append(v)
    return out


def _alpha(s: str) -> float:
    v = float(s)
    check_alpha(v, "alphas")
    return v


def _temperature(s: str) -> float:
    v = float(s)
    check_positive("temperatures", v)
    return v


def _names(text: str, flag: str, allowed) -> list:
    items = [s.strip() for s in str(text).split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise ConfigError(f"--{flag}: {', '.join(map(repr, bad)) or 'nothing given'}; choose from {', '.join(allowed)}")
    if len(set(items)) != len(items):
        raise ConfigError(f"--{flag}: a value is listed twice in {text!r}")
    return items


def p_text(p) -> str:
    return "natural" if p is None else f"{p:g}"


def label(alpha, p, temperature, base) -> str:
    return f"mix_p(a={alpha:g},p={p_text(p)},T={temperature:g},B={base})"


def rows_of(args):
    """The grid, validated: [(label, spec-or-name, fields)], the paper's mix_p first."""
    alphas = _floats(args.alphas, "alphas", _alpha)
    ps = _floats(args.ps, "ps", lambda s: parse_p(s, "--ps"))
    temps = _floats(args.temperatures, "temperatures", _temperature)
    bases = _names(args.bases, "bases", BASES)
    rows = [(REFERENCE, SPECS["mix_p"], {"alpha": None, "p": "natural", "temperature": 1.0, "base": "uniform",
                                         "reference": True})]
    for base in bases:
        for t in temps:
            for a in alphas:
                for p in ps:
                    rows.append((label(a, p, t, base), llm_mix_p(a, p, base, t),
                                 {"alpha": a, "p": p_text(p), "temperature": t, "base": base, "reference": False}))
    return rows


def run(args: Args):
    rows = rows_of(args)
    steps = _names(args.steps, "steps", STEPS)
    for name in ("seeds", "iters", "actions", "num_samples"):
        check_positive(name.replace("_", "-"), getattr(args, name), integer=True)
    if args.actions < 2:
        raise ConfigError(f"--actions: need at least 2 actions to form a pair, got {args.actions}")
    check_seed("seed", args.seed)
    check_positive("beta", args.beta)
    if args.lr is not None:
        check_positive("lr", args.lr)
    lr = args.lr if args.lr is not None else PAPER[args.setting]["lr"]
    check_memory("the simulation's tensors", bandit_bytes(args.seeds, 1, args.actions, args.num_samples,
                                                          args.setting != "exact"),
                 "--seeds x --actions" + (" x --num-samples" if args.setting != "exact" else ""))
    check_out(args.out)
    name = args.setting if args.name is None else args.name  # blank: an error, not the default
    check_name(name)
    device = resolve_device(args.device)
    seeds = list(range(args.seed, args.seed + args.seeds))
    env = TabularEnv.from_seeds(seeds, 1, args.actions, args.beta, device, None)
    config = dataclasses.asdict(args) | {"resolved": {"study": "alpha_p", "lr": lr, "rows": len(rows), "steps": steps, "tol": TOL}}
    summary = {}
    with RunDir(args.out, name, config, seeds) as run_dir:
        for step in steps:
            for lab, spec, fields in rows:
                traj = simulate(env, spec, args.setting, args.iters, lr=lr if step == "fixed" else 0.0,
                                step_rule=step, num_samples=args.num_samples,
                                generator=run_generator(device, args.seed, args.setting, f"{step}/{lab}"))
                run_dir.log_lines(metric_lines(args.setting, "mix_p", seeds, traj,
                                               {"label": lab, **fields, "step_rule": step}))
                summary.setdefault(step, {})[lab] = fields | summarise(traj, args.setting)
        atomic_write_json(run_dir.path("summary.json"), summary)
        path = run_dir.finish(summary=summary)
    print(format_table(summary, lr))
    return path


def _cell(s) -> str:
    it = s["iters_to_tol_median"]
    it = "never" if math.isinf(it) else ("-" if math.isnan(it) else f"{it:g}")
    order = "-" if math.isnan(s["order_median"]) else f"{s['order_median']:.2f}"
    return f"{order:>5} {it:>5}"


def format_table(summary: dict, lr: float) -> str:
    """One block per (step rule, base, temperature): rows alpha, columns p, cells 'order iterations-to-1e-8'."""
    out = []
    for step, per in summary.items():
        ref = per.get(REFERENCE)
        out.append(f"== step {step}" + (f" (lr {lr:g})" if step == "fixed" else " (lr = S / (2 A beta^2))")
                   + (f"; reference {REFERENCE}: {_cell(ref).strip()}, final value gap "
                      f"{ref['final_value_gap_median']:.2e}" if ref else ""))
        groups = {}
        for lab, s in per.items():
            if not s["reference"]:
                groups.setdefault((s["base"], s["temperature"]), []).append(s)
        for (base, t), cells in groups.items():
            ps = list(dict.fromkeys(c["p"] for c in cells))
            alphas = list(dict.fromkeys(c["alpha"] for c in cells))
            out.append(f"  base {base}, T {t:g}: order / iterations to param_diff <= {TOL:g} (medians over seeds)")
            out.append("  " + f"{'alpha':>6} | " + " | ".join(f"p={p:<9}" for p in ps))
            for a in alphas:
                row = {c["p"]: c for c in cells if c["alpha"] == a}
                mark = lambda p: "*" if (a, None if p == "natural" else float(p)) in LLM_SETTINGS else " "
                out.append("  " + f"{a:>6g} | " + " | ".join(_cell(row[p]) + mark(p) for p in ps))
    out.append("order: fitted order of param_diff (bandit/rates.py; 1 linear, 2 quadratic, '-' no fit: under 1 "
               "decade moved or converged in < 2 steps);\niterations: 'never' = not within the run. * = an LLM "
               "recipe's (alpha, p) (iterative_prompt: 0.5, 0.7; safe_rlhf: 0.5, 1), which run at T 0.7.")
    return "\n".join(out)


main = entry_point(Args, run, __doc__)

if __name__ == "__main__":
    main()
