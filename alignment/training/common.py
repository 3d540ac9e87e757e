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

from runlog import ConfigError, RunDir, atomic_write_text, check_name, check_out, check_positive, check_seed, resolve_device
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
    check_trackers(args)


# --report-to: transformers' reporting integrations (TrainingArguments.report_to), and the module each needs
REPORTERS = {"wandb": "wandb", "tensorboard": "tensorboard", "trackio": "trackio", "mlflow": "mlflow",
             "comet_ml": "comet_ml", "clearml": "clearml", "neptune": "neptune", "dvclive": "dvclive",
             "swanlab": "swanlab", "codecarbon": "codecarbon"}
REPORT_TO_HELP = ("send the trainer's logs also to these trackers: a comma-separated list of " + ", ".join(REPORTERS)
                  + " (transformers' integrations, each installed separately), or none; the run appears there as "
                    "--run-name")
RUN_NAME_HELP = "the run's name in the trackers of --report-to (default: --name)"


def check_trackers(args) -> None:
    """--report-to (known, installed trackers) and --run-name (not blank), as every trainer stage has them."""
    reporters(args.report_to)
    if args.run_name is not None and not args.run_name.strip():
        raise ConfigError("--run-name: empty; leave it out to use --name")


def reporters(spec: str) -> list[str]:
    """'wandb,tensorboard' -> ['wandb', 'tensorboard'] (each known and installed); 'none' -> []."""
    import importlib.util

    names = [n.strip() for n in str(spec).split(",")]
    if names == ["none"]:
        return []
    for n in names:
        if n not in REPORTERS:
            raise ConfigError(f"--report-to: unknown tracker {n!r}; give none or a comma-separated list of "
                              f"{', '.join(REPORTERS)}")
        if importlib.util.find_spec(REPORTERS[n]) is None:
            raise ConfigError(f"--report-to: {n} is not installed (pip install {REPORTERS[n]}); or leave --report-to none")
    if len(set(names)) < len(names):
        raise ConfigError(f"--report-to: {spec!r} names a tracker twice")
    return names


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
    check_seed("seed", args.seed)


def trainer_device(name: str) -> torch.device:
    """cpu or cuda (auto: cuda when there is a GPU); the Trainer places the model itself, so cuda:N must go through
    CUDA_VISIBLE_DEVICES."""
    return resolve_device(name, types=("cpu", "cuda"), first_gpu_only=True)


def trainer_kwargs(args, device: torch.device, output_dir: Path) -> dict:
    """TrainingArguments shared by the SFT, reward and DPO trainers: no checkpoints (train_dpo's --save-every adds
    them), the trackers of --report-to under --run-name, gradient checkpointing only with --gradient-checkpointing
    (TRL turns it on by default), fp32 on CPU (TRL would default to bf16 autocast there) and bf16 autocast on a GPU
    that has it."""
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return dict(
        output_dir=str(output_dir), learning_rate=args.lr, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size, num_train_epochs=args.epochs,
        max_steps=args.max_steps if args.max_steps is not None else -1, lr_scheduler_type="linear",
        warmup_steps=0.05, weight_decay=0.0, seed=args.seed, data_seed=args.seed, use_cpu=device.type == "cpu",
        bf16=bf16, fp16=False, gradient_checkpointing=args.gradient_checkpointing, save_strategy="no",
        report_to=reporters(args.report_to) or "none", run_name=args.run_name or args.name, logging_steps=10,
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


def _hub_id(name) -> str | None:
    """name when it reads as a Hub repo id (ORG/NAME, not a local path or toy model), for the card's metadata."""
    import re

    name = str(name)
    if Path(name).exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return None
    return name


def pair_provenance(spec) -> dict:
    """Where a preference set came from, read along its run folders' run.json (select -> annotate -> generate):
    the selection method, the annotation rule and reward, the generation sampler. Empty for a plain file."""
    import json

    found, folder = {}, Path(str(spec))
    for _ in range(3):
        try:
            config = json.loads((folder / "run.json").read_text()).get("config", {})
        except (OSError, ValueError, AttributeError):
            break
        if "method" in config and "data" in config:  # select
            found.setdefault("selection", config["method"])
            folder = Path(str(config["data"]))
        elif "rule" in config and "generations" in config:  # annotate
            found.setdefault("rule", config["rule"])
            found.setdefault("reward", config.get("reward"))
            folder = Path(str(config["generations"]))
        elif "sampler" in config:  # generate
            found.setdefault("sampler", config["sampler"])
            break
        else:
            break
    return found


def write_model_card(folder, stage: str, base_model: str, data: str, settings: dict) -> None:
    """README.md of a saved model folder (huggingface_hub's ModelCard): the base model, the data, and the settings
    that made the model (sampler, loss, ...), so a folder copied to the Hub or a colleague says what it is."""
    from huggingface_hub import ModelCard, ModelCardData

    meta = ModelCardData(library_name="transformers", base_model=_hub_id(base_model),
                         datasets=[d] if (d := _hub_id(data)) else None,
                         tags=["dpo-samplers", stage] + ([f"sampler:{settings['sampler']}"] if settings.get("sampler") else []))
    rows = "\n".join(f"| {k} | {v} |" for k, v in settings.items() if v is not None)
    body = (f"# {Path(folder).parent.name}\n\nTrained by `python -m alignment.{stage}` (DPO samplers toolkit).\n\n"
            f"- base model: `{base_model}`\n- data: `{data}`\n\n| setting | value |\n|---|---|\n{rows}\n\n"
            f"The run's full configuration is its run.json (one folder up).\n")
    ModelCard(f"---\n{meta.to_yaml()}\n---\n\n{body}").save(str(Path(folder) / "README.md"))


def save_and_finish(run, model, tokenizer, summary: dict, t0: float, card: dict | None = None):
    """Save model and tokenizer under the run's model/ (with its model card: write_model_card's keyword arguments),
    drop the trainer's scratch folder, finish the run."""
    from alignment.core.models import check_saved_weights, parameter_shapes

    model.save_pretrained(run.path("model"))
    # read back: a partitioned (ZeRO-3) model saved this way would write empty tensors; an error, not a model
    check_saved_weights(run.path("model"), parameter_shapes(model), "model/")
    tokenizer.save_pretrained(run.path("model"))
    if card is not None:
        write_model_card(run.path("model"), **card)
    shutil.rmtree(run.path("trainer"), ignore_errors=True)
    summary["wall_s"] = time.perf_counter() - t0
    return run.finish(summary=summary)
