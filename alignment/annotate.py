"""Annotate generations: score every response with a reward, pick one preference pair per prompt.

    python -m alignment.annotate --generations runs/alignment/generate/NAME --reward toy-oracle --rule max_min

Pair rules (one pair per prompt; chosen = the higher reward; the samplers paper's run_dpo.py `choose_type`s):
    max_min        the highest- vs the lowest-reward response (on equal rewards, the first in list order).
                   --length-penalty c > 0 (the paper's max_min_p): the two are the highest and the lowest of
                   reward - c * len(response), len in characters of the response text as the paper's code counts
                   it; chosen and rejected are then the two ordered by their plain rewards, as in its code
    random         two distinct responses (positions) drawn uniformly at random
    max_random     the highest-reward response vs one of the others drawn uniformly at random (the paper's code takes
                   the first other response in list order, which is a uniform draw when the responses are i.i.d.)
    max_max        the highest- vs the second-highest-reward response
    mixed_max_min  max_min within one of two groups of responses: with probability p the fused Mix-P responses,
                   else the on-policy ones. With components ("mix+"/"mix-" or "mixseq+"/"mixseq-" and "policy"),
                   the groups are those components ("ref" responses take no part); without both kinds, the groups
                   are the two halves of the list: with probability p the SECOND half, else the first. The paper's
                   files are laid out that way (generation/concat.py puts the on-policy responses of get_hf2.py
                   first and the fused ones of get_hf_mixp.py second, and run_dpo.py takes the first half with
                   probability 0.3), so p = 0.7 is the paper's rule in both layouts: alignment.generate writes
                   the fused responses first (mix+, mix-, then the on-policy pair), which the components rule
                   does not depend on. (The paper's second branch indexes the whole list with positions counted
                   inside the second half, so it pairs first-half responses: a bug, not followed here.) The halves
                   need an even number K of responses (generate --num-responses); an odd K is an error; K = 2 has
                   a single pair, which is taken (max_min).
max_min, random, max_random and max_max ignore components.
--flip q swaps chosen and rejected of each kept pair with probability q (a seeded stream per prompt): simulated
annotator noise for the selection experiments; such rows carry "flipped": true and keep each reward with its
response (so their chosen_reward is below their rejected_reward).
A pair is a tie when chosen reward == rejected reward, or when the two texts are the same; ties are dropped
and counted. A prompt whose candidate set has fewer than 2 responses is skipped and counted.
Draws are seeded per prompt (seed and id), so a prompt gets the same pick whatever else is in the file.

Writes OUT/NAME/preferences.jsonl, rows {"id", "prompt", "chosen", "rejected", "chosen_reward",
"rejected_reward", "responses", "rewards"}: TRL's DPOTrainer fields plus the scores. For a plain-text
prompt, chosen/rejected are the completions as TRL reads them (it trains on prompt + chosen): a response
gets one leading space when neither it nor the prompt has whitespace at the join, so prompt + chosen is the
text the reward scored (alignment.core.rewards.join_text); `responses` keeps the generated texts unchanged. For a
conversational prompt they are [{"role": "assistant", "content": response}]. Also run.json (config and the
summary) and metrics.jsonl (one row: counts, mean chosen / rejected reward, mean gap, pick counts).
"""
from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from bandit.vocabulary import PAIR_SAMPLER, normalise
from alignment.core.data import GENERATIONS_FILE, PREFERENCES_FILE, load_generations, write_jsonl
from runlog import ConfigError, RunDir, arg, check_name, check_out, check_seed, entry_point, read_run

RULES = ("max_min", "random", "max_random", "max_max", "mixed_max_min")
HOWS = ("max_min", "random", "max_random", "max_max", "fused", "policy", "first_half", "second_half")
FUSED = ("mix+", "mix-", "mixseq+", "mixseq-")
POLICY = ("policy",)



@dataclass
class Args:
    generations: str | None = arg(None, f"generate run folder (its {GENERATIONS_FILE}) or a .jsonl file of rows "
                                  "{id, prompt, responses, components?, num_tokens?} (required)", metavar="PATH")
    reward: str = arg("toy-oracle", "reward: 'toy-oracle' (the toy task's true reward), a reward-model folder "
                      "(or an alignment.reward_model run folder) or a Hub name", metavar="SPEC")
    rule: str = arg("max_min", "pair rule: max_min (highest vs lowest reward), random (a random pair), max_random "
                    "(highest vs a random other), max_max (highest vs second highest), mixed_max_min (max_min within "
                    "the fused Mix-P responses with probability p, else within the on-policy ones; without such "
                    "components, within the second half of the responses with probability p, else the first half: "
                    "an even K)", choices=list(RULES))
    p: float = arg(0.7, "mixed_max_min: probability of the fused responses (or of the second half), in [0, 1]; "
                   "0.7 is the samplers paper's")
    length_penalty: float = arg(0.0, "max_min only: pick the highest and lowest of reward - c * len(response) "
                                "(characters; the samplers paper's max_min_p, its len_penalty c); 0: off")
    flip: float = arg(0.0, "label noise: swap each pair's chosen and rejected with this probability (simulated annotator "
                      "errors, e.g. 0.2; the rewards stay with their responses, rows get flipped: true)")
    seed: int = arg(0, "seed of the random picks (each prompt draws from its own stream of seed and id)")
    batch_size: int = arg(64, "responses scored per reward-model forward pass")
    device: str = arg("auto", "torch device of the reward model: auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    out: str = arg("runs/alignment/annotate", "output folder; the run is written to OUT/NAME")
    name: str | None = arg(None, "run name (default: the generations run's folder name, or the file's stem); "
                           "an older run of that name is replaced")


class Pick(NamedTuple):
    """A pair by position in the prompt's responses; how: max_min, random, fused or policy (mix_p groups)."""
    chosen: int
    rejected: int
    how: str


def max_min(rewards, candidates) -> tuple[int, int]:
    """(highest, lowest) among candidate positions; on equal rewards the first in list order."""
    hi = max(candidates, key=lambda i: (rewards[i], -i))
    lo = min(candidates, key=lambda i: (rewards[i], i))
    return hi, lo


def _groups(components) -> tuple[list[int], list[int]] | None:
    """(fused, on-policy) positions when the responses carry both kinds, else None."""
    if not components:
        return None
    fused = [i for i, c in enumerate(components) if c in FUSED]
    policy = [i for i, c in enumerate(components) if c in POLICY]
    return (fused, policy) if fused and policy else None


def halves_error(k: int, where: str = "") -> ConfigError:
    return ConfigError(f"--rule: mixed_max_min without fused and on-policy components takes max_min within one half "
                       f"of the responses, so it needs an even number of them (generate --num-responses){where}; "
                       f"got {k}")


def check_rule_inputs(rows: list[dict], rule: str) -> None:
    """What the rule cannot pair, found before any scoring: mixed_max_min's halves need an even K."""
    if rule != "mixed_max_min":
        return
    for row in rows:
        k = len(row["responses"])
        if k >= 2 and k % 2 and _groups(row.get("components")) is None:
            raise halves_error(k, f"; prompt id {row['id']!r} has an odd number")


def pick_pair(rewards, rule: str, rng: random.Random, p: float = 0.7, components=None, lengths=None,
              length_penalty: float = 0.0) -> Pick | None:
    """The pair a rule picks from one prompt's rewards; None if its candidates are fewer than 2.

    The chosen side is the higher reward; equal rewards come back as they are (the caller drops ties). lengths
    (the responses' lengths) is needed with length_penalty > 0 (rule max_min only).
    """
    if rule not in RULES:
        raise ConfigError(f"--rule: unknown rule {rule!r}; known: {', '.join(RULES)}")
    everyone = list(range(len(rewards)))
    if len(everyone) < 2:
        return None
    orient = lambda a, b: (a, b) if rewards[a] >= rewards[b] else (b, a)
    if rule == "max_min":
        if length_penalty:
            score = [rewards[i] - length_penalty * lengths[i] for i in everyone]
            return Pick(*orient(*max_min(score, everyone)), "max_min")
        how, candidates = "max_min", everyone
    elif rule == "random":
        how, candidates = "random", everyone
    elif rule in ("max_random", "max_max"):
        best = max_min(rewards, everyone)[0]
        rest = [i for i in everyone if i != best]
        other = rng.choice(rest) if rule == "max_random" else max_min(rewards, rest)[0]
        return Pick(*orient(best, other), rule)
    elif rule == "mixed_max_min":
        u = rng.random()
        groups = _groups(components)
        if groups is not None:
            how, candidates = ("fused", groups[0]) if u < p else ("policy", groups[1])
        elif len(everyone) == 2:
            how, candidates = "max_min", everyone  # one pair: both halves have a single response
        elif len(everyone) % 2:
            raise halves_error(len(everyone))
        else:
            half = len(everyone) // 2
            how, candidates = ("second_half", everyone[half:]) if u < p else ("first_half", everyone[:half])
    if len(candidates) < 2:
        return None
    if how == "random":
        a, b = rng.sample(candidates, 2)
        hi, lo = orient(a, b)
    else:
        hi, lo = max_min(rewards, candidates)
    return Pick(hi, lo, how)


def completion(prompt, response: str):
    """A response as TRL's DPO row needs it: appended to the prompt as it was scored (see module doc)."""
    if isinstance(prompt, list):
        return [{"role": "assistant", "content": response}]
    if response and not response[0].isspace() and not (prompt and prompt[-1].isspace()):
        return " " + response
    return response


def annotate(rows: list[dict], scores: list[list[float]], rule: str, p: float, seed: int,
             flip: float = 0.0, length_penalty: float = 0.0) -> tuple[list[dict], dict]:
    """Preference rows and the summary counts, given each prompt's response rewards."""
    check_rule_inputs(rows, rule)
    out = []
    counts = {"prompts": len(rows), "pairs": 0, "ties_dropped": 0, "too_few_responses": 0, "flipped": 0,
              "picks": {k: 0 for k in HOWS}}
    chosen_r, rejected_r = [], []
    for row, rewards in zip(rows, scores, strict=True):
        rng = random.Random(f"{seed}/{row['id']}")  # str seeds hash with sha512: stable across processes
        lengths = [len(r) for r in row["responses"]] if length_penalty else None
        pick = pick_pair(rewards, rule, rng, p, row.get("components"), lengths, length_penalty)
        if pick is None:
            counts["too_few_responses"] += 1
            continue
        counts["picks"][pick.how] += 1
        responses = row["responses"]
        c, r = pick.chosen, pick.rejected
        if rewards[c] == rewards[r] or responses[c] == responses[r]:
            counts["ties_dropped"] += 1
            continue
        flipped = flip > 0 and random.Random(f"{seed}/{row['id']}/flip").random() < flip  # its own stream
        if flipped:
            c, r = r, c
            counts["flipped"] += 1
        out.append({"id": row["id"], "prompt": row["prompt"],
                    "chosen": completion(row["prompt"], responses[c]),
                    "rejected": completion(row["prompt"], responses[r]),
                    "chosen_reward": rewards[c], "rejected_reward": rewards[r],
                    "responses": responses, "rewards": rewards, **({"flipped": flipped} if flip > 0 else {})})
        chosen_r.append(rewards[c])
        rejected_r.append(rewards[r])
    counts["pairs"] = len(out)
    mean = lambda x: sum(x) / len(x) if x else math.nan
    all_r = [x for rewards in scores for x in rewards]
    counts.update(mean_reward=mean(all_r), mean_chosen_reward=mean(chosen_r), mean_rejected_reward=mean(rejected_r),
                  mean_reward_gap=mean([a - b for a, b in zip(chosen_r, rejected_r)]))
    return out, counts


def score_all(reward, rows: list[dict], batch_size: int, field: str = "--reward") -> list[list[float]]:
    """Every response's reward, in chunks of batch_size (sorted by length, so batches pad little)."""
    from tqdm.auto import tqdm

    flat = [(i, j) for i, row in enumerate(rows) for j in range(len(row["responses"]))]
    text_len = lambda ij: len(rows[ij[0]]["responses"][ij[1]])
    order = sorted(range(len(flat)), key=lambda k: text_len(flat[k]))
    scores = [0.0] * len(flat)
    for start in tqdm(range(0, len(order), batch_size), desc="scoring", unit="batch", disable=None):
        chunk = order[start:start + batch_size]
        prompts = [rows[flat[k][0]]["prompt"] for k in chunk]
        responses = [rows[flat[k][0]]["responses"][flat[k][1]] for k in chunk]
        for k, s in zip(chunk, reward.score(prompts, responses), strict=True):
            scores[k] = float(s)
    out = [[] for _ in rows]
    for (i, j), s in zip(flat, scores):
        if not math.isfinite(s):
            raise ConfigError(f"{field}: {getattr(reward, 'name', 'reward')} gave a non-finite score ({s}) to "
                              f"prompt id {rows[i]['id']!r} response {j}")
        out[i].append(s)
    return out


def check_reward_inputs(reward, rows: list[dict], field: str = "--reward") -> None:
    """What the reward cannot score, found before any scoring: a ConfigError naming the row."""
    if getattr(reward, "name", None) == "toy-oracle":
        from alignment.core.toy import parse_prompt

        for i, row in enumerate(rows):
            try:
                parse_prompt(row["prompt"]) if isinstance(row["prompt"], str) else parse_prompt("")
            except ValueError:
                raise ConfigError(f"{field}: 'toy-oracle' scores toy prompts only; --generations row {i} "
                                  f"(id {row['id']!r}) has prompt {row['prompt']!r}") from None
    tokenizer = getattr(reward, "tokenizer", None)
    if tokenizer is not None and isinstance(rows[0]["prompt"], list) and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"{field}: the prompts are conversational but the tokenizer of {reward.name!r} has no "
                          f"chat template to render them with")


def default_name(spec: str) -> str:
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve().name
    if path.name == GENERATIONS_FILE:
        return path.resolve().parent.name
    return path.stem


def _generation_sampler(spec: str):
    """The generate run's sampler (from its run.json), if there is one; for the metrics row."""
    path = Path(spec).expanduser()
    run_dir = path if path.is_dir() else path.parent
    try:
        config = read_run(run_dir).get("config", {})
    except (OSError, ValueError, AttributeError):
        return None
    return normalise(config.get("sampler"), PAIR_SAMPLER) if isinstance(config, dict) else None  # older runs: aliases


def resolve(args: Args) -> str:
    """Check the flags before anything is loaded or written; returns the run name."""
    if not args.generations:
        raise ConfigError("--generations: required; give a generate run folder or a generations .jsonl file")
    if not 0.0 <= args.flip < 1.0:
        raise ConfigError(f"--flip: must be a probability in [0, 1), got {args.flip}")
    if not 0.0 <= args.p <= 1.0:  # NaN fails too
        raise ConfigError(f"--p: must be a probability in [0, 1], got {args.p}")
    if not (math.isfinite(args.length_penalty) and args.length_penalty >= 0):
        raise ConfigError(f"--length-penalty: must be a number >= 0 (0: off), got {args.length_penalty}")
    if args.length_penalty and args.rule != "max_min":
        raise ConfigError(f"--length-penalty: applies to --rule max_min only (the samplers paper's max_min_p), "
                          f"not {args.rule}")
    check_seed("seed", args.seed)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: must be an integer >= 1, got {args.batch_size}")
    check_out(args.out)
    name = args.name if args.name is not None else default_name(args.generations)
    check_name(name)
    return name


def format_summary(s: dict) -> str:
    f = lambda x: "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
    return (f"prompts {s['prompts']}  pairs {s['pairs']}  ties dropped {s['ties_dropped']}  "
            f"too few responses {s['too_few_responses']}\n"
            f"mean reward: chosen {f(s['mean_chosen_reward'])}  rejected {f(s['mean_rejected_reward'])}  "
            f"gap {f(s['mean_reward_gap'])}  all responses {f(s['mean_reward'])}")


def run(args: Args) -> Path | None:
    """The annotate stage on parsed arguments (what `python -m alignment.annotate` runs; the pipeline calls it too)."""
    name = resolve(args)
    from runlog import resolve_device
    from alignment.core.rewards import load_reward

    device = resolve_device(args.device)
    rows = load_generations(args.generations)
    if all(len(r["responses"]) < 2 for r in rows):
        raise ConfigError("--generations: every prompt has fewer than 2 responses; a pair needs 2")
    check_rule_inputs(rows, args.rule)
    reward = load_reward(args.reward, device=device, batch_size=args.batch_size)
    check_reward_inputs(reward, rows)
    scores = score_all(reward, rows, args.batch_size)
    prefs, summary = annotate(rows, scores, args.rule, args.p, args.seed, args.flip, args.length_penalty)
    if not prefs:  # an empty preference set is no result: say why instead of writing it with exit code 0
        raise ConfigError(f"--generations: no preference pair to write: of {summary['prompts']} prompts, "
                          f"{summary['ties_dropped']} had only tied rewards under --rule {args.rule} and "
                          f"{summary['too_few_responses']} too few responses; nothing was written")

    config = dataclasses.asdict(args) | {"resolved": {"name": name, "device": str(device)}}
    metrics = {"sampler": _generation_sampler(args.generations), "rule": args.rule, "seed": args.seed, "step": 0,
               **{k: v for k, v in summary.items() if k != "picks"},
               **{f"picks_{k}": v for k, v in summary["picks"].items()}}
    with RunDir(args.out, name, config, [args.seed]) as run:
        write_jsonl(run.path(PREFERENCES_FILE), prefs)
        run.log(metrics)
        path = run.finish(summary=summary)
    print(format_summary(summary))
    return path


main = entry_point(Args, run, __doc__)

if __name__ == "__main__":
    main()
