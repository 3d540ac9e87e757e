"""Offline regime: which pairs of a fixed preference dataset should DPO train on? (DESIGN.md section 3)

Each seed draws a dataset of N labelled pairs once from a behaviour sampler at pi_ref (label-flip noise
--flip optional); every selector then runs --steps steps from pi_ref, each step choosing B = --batch
pairs and taking one DPO gradient step (fixed --lr) on their mean loss. Selectors (bandit/selectors.py):

  all              all data: B pairs uniformly from the dataset (alias unif, none, full)
  random_subset    a random B of B / sams-ratio uniform candidates (SamS's control: same loss normalisation)
  reward_gap       one-shot (Qi et al.): a DPO model trained on all N pairs (the all run's final policy)
                   scores each pair by its signed implicit-reward gap; the round(ratio N) smallest are
                   kept, and the policy trains on minibatches of B from them
  reward_gap_step  per-step variant: the B smallest gaps, under the current policy, of B / ratio candidates
  us               uncertainty sampling: the B widest pairs of B / ratio candidates
  ae               active exploration (AE-DPO): the B pairs of B / ratio candidates with the widest
                   optimistic-minus-pessimistic best implicit reward (gamma = --gamma)
  sams             SamS: exploitation + exploration MLPs (EE-Net) score B / sams-ratio candidates, the
                   top B are trained on, a reward (batch-loss change + margin term) updates both nets
  borda            AE-Borda, online regime: fresh pairs from pi and pi_ref each step, no dataset

Uncertainty: the linear bandit uses its design matrix V = lam I + sum (phi - phi')(phi - phi')^T over
the pairs trained on so far (every use); the tabular bandit uses label counts, width 1/sqrt(1 + n)
(n: uses of that action pair, or of that action for AE's per-response widths); no ensembles.

    python bandit/examples/offline.py                        # both bandits, all selectors, 20 seeds (~1-2 min)
    python bandit/examples/offline.py --flip 0.2             # 20% of labels flipped
    python bandit/examples/offline.py --env linear --selectors all,us,ae --abs

Writes runs/bandit/offline/<name>/{run.json, metrics.jsonl, summary.json, <env>.png/.pdf}; metrics rows
have the tabular runner's keys (setting = offline | online, sampler = the selector) plus env, selector,
flip and pairs_used (distinct labelled pairs the policy has trained on; online: fresh pairs, t B).
"""
from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from analysis.aggregate import t_interval
from bandit.envs import LinearEnv, TabularEnv
from bandit.examples.common import bandit_bytes, resolve_device
from bandit.metrics import METRICS
from bandit.offline import OfflineSim, candidates_for, kept_count, make_dataset
from bandit.samplers import SAMPLERS
from bandit.vocabulary import PAIR_SAMPLER, canonical
from bandit.selectors import SELECTORS, SelectorConfig, canonical_selector, make_selector
from runlog import (
    ConfigError, RunDir, arg, atomic_write_json, check_memory, check_name, check_number, check_out, check_positive, check_ratio, check_seed, exit_on_config_error,
    json_number, parse_dataclass)

DESCRIPTION = (
    "Offline regime of DESIGN.md section 3: each seed draws N labelled pairs once; every selector then runs "
    "--steps steps from pi_ref, each keeping B = --batch pairs and taking one DPO step (fixed --lr) on their "
    "mean loss. Selectors: all = B uniform pairs of the whole dataset; random_subset = a random B of "
    "B/sams-ratio uniform candidates (SamS's control, same loss normalisation); reward_gap = one-shot (Qi et "
    "al.): the round(ratio N) pairs with the smallest signed implicit-reward gap under a DPO model trained on "
    "all N pairs (the all run's final policy), then minibatches of B from them; reward_gap_step = the B "
    "smallest gaps, under the current policy, of B/ratio candidates; us = the B widest pairs of B/ratio "
    "candidates; ae = the B pairs of B/ratio candidates with the widest optimistic-minus-pessimistic best "
    "implicit reward; sams = exploitation + exploration MLPs (EE-Net) keep the top B of B/sams-ratio "
    "candidates and learn from the batch-loss change; borda = AE-Borda in the online regime (fresh pairs "
    "from pi and pi_ref each step, no dataset). Prints a summary table and writes OUT/NAME.")
LR = {"tabular": 0.5, "linear": 0.25}  # reach their SGD floor within ~150 of the 500 default steps
ENVS = ("tabular", "linear")


@dataclass
class Args:
    env: str = arg("both", "which bandit: tabular (a free logit per context and action), linear "
                   "(log-linear policy on features), or both", choices=["tabular", "linear", "both"])
    selectors: str = arg(",".join(SELECTORS), "comma-separated selectors, from: " + ", ".join(SELECTORS)
                         + " (borda runs in the online regime, on fresh pairs; the others on the fixed dataset). "
                         "Uncertainty of us, ae and borda, from the pairs trained on so far: linear bandit, the "
                         "design matrix V = lam I + sum (phi-phi')(phi-phi')^T, pair width ||phi-phi'||_{V^-1}; "
                         "tabular bandit, training counts, pair width 1/sqrt(1 + n) (ae: per-response widths, "
                         "from the centred features resp. the action counts); no ensembles")
    seeds: int = arg(20, "number of seeds; each seed has its own rewards (or features) and its own dataset")
    seed: int = arg(0, "first seed: the run uses seeds seed, ..., seed+seeds-1")
    steps: int = arg(500, "selection + DPO steps per selector")
    batch: int = arg(64, "B: pairs each DPO step trains on, for every selector (the loss is their mean)")
    lr: float | None = arg(None, "fixed step size on the mean DPO loss over the B pairs "
                           f"(default: {LR['tabular']} tabular, {LR['linear']} linear)")
    beta: float = arg(3.0, "DPO beta")
    dataset: int = arg(2048, "N: labelled pairs in each seed's fixed dataset")
    behaviour: str = arg("unif", "sampler that draws the dataset's pairs, evaluated at pi = pi_ref (ties y = y' "
                         "excluded); with a uniform pi_ref every sampler but mix_r is uniform there; from: "
                         + ", ".join(SAMPLERS))
    flip: float = arg(0.0, "label-flip noise: each label (dataset and borda's fresh pairs) is swapped with this "
                      "probability, e.g. 0.2")
    ratio: float = arg(0.1, "keep fraction in (0, 1]: reward_gap keeps round(ratio N) pairs; reward_gap_step, us, "
                       "ae keep B of B/ratio candidates; borda keeps B of B/ratio candidate contexts")
    sams_ratio: float = arg(0.5, "keep fraction in (0, 1] of sams and of its control random_subset: "
                            "B of B/sams-ratio candidates (K = half the batch by default)")
    abs: bool = arg(False, "reward_gap, reward_gap_step: sort by |gap| instead of the signed gap (ablation)")
    length_normalise: bool = arg(False, "reward_gap, reward_gap_step: divide log-ratios by the response length; "
                                 "no effect in the bandit, where one action is one token (kept for the "
                                 "shared vocabulary with alignment/)")
    gamma: float = arg(2.0, "ae, borda: confidence multiplier, optimistic = mean + gamma * width, "
                       "pessimistic = mean - gamma * width")
    lam: float = arg(1.0, "lambda of the linear bandit's design matrix V = lam I + sum (phi-phi')(phi-phi')^T "
                     "(the tabular count widths 1/sqrt(1+n) have lambda 1 built in)")
    borda_samples: int = arg(8, "borda: actions drawn from pi and from pi_ref per candidate context")
    sams_hidden: int = arg(32, "sams: hidden units of the exploitation and of the exploration MLP")
    sams_lr: float = arg(1e-2, "sams: Adam step size of both networks")
    sams_explore_weight: float = arg(0.1, "sams: score = exploitation + this x exploration net (as "
                                     "alignment.train_dpo's --sams-explore-weight)")
    actions: int = arg(10, "actions per context (A)")
    contexts: int = arg(4, "contexts (E)")
    dim: int = arg(8, "feature dimension d of the linear bandit")
    device: str = arg("cpu", "torch device: cpu, cuda, cuda:N")
    out: str = arg("runs/bandit/offline", "output folder; the run is written to OUT/NAME")
    name: str | None = arg(None, "run name (default: ENV-flipFLIP, e.g. both-flip0); an older run of that name "
                           "is replaced")
    plots: bool = arg(True, "write figures (PNG and PDF); --no-plots skips them")


@dataclass
class Plan:
    envs: list
    selectors: list
    seeds: list
    lr: dict
    device: torch.device
    name: str
    cfg: SelectorConfig


def resolve(args: Args) -> Plan:
    """Check every argument before anything is written; raise ConfigError naming the bad field."""
    args.behaviour = canonical(args.behaviour, PAIR_SAMPLER, "bandit", "--behaviour", allowed=tuple(SAMPLERS))
    items = [s.strip() for s in args.selectors.split(",") if s.strip()]
    if not items:
        raise ConfigError(f"--selectors: give at least one of {', '.join(SELECTORS)}")
    selectors = [canonical_selector(s) for s in items]
    for s in set(selectors):
        if selectors.count(s) > 1:
            raise ConfigError(f"--selectors: selector {s} is listed twice in {args.selectors!r}")
    for flag in ("seeds", "steps", "batch", "dataset", "contexts", "dim", "borda_samples", "sams_hidden"):
        v = getattr(args, flag)
        check_positive(flag.replace("_", "-"), v, integer=True)
    if args.actions < 2:
        raise ConfigError(f"--actions: must be an integer >= 2 (a pair needs two actions), got {args.actions}")
    check_seed("seed", args.seed)
    check_positive("beta", args.beta)
    # before any float arithmetic on sizes (kept_count): environments [E, A] (and linear features [E, A, d]) per
    # seed, plus the dataset's pairs and a step's candidates
    check_memory("the simulation's tensors",
                 bandit_bytes(args.seeds, args.contexts, args.actions, 0, False, args.dim)
                 + 8 * args.seeds * (args.dataset + args.batch) * (8 + args.dim),
                 "--seeds x --contexts x --actions x --dim, --dataset, --batch")
    if args.lr is not None:
        check_positive("lr", args.lr)
    check_number("flip", args.flip, low=0, high=1)  # a probability
    for flag in ("ratio", "sams_ratio"):
        check_ratio(flag.replace("_", "-"), getattr(args, flag))
    check_number("gamma", args.gamma, low=0)
    check_positive("lam", args.lam)
    check_positive("sams-lr", args.sams_lr)
    check_number("sams-explore-weight", args.sams_explore_weight, low=0)
    N, B = args.dataset, args.batch
    offline = [s for s in selectors if SELECTORS[s].regime == "offline"]
    if offline and B > N:
        raise ConfigError(f"--batch: {B} pairs per step exceed the dataset's --dataset {N}")
    for s, flag, ratio in (("reward_gap_step", "ratio", args.ratio), ("us", "ratio", args.ratio),
                           ("ae", "ratio", args.ratio), ("sams", "sams-ratio", args.sams_ratio),
                           ("random_subset", "sams-ratio", args.sams_ratio)):
        if s in selectors and candidates_for(B, ratio) > N:
            raise ConfigError(f"--{flag}: {s} scores round(batch / {flag}) = {candidates_for(B, ratio)} candidates, "
                              f"more than the --dataset {N} pairs")
    if "reward_gap" in selectors and kept_count(N, args.ratio) < B:
        raise ConfigError(f"--ratio: reward_gap keeps round(ratio * N) = {kept_count(N, args.ratio)} pairs, "
                          f"fewer than --batch {B}")
    check_out(args.out)
    device = resolve_device(args.device)
    name = f"{args.env}-flip{args.flip:g}" if args.name is None else args.name  # blank: an error, not the default
    check_name(name)
    envs = list(ENVS) if args.env == "both" else [args.env]
    cfg = SelectorConfig(ratio=args.ratio, sams_ratio=args.sams_ratio, abs=args.abs,
                         length_normalise=args.length_normalise, gamma=args.gamma, borda_samples=args.borda_samples,
                         sams_hidden=args.sams_hidden, sams_lr=args.sams_lr,
                         sams_explore_weight=args.sams_explore_weight)
    lr = {e: args.lr if args.lr is not None else LR[e] for e in envs}
    return Plan(envs, selectors, list(range(args.seed, args.seed + args.seeds)), lr, device, name, cfg)


def build_env(kind: str, args: Args, plan: Plan):
    if kind == "tabular":
        return TabularEnv.from_seeds(plan.seeds, args.contexts, args.actions, args.beta, plan.device)
    return LinearEnv.from_seeds(plan.seeds, args.contexts, args.actions, args.dim, args.beta, plan.device)


def generator_factory(device, seed: int, env: str):
    """One stream per (first seed, env, name): a selector run alone gives the numbers it has among others."""

    def make(name: str) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(zlib.crc32(f"{seed}/offline/{env}/{name}".encode()))
        return g

    return make


def metric_lines(env: str, selector: str, regime: str, flip: float, seeds, res) -> list[str]:
    lines = []
    for b, seed in enumerate(seeds):
        prefix = (f'{{"setting": "{regime}", "env": "{env}", "sampler": "{selector}", "selector": "{selector}", '
                  f'"seed": {seed}, "flip": {float(flip)!r}, "step": ')
        m, used = res.metrics[:, :, b], res.pairs_used[:, b]
        for t in range(m.shape[0]):
            vals = ", ".join(f'"{k}": {json_number(v)}' for k, v in zip(METRICS, m[t]))
            lines.append(f'{prefix}{t}, {vals}, "pairs_used": {int(used[t])}}}')
    return lines


def ci95(x: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval over the finite values (analysis.aggregate.t_interval), with
    half-width 0 for one value (the summary's convention: one seed has no spread)."""
    mean, half = t_interval(x, 0.95, drop_nonfinite=True)
    return (mean, 0.0) if np.isfinite(x).sum() == 1 else (mean, half)


def _frac(num: int, den: int):
    return num / den if den else None


def summarise(res, regime: str) -> dict:
    final = res.series("value_gap")[-1]
    mean, half = ci95(final)
    s = res.stats
    return {
        "regime": regime, "seeds": int(final.size),
        "final_value_gap_mean": mean, "final_value_gap_ci95": half,
        "final_value_gap_per_seed": [float(v) for v in final],
        "pairs_used_mean": float(res.pairs_used[-1].mean()),
        "kept": s.get("kept", 0), "dropped": s.get("dropped", 0),
        "flipped_kept": _frac(s.get("kept_flipped", 0), s.get("kept", 0)),
        "flipped_dropped": _frac(s.get("dropped_flipped", 0), s.get("dropped", 0)),
        "misordered_kept": _frac(s.get("kept_misordered", 0), s.get("kept", 0)),
        "misordered_dropped": _frac(s.get("dropped_misordered", 0), s.get("dropped", 0)),
        **res.info,
    }


def format_summary(summary: dict, flip: float) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"
    head = (f"{'env':<8} {'selector':<16} {'final value_gap (95% CI)':>26} {'pairs used':>10} "
            f"{'flipped kept/dropped':>21} {'misordered kept/dropped':>24}")
    lines = [head, "-" * len(head)]
    for env, per in summary.items():
        for sel, s in per.items():
            vg = f"{s['final_value_gap_mean']:.4f} ± {s['final_value_gap_ci95']:.4f}"
            flipped = "-" if flip == 0 else f"{pct(s['flipped_kept'])} / {pct(s['flipped_dropped'])}"
            mis = f"{pct(s['misordered_kept'])} / {pct(s['misordered_dropped'])}"
            if s["kept"] == 0:
                flipped = mis = "-"
            tag = " (online)" if s["regime"] == "online" else ""
            lines.append(f"{env:<8} {sel + tag:<16} {vg:>26} {s['pairs_used_mean']:>10.0f} {flipped:>21} {mis:>24}")
    lines.append(
        "value_gap = V(pi*) - V(pi), mean over seeds with its 95% t-interval. pairs used: distinct labelled pairs\n"
        "the policy trained on (online: fresh pairs; reward_gap's selection model also read all N). kept/dropped:\n"
        "share of flipped / misordered (r(chosen) < r(rejected)) pairs among the pairs a selector kept and dropped\n"
        "(reward_gap: its subset vs the rest; per-step selectors: kept vs dropped candidates over all steps).")
    return "\n".join(lines)


def plot_env(results: dict, title: str, paths) -> None:
    """value_gap against steps and against pairs used; geometric mean and 95% band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from analysis.style import sampler_colors
    from bandit.examples.plots import LOG_FLOOR, mean_band

    colors = sampler_colors(results)  # the fixed colour of each sampler, as in every figure of the project
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for sel, res in results.items():
        x = np.clip(res.series("value_gap"), LOG_FLOOR, None)
        mean, lo, hi = (np.exp(v) for v in mean_band(np.log(x)))
        steps = np.arange(x.shape[0])
        used = res.pairs_used.mean(1)
        for ax, xs in ((axes[0], steps), (axes[1], used)):
            sl = slice(None) if ax is axes[0] else slice(1, None)  # pairs used starts at 0: log x axis from step 1
            ax.plot(xs[sl], mean[sl], color=colors[sel], lw=1.5, label=sel)
            ax.fill_between(xs[sl], lo[sl], hi[sl], color=colors[sel], alpha=0.2, lw=0)
    axes[0].set_xlabel("DPO step")
    axes[1].set_xlabel("pairs used (distinct labelled pairs trained on; mean over seeds)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_ylabel("value gap V(pi*) - V(pi)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}\ngeometric mean and 95% confidence band over seeds", fontsize=10)
    for p in paths:
        fig.savefig(p, dpi=120)
    plt.close(fig)


@exit_on_config_error
def main(argv=None):
    args = parse_dataclass(Args, argv, description=DESCRIPTION)
    plan = resolve(args)
    config = dataclasses.asdict(args) | {"resolved": {"envs": plan.envs, "selectors": plan.selectors,
                                                         "lr": plan.lr, "name": plan.name,
                                                         "selector_config": dataclasses.asdict(plan.cfg)}}
    total = args.steps * len(plan.envs) * len(plan.selectors)
    summary = {}
    with RunDir(args.out, plan.name, config, plan.seeds) as run, \
            tqdm(total=total, desc="simulating", unit="step", disable=None) as pbar:
        for kind in plan.envs:
            env = build_env(kind, args, plan)
            data = make_dataset(env, plan.seeds, args.dataset, args.behaviour, args.flip, tag=kind)
            make_gen = generator_factory(plan.device, args.seed, kind)
            results = {}
            for sel in plan.selectors:
                pbar.set_description(f"{kind}/{sel}")
                selector = make_selector(sel, plan.cfg)
                sim = OfflineSim(env, data, args.steps, args.batch, plan.lr[kind], make_gen(selector.stream or sel), make_gen,
                                 flip=args.flip, lam=args.lam)
                res = sim.run(selector, pbar=pbar)
                run.log_lines(metric_lines(kind, sel, selector.regime, args.flip, plan.seeds, res))
                results[sel] = res
            summary[kind] = {s: summarise(r, SELECTORS[s].regime) for s, r in results.items()}
            if args.plots:
                shape = f"A={args.actions}, E={args.contexts}" + (f", d={args.dim}" if kind == "linear" else "")
                title = (f"{kind} bandit ({shape}), offline regime: N={args.dataset}, B={args.batch}, "
                         f"lr {plan.lr[kind]:g}, flip {args.flip:g}, beta {args.beta:g}, {len(plan.seeds)} seeds")
                plot_env(results, title, [run.path(f"{kind}.png"), run.path(f"{kind}.pdf")])
        atomic_write_json(run.path("summary.json"), summary)
        path = run.finish(summary=summary)
    print(format_summary(summary, args.flip))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
