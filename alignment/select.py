"""One-shot offline selection of a preference dataset: keep the pairs a selection model finds hardest or most uncertain.

    python -m alignment.select --method reward_gap --policy runs/alignment/train_dpo/dpo --ref runs/alignment/sft/toy \\
        --data runs/alignment/annotate/online                      # keep the 10% with the smallest implicit-reward gap
    python -m alignment.select --method ae --ratio 0.25 --policy P --ref REF --data D
    python -m alignment.select --method us --policy P --data D      # us needs no reference model

Methods (formulas and sources in alignment/selection/scores.py):
    reward_gap  score = signed gap beta (log pi/pi_ref)(chosen) - beta (log pi/pi_ref)(rejected), summed over the
                response tokens, from the DPO-trained selection model --policy and its reference --ref; keeps the
                SMALLEST scores (Qi et al.: the hardest pairs; default ratio 0.1, the paper's 10%).
                --abs scores |gap| instead, --length-normalise uses mean per-token log-probs (ablations).
    us          score = mean over the two responses of the MC-dropout variance of log pi (--passes passes,
                --dropout on the final hidden state plus the model's own dropout); keeps the LARGEST.
    ae          score = width U - L of the optimistic and pessimistic best implicit reward, mean +- --gamma std
                over the dropout passes (AE-DPO, Mehta et al.); keeps the LARGEST.
Mehta et al. score each training step's candidate batch of B / ratio pairs and train on the top B; this
command is the one-shot version: every pair is scored by one fixed model and the top keep_count(N, ratio)
of the whole set are kept (default ratio 1/3 for us and ae: the reference code's selection_ratio 3).
keep_count(N, ratio) = round(ratio N), halves up, at least 1; ties go to the earlier row.

Every pair is tokenized as TRL's DPOTrainer tokenizes it (EOS appended to plain-text completions, chat template
for conversational rows) and truncated at --max-length the same way, so the scores are about the tokens DPO
trains on. The 2N sequences are sorted by length into batches of 2 x --batch-size (next to no padding; the order
of the output is the data's), no grad, one progress bar.

Writes OUT/NAME/{run.json, metrics.jsonl (one row: method, ratio, n, kept, score quantiles, the kept threshold,
mean kept / dropped score and, when rows carry chosen_reward and rejected_reward, the fraction of kept and
of dropped pairs whose rewards disagree with their label, chosen_reward < rejected_reward: "flipped"), preferences.jsonl (the kept rows, fields
unchanged, in their original order: `python -m alignment.train_dpo --preferences OUT/NAME` trains on them),
scores.jsonl (every row in order: id, score, kept; with --abs also the signed gap)}.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from alignment.core.data import DATA_CONFIG_HELP, DATA_DIR_HELP, PREFERENCES_FILE, write_jsonl
from alignment.core.models import model_source
from alignment.selection.scores import METHODS, keep_count, keeps_largest, select_top
from runlog import ConfigError, RunDir, arg, check_name, check_out, check_seed, entry_point

DEFAULT_RATIO = {"reward_gap": 0.1, "us": 1 / 3, "ae": 1 / 3}
SCORES_FILE = "scores.jsonl"
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


@dataclass
class Args:
    method: str | None = arg(None, "reward_gap (smallest DPO implicit-reward gap), us (largest MC-dropout variance) "
                             "or ae (largest active-exploration width) (required)", choices=list(METHODS))
    ratio: float | None = arg(None, "fraction of the pairs to keep, in (0, 1] (default: 0.1 for reward_gap, as Qi "
                              "et al.; 1/3 for us and ae, the AE-DPO code's selection_ratio 3)")
    policy: str | None = arg(None, "the selection model: the DPO-trained policy (a model folder, a run folder holding "
                             "model/, toy:SIZE or a Hub name) (required)")
    ref: str | None = arg(None, "its reference pi_ref (reward_gap and ae need it and it must differ from --policy: "
                          "with pi = pi_ref every gap is 0; us ignores it)")
    data: str | None = arg(None, "preference pairs: an annotate run folder, a .json/.jsonl/.parquet file or a Hub "
                           "dataset with prompt, chosen, rejected (required)", metavar="PATH")
    split: str = arg("train", "split of a Hub dataset (or dataset folder) to read, e.g. train_prefs or a slice "
                     "such as train[:2000]; a local file or run folder is read whole")
    data_config: str | None = arg(None, DATA_CONFIG_HELP, metavar="NAME")
    data_dir: str | None = arg(None, DATA_DIR_HELP, metavar="DIR")
    beta: float = arg(0.1, "beta of the implicit reward beta log(pi / pi_ref) (use the DPO run's)")
    abs: bool = arg(False, "reward_gap ablation: rank by |gap| instead of the signed gap")
    length_normalise: bool = arg(False, "reward_gap ablation: mean instead of summed response log-probs")
    passes: int = arg(5, "us / ae: Monte Carlo dropout passes (at least 2)")
    dropout: float = arg(0.05, "us / ae: dropout probability on the final hidden state, in [0, 1)")
    gamma: float = arg(2.0, "ae: confidence multiplier of mean +- gamma std")
    batch_size: int = arg(16, "pairs per forward pass (2 x this many sequences)")
    max_length: int = arg(512, "tokens per sequence (prompt + response), cut at the end as TRL's DPO collator cuts "
                          "(use the DPO run's)")
    seed: int = arg(0, "seed of the dropout masks (us / ae)")
    device: str = arg("auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    dtype: str = arg("float32", "weights' dtype", choices=["float32", "bfloat16"])
    trust_remote_code: bool = arg(False, "let transformers run code shipped with a model")
    out: str = arg("runs/alignment/select", "output folder; the run is written to OUT/NAME")
    name: str | None = arg(None, "run name (default: the method); an older run of that name is replaced")


def _same_model(a: str, b: str) -> bool:
    def norm(spec: str) -> str:
        if spec == "toy":
            return "toy:small"
        path = Path(spec).expanduser()
        return str(path.resolve()) if path.exists() else spec

    return norm(a) == norm(b)


def resolve(args: Args) -> tuple[float, str, torch.device]:
    """Check every flag before anything is loaded or written: (ratio, run name, device)."""
    from alignment.core.models import toy_size, is_toy
    from runlog import resolve_device

    if args.method is None:
        raise ConfigError(f"--method: required; one of {', '.join(METHODS)}")
    if args.method not in METHODS:
        raise ConfigError(f"--method: unknown method {args.method!r}; known: {', '.join(METHODS)}")
    ratio = DEFAULT_RATIO[args.method] if args.ratio is None else args.ratio
    if not (0.0 < ratio <= 1.0):  # NaN fails too
        raise ConfigError(f"--ratio: must be in (0, 1], got {ratio}")
    if not args.policy:
        raise ConfigError("--policy: required (the DPO-trained selection model: a model folder, a run folder "
                          "holding model/, toy:SIZE or a Hub name)")
    if not args.data:
        raise ConfigError("--data: required (an annotate run folder, a preference file or a Hub dataset)")
    if args.method != "us":
        if not args.ref:
            raise ConfigError(f"--ref: required for --method {args.method} (the DPO run's reference model): "
                              f"with pi_ref = pi every implicit reward is 0")
        if _same_model(model_source(args.policy), model_source(args.ref)):
            raise ConfigError(f"--ref: {args.ref!r} is the same model as --policy; with pi_ref = pi every implicit "
                              f"reward is 0 (give the DPO run's reference, e.g. the SFT model)")
    for flag in ("policy", "ref"):
        spec = getattr(args, flag)
        if spec and is_toy(spec) and (flag == "policy" or args.method != "us"):
            toy_size(spec, f"--{flag}")
    if not (math.isfinite(args.beta) and args.beta > 0):
        raise ConfigError(f"--beta: must be a finite number > 0, got {args.beta}")
    if args.method in ("us", "ae"):
        if args.passes < 2:
            raise ConfigError(f"--passes: must be an integer >= 2 (a variance over dropout passes), got {args.passes}")
        if not (0.0 <= args.dropout < 1.0):
            raise ConfigError(f"--dropout: must be in [0, 1), got {args.dropout}")
    if not (math.isfinite(args.gamma) and args.gamma >= 0):
        raise ConfigError(f"--gamma: must be a finite number >= 0, got {args.gamma}")
    if args.method != "reward_gap" and (args.abs or args.length_normalise):
        raise ConfigError(f"--{'abs' if args.abs else 'length-normalise'}: a reward_gap ablation; "
                          f"--method {args.method} does not use it")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: must be an integer >= 1, got {args.batch_size}")
    if args.max_length < 2:
        raise ConfigError(f"--max-length: must be at least 2 tokens, got {args.max_length}")
    check_seed("seed", args.seed)
    name = args.name if args.name is not None else args.method
    check_name(name)
    check_out(args.out)
    device = resolve_device(args.device)
    return ratio, name, device


def tokenize_rows(tokenizer, rows: list[dict], max_length: int) -> list[dict]:
    """TRL-tokenized pairs; a ConfigError names the row whose prompt leaves no response token within max_length."""
    from alignment.selection.scores import tokenize_pair

    out = []
    for i, row in enumerate(rows):
        if isinstance(row["prompt"], list) and getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError(f"--data: row {i} (id {row['id']!r}) is conversational but the --policy tokenizer "
                              f"has no chat template")
        ex = tokenize_pair(tokenizer, row)
        if len(ex["prompt_ids"]) >= max_length:
            raise ConfigError(f"--max-length: row {i} (id {row['id']!r}) has a {len(ex['prompt_ids'])}-token prompt, "
                              f"which leaves no response token within {max_length} (TRL drops such rows from "
                              f"training); raise --max-length")
        out.append(ex)
    return out


def _quantiles(scores: torch.Tensor) -> dict:
    q = torch.quantile(scores.double(), torch.tensor(QUANTILES, dtype=torch.float64)).tolist()
    names = {0.0: "min", 1.0: "max", 0.5: "median"}
    return {f"score_{names.get(x, f'q{round(100 * x):02d}')}": v for x, v in zip(QUANTILES, q)}


def summarise(method: str, ratio: float, rows: list[dict], scores: torch.Tensor, kept: torch.Tensor, seed: int) -> dict:
    """The metrics row (module doc)."""
    mask = torch.zeros(len(rows), dtype=torch.bool)
    mask[kept] = True
    mean = lambda t: float(t.double().mean()) if t.numel() else math.nan
    row = {"sampler": method, "method": method, "seed": seed, "step": 0, "ratio": ratio, "n": len(rows),
           "kept": int(mask.sum()), **_quantiles(scores),
           "threshold": float(scores[kept[-1]]) if kept.numel() else math.nan,
           "kept_score_mean": mean(scores[mask]), "dropped_score_mean": mean(scores[~mask])}
    rewarded = [i for i, r in enumerate(rows)
                if r.get("chosen_reward") is not None and r.get("rejected_reward") is not None]
    if rewarded:
        flipped = {i: rows[i]["chosen_reward"] < rows[i]["rejected_reward"] for i in rewarded}
        frac = lambda keep: (lambda ids: sum(flipped[i] for i in ids) / len(ids) if ids else math.nan)(
            [i for i in rewarded if bool(mask[i]) == keep])
        row.update(with_rewards=len(rewarded), flipped_kept=frac(True), flipped_dropped=frac(False),
                   flipped_all=sum(flipped.values()) / len(rewarded))
    return row


def format_summary(m: dict) -> str:
    f = lambda x: "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"
    text = (f"{m['method']}: kept {m['kept']} of {m['n']} pairs (ratio {f(m['ratio'])}); score min {f(m['score_min'])} "
            f"median {f(m['score_median'])} max {f(m['score_max'])}, threshold {f(m['threshold'])}; mean kept "
            f"{f(m['kept_score_mean'])}, dropped {f(m['dropped_score_mean'])}")
    if "flipped_kept" in m:
        text += (f"\nflipped labels (rewards disagree with chosen/rejected): kept {f(m['flipped_kept'])}, dropped "
                 f"{f(m['flipped_dropped'])}, all {f(m['flipped_all'])} ({m['with_rewards']} rows with rewards)")
    return text


def run(args: Args) -> Path | None:
    """The select stage on parsed arguments (what `python -m alignment.select` runs; the pipeline calls it too)."""
    ratio, name, device = resolve(args)
    t0 = time.perf_counter()

    from alignment.core.data import load_preferences
    from alignment.core.models import DTYPES, load_causal_lm, load_tokenizer
    from alignment.selection.scores import score_pairs

    rows = load_preferences(args.data, "--data", split=args.split, config=args.data_config, data_dir=args.data_dir)
    policy_src = model_source(args.policy)
    ref_src = model_source(args.ref) if args.method != "us" else None
    tokenizer = load_tokenizer(policy_src, "--policy", trust_remote_code=args.trust_remote_code)
    examples = tokenize_rows(tokenizer, rows, args.max_length)
    load = lambda src, flag: load_causal_lm(src, flag, device=device, dtype=args.dtype, seed=0,
                                            trust_remote_code=args.trust_remote_code).to(DTYPES[args.dtype]).eval()
    policy = load(policy_src, "--policy")
    ref = load(ref_src, "--ref") if ref_src else None
    if ref is not None and ref.config.get_text_config().vocab_size != policy.config.get_text_config().vocab_size:
        raise ConfigError(f"--ref: {ref_src!r} has a vocabulary of {ref.config.get_text_config().vocab_size} tokens "
                          f"but --policy has {policy.config.get_text_config().vocab_size}; they must share a tokenizer")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    generator = torch.Generator().manual_seed(args.seed)
    print(f"select: {args.method} over {len(rows)} pairs, policy {policy_src}"
          + (f", ref {ref_src}" if ref_src else " (us uses no reference: --ref ignored)" if args.ref else "")
          + f", {device}, batches of {args.batch_size} pairs")
    raw = score_pairs(args.method, policy, ref, examples, pad, beta=args.beta, batch_size=args.batch_size,
                      max_length=args.max_length, length_normalise=args.length_normalise, passes=args.passes,
                      p=args.dropout, gamma=args.gamma, generator=generator, progress=True)
    if not torch.isfinite(raw).all():
        bad = int((~torch.isfinite(raw)).nonzero()[0])
        raise ConfigError(f"--policy: a non-finite score ({float(raw[bad])}) for row {bad} (id {rows[bad]['id']!r}); "
                          f"check the models (--dtype float32?)")
    scores = raw.abs() if args.abs else raw
    kept = select_top(scores, keep_count(len(rows), ratio), largest=keeps_largest(args.method))
    kept_set = set(kept.tolist())
    metrics = summarise(args.method, ratio, rows, scores, kept, args.seed)
    score_rows = [{"id": r["id"], "score": float(scores[i]), "kept": i in kept_set,
                   **({"gap": float(raw[i])} if args.abs else {})} for i, r in enumerate(rows)]
    tokens = sum(min(len(e["prompt_ids"]) + len(e[k]), args.max_length) for e in examples
                 for k in ("chosen_ids", "rejected_ids"))
    config = dataclasses.asdict(args) | {"resolved": {"ratio": ratio, "name": name, "policy": policy_src,
                                                         "ref": ref_src, "device": str(device), "num_pairs": len(rows),
                                                         "tokens": tokens}}
    with RunDir(args.out, name, config, [args.seed]) as run:
        write_jsonl(run.path(PREFERENCES_FILE), [r for i, r in enumerate(rows) if i in kept_set])
        write_jsonl(run.path(SCORES_FILE), score_rows)
        run.log(metrics)
        path = run.finish(summary=metrics | {"wall_s": time.perf_counter() - t0})
    print(format_summary(metrics))
    return path


main = entry_point(Args, run, __doc__)

if __name__ == "__main__":
    main()
