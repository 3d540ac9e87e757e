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
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from alignment.core.models import model_source
from alignment.training.common import check_common, trainer_device
from alignment.training.common import REPORT_TO_HELP, RUN_NAME_HELP
from alignment.core.data import DATA_CONFIG_HELP, DATA_DIR_HELP
from runlog import ConfigError, RunDir, arg, check_positive, entry_point

LABELS = ("bt", "hard")


@dataclass
class Args:
    model: str = arg("toy:small", "backbone: toy:SIZE (LlamaForSequenceClassification built in-process with "
                     "toy.build_model's sizes: tiny, small, base), or a local folder (an sft run folder works: a "
                     "causal LM gets a fresh score head) or a Hub name, loaded with AutoModelForSequenceClassification")
    data: str = arg("toy", "toy (oracle-labelled pairs on toy prompts), or a .json/.jsonl/.parquet file or Hub "
                    "dataset with chosen + rejected (+ optional prompt) fields")
    split: str = arg("train", "split of a Hub dataset (or dataset folder) to read, e.g. train_prefs or a slice "
                     "such as train[:2000]; a local file is read whole")
    data_config: str | None = arg(None, DATA_CONFIG_HELP, metavar="NAME")
    data_dir: str | None = arg(None, DATA_DIR_HELP, metavar="DIR")
    num_pairs: int = arg(16000, "training pairs (toy: generated; a file or Hub dataset: at most this many)")
    num_heldout: int = arg(512, "held-out pairs for the held-out accuracy")
    label: str = arg("bt", "toy labels: bt = winner sampled with P(a > b) = sigmoid(r(a) - r(b)); hard = the "
                     "higher true reward wins (ties dropped)", choices=list(LABELS))
    epochs: float = arg(2.0, "passes over the training pairs (ignored when --max-steps is given)")
    max_steps: int | None = arg(None, "optimizer steps; overrides --epochs. Not capped: a huge value is your choice and runs until it "
                                                 "ends or is stopped (the progress bar shows steps and time left; Ctrl-C removes the run)")
    lr: float = arg(2e-3, "peak learning rate (AdamW, linear decay after a short warmup)")
    batch_size: int = arg(32, "pairs per optimizer step")
    max_length: int = arg(512, "tokens per text (prompt + response); longer pairs are dropped, as TRL does")
    eval_every: int = arg(100, "held-out accuracy every this many steps (it is always logged before and after "
                          "training); 0: only before and after")
    seed: int = arg(0, "seed of the model init, the pairs, the labels and the training order")
    device: str = arg("cpu", "torch device: cpu or cuda (pick a GPU with CUDA_VISIBLE_DEVICES)")
    gradient_checkpointing: bool = arg(False, "recompute activations in the backward pass instead of storing them "
                                       "(less memory, about a third more compute; transformers' gradient checkpointing)")
    report_to: str = arg("none", REPORT_TO_HELP)
    run_name: str | None = arg(None, RUN_NAME_HELP)
    trust_remote_code: bool = arg(False, "allow a Hub model's own Python code (off unless you ask)")
    out: str = arg("runs/alignment/reward_model", "output folder; the run is written to OUT/NAME")
    name: str = arg("toy", "run name; an older run of that name is replaced")


def resolve(args: Args) -> torch.device:
    """Check every flag before anything is loaded or written; returns the device."""
    check_positive("num-pairs", args.num_pairs, integer=True)
    check_common(args)
    if args.data == "toy" and (args.data_config is not None or args.data_dir is not None):
        raise ConfigError(f"--{'data-config' if args.data_config is not None else 'data-dir'}: only for a Hub "
                          f"dataset (or a local dataset folder); --data toy is the toy task")
    if args.label not in LABELS:
        raise ConfigError(f"--label: unknown {args.label!r}; known: {', '.join(LABELS)}")
    return trainer_device(args.device)


def run(args: Args) -> Path:
    """The reward_model stage on parsed arguments (what `python -m alignment.reward_model` runs)."""
    device = resolve(args)
    t0 = time.perf_counter()

    from datasets import Dataset, disable_progress_bars
    from trl import RewardConfig, RewardTrainer

    from alignment.core.models import load_tokenizer
    from alignment.training.common import make_callbacks, save_and_finish, trainer_kwargs, use_quiet_progress
    from alignment.training.data import load_file_pairs, tokenize_pairs, toy_pairs
    from alignment.training.reward import HeldoutAccuracy, build_classifier, pair_accuracy

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
        accuracy_cb = HeldoutAccuracy(run, args.seed, pad_id, heldout, args.eval_every, args.batch_size)
        rm_args = RewardConfig(**trainer_kwargs(args, device, run.path("trainer")), disable_dropout=True)
        trainer = RewardTrainer(model=model, args=rm_args, train_dataset=Dataset.from_list(train),
                                processing_class=tokenizer, callbacks=[log_cb, accuracy_cb])
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
        card = dict(stage="reward_model", base_model=source, data=args.data,
                    settings={"labels": args.label if args.data == "toy" else None, "epochs": args.epochs,
                              "max_steps": args.max_steps, "lr": args.lr, "batch_size": args.batch_size,
                              "max_length": args.max_length, "seed": args.seed, "steps": steps,
                              "heldout_accuracy": round(after, 4)})
        path = save_and_finish(run, model, tokenizer, summary, t0, card=card)
    print(f"finished in {summary['wall_s']:.0f} s")
    return path


main = entry_point(Args, run, __doc__)

if __name__ == "__main__":
    main()
