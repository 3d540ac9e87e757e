"""Bradley-Terry reward model with TRL's RewardTrainer: a sequence classifier with one output.

    python -m alignment.reward_model                  # toy: a tiny Llama classifier on oracle-labelled toy pairs
    python -m alignment.reward_model --model runs/alignment/sft/toy --label hard
    python -m alignment.reward_model --model Qwen/Qwen2.5-0.5B --data trl-lib/ultrafeedback_binarized --device cuda

--data toy draws pairs of responses to toy prompts (demonstrations, and sentences biased towards good / bad
adjectives, on- / off-topic nouns and right / wrong lengths, a quarter of them made non-fluent by a random
edit, so the model sees the whole reward range) and labels each pair from alignment.core.toy.true_reward:
--label bt samples the winner with P(a > b) = sigmoid(r(a) - r(b)) (seeded), --label hard lets the higher
reward win (ties dropped). Held-out pairs use the toy task's "heldout" prompts and keep only pairs with
different true rewards; held-out accuracy is the fraction the model orders like the true reward. Any other
--data is a .json/.jsonl/.parquet file or Hub dataset with chosen and rejected fields (strings or messages)
and an optional prompt; its held-out rows are a seeded random subset, scored against the chosen label.

Texts are rendered exactly as alignment.core.rewards.HFRewardModel scores them (prompt + " " + response, or the
tokenizer's chat template), so load_reward("OUT/NAME") scores like the trained model. Writes
OUT/NAME/{run.json, metrics.jsonl, model/} with the classifier and its tokenizer in model/.
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass

import torch

from alignment.core.models import model_source
from runlog import check_positive
from alignment.sft import (check_common, make_callbacks, resolve_device, save_and_finish,
                           shuffled_split, trainer_kwargs, use_quiet_progress)
from runlog import ConfigError, RunDir, arg, exit_on_config_error, parse_dataclass

LABELS = ("bt", "hard")


@dataclass
class Args:
    model: str = arg("toy:small", "backbone: toy:SIZE (LlamaForSequenceClassification built in-process with "
                     "toy.build_model's sizes: tiny, small, base), or a local folder (an sft run folder works: a "
                     "causal LM gets a fresh score head) or a Hub name, loaded with AutoModelForSequenceClassification")
    data: str = arg("toy", "toy (oracle-labelled pairs on toy prompts), or a .json/.jsonl/.parquet file or Hub "
                    "dataset with chosen + rejected (+ optional prompt) fields")
    num_pairs: int = arg(16000, "training pairs (toy: generated; a file or Hub dataset: at most this many)")
    num_heldout: int = arg(512, "held-out pairs for the held-out accuracy")
    label: str = arg("bt", "toy labels: bt = winner sampled with P(a > b) = sigmoid(r(a) - r(b)); hard = the "
                     "higher true reward wins (ties dropped)", choices=list(LABELS))
    epochs: float = arg(2.0, "passes over the training pairs (ignored when --max-steps is given)")
    max_steps: int | None = arg(None, "optimizer steps; overrides --epochs")
    lr: float = arg(2e-3, "peak learning rate (AdamW, linear decay after a short warmup)")
    batch_size: int = arg(32, "pairs per optimizer step")
    max_length: int = arg(512, "tokens per text (prompt + response); longer pairs are dropped, as TRL does")
    eval_every: int = arg(100, "held-out accuracy every this many steps (it is always logged before and after "
                          "training); 0: only before and after")
    seed: int = arg(0, "seed of the model init, the pairs, the labels and the training order")
    device: str = arg("cpu", "torch device: cpu or cuda (pick a GPU with CUDA_VISIBLE_DEVICES)")
    trust_remote_code: bool = arg(False, "allow a Hub model's own Python code (off unless you ask)")
    out: str = arg("runs/alignment/reward_model", "output folder; the run is written to OUT/NAME")
    name: str = arg("toy", "run name; an older run of that name is replaced")


# ----------------------------------------------------------------------------------------- toy pairs

def _perturb(words: list[str], rng: random.Random, vocab: list[str]) -> list[str]:
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
        words = _perturb(words, rng, [w for w in toy.VOCAB if w not in toy.SPECIAL])
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


# -------------------------------------------------------------------------------- files and rendering

def load_file_pairs(args) -> tuple[list[dict], list[dict]]:
    from alignment.core.data import load_rows, check_text

    rows = load_rows(args.data, "--data", "train")
    if not rows:
        raise ConfigError(f"--data: {args.data!r} has no rows")
    clean = []
    for i, row in enumerate(rows):
        row = {k: v for k, v in row.items() if v is not None}  # datasets fills a field missing from a row with None
        where = f"--data: {args.data!r} row {i}"
        for key in ("chosen", "rejected"):
            if key not in row:
                raise ConfigError(f"{where}: missing field {key!r} (rows need chosen, rejected and optionally prompt)")
            check_text(row[key], where, key)
        if "prompt" in row:
            check_text(row["prompt"], where, "prompt")
            if isinstance(row["prompt"], str) and not (isinstance(row["chosen"], str) and isinstance(row["rejected"], str)):
                raise ConfigError(f"{where}: a plain-text 'prompt' needs plain-text 'chosen' and 'rejected'")
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


@torch.no_grad()
def score_ids(model, pad_id: int, seqs: list[list[int]], batch_size: int = 64) -> torch.Tensor:
    """One score per token sequence, right-padded like HFRewardModel.score."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i:i + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in chunk], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chunk], device=device)
        scores.append(model(input_ids=ids, attention_mask=mask).logits[:, 0].float().cpu())
    model.train(was_training)
    return torch.cat(scores)


def pair_accuracy(model, pad_id: int, pairs: list[dict], batch_size: int = 64) -> float:
    """Fraction of pairs whose chosen text scores strictly higher than the rejected one."""
    chosen = score_ids(model, pad_id, [p["chosen_ids"] for p in pairs], batch_size)
    rejected = score_ids(model, pad_id, [p["rejected_ids"] for p in pairs], batch_size)
    return float((chosen > rejected).float().mean())


# ------------------------------------------------------------------------------------------ model

def build_classifier(source: str, tokenizer, seed: int, trust_remote_code: bool):
    from alignment.core import toy
    from alignment.core.models import check_source, toy_size, is_toy

    torch.manual_seed(seed)  # a Hub / sft backbone gets a fresh score head: seed it
    if is_toy(source):
        from transformers import LlamaForSequenceClassification

        config = toy.build_model(tokenizer, toy_size(source, "--model"), seed=seed).config
        config.num_labels = 1
        config.architectures = ["LlamaForSequenceClassification"]
        torch.manual_seed(seed)
        model = LlamaForSequenceClassification(config)
    else:
        from transformers import AutoModelForSequenceClassification

        check_source(source, "--model")
        try:
            model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1, dtype=torch.float32,
                                                                       trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise ConfigError(f"--model: cannot load a sequence classifier from {source!r} "
                              f"({str(e).splitlines()[0]})") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def resolve(args: Args) -> torch.device:
    check_positive("num-pairs", args.num_pairs, integer=True)
    check_common(args)
    if args.label not in LABELS:
        raise ConfigError(f"--label: unknown {args.label!r}; known: {', '.join(LABELS)}")
    return resolve_device(args.device)


@exit_on_config_error
def main(argv=None):
    args = parse_dataclass(Args, argv, description=__doc__.split("\n\n")[0])
    device = resolve(args)
    t0 = time.perf_counter()

    from datasets import Dataset, disable_progress_bars
    from transformers import TrainerCallback

    from alignment.core.models import load_tokenizer
    from trl import RewardConfig, RewardTrainer

    disable_progress_bars()
    source = model_source(args.model)
    tokenizer = load_tokenizer(source, "--model", trust_remote_code=args.trust_remote_code)
    if args.data == "toy":
        train_rows = toy_pairs(args.seed, args.num_pairs, "train", args.label)
        heldout_rows = toy_pairs(args.seed, args.num_heldout, "heldout", args.label)
    elif args.data.startswith("toy:"):
        raise ConfigError(f"--data: use 'toy' with --num-pairs / --num-heldout, not {args.data!r}")
    else:
        train_rows, heldout_rows = load_file_pairs(args)
    fits = lambda p: max(len(p["chosen_ids"]), len(p["rejected_ids"])) <= args.max_length
    train = [p for p in tokenize_pairs(tokenizer, train_rows) if fits(p)]
    heldout = [p for p in tokenize_pairs(tokenizer, heldout_rows) if fits(p)]
    if not train or not heldout:
        raise ConfigError(f"--max-length: every {'training' if not train else 'held-out'} pair is longer than "
                          f"{args.max_length} tokens")
    model = build_classifier(source, tokenizer, args.seed, args.trust_remote_code)
    num_params = sum(p.numel() for p in model.parameters())
    pad_id = tokenizer.pad_token_id

    resolved = {"model_source": source, "num_train": len(train), "num_heldout": len(heldout),
                "num_params": num_params, "device": str(device)}
    if args.data == "toy":
        agree = sum(r["chosen_reward"] > r["rejected_reward"] for r in train_rows)
        resolved["train_label_agreement"] = agree / len(train_rows)  # how often the label follows the true reward
        resolved["train_label_ties"] = sum(r["chosen_reward"] == r["rejected_reward"] for r in train_rows)
    config = dataclasses.asdict(args) | {"resolved": resolved}
    with RunDir(args.out, args.name, config, [args.seed]) as run:
        log_cb, quiet = make_callbacks(run, args.seed, "reward_model")

        class HeldoutAccuracy(TrainerCallback):
            def on_step_end(self, targs, state, control, model=None, **kw):
                if args.eval_every and state.global_step % args.eval_every == 0 and state.global_step < state.max_steps:
                    run.log({"stage": "reward_model", "seed": args.seed, "step": state.global_step,
                             "heldout_accuracy": pair_accuracy(model, pad_id, heldout, args.batch_size)})

        rm_args = RewardConfig(**trainer_kwargs(args, device, run.path("trainer")), disable_dropout=True)
        trainer = RewardTrainer(model=model, args=rm_args, train_dataset=Dataset.from_list(train),
                                processing_class=tokenizer, callbacks=[log_cb, HeldoutAccuracy()])
        use_quiet_progress(trainer, quiet)
        print(f"reward_model: {args.model} ({num_params / 1e6:.2f}M parameters), {len(train)} training pairs, "
              f"{len(heldout)} held-out pairs, on {device}")
        model = trainer.model
        before = pair_accuracy(model.to(trainer.args.device), pad_id, heldout, args.batch_size)
        run.log({"stage": "reward_model", "seed": args.seed, "step": 0, "heldout_accuracy": before})
        print(f"held-out pairwise accuracy before training: {before:.3f}")
        result = trainer.train()
        model = trainer.model
        after = pair_accuracy(model, pad_id, heldout, args.batch_size)
        steps = trainer.state.global_step
        run.log({"stage": "reward_model", "seed": args.seed, "step": steps, "heldout_accuracy": after})
        print(f"held-out pairwise accuracy after training:  {after:.3f}  ({steps} steps, "
              f"{result.metrics['train_runtime']:.1f} s)")
        summary = {"heldout_accuracy_before": before, "heldout_accuracy_after": after, "steps": steps,
                   "train_loss_mean": result.metrics.get("train_loss"), "num_params": num_params}
        path = save_and_finish(run, model, tokenizer, summary, t0)
    print(f"wrote {path} ({summary['wall_s']:.0f} s)")
    return path


if __name__ == "__main__":
    main()
