"""What the bandit example scripts share: arguments, validation, the run loop, logs, figures, summary."""
from __future__ import annotations

import dataclasses
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bandit.metrics import METRICS, optimal_value
from bandit.rates import QUADRATIC, TOL, fitted_order, iterations_to
from bandit.runner import simulate
from bandit.samplers import DEFAULT_SAMPLERS, SAMPLERS, drawable
from bandit.spec import BASES, SPECS, PairSpec, mix_p_llm
from bandit.vocabulary import PAIR_SAMPLER, canonical_list
from runlog import (ConfigError, RunDir, arg, atomic_write_json, check_memory, check_name, check_out, check_number, check_positive,
                    check_seed, json_number)
from runlog import resolve_device as runlog_resolve_device

# The paper's settings (Shi, Zhou, Du, ICLR 2025): exact lr 10 for 100 iterations, empirical lr 0.05 for 3000.
PAPER = {"exact": {"lr": 10.0, "iters": 100}, "empirical": {"lr": 0.05, "iters": 3000}}


@dataclass
class BanditArgs:
    setting: str = arg("both", "exact: expected loss under the sampler; empirical: num-samples labelled pairs per step",
                       choices=["exact", "empirical", "both"])
    samplers: str = arg(",".join(DEFAULT_SAMPLERS), f"comma-separated sampler names, from: {', '.join(SAMPLERS)} "
                        "(aliases accepted, e.g. online, mixp; logs use the canonical names: "
                        "python -m bandit.vocabulary)")
    seeds: int = arg(20, "number of seeds; each seed is its own reward draw (the empirical setting's sampling "
                     "noise is one stream per run, sampler and setting)")
    seed: int = arg(0, "first seed: the run uses seeds seed, seed+1, ..., seed+seeds-1")
    iters: int | None = arg(None, "DPO iterations (default: the paper's, 100 exact and 3000 empirical)")
    lr: float | None = arg(None, "step size per context for --step fixed (default: the paper's, 10 exact and 0.05 empirical)")
    beta: float = arg(3.0, "DPO beta: strength of the KL pull towards pi_ref")
    actions: int | None = arg(20, "actions per context (A)")
    contexts: int | None = arg(1, "contexts (E)")
    num_samples: int = arg(8192, "labelled pairs drawn per context and step in the empirical setting")
    step: str = arg("fixed", "fixed: plain step lr; newton: lr = S / (2 A beta^2), S = sum of 2+e^Dr+e^-Dr over pairs, "
                    "which makes Mix-P converge quadratically", choices=["fixed", "newton"])
    device: str = arg("cpu", "torch device for the simulation: cpu, cuda, cuda:N")
    out: str = arg("runs/bandit/tabular", "output folder; the run is written to OUT/NAME")
    name: str | None = arg(None, "run name (default: SETTING-STEP, e.g. both-fixed); an older run of that name is replaced")
    plots: bool = arg(True, "write figures (PNG and PDF); --no-plots skips them")
    # the LLM's Mix-P (bandit/spec.py mix_p_llm); without --alpha, --p and --base, mix_p is the paper's 2+e^Dh+e^-Dh
    alpha: float | None = arg(None, "run mix_p in the LLM's form: the fused pair (B (pi/pi_ref)^a, B (pi/pi_ref)^-a) "
                              "of strength a >= 0, B the --base (B = pi: logits (1+a) l_pi - a l_ref and (1-a) l_pi "
                              "+ a l_ref). Given any of --alpha, --p, --base, the others default to the LLM recipes' "
                              "alpha 0.5, p 1, base pi; given none, mix_p is the paper's 2 + e^Dh + e^-Dh")
    p: str | None = arg(None, "LLM-form mix_p: probability of the fused branch, a number in [0, 1]; the rest of the "
                        "pairs are (B, B) pairs (on-policy for --base pi). 'natural': branch probabilities "
                        "proportional to the components' normalisers, i.e. the pair weight B(y) B(y') (2 + e^(a D) + "
                        "e^(-a D)), D = Dh / beta", metavar="P|natural")
    base: str | None = arg(None, "LLM-form mix_p: base measure B of its tilts: pi (the LLM's) or pi_ref",
                           choices=list(BASES))
    temperature: float | None = arg(None, "sampling temperature T > 0 of the samplers an LLM draws (offline, "
                                    "on_policy, gshf, LLM-form mix_p): every tilt's pi and pi_ref coefficients "
                                    "times 1/T; the bandit-only samplers (unif, mix_r, the paper's mix_p, mix_p_star) "
                                    "refuse it (default: 1)")


@dataclass
class Plan:
    settings: dict      # setting -> {"lr": ..., "iters": ...}
    samplers: list
    seeds: list
    device: torch.device
    name: str
    specs: dict = field(default_factory=dict)  # sampler -> the PairSpec run instead of its named weight (if any)
    llm: dict = field(default_factory=dict)    # the resolved --alpha/--p/--base/--temperature (empty: none given)


def resolve_device(name: str):
    """--device of the bandit entry points: cpu or cuda (float64 throughout, so no mps)."""
    return runlog_resolve_device(name, types=("cpu", "cuda"), why=" (float64 is needed)")


def parse_p(value, flag: str = "--p") -> float | None:
    """A fused-branch probability: a number in [0, 1], or 'natural' (None)."""
    text = str(value).strip()
    if text == "natural":
        return None
    try:
        p = float(text)
    except ValueError:
        p = math.nan
    if not (0.0 <= p <= 1.0):
        raise ConfigError(f"{flag}: must be a number in [0, 1] or 'natural', got {value!r}")
    return p


def check_alpha(value, flag: str = "alpha") -> None:
    check_number(flag, value, low=0.0)


def llm_mix_p(alpha: float = 0.5, p: float | None = 1.0, base: str = "pi", temperature: float = 1.0) -> PairSpec:
    """The LLM's mix_p spec at a temperature (T = 1 leaves every coefficient as it is)."""
    spec = mix_p_llm(alpha, p, base=base)
    return spec if temperature == 1.0 else spec.at_temperature(temperature)


def resolve_specs(args, samplers: list[str]) -> tuple[dict, dict]:
    """--alpha/--p/--base/--temperature -> ({sampler: PairSpec run instead of its named weight}, the resolved
    values for run.json); ({}, {}) when none is given (the named samplers, bit for bit as before)."""
    llm = any(getattr(args, k) is not None for k in ("alpha", "p", "base"))
    if llm and "mix_p" not in samplers:
        given = next(k for k in ("alpha", "p", "base") if getattr(args, k) is not None)
        raise ConfigError(f"--{given}: sets the LLM form of mix_p, which --samplers does not list "
                          f"({', '.join(samplers)})")
    if not llm and args.temperature is None:
        return {}, {}
    alpha = 0.5 if args.alpha is None else args.alpha
    check_alpha(alpha)
    p = 1.0 if args.p is None else parse_p(args.p)
    base = "pi" if args.base is None else args.base
    if base not in BASES:
        raise ConfigError(f"--base: must be one of {', '.join(BASES)}, got {base!r}")
    temperature = 1.0 if args.temperature is None else args.temperature
    check_positive("temperature", temperature)
    specs = {s: SPECS[s] for s in samplers if s in SPECS}
    if llm:
        specs["mix_p"] = mix_p_llm(alpha, p, base=base)
    if args.temperature is not None:
        refused = [s for s in samplers if s not in specs or not drawable(specs[s])]
        if refused:
            raise ConfigError(f"--temperature: applies to the samplers an LLM draws (offline, on_policy, gshf, "
                              f"mix_p with --alpha/--p/--base); --samplers lists {', '.join(refused)}")
        specs = {s: spec.at_temperature(temperature) for s, spec in specs.items()}
    else:  # the LLM form of mix_p only; the other samplers run their named weights
        specs = {"mix_p": specs["mix_p"]}
    resolved = {"temperature": temperature} | ({"alpha": alpha, "p": "natural" if p is None else p, "base": base}
                                               if llm else {})
    return specs, resolved



# float64 tensors of shape [contexts, actions, seeds] the simulation holds at once (rewards, policy, reference,
# gradients, sampler weights and metric temporaries): a conservative count, not a measurement
LIVE_TENSORS = 16


def bandit_bytes(seeds: int, contexts: int, actions: int, num_samples: int, empirical: bool, dim: int = 0) -> int:
    """Estimated bytes of the simulation's big tensors (exact ints)."""
    n = LIVE_TENSORS * seeds * contexts * actions * 8
    if dim:
        n += seeds * contexts * actions * dim * 8                # linear features [E, A, d] per seed
    if empirical:
        n += 4 * seeds * contexts * num_samples * 8              # drawn pairs (two int64 indices, labels, weights)
    return n


def resolve(args: BanditArgs, defaults: dict = PAPER) -> Plan:
    """Check every argument before anything is written; raise ConfigError naming the bad field."""
    samplers = canonical_list(args.samplers, PAIR_SAMPLER, "bandit", "--samplers", allowed=tuple(SAMPLERS))
    for name in ("seeds", "num_samples", "actions", "contexts"):
        check_positive(name.replace("_", "-"), getattr(args, name), integer=True)
    if args.actions < 2:
        raise ConfigError(f"--actions: need at least 2 actions to form a pair, got {args.actions}")
    if args.iters is not None:
        check_positive("iters", args.iters, integer=True)
    check_seed("seed", args.seed)
    check_out(args.out)
    check_positive("beta", args.beta)
    dim = getattr(args, "dim", 0)
    if isinstance(dim, int) and dim >= 1:
        flags = "--seeds x --contexts x --actions x --dim"
    else:
        dim, flags = 0, "--seeds x --contexts x --actions"
    empirical = args.setting in ("empirical", "both")
    check_memory("the simulation's tensors", bandit_bytes(args.seeds, args.contexts, args.actions, args.num_samples,
                                                          empirical, dim), flags + (" x --num-samples" if empirical else ""))
    if args.lr is not None:
        if args.step == "newton":
            raise ConfigError("--lr: applies to --step fixed only; --step newton sets the step from the rewards")
        check_positive("lr", args.lr)
    device = resolve_device(args.device)
    name = f"{args.setting}-{args.step}" if args.name is None else args.name  # blank: an error, not the default
    check_name(name)
    settings = ["exact", "empirical"] if args.setting == "both" else [args.setting]
    plan = {s: {"lr": args.lr if args.lr is not None else defaults[s]["lr"], "iters": args.iters or defaults[s]["iters"]}
            for s in settings}
    if args.step == "newton":
        for s in plan.values():
            s["lr"] = None
    specs, llm = resolve_specs(args, samplers)
    return Plan(plan, samplers, list(range(args.seed, args.seed + args.seeds)), device, name, specs, llm)


def run_generator(device, seed: int, setting: str, sampler: str) -> torch.Generator:
    # one stream per (seed, setting, sampler): running a sampler alone gives the numbers it has in a full run
    g = torch.Generator(device=device)
    g.manual_seed(zlib.crc32(f"{seed}/{setting}/{sampler}".encode()))
    return g


def metric_lines(setting: str, sampler: str, seeds, traj, fields: dict | None = None) -> list[str]:
    """metrics.jsonl lines of one trajectory: one per seed and valid step, then a divergence event if any; `fields`
    (e.g. a study row's label and parameters) go into every line after the sampler."""
    head = {"setting": setting, "sampler": sampler, **(fields or {})}
    lines = []
    for b, seed in enumerate(seeds):
        prefix = json.dumps(head | {"seed": seed})[:-1] + ', "step": '
        m = traj.metrics[:, :, b]
        for t in range(traj.valid_steps(b)):
            vals = ", ".join(f'"{k}": {json_number(v)}' for k, v in zip(METRICS, m[t]))  # inf/NaN: null
            lines.append(f"{prefix}{t}, {vals}}}")
        d = int(traj.diverged_at[b])
        if d >= 0:
            lines.append(f'{prefix}{d}, "event": "diverged", "diverged_at": {d}}}')
    return lines


def summarise(traj, setting: str) -> dict:
    """Per-sampler summary over the seeds that did not diverge."""
    ok = traj.diverged_at < 0
    e = traj.series("param_diff")[:, ok]
    orders = np.array([fitted_order(e[:, b], noisy=setting != "exact") for b in range(e.shape[1])])
    hits = np.array([iterations_to(e[:, b], TOL) for b in range(e.shape[1])])
    fitted = orders[np.isfinite(orders)]
    med = lambda x: float(np.median(x)) if len(x) else float("nan")
    return {
        "seeds": int(ok.size), "diverged": int((~ok).sum()),
        "diverged_at": [int(d) for d in traj.diverged_at],
        "final_param_diff_median": med(e[-1]),
        "final_value_gap_median": med(traj.series("value_gap")[-1, ok]),
        "iters_to_tol_median": med(hits), "converged_seeds": int(np.isfinite(hits).sum()),
        "order_median": med(fitted), "order_per_seed": [None if not np.isfinite(o) else float(o) for o in orders],
        "quadratic_fraction": float((fitted >= QUADRATIC).sum() / max(len(orders), 1)),
    }


def format_summary(summary: dict) -> str:
    head = (f"{'setting':<10} {'sampler':<11} {'final param_diff':>16} {'iters to 1e-8':>13} "
            f"{'order':>6} {'quadratic':>9} {'diverged':>8}")
    lines = [head, "-" * len(head)]
    for setting, per in summary.items():
        for sampler, s in per.items():
            it = s["iters_to_tol_median"]
            it = "never" if math.isinf(it) else ("-" if math.isnan(it) else f"{it:g}")
            order = "-" if math.isnan(s["order_median"]) else f"{s['order_median']:.2f}"
            lines.append(f"{setting:<10} {sampler:<11} {s['final_param_diff_median']:>16.3e} {it:>13} {order:>6} "
                         f"{s['quadratic_fraction']:>9.0%} {s['diverged']:>4}/{s['seeds']:<3}")
    lines.append("medians over the seeds that did not diverge. order: slope of log e_{t+1} on log e_t, over the last\n"
                 "3 steps above the float64 floor (exact) or over the steps above 10x the sampling-noise plateau\n"
                 "(empirical). quadratic: share of seeds with order >= 1.8. e = param_diff.")
    return "\n".join(lines)


def run_experiment(args, plan: Plan, env, title: str) -> Path:
    """Simulate every (setting, sampler) of the plan on `env`, write the run, print the summary."""
    from bandit.examples.plots import plot_setting  # matplotlib only when needed

    config = dataclasses.asdict(args) | {"resolved": {"settings": plan.settings, "samplers": plan.samplers,
                                                         "name": plan.name} | ({"llm": plan.llm} if plan.llm else {})}
    total = sum(s["iters"] for s in plan.settings.values()) * len(plan.samplers)
    summary = {}
    with RunDir(args.out, plan.name, config, plan.seeds) as run, \
            tqdm(total=total, desc="simulating", unit="it", disable=None) as pbar:
        v_star = float(optimal_value(env.log_ref, env.rewards, env.beta).mean())
        for setting, hp in plan.settings.items():
            results = {}
            for sampler in plan.samplers:
                pbar.set_description(f"{setting}/{sampler}")
                traj = simulate(env, plan.specs.get(sampler, sampler), setting, hp["iters"], lr=hp["lr"] or 0.0, step_rule=args.step,
                                num_samples=args.num_samples, pbar=pbar,
                                generator=run_generator(plan.device, args.seed, setting, sampler))
                run.log_lines(metric_lines(setting, sampler, plan.seeds, traj))
                results[sampler] = traj
            summary[setting] = {s: summarise(t, setting) for s, t in results.items()}
            if args.plots:
                lr = "newton step" if args.step == "newton" else f"lr {hp['lr']:g}"
                plot_setting(results, f"{title}: {setting}, {lr}, beta {args.beta:g}, {len(plan.seeds)} seeds",
                             [run.path(f"{setting}.png"), run.path(f"{setting}.pdf")], v_star=v_star)
        atomic_write_json(run.path("summary.json"), summary)
        path = run.finish(summary=summary)
    print(format_summary(summary))
    print(f"wrote {path}")
    return path
