"""DPO training with TRL's DPOTrainer: the hard-label `sigmoid` loss or the soft-label `rev_kl` loss.

    python -m alignment.train_dpo --preferences runs/alignment/annotate/online          # toy: the SFT'd policy
    python -m alignment.train_dpo --config alignment/configs/toy.yaml --preferences P --loss rev_kl --margin-scale 4
    accelerate launch --config_file alignment/configs/zero3.yaml -m alignment.train_dpo --config RECIPE ...

Losses, with h = beta * log(pi / pi_ref) summed over the response tokens and D = h(chosen) - h(rejected):
    sigmoid   -log sigmoid(D)                                       (DPO; hard labels: chosen beats rejected)
    rev_kl    -q log sigmoid(D) - (1 - q) log sigmoid(-D),  q = sigmoid(k * (r_chosen - r_rejected))
              the soft-label loss of the samplers paper: the cross-entropy between the reward model's
              Bradley-Terry preference q (margin scale k = --margin-scale: 4 on Safe-RLHF, 1 on
              Iterative-Prompt) and the policy's implicit one; its minimiser has h(y) - h(y') =
              k (r(y) - r(y')), the exact-setting loss of the bandit package. It needs chosen_reward and
              rejected_reward in every row (alignment.annotate writes them).
rev_kl runs TRL's own sigmoid loss and adds (1 - q) D, since -q log s(D) - (1-q) log s(-D) = -log s(D) + (1-q) D
exactly: TRL's forward passes, metrics and distributed code stay untouched.

The reference model is always loaded as its own frozen copy and passed to the trainer (--ref, default: the
same weights as --policy): TRL never re-loads it from a path. Config: flags, or a YAML recipe (--config; its
`train:` section, see alignment/recipes.py) whose values the flags override. DPOConfig fields that have no
flag here go in the recipe's `dpo:` mapping (e.g. {warmup_ratio: 0.03, gradient_checkpointing: true}).

Writes OUT/NAME/{run.json, metrics.jsonl (the trainer's logs: loss, reward margins and accuracies, lr),
model/ (the trained policy and tokenizer)}. --report-to wandb or tensorboard also sends the logs there
(when installed). Under `accelerate launch` (or `torchrun` on a CPU machine) each process trains on its
share of every global batch of batch-size x grad-accum x processes pairs.
"""
from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alignment.models import model_source
from runlog import ConfigError, RunDir, arg, exit_on_config_error, parse_dataclass

LOSSES = ("sigmoid", "rev_kl")
DEFAULT_POLICY = "runs/alignment/sft/toy/model"
REPORTERS = ("none", "wandb", "tensorboard")
# DPOConfig fields set by our own flags (or by us): a recipe's dpo: mapping may not set them a second way
OWN_FIELDS = {"output_dir", "learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size",
              "gradient_accumulation_steps", "num_train_epochs", "max_steps", "lr_scheduler_type", "warmup_ratio",
              "warmup_steps", "seed", "data_seed", "use_cpu", "bf16", "fp16", "max_length", "beta", "loss_type",
              "loss_weights", "report_to", "trust_remote_code", "precompute_ref_log_probs"}


@dataclass
class Args:
    config: str | None = arg(None, "YAML recipe: its train: section (or the whole file) sets defaults for these "
                             "flags, and its dpo: mapping extra DPOConfig fields; flags override it", metavar="YAML")
    preferences: str | None = arg(None, "preference pairs: an annotate run folder, a .json/.jsonl/.parquet file "
                                  "or a Hub dataset with prompt, chosen, rejected (+ chosen_reward, "
                                  "rejected_reward for rev_kl) (required)", metavar="PATH")
    policy: str | None = arg(None, "the policy to train: a model folder (or a run folder holding model/), a Hub "
                             f"name or toy:SIZE (default: {DEFAULT_POLICY}, written by `python -m alignment.sft`)")
    ref: str | None = arg(None, "the fixed reference pi_ref (default: the same weights as --policy, loaded as a "
                          "separate frozen copy)")
    loss: str = arg("sigmoid", "sigmoid: DPO on hard labels; rev_kl: soft labels sigmoid(k (r_chosen - "
                    "r_rejected)) from the pairs' rewards", choices=list(LOSSES))
    beta: float = arg(0.1, "KL strength beta of the implicit reward beta log(pi / pi_ref)")
    margin_scale: float = arg(1.0, "rev_kl: margin scale k of the soft label sigmoid(k (r_chosen - r_rejected))")
    lr: float = arg(1e-4, "peak learning rate (AdamW); the samplers paper uses 5e-7 for 3B-7B models")
    lr_scheduler: str = arg("cosine", "learning-rate schedule after warmup", choices=["cosine", "linear", "constant"])
    warmup_ratio: float = arg(0.1, "fraction of the steps spent warming the learning rate up from 0")
    epochs: float = arg(2.0, "passes over the pairs (ignored when --max-steps is given)")
    max_steps: int | None = arg(None, "optimizer steps; overrides --epochs")
    batch_size: int = arg(16, "pairs per device per forward pass")
    grad_accum: int = arg(1, "forward passes per optimizer step (global batch = batch-size x grad-accum x processes)")
    max_length: int = arg(512, "tokens per sequence (prompt + response); longer ones are cut at the end")
    precompute_ref: bool = arg(False, "compute the reference log-probs once before training (saves the reference's "
                               "forward pass per step)")
    dtype: str = arg("float32", "weights' dtype; on a GPU that has bf16 the forward passes run under bf16 autocast "
                     "either way", choices=["float32", "bfloat16"])
    seed: int = arg(0, "seed of the training order and of TRL / transformers")
    device: str = arg("auto", "auto (the GPU of this process when there is one, else cpu), cpu or cuda")
    report_to: str = arg("none", "also send the logs to wandb or tensorboard (installed separately)",
                         choices=list(REPORTERS))
    trust_remote_code: bool = arg(False, "let transformers run code shipped with a model")
    out: str = arg("runs/alignment/train_dpo", "output folder; the run is written to OUT/NAME")
    name: str = arg("dpo", "run name; an older run of that name is replaced")
    dpo: dict = field(default_factory=dict, metadata={"help": "recipe only: extra DPOConfig fields"})


# ------------------------------------------------------------------------------------------- the trainer

def soft_target(chosen_reward: float, rejected_reward: float, margin_scale: float) -> float:
    """q = sigmoid(k (r_chosen - r_rejected)): the reward model's Bradley-Terry probability that chosen wins."""
    return float(torch.sigmoid(torch.tensor(margin_scale * (chosen_reward - rejected_reward), dtype=torch.float64)))


class _WithTargets:
    """TRL's collator plus each pair's soft label as a tensor `target`."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        batch = self.inner(examples)
        batch["target"] = torch.tensor([e["target"] for e in examples], dtype=torch.float32)
        return batch


def _inner(module):
    """The nn.Module under DDP / DeepSpeed wrappers (where forward hooks see the outputs)."""
    while hasattr(module, "module") and isinstance(module.module, torch.nn.Module):
        module = module.module
    return module


def make_trainer_class():
    """DPOTrainer with the rev_kl loss (built lazily: importing trl is slow)."""
    from trl import DPOTrainer

    class SamplerDPOTrainer(DPOTrainer):
        """TRL's DPOTrainer; with soft_labels=True the loss is rev_kl (module doc), else TRL's sigmoid loss."""

        def __init__(self, *args, soft_labels: bool = False, **kwargs):
            self.soft_labels = soft_labels
            super().__init__(*args, **kwargs)
            if soft_labels:
                if self.loss_types != ["sigmoid"] or self.ld_alpha is not None or self.use_weighting \
                        or self.f_divergence_type != "reverse_kl":
                    raise ConfigError("--loss: rev_kl builds on TRL's plain sigmoid loss; remove loss_type, ld_alpha, "
                                      "use_weighting and f_divergence_type from the recipe's dpo: mapping")
                self.data_collator = _WithTargets(self.data_collator)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if self.soft_labels and "target" not in self._signature_columns:
                self._signature_columns = list(self._signature_columns) + ["target"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            target = inputs.pop("target", None)
            if not self.soft_labels:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # Record the per-token log-probs of the policy's and the reference's forward passes (in call order:
            # policy, then reference) so D can be rebuilt exactly as TRL built it.
            seen = []
            hook = lambda mod, inp, out: seen.append(out.log_probs)
            modules = {id(m): m for m in (_inner(model), _inner(self.ref_model) if self.ref_model is not None else None)
                       if m is not None}
            handles = [m.register_forward_hook(hook) for m in modules.values()]
            try:
                result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                for h in handles:
                    h.remove()
            loss, outputs = result if return_outputs else (result, None)
            seq_len = inputs["completion_mask"].size(1) - 1
            logps = seen[0][:, -seq_len:].sum(dim=1)
            if self.precompute_ref_logps:
                ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            else:
                ref_chosen, ref_rejected = seen[1][:, -seq_len:].sum(dim=1).detach().chunk(2, dim=0)
            chosen, rejected = logps.chunk(2, dim=0)
            margin = self.beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
            q = target.to(margin.device, margin.dtype)
            loss = loss + ((1.0 - q) * margin).mean()
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["soft_target"].append(self.accelerator.gather_for_metrics(q.detach()).mean().item())
            return (loss, outputs) if return_outputs else loss

    return SamplerDPOTrainer


# ------------------------------------------------------------------------------------------- data and config

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


def check_dpo_extras(extra: dict, where: str = "--config: dpo") -> dict:
    from trl import DPOConfig

    known = {f.name for f in dataclasses.fields(DPOConfig)}
    for key in extra:
        if key in OWN_FIELDS:
            raise ConfigError(f"{where}: {key!r} is set by a train_dpo flag or by train_dpo itself; use the flag "
                              f"(see --help) instead of the dpo: mapping")
        if key not in known:
            raise ConfigError(f"{where}: {key!r} is not a DPOConfig field (TRL {__import__('trl').__version__})")
    return extra


def resolve(args: Args) -> torch.device:
    """Check every argument before anything is loaded or written; ConfigError names the bad flag."""
    from alignment.sft import check_positive

    if not args.preferences:
        raise ConfigError("--preferences: required (an annotate run folder, a preference file or a Hub dataset)")
    if args.loss not in LOSSES:
        raise ConfigError(f"--loss: unknown loss {args.loss!r}; known: {', '.join(LOSSES)}")
    check_positive("beta", args.beta)
    check_positive("margin-scale", args.margin_scale)
    check_positive("lr", args.lr)
    if not (0 <= args.warmup_ratio < 1):
        raise ConfigError(f"--warmup-ratio: must be in [0, 1), got {args.warmup_ratio}")
    check_positive("epochs", args.epochs)
    if args.max_steps is not None:
        check_positive("max-steps", args.max_steps, integer=True)
    check_positive("batch-size", args.batch_size, integer=True)
    check_positive("grad-accum", args.grad_accum, integer=True)
    check_positive("max-length", args.max_length, integer=True)
    if args.max_length < 2:
        raise ConfigError(f"--max-length: must be at least 2 tokens, got {args.max_length}")
    if args.seed < 0:
        raise ConfigError(f"--seed: must be an integer >= 0, got {args.seed}")
    if args.report_to != "none":
        import importlib.util

        if importlib.util.find_spec(args.report_to) is None:
            raise ConfigError(f"--report-to: {args.report_to} is not installed (pip install {args.report_to}); "
                              f"or leave --report-to none")
    if "/" in args.name or args.name.startswith(".") or not args.name.strip():
        raise ConfigError(f"--name: {args.name!r} must be a plain folder name (no '/', not starting with '.')")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ConfigError(f"--out: {args.out!r} exists and is not a folder")
    check_dpo_extras(args.dpo)
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from alignment.sft import resolve_device

    return resolve_device(args.device)


def dpo_config(args: Args, device: torch.device, output_dir: Path):
    from trl import DPOConfig

    from alignment.sft import trainer_kwargs

    kw = trainer_kwargs(args, device, output_dir) | dict(
        lr_scheduler_type=args.lr_scheduler, warmup_steps=args.warmup_ratio, gradient_accumulation_steps=args.grad_accum,
        beta=args.beta, loss_type=["sigmoid"], precompute_ref_log_probs=args.precompute_ref,
        report_to=args.report_to, disable_dropout=True, logging_steps=1, remove_unused_columns=True)
    return DPOConfig(**(kw | args.dpo))


# ------------------------------------------------------------------------------------------- training

def train(policy, ref, tokenizer, rows: list[dict], args: Args, run, device: torch.device, scratch: Path,
          log_extra: dict | None = None, progress: bool = True):
    """Train `policy` against the frozen `ref` on preference rows; the trainer's logs go to run.log (a RunDir, or
    anything with a log(row) method). Returns (trainer, summary); the trained model is trainer.model.
    scratch: the trainer's output_dir, the same folder in every process. Used by main() and in-process by
    alignment.pipeline."""
    from datasets import Dataset

    from alignment.sft import make_callbacks, use_quiet_progress

    if ref is policy:
        raise ValueError("ref must be a separate copy of the reference weights, not the policy object itself")
    for p in ref.parameters():
        p.requires_grad_(False)
    ref.eval()
    policy.train()
    data = training_rows(rows, args.loss, args.margin_scale)
    log_cb, quiet = make_callbacks(run, args.seed, "train_dpo", extra=log_extra)
    config = dpo_config(args, device, scratch)
    if not progress:
        config.disable_tqdm = True
    trainer = make_trainer_class()(model=policy, ref_model=ref, args=config, train_dataset=Dataset.from_list(data),
                                   processing_class=tokenizer, callbacks=[log_cb], soft_labels=args.loss == "rev_kl")
    use_quiet_progress(trainer, quiet)
    if not progress:  # transformers prints each log dict instead of a bar when tqdm is off: neither, here
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    result = trainer.train()
    hist = [r for r in trainer.state.log_history if "loss" in r]
    last = hist[-1] if hist else {}
    summary = {"steps": trainer.state.global_step, "num_pairs": len(data), "train_loss_mean": result.metrics.get("train_loss"),
               "final_loss": last.get("loss"), "final_reward_accuracy": last.get("rewards/accuracies"),
               "final_reward_margin": last.get("rewards/margins"), "train_runtime_s": result.metrics.get("train_runtime")}
    return trainer, summary


class _NoRun:
    """What the processes other than the main one log to: nothing (the main process writes the run)."""

    def log(self, row):
        pass


@exit_on_config_error
def main(argv=None):
    from alignment.recipes import stage_defaults

    args = parse_dataclass(Args, argv, description=__doc__.split("\n\n")[0],
                           defaults=stage_defaults(Args, argv, "train"))
    device = resolve(args)
    t0 = time.perf_counter()

    import shutil

    from accelerate import PartialState
    from datasets import disable_progress_bars

    from alignment.data import load_preferences
    from alignment.models import DTYPES, load_causal_lm, load_tokenizer

    disable_progress_bars()
    # gloo processes on a machine without CUDA (torchrun / accelerate launch --cpu), one per GPU otherwise
    state = PartialState(cpu=device.type == "cpu")
    if args.policy is None and not Path(DEFAULT_POLICY).is_dir():
        raise ConfigError(f"--policy: no model given and the default {DEFAULT_POLICY} does not exist; run "
                          f"`python -m alignment.sft` first, or pass a model folder or Hub name")
    policy_src = model_source(args.policy or DEFAULT_POLICY)
    ref_src = model_source(args.ref) if args.ref else policy_src
    rows = load_preferences(args.preferences)
    training_rows(rows, args.loss, args.margin_scale)  # rev_kl's reward check before any model is loaded
    tokenizer = load_tokenizer(policy_src, "--policy", trust_remote_code=args.trust_remote_code)
    load = lambda src, flag: load_causal_lm(src, flag, dtype=args.dtype, seed=0,
                                            trust_remote_code=args.trust_remote_code).to(DTYPES[args.dtype])
    policy, ref = load(policy_src, "--policy"), load(ref_src, "--ref")
    num_params = sum(p.numel() for p in policy.parameters())
    config = dataclasses.asdict(args) | {"resolved": {"policy": policy_src, "ref": ref_src, "num_pairs": len(rows),
                                                         "num_params": num_params, "device": str(device),
                                                         "processes": state.num_processes}}
    scratch = Path(args.out) / f".{args.name}.trainer"  # shared by the processes; removed at the end
    with (RunDir(args.out, args.name, config, [args.seed]) if state.is_main_process else nullcontext()) as run:
        if state.is_main_process:
            print(f"train_dpo: {policy_src} ({num_params / 1e6:.2f}M parameters), {len(rows)} pairs, loss {args.loss}, "
                  f"beta {args.beta}, {state.num_processes} process(es) on {device}")
        trainer, summary = train(policy, ref, tokenizer, rows, args, run or _NoRun(), device, scratch)
        trainer.save_model(str(scratch / "final"))  # every process: ZeRO-3 gathers the shards here
        state.wait_for_everyone()
        if not state.is_main_process:
            return None
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(scratch / "final")
        shutil.move(str(scratch / "final"), run.path("model"))
        shutil.rmtree(scratch, ignore_errors=True)
        summary["wall_s"] = time.perf_counter() - t0
        path = run.finish(summary=summary)
    print(f"{summary['steps']} steps, mean loss {summary['train_loss_mean']:.4f}, {summary['train_runtime_s']:.1f} s")
    print(f"wrote {path} ({summary['wall_s']:.0f} s)")
    return path


if __name__ == "__main__":
    main()
