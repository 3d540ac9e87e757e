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
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from alignment.core.models import model_source
from runlog import (ConfigError, RunDir, arg, check_name, check_out, check_positive, exit_on_config_error, parse_dataclass,
                    resolve_device as runlog_resolve_device)

TOY_CONTEXT = 128  # the toy model's max_position_embeddings and the toy tokenizer's model_max_length



@dataclass
class Args:
    model: str = arg("toy:base", "policy to fine-tune: toy:SIZE (a fresh Llama built in-process; sizes tiny, small, "
                     "base), a local model folder (or a run folder holding model/), or a Hub model name")
    data: str = arg("toy", "toy (synthetic demonstrations), or a .json/.jsonl/.parquet file or Hub dataset with "
                    "prompt + completion (or messages) fields; a file's held-out rows are a seeded random subset")
    num_train: int = arg(8000, "training rows (toy: generated; a file or Hub dataset: at most this many)")
    num_heldout: int = arg(256, "held-out rows for the held-out loss")
    epochs: float = arg(2.0, "passes over the training rows (ignored when --max-steps is given)")
    max_steps: int | None = arg(None, "optimizer steps; overrides --epochs")
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
    trust_remote_code: bool = arg(False, "allow a Hub model's own Python code (off unless you ask)")
    out: str = arg("runs/alignment/sft", "output folder; the run is written to OUT/NAME")
    name: str = arg("toy", "run name; an older run of that name is replaced")


# ------------------------------------------------------------------------------------ shared checks

def check_common(args) -> None:
    """Checks shared by sft and reward_model: model size, budget, optimiser, seed, output place."""
    from alignment.core.models import toy_size, is_toy

    if is_toy(args.model):
        toy_size(args.model, "--model")  # before any data is built
    check_positive("num-heldout", args.num_heldout, integer=True)
    if args.eval_every < 0:
        raise ConfigError(f"--eval-every: must be an integer >= 0, got {args.eval_every}")
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
    check_name(args.name)
    check_out(args.out)


def resolve_device(name: str) -> torch.device:
    """cpu or cuda; the Trainer places the model itself, so cuda:N must go through CUDA_VISIBLE_DEVICES."""
    return runlog_resolve_device(name, types=("cpu", "cuda"), first_gpu_only=True)


def trainer_kwargs(args, device: torch.device, output_dir: Path) -> dict:
    """TrainingArguments shared by the SFT and reward trainers: no checkpoints, no reporting, no gradient
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

        def on_log(self, targs, state, control, logs=None, **kw):
            row = {LOG_KEYS[k]: float(v) for k, v in (logs or {}).items() if k in LOG_KEYS}
            if set(row) <= {"epoch"}:  # the end-of-training summary (run times) carries nothing else we keep
                return
            if "heldout_loss" in row:
                self.last_eval_step = state.global_step
            run.log({"stage": stage, **(extra or {}), "seed": seed, "step": state.global_step, **row})

    class QuietProgress(ProgressCallback):
        def on_log(self, targs, state, control, logs=None, **kw):
            if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)

    return LogToRun(), QuietProgress


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


# ------------------------------------------------------------------------------------------- data

def _sft_row(row: dict, where: str, fmt: str | None) -> tuple[dict, str]:
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
    """(train rows, held-out rows, format) with only the fields SFTTrainer reads."""
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
        r, fmt = _sft_row(row, f"--data: {args.data!r} row {i}", fmt)
        clean.append(r)
    train, heldout = shuffled_split(clean, args.num_train, args.num_heldout, args.seed, "--data", repr(args.data))
    return train, heldout, fmt


# ---------------------------------------------------------------------------------------- sampling

@torch.no_grad()
def sample_toy(model, tokenizer, num: int, seed: int, max_new_tokens: int, batch_size: int = 64) -> list[dict]:
    """One plain sampled response (temperature 1, no top-k / top-p) per held-out toy prompt, seeded."""
    from alignment.core.toy import ToyTask, is_fluent, true_reward

    model.eval()
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    prompts = ToyTask(seed).prompts(num, "heldout")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rows = []
    for i in range(0, num, batch_size):
        chunk = prompts[i:i + batch_size]
        batch = tokenizer([r["prompt"] for r in chunk], return_tensors="pt", padding=True).to(device)
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        out = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        for r, text in zip(chunk, texts):
            text = " ".join(text.split())
            rows.append({"id": r["id"], "prompt": r["prompt"], "response": text, "fluent": is_fluent(text),
                         "reward": true_reward(r["prompt"], text)})
    return rows


# -------------------------------------------------------------------------------------------- main

def resolve(args: Args) -> torch.device:
    check_positive("num-train", args.num_train, integer=True)
    check_common(args)
    if args.num_samples < 0:
        raise ConfigError(f"--num-samples: must be an integer >= 0, got {args.num_samples}")
    check_positive("max-new-tokens", args.max_new_tokens, integer=True)
    return resolve_device(args.device)


@exit_on_config_error
def main(argv=None):
    args = parse_dataclass(Args, argv, description=__doc__.split("\n\n")[0])
    device = resolve(args)
    t0 = time.perf_counter()

    from datasets import Dataset, disable_progress_bars

    from alignment.core.models import load_causal_lm, load_tokenizer
    from trl import SFTConfig, SFTTrainer

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
            from alignment.core.data import write_jsonl

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
        path = save_and_finish(run, model, tokenizer, summary, t0)
    print(f"wrote {path} ({summary['wall_s']:.0f} s)")
    return path


def save_and_finish(run, model, tokenizer, summary: dict, t0: float):
    """Save model and tokenizer under the run's model/, drop the trainer's scratch folder, finish the run."""
    model.save_pretrained(run.path("model"))
    tokenizer.save_pretrained(run.path("model"))
    shutil.rmtree(run.path("trainer"), ignore_errors=True)
    summary["wall_s"] = time.perf_counter() - t0
    return run.finish(summary=summary)


if __name__ == "__main__":
    main()
