"""What the three trainer stages (alignment.sft, alignment.reward_model, alignment.train_dpo) share: the checks of
their common flags, the TrainingArguments they all set alike, the metrics.jsonl callback and the quiet progress
bar, the seeded held-out split of a file's rows, and saving the trained model into the run.

transformers is imported inside the functions that need it: the stages' checks (and `alignment.pipeline.dryrun`) run
without loading it.
"""
from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import torch

from runlog import ConfigError, RunDir, atomic_write_text, check_name, check_out, check_positive, resolve_device
from runlog.rundir import dumps


def check_common(args) -> None:
    """Checks shared by sft and reward_model: model size, budget, optimiser, seed, output place."""
    from alignment.core.models import is_toy, toy_size

    if is_toy(args.model):
        toy_size(args.model, "--model")  # before any data is built
    check_positive("num-heldout", args.num_heldout, integer=True)
    if args.eval_every < 0:
        raise ConfigError(f"--eval-every: must be an integer >= 0, got {args.eval_every}")
    check_budget(args)
    check_name(args.name)
    check_out(args.out)


def check_budget(args) -> None:
    """The training budget and optimiser flags every trainer entry point has (sft, reward_model, train_dpo): epochs,
    max-steps, lr, batch-size, max-length, seed."""
    check_positive("epochs", args.epochs)
    if args.max_steps is not None:
        check_positive("max-steps", args.max_steps, integer=True)
    check_positive("lr", args.lr)
    check_positive("batch-size", args.batch_size, integer=True)
    check_positive("max-length", args.max_length, integer=True)
    if args.max_length < 2:
        raise ConfigError(f"--max-length: must be at least 2 tokens, got {args.max_length}")
    if args.seed < 0:
        raise ConfigError(f"--seed: must be an integer >= 0, got {args.seed}")


def trainer_device(name: str) -> torch.device:
    """cpu or cuda (auto: cuda when there is a GPU); the Trainer places the model itself, so cuda:N must go through
    CUDA_VISIBLE_DEVICES."""
    return resolve_device(name, types=("cpu", "cuda"), first_gpu_only=True)


def trainer_kwargs(args, device: torch.device, output_dir: Path) -> dict:
    """TrainingArguments shared by the SFT, reward and DPO trainers: no checkpoints, no reporting, no gradient
    checkpointing (TRL turns it on by default), fp32 on CPU (TRL would default to bf16 autocast there) and
    bf16 autocast on a GPU that has it."""
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return dict(
        output_dir=str(output_dir), learning_rate=args.lr, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size, num_train_epochs=args.epochs,
        max_steps=args.max_steps if args.max_steps is not None else -1, lr_scheduler_type="linear",
        warmup_steps=0.05, weight_decay=0.0, seed=args.seed, data_seed=args.seed, use_cpu=device.type == "cpu",
        bf16=bf16, fp16=False, gradient_checkpointing=False, save_strategy="no", report_to="none", logging_steps=10,
        dataloader_num_workers=0, dataloader_pin_memory=device.type == "cuda", max_length=args.max_length,
        trust_remote_code=args.trust_remote_code,
    )


# Trainer log keys -> metrics.jsonl keys (run-time keys such as train_runtime are left out: they differ per run)
LOG_KEYS = {"loss": "train_loss", "grad_norm": "grad_norm", "learning_rate": "lr", "epoch": "epoch",
            "mean_token_accuracy": "train_token_accuracy", "accuracy": "train_accuracy", "margin": "train_margin",
            "eval_loss": "heldout_loss", "eval_mean_token_accuracy": "heldout_token_accuracy",
            # DPOTrainer's: implicit rewards beta log(pi / pi_ref) of chosen and rejected, their margin and accuracy
            "rewards/chosen": "train_reward_chosen", "rewards/rejected": "train_reward_rejected",
            "rewards/margins": "train_reward_margin", "rewards/accuracies": "train_reward_accuracy",
            "logps/chosen": "train_logp_chosen", "logps/rejected": "train_logp_rejected",
            "soft_target": "train_soft_target",
            # alignment.train_dpo --selector: the K kept pairs of each batch, their loss and margin, SamS's reward
            "select/kept": "select_kept", "select/loss": "select_loss", "select/margin": "select_margin",
            "select/reward": "sams_reward"}


def make_callbacks(run: RunDir, seed: int, stage: str, extra: dict | None = None):
    """A callback writing the trainer's logs to metrics.jsonl (each row with stage, seed, step and `extra`, e.g.
    the pipeline's iteration and sampler), and a progress bar that shows them as a postfix instead of printing
    a dict per log step."""
    from transformers import ProgressCallback, TrainerCallback

    class LogToRun(TrainerCallback):
        def __init__(self):
            self.last_eval_step = None
            self.rows = []  # every row logged so far: each checkpoint keeps a copy, so a resumed run's log is whole

        def on_log(self, targs, state, control, logs=None, **kw):
            row = {LOG_KEYS[k]: float(v) for k, v in (logs or {}).items() if k in LOG_KEYS}
            if set(row) <= {"epoch"}:  # the end-of-training summary (run times) carries nothing else we keep
                return
            if "heldout_loss" in row:
                self.last_eval_step = state.global_step
            row = {"stage": stage, **(extra or {}), "seed": seed, "step": state.global_step, **row}
            self.rows.append(row)
            run.log(row)

        def on_save(self, targs, state, control, **kw):
            # written after the Trainer's own files: a checkpoint with its log is complete (newest_checkpoint)
            if state.is_world_process_zero:
                folder = Path(targs.output_dir) / f"checkpoint-{state.global_step}"
                atomic_write_text(folder / CHECKPOINT_LOG, "".join(dumps(r) + "\n" for r in self.rows))

    class QuietProgress(ProgressCallback):
        def on_log(self, targs, state, control, logs=None, **kw):
            if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)

    return LogToRun(), QuietProgress


CHECKPOINT_LOG = "metrics.jsonl"  # in each checkpoint-N/: the run's log up to step N


def newest_checkpoint(folder) -> Path | None:
    """The newest complete checkpoint-N/ of a trainer folder (one whose log, written last, is there), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit() and (p / CHECKPOINT_LOG).is_file()]
    return max(done, key=lambda p: int(p.name.split("-", 1)[1]), default=None)


def read_checkpoint_log(checkpoint) -> list[dict]:
    """The log rows a checkpoint holds (steps up to its own)."""
    import json

    path = Path(checkpoint) / CHECKPOINT_LOG
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise ConfigError(f"--resume: cannot read the log of {checkpoint} ({e}); delete {Path(checkpoint).parent} "
                          f"to start over") from None


def use_quiet_progress(trainer, quiet_cls) -> None:
    from transformers import ProgressCallback

    if any(isinstance(cb, ProgressCallback) for cb in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(quiet_cls)


def shuffled_split(rows: list[dict], num_train: int, num_heldout: int, seed: int, field_: str, source: str):
    """Held-out rows: a seeded random subset; training rows: up to num_train of the rest."""
    if len(rows) < num_heldout + 1:
        raise ConfigError(f"{field_}: {source} has {len(rows)} rows; need more than --num-heldout {num_heldout}")
    order = list(range(len(rows)))
    random.Random(f"{seed}/split").shuffle(order)
    heldout = [rows[i] for i in order[:num_heldout]]
    train = [rows[i] for i in order[num_heldout:num_heldout + num_train]]
    return train, heldout


def save_and_finish(run, model, tokenizer, summary: dict, t0: float):
    """Save model and tokenizer under the run's model/, drop the trainer's scratch folder, finish the run."""
    model.save_pretrained(run.path("model"))
    tokenizer.save_pretrained(run.path("model"))
    shutil.rmtree(run.path("trainer"), ignore_errors=True)
    summary["wall_s"] = time.perf_counter() - t0
    return run.finish(summary=summary)
