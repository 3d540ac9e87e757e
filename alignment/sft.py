"""Supervised fine-tuning with TRL's SFTTrainer: the toy policy from scratch, or any causal LM on any SFT data.

    python -m alignment.sft                          # toy: a ~1M-parameter Llama from scratch on demonstrations
    python -m alignment.sft --model Qwen/Qwen2.5-0.5B --data trl-lib/Capybara --device cuda --max-steps 500 --lr 2e-5

--data toy trains on ToyTask(seed).demonstrations (prompt-completion rows) and holds out the "heldout" split;
any other --data is a local .json/.jsonl/.parquet file or a Hub dataset name whose rows have prompt and
completion fields (strings or chat messages) or a messages field. Writes
OUT/NAME/{run.json, metrics.jsonl, samples.jsonl (toy data), model/}: model/ is the trained model and its
tokenizer (save_pretrained), loadable with alignment.core.models.load_causal_lm / load_tokenizer.
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
from runlog import ConfigError, RunDir, arg, check_positive, entry_point


@dataclass
class Args:
    model: str = arg("toy:base", "policy to fine-tune: toy:SIZE (a fresh Llama built in-process; sizes tiny, small, "
                     "base), a local model folder (or a run folder holding model/), or a Hub model name")
    data: str = arg("toy", "toy (synthetic demonstrations), or a .json/.jsonl/.parquet file or Hub dataset with "
                    "prompt + completion (or messages) fields; a file's held-out rows are a seeded random subset")
    num_train: int = arg(8000, "training rows (toy: generated; a file or Hub dataset: at most this many)")
    num_heldout: int = arg(256, "held-out rows for the held-out loss")
    epochs: float = arg(2.0, "passes over the training rows (ignored when --max-steps is given)")
    max_steps: int | None = arg(None, "optimizer steps; overrides --epochs. Not capped: a huge value is your choice and runs until it "
                                                 "ends or is stopped (the progress bar shows steps and time left; Ctrl-C removes the run)")
    lr: float = arg(1.5e-3, "peak learning rate (AdamW, linear decay after a short warmup)")
    batch_size: int = arg(16, "rows per optimizer step")
    max_length: int = arg(512, "tokens per row (prompt + completion); longer rows are truncated")
    eval_every: int = arg(100, "held-out loss every this many steps (it is always logged before and after "
                          "training); 0: only before and after")
    num_samples: int = arg(64, "toy data only: held-out prompts to sample a response for after training, to "
                           "report fluency and mean true reward; 0 skips")
    max_new_tokens: int = arg(32, "toy data only: token limit of each sampled response")
    seed: int = arg(0, "seed of the model init (toy), the data, the training order and the sampling")
    device: str = arg("cpu", "torch device: cpu or cuda (pick a GPU with CUDA_VISIBLE_DEVICES)")
    gradient_checkpointing: bool = arg(False, "recompute activations in the backward pass instead of storing them "
                                       "(less memory, about a third more compute; transformers' gradient checkpointing)")
    report_to: str = arg("none", REPORT_TO_HELP)
    run_name: str | None = arg(None, RUN_NAME_HELP)
    trust_remote_code: bool = arg(False, "allow a Hub model's own Python code (off unless you ask)")
    out: str = arg("runs/alignment/sft", "output folder; the run is written to OUT/NAME")
    name: str = arg("toy", "run name; an older run of that name is replaced")


def resolve(args: Args) -> torch.device:
    """Check every flag before anything is loaded or written; returns the device."""
    check_positive("num-train", args.num_train, integer=True)
    check_common(args)
    if args.num_samples < 0:
        raise ConfigError(f"--num-samples: must be an integer >= 0, got {args.num_samples}")
    check_positive("max-new-tokens", args.max_new_tokens, integer=True)
    return trainer_device(args.device)


def run(args: Args) -> Path:
    """The sft stage on parsed arguments (what `python -m alignment.sft` runs)."""
    device = resolve(args)
    t0 = time.perf_counter()

    from datasets import Dataset, disable_progress_bars
    from trl import SFTConfig, SFTTrainer

    from alignment.core.data import write_jsonl
    from alignment.core.models import load_causal_lm, load_tokenizer
    from alignment.core.toy import sample_toy
    from alignment.training.common import make_callbacks, save_and_finish, trainer_kwargs, use_quiet_progress
    from alignment.training.data import load_sft_data

    disable_progress_bars()  # datasets' map bars; the training bar stays
    source = model_source(args.model)
    tokenizer = load_tokenizer(source, "--model", trust_remote_code=args.trust_remote_code)
    train_rows, heldout_rows, fmt = load_sft_data(args)
    if fmt != "prompt-completion (text)" and getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError(f"--data: {fmt} rows need a tokenizer with a chat template; --model {args.model!r} has none")
    model = load_causal_lm(source, "--model", dtype="float32", seed=args.seed, trust_remote_code=args.trust_remote_code)
    model.train()
    num_params = sum(p.numel() for p in model.parameters())

    config = dataclasses.asdict(args) | {"resolved": {"model_source": source, "data_format": fmt,
                                                         "num_train": len(train_rows), "num_heldout": len(heldout_rows),
                                                         "num_params": num_params, "device": str(device)}}
    with RunDir(args.out, args.name, config, [args.seed]) as run:
        log_cb, quiet = make_callbacks(run, args.seed, "sft")
        sft_args = SFTConfig(**trainer_kwargs(args, device, run.path("trainer")),
                             eval_strategy="steps" if args.eval_every else "no", eval_steps=args.eval_every or None)
        trainer = SFTTrainer(model=model, args=sft_args, train_dataset=Dataset.from_list(train_rows),
                             eval_dataset=Dataset.from_list(heldout_rows), processing_class=tokenizer,
                             callbacks=[log_cb])
        use_quiet_progress(trainer, quiet)
        print(f"sft: {args.model} ({num_params / 1e6:.2f}M parameters), {len(train_rows)} training rows, "
              f"{len(heldout_rows)} held-out rows, on {device}")
        before = trainer.evaluate()["eval_loss"]
        print(f"held-out loss before training: {before:.4f}")
        result = trainer.train()
        after = trainer.evaluate()["eval_loss"] if log_cb.last_eval_step != trainer.state.global_step else None
        if after is None:  # the last periodic evaluation was at the last step
            after = next(r for r in reversed(trainer.state.log_history) if "eval_loss" in r)["eval_loss"]
        print(f"held-out loss after training:  {after:.4f}  ({trainer.state.global_step} steps, "
              f"{result.metrics['train_runtime']:.1f} s)")

        summary = {"heldout_loss_before": before, "heldout_loss_after": after, "steps": trainer.state.global_step,
                   "train_loss_mean": result.metrics.get("train_loss"), "num_params": num_params}
        model = trainer.model
        if args.data == "toy" and args.num_samples:
            samples = sample_toy(model, tokenizer, args.num_samples, args.seed, args.max_new_tokens)
            write_jsonl(run.path("samples.jsonl"), samples)
            summary |= {"num_samples": len(samples),
                        "fluency_rate": sum(s["fluent"] for s in samples) / len(samples),
                        "mean_reward": sum(s["reward"] for s in samples) / len(samples)}
            print(f"{len(samples)} sampled held-out responses: fluency rate {summary['fluency_rate']:.3f}, "
                  f"mean true reward {summary['mean_reward']:.3f}   e.g. {samples[0]['prompt']!r} -> "
                  f"{samples[0]['response']!r}")
            run.log({"stage": "sft", "seed": args.seed, "step": trainer.state.global_step,
                     "fluency_rate": summary["fluency_rate"], "mean_reward": summary["mean_reward"]})
        tokenizer.padding_side = "left"
        card = dict(stage="sft", base_model=source, data=args.data,
                    settings={"epochs": args.epochs, "max_steps": args.max_steps, "lr": args.lr,
                              "batch_size": args.batch_size, "max_length": args.max_length, "seed": args.seed,
                              "steps": trainer.state.global_step, "heldout_loss": round(after, 4)})
        path = save_and_finish(run, model, tokenizer, summary, t0, card=card)
    print(f"finished in {summary['wall_s']:.0f} s")
    return path


main = entry_point(Args, run, __doc__)

if __name__ == "__main__":
    main()
