"""The rows each trainer reads, built from checked data sets (alignment.core.data loads and validates them):

    training_rows    DPO: prompt, chosen, rejected (+ the soft label `target` for --loss rev_kl)
    load_sft_data    SFT: prompt + completion (text or messages) or messages rows, a held-out split
    toy_pairs        reward model: oracle-labelled pairs of toy responses (Bradley-Terry or hard labels)
    load_file_pairs  reward model: chosen / rejected (+ prompt) rows of a file or Hub dataset, a held-out split
    tokenize_pairs   reward model: chosen_ids / rejected_ids, rendered as alignment.core.rewards scores texts

Only the fields the TRL trainers read are kept; a bad row is one ConfigError naming the flag and the row.
"""
from __future__ import annotations

import math
import random

from alignment.training.common import shuffled_split
from alignment.training.losses import soft_target
from runlog import ConfigError


# ------------------------------------------------------------------------------------------- DPO

def training_rows(rows: list[dict], loss: str, margin_scale: float, field_: str = "--preferences") -> list[dict]:
    """The fields TRL's DPOTrainer reads (+ target for rev_kl), from checked preference rows."""
    out = []
    for i, r in enumerate(rows):
        row = {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
        if loss == "rev_kl":
            if r.get("chosen_reward") is None or r.get("rejected_reward") is None:
                raise ConfigError(f"{field_}: row {i} (id {r.get('id')!r}) has no chosen_reward / rejected_reward; "
                                  f"--loss rev_kl needs both (alignment.annotate writes them), or use --loss sigmoid")
            row["target"] = soft_target(r["chosen_reward"], r["rejected_reward"], margin_scale)
        out.append(row)
    if not out:
        raise ConfigError(f"{field_}: no preference pairs to train on")
    return out


# ------------------------------------------------------------------------------------------- SFT

def sft_row(row: dict, where: str, fmt: str | None) -> tuple[dict, str]:
    """One SFT row with only the fields SFTTrainer reads, and its format, which must be the first row's (`fmt`)."""
    from alignment.core.data import check_text

    if "prompt" in row or "messages" not in row:
        for key in ("prompt", "completion"):
            if key not in row:
                raise ConfigError(f"{where}: missing field {key!r} (rows need prompt + completion, or messages)")
            check_text(row[key], where, key)
        kind = "conversational" if isinstance(row["prompt"], list) else "text"
        if isinstance(row["completion"], list) != (kind == "conversational"):
            raise ConfigError(f"{where}: fields 'prompt' and 'completion' must both be strings or both messages")
        out, new_fmt = {"prompt": row["prompt"], "completion": row["completion"]}, f"prompt-completion ({kind})"
    else:
        check_text(row["messages"], where, "messages")
        if isinstance(row["messages"], str):
            raise ConfigError(f"{where}: field 'messages' must be a list of {{'role', 'content'}} messages")
        out, new_fmt = {"messages": row["messages"]}, "messages"
    if fmt is not None and new_fmt != fmt:
        raise ConfigError(f"{where}: row format {new_fmt} differs from the first row's, {fmt}")
    return out, new_fmt


def load_sft_data(args) -> tuple[list[dict], list[dict], str]:
    """(train rows, held-out rows, format) with only the fields SFTTrainer reads. args: data, num_train,
    num_heldout, seed (alignment.sft's flags)."""
    from alignment.core.toy import ToyTask

    if args.data == "toy":
        task = ToyTask(args.seed)
        keep = lambda rows: [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
        return (keep(task.demonstrations(args.num_train, "train")), keep(task.demonstrations(args.num_heldout, "heldout")),
                "prompt-completion (text)")
    if args.data.startswith("toy:"):
        raise ConfigError(f"--data: use 'toy' with --num-train / --num-heldout, not {args.data!r}")
    from alignment.core.data import load_rows

    rows = load_rows(args.data, "--data", "train")
    if not rows:
        raise ConfigError(f"--data: {args.data!r} has no rows")
    fmt, clean = None, []
    for i, row in enumerate(rows):
        row = {k: v for k, v in row.items() if v is not None}  # datasets fills a field missing from a row with None
        r, fmt = sft_row(row, f"--data: {args.data!r} row {i}", fmt)
        clean.append(r)
    train, heldout = shuffled_split(clean, args.num_train, args.num_heldout, args.seed, "--data", repr(args.data))
    return train, heldout, fmt


# ------------------------------------------------------------------------------------------- reward model

def perturb(words: list[str], rng: random.Random, vocab: list[str]) -> list[str]:
    """One random edit that (usually) breaks fluency: drop, repeat, insert, swap or truncate."""
    words = list(words)
    kind = rng.choice(["drop", "repeat", "insert", "swap", "truncate"])
    i = rng.randrange(len(words))
    if kind == "drop" and len(words) > 1:
        del words[i]
    elif kind == "repeat":
        words.insert(i, words[i])
    elif kind == "insert":
        words.insert(i, rng.choice(vocab))
    elif kind == "swap" and len(words) > 1:
        i = min(i, len(words) - 2)
        words[i], words[i + 1] = words[i + 1], words[i]
    elif len(words) > 1:
        words = words[:rng.randrange(1, len(words))]
    return words


def toy_response(task, prompt: str, rng: random.Random) -> str:
    """A response covering the reward range: a demonstration (the SFT data) or sentences whose adjective
    sentiment, topic match and length are drawn at random; a quarter get a non-fluent edit."""
    from alignment.core import toy

    topic, target = toy.parse_prompt(prompt)
    if rng.random() < 0.3:
        words = task.demonstration(prompt, rng).split()
    else:
        n = target if rng.random() < 0.5 else rng.randint(1, toy.MAX_SENTENCES + 2)
        p_good = rng.random()
        p_bad = rng.random() * (1 - p_good)
        p_on = rng.random()
        words = []
        for _ in range(n):
            u = rng.random()
            adj = rng.choice(toy.GOOD if u < p_good else toy.BAD if u < p_good + p_bad else toy.NEUTRAL)
            noun = rng.choice(toy.TOPICS[topic]) if rng.random() < p_on else rng.choice(list(toy.NOUN_TOPIC))
            words += ["the", adj, noun, rng.choice(toy.VERBS), "."]
    if rng.random() < 0.25:
        words = perturb(words, rng, [w for w in toy.VOCAB if w not in toy.SPECIAL])
    return " ".join(words)


def toy_pairs(seed: int, n: int, split: str, label: str) -> list[dict]:
    """n labelled pairs {"prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"}, one prompt each.

    split "heldout" keeps only pairs with different true rewards and orders them by the true reward (the
    held-out accuracy's reference); otherwise label "bt" samples the winner from the Bradley-Terry model of
    the true reward and "hard" lets the higher reward win, skipping ties."""
    from alignment.core.toy import ToyTask, true_reward

    task = ToyTask(seed)
    rng = random.Random(f"{seed}/{split}/rm-pairs")
    label_rng = random.Random(f"{seed}/{split}/rm-labels")
    rows, batch = [], 0
    while len(rows) < n:  # redraw prompts (a new batch of the split) for pairs dropped as ties
        for p in task.prompts(n, split if batch == 0 else f"{split}-{batch}"):
            a, b = toy_response(task, p["prompt"], rng), toy_response(task, p["prompt"], rng)
            ra, rb = true_reward(p["prompt"], a), true_reward(p["prompt"], b)
            if label == "bt" and split != "heldout":
                a_wins = label_rng.random() < 1.0 / (1.0 + math.exp(rb - ra))
            elif ra == rb:
                continue
            else:
                a_wins = ra > rb
            (c, rc), (r, rr) = ((a, ra), (b, rb)) if a_wins else ((b, rb), (a, ra))
            rows.append({"prompt": p["prompt"], "chosen": c, "rejected": r, "chosen_reward": rc, "rejected_reward": rr})
            if len(rows) == n:
                break
        batch += 1
    return rows


def load_file_pairs(args) -> tuple[list[dict], list[dict]]:
    """(train pairs, held-out pairs) {prompt or None, chosen, rejected} of --data. args: data, split, data_config,
    data_dir (optional), num_pairs, num_heldout, seed (alignment.reward_model's flags). A text prompt beside whole
    conversations (UltraFeedback-binarized's prompt column, a copy of the user turn) is dropped: the
    conversations are scored whole."""
    from alignment.core.data import check_text, identical_pairs, is_messages, load_rows

    rows = load_rows(args.data, "--data", getattr(args, "split", "train"), config=getattr(args, "data_config", None),
                     data_dir=getattr(args, "data_dir", None))
    if not rows:
        raise ConfigError(f"--data: {args.data!r} has no rows")
    clean = []
    for i, row in enumerate(rows):
        row = {k: v for k, v in row.items() if v is not None}  # datasets fills a field missing from a row with None
        where = f"--data: {args.data!r} row {i}"
        if isinstance(row.get("prompt"), str) and is_messages(row.get("chosen")) and is_messages(row.get("rejected")):
            del row["prompt"]
        for key in ("chosen", "rejected"):
            if key not in row:
                raise ConfigError(f"{where}: missing field {key!r} (rows need chosen, rejected and optionally prompt)")
            check_text(row[key], where, key)
        if "prompt" in row:
            check_text(row["prompt"], where, "prompt")
            if isinstance(row["prompt"], str) and not (isinstance(row["chosen"], str) and isinstance(row["rejected"], str)):
                raise ConfigError(f"{where}: a plain-text 'prompt' needs plain-text 'chosen' and 'rejected'")
        if row["chosen"] == row["rejected"]:  # as train_dpo refuses them: no preference to learn
            raise identical_pairs(where, sum(r.get("chosen") == r.get("rejected") for r in rows[i:]))
        clean.append({"prompt": row.get("prompt"), "chosen": row["chosen"], "rejected": row["rejected"]})
    return shuffled_split(clean, args.num_pairs, args.num_heldout, args.seed, "--data", repr(args.data))


def render(tokenizer, prompt, response) -> str:
    """The text a reward model scores: as alignment.core.rewards.HFRewardModel.texts renders it."""
    from alignment.core.rewards import join_text

    if prompt is None:
        messages = response if isinstance(response, list) else None
        if messages is None:
            return response
    elif isinstance(prompt, list):
        messages = prompt + (response if isinstance(response, list) else [{"role": "assistant", "content": response}])
    else:
        return join_text(prompt, response)
    if getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError("--data: conversational rows need a tokenizer with a chat template; --model has none")
    return tokenizer.apply_chat_template(messages, tokenize=False)


def tokenize_pairs(tokenizer, rows: list[dict]) -> list[dict]:
    """chosen_ids / rejected_ids as the scorer tokenizes them (no EOS appended: the scorer adds none), so
    RewardTrainer takes them as they are."""
    out = []
    for r in rows:
        ids = [tokenizer(render(tokenizer, r["prompt"], r[k]))["input_ids"] for k in ("chosen", "rejected")]
        out.append({"chosen_ids": ids[0], "rejected_ids": ids[1]})
    return out
