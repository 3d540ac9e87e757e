"""DPO training with TRL's DPOTrainer: the hard-label `sigmoid` loss, the soft-label `rev_kl` loss, or TRL's others.

    python -m alignment.train_dpo --preferences runs/alignment/annotate/online          # toy: the SFT'd policy
    python -m alignment.train_dpo --config alignment/configs/toy.yaml --preferences P --loss rev_kl --margin-scale 4
    accelerate launch --config_file alignment/configs/zero3.yaml -m alignment.train_dpo --config RECIPE ...

Losses (alignment/training/losses.py), with h = beta * log(pi / pi_ref) summed over the response tokens and D = h(chosen) - h(rejected):
    sigmoid   -log sigmoid(D)                                       (DPO; hard labels: chosen beats rejected)
    rev_kl    -q log sigmoid(D) - (1 - q) log sigmoid(-D),  q = sigmoid(k * (r_chosen - r_rejected))
              the soft-label loss of the samplers paper: the cross-entropy between the reward model's
              Bradley-Terry preference q (margin scale k = --margin-scale: 4 on Safe-RLHF, 1 on
              Iterative-Prompt) and the policy's implicit one; its minimiser has h(y) - h(y') =
              k (r(y) - r(y')), the exact-setting loss of the bandit package. It needs chosen_reward and
              rejected_reward in every row (alignment.annotate writes them).
rev_kl runs TRL's own sigmoid loss and adds (1 - q) D, since -q log s(D) - (1-q) log s(-D) = -log s(D) + (1-q) D
exactly: TRL's forward passes, metrics and distributed code stay untouched.
Every other --loss is TRL 1.16's own DPOConfig loss_type of that name, computed by TRL (D as above, margin
logits = D / beta): hinge max(0, 1 - D) (SLiC), ipo (l_c / T_c - l_r / T_r - 1 / (2 beta))^2 with l the
log-ratio log(pi / pi_ref) of a response and T its token count (TRL averages per token), exo_pair (needs label_smoothing in dpo:), nca_pair, robust, bco_pair, sppo_hard,
aot, aot_unpaired, apo_zero, apo_down, discopop, sft, sigmoid_norm. The samplers paper's run_dpo.py offers sigmoid,
hinge, ipo and rev_kl among these (its cross_entropy, raft, kl, tv and hellinger are not TRL losses and are not
offered here). The selectors need sigmoid or rev_kl.

Dropout: --disable-dropout (the default, TRL's) turns the policy's own dropout off for training; --no-disable-dropout
trains with it on, as the AE / US code does (its have_llm_dropout: true). The reference model never has dropout.

Batch selection (--selector; alignment/selection/batch.py has the math, alignment/training/trainer.py the trainer):
each batch the data loader yields is a *candidate batch* (batch-size pairs per process; n over all processes) of which
K = keep_count(n, --select-ratio) pairs get gradient, the loss being sum over the selected pairs of their DPO (or
rev_kl) loss / K:
    all             every pair: TRL's loss as it is (the default; aliases none, full; the code path of before the
                    selectors)
    random_subset   a random K; sams's control, with exactly its loss normalisation
    sams            SamS (Huang et al., NeurIPS 2025): an exploitation and an exploration MLP score each pair from
                    the policy's pooled final hidden states and margin; top K (--sams-mode topk) or K sampled from
                    softmax(scores) (softmax); a reward seen at the next step (the batch loss's change plus a
                    per-pair margin / log-prob term) updates both MLPs (--sams-update online; frozen keeps the
                    weights of --sams-scheduler FILE). The run writes the scheduler to OUT/NAME/sams_scheduler.pt.
                    --sams-pretrain-steps N first trains the
                    scheduler for N batches on the frozen policy (the paper's scheduler pre-training)
    us, ae          uncertainty sampling / active exploration (Mehta et al.): --passes Monte Carlo dropout passes
                    (--dropout on the final hidden state) score every candidate without gradients; the forward with
                    gradients runs on the top K only
random_subset and sams mask the loss after TRL's forward over the whole batch (TRL's own logged metrics cover
every candidate; select_loss, select_margin, select_kept and sams_reward in metrics.jsonl are the selected
pairs'). Under several processes every process selects the same global indices (scores gathered, selection
seeded from the run seed and the global step) and the loss is scaled so that DDP's gradient average is the mean
over the global selection. The SamS state (both MLPs, their optimizer, the selection awaiting its reward) is
saved in every trainer checkpoint as batch_scheduler.pt and restored by train(resume_from_checkpoint=...).
Selectors need TRL's plain sigmoid loss underneath (no loss_type / ld_alpha / use_weighting in dpo:).

The reference model is always loaded as its own frozen copy and passed to the trainer (--ref, default: the
same weights as --policy): TRL never re-loads it from a path. Config: flags, or a YAML recipe (--config; its
`train:` section, see alignment/pipeline/recipes.py) whose values the flags override. DPOConfig fields that have no
flag here go in the recipe's `dpo:` mapping (e.g. {max_grad_norm: 10.0, weight_decay: 0.01}).

Writes OUT/NAME/{run.json, metrics.jsonl (the trainer's logs: loss, reward margins and accuracies, lr),
model/ (the trained policy and tokenizer)}. --report-to wandb or tensorboard also sends the logs there
(when installed). Under `accelerate launch` (or `torchrun` on a CPU machine) each process trains on its
share of every global batch of batch-size x grad-accum x processes pairs.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import time
import types
import typing
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alignment.core.models import model_source
from alignment.pipeline.recipes import stage_defaults
from alignment.selection.batch import SAMS_MODES, SAMS_NORMALISATIONS, SAMS_REWARDS, SAMS_UPDATES
from alignment.training.common import REPORT_TO_HELP, RUN_NAME_HELP, check_trackers, trainer_device
from alignment.training.losses import TRAIN_LOSSES
from alignment.core.data import DATA_CONFIG_HELP, DATA_DIR_HELP
from runlog import ConfigError, RunDir, arg, check_name, check_out, check_positive, entry_point
from runlog.rundir import dumps

DEFAULT_POLICY = "runs/alignment/sft/toy/model"
# DPOConfig fields set by our own flags (or by us): a recipe's dpo: mapping may not set them a second way
OWN_FIELDS = {"output_dir", "learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size",
              "gradient_accumulation_steps", "num_train_epochs", "max_steps", "lr_scheduler_type", "warmup_ratio",
              "warmup_steps", "seed", "data_seed", "use_cpu", "bf16", "fp16", "max_length", "beta", "loss_type",
              "loss_weights", "report_to", "trust_remote_code", "precompute_ref_log_probs", "disable_dropout",
              "save_strategy", "save_steps", "gradient_checkpointing", "run_name", "resume_from_checkpoint"}
CHECKPOINT_ARGS = "train_args.json"  # in OUT/.NAME.trainer/: the flags of the run its checkpoints belong to


@dataclass
class Args:
    config: str | None = arg(None, "YAML recipe: its train: section (or the whole file) sets defaults for these "
                             "flags, and its dpo: mapping extra DPOConfig fields; flags override it", metavar="YAML")
    preferences: str | None = arg(None, "preference pairs: an annotate run folder, a .json/.jsonl/.parquet file "
                                  "or a Hub dataset with prompt, chosen, rejected (+ chosen_reward, "
                                  "rejected_reward for rev_kl; UltraFeedback's score_chosen / score_rejected count "
                                  "as those) (required)", metavar="PATH")
    split: str = arg("train", "split of a Hub dataset (or dataset folder) to read, e.g. train_prefs for "
                     "HuggingFaceH4/ultrafeedback_binarized, or a slice such as train[:2000]; a local file or run "
                     "folder is read whole")
    data_config: str | None = arg(None, DATA_CONFIG_HELP, metavar="NAME")
    data_dir: str | None = arg(None, DATA_DIR_HELP, metavar="DIR")
    policy: str | None = arg(None, "the policy to train: a model folder (or a run folder holding model/), a Hub "
                             f"name or toy:SIZE (default: {DEFAULT_POLICY}, written by `python -m alignment.sft`)")
    ref: str | None = arg(None, "the fixed reference pi_ref (default: the same weights as --policy, loaded as a "
                          "separate frozen copy)")
    loss: str = arg("sigmoid", "sigmoid: DPO on hard labels; rev_kl: soft labels sigmoid(k (r_chosen - "
                    "r_rejected)) from the pairs' rewards; the others are TRL's loss_type of that name (module doc; "
                    "the selectors need sigmoid or rev_kl)", choices=list(TRAIN_LOSSES))
    beta: float = arg(0.1, "KL strength beta of the implicit reward beta log(pi / pi_ref)")
    margin_scale: float = arg(1.0, "rev_kl: margin scale k of the soft label sigmoid(k (r_chosen - r_rejected))")
    lr: float = arg(1e-4, "peak learning rate (AdamW); the samplers paper uses 5e-7 for 3B-7B models")
    lr_scheduler: str = arg("cosine", "learning-rate schedule after warmup", choices=["cosine", "linear", "constant"])
    warmup_ratio: float = arg(0.1, "fraction of the steps spent warming the learning rate up from 0")
    epochs: float = arg(2.0, "passes over the pairs (ignored when --max-steps is given)")
    max_steps: int | None = arg(None, "optimizer steps; overrides --epochs. Not capped: a huge value is your choice and runs until it "
                                                 "ends or is stopped (the progress bar shows steps and time left; Ctrl-C removes the run)")
    batch_size: int = arg(16, "pairs per device per forward pass")
    grad_accum: int = arg(1, "forward passes per optimizer step (global batch = batch-size x grad-accum x processes)")
    max_length: int = arg(512, "tokens per sequence (prompt + response); longer ones are cut at the end")
    disable_dropout: bool = arg(True, "turn the policy's own dropout off for training (TRL's default); "
                                "--no-disable-dropout trains with it on, as the AE / US code does. The reference "
                                "model has no dropout either way")
    precompute_ref: bool = arg(False, "compute the reference log-probs once before training (saves the reference's "
                               "forward pass per step)")
    dtype: str = arg("float32", "weights' dtype; on a GPU that has bf16 the forward passes run under bf16 autocast "
                     "either way", choices=["float32", "bfloat16"])
    seed: int = arg(0, "seed of the training order and of TRL / transformers")
    selector: str = arg("all", "which pairs of each batch get gradient (alignment/selection/batch.py): all (alias none), "
                        "random_subset (a random K: sams's control), sams (SamS scheduler, Huang et al. 2025), us / ae "
                        "(uncertainty sampling / active exploration from Monte Carlo dropout)")
    select_ratio: float = arg(0.5, "selectors: the fraction K / n of each global candidate batch (n = batch-size x "
                              "processes pairs) that gets gradient, K rounded half up, at least 1")
    sams_mode: str = arg("topk", "sams: keep the K best scores (topk, the paper's text) or draw K without replacement "
                         "from softmax(scores) (softmax, the released code)", choices=list(SAMS_MODES))
    sams_pretrain_steps: int = arg(0, "sams: batches of scheduler pre-training on the frozen policy before DPO "
                                   "(the paper's scheduler pretrain step); 0: none")
    sams_hidden: int = arg(128, "sams: width of the exploitation and exploration MLPs")
    sams_lr: float = arg(1e-3, "sams: Adam learning rate of both scheduler nets")
    sams_explore_weight: float = arg(0.1, "sams: score = f1 + this x f2 (exploration net; the released code's 0.1)")
    sams_normalisation: str = arg("matched", "sams and random_subset: the in-batch loss's normaliser. matched: the sum "
                                  "over the K selected / K (a selector never changes the step size); anchor: the "
                                  "released SamS code's, the unselected losses detached and the mean taken over all n "
                                  "candidates (K / n of matched's gradient; alignment/configs/sams.yaml)",
                                  choices=list(SAMS_NORMALISATIONS))
    sams_update: str = arg("online", "sams: online (the scheduler learns from each step's reward during DPO) or frozen "
                           "(it keeps the weights of --sams-scheduler or of its pre-training; needs one of them)",
                           choices=list(SAMS_UPDATES))
    sams_scheduler: str | None = arg(None, "sams: a scheduler file (sams_scheduler.pt of an earlier run, e.g. of "
                                     "--sams-pretrain-only) whose weights the scheduler starts from")
    sams_pretrain_reward: str = arg("sft", "sams: the reward of --sams-pretrain-steps. sft: the released "
                                    "pre-training's (the batch's mean SFT loss -log pi(chosen) dropping from one "
                                    "batch to the next, normalised and averaged; alignment.selection.batch.sft_reward); "
                                    "dpo: the DPO training reward", choices=list(SAMS_REWARDS))
    sams_pretrain_only: bool = arg(False, "sams: pre-train the scheduler for --sams-pretrain-steps batches, write "
                                   "OUT/NAME/sams_scheduler.pt and stop (no DPO step, no model/): the released "
                                   "two-stage recipe's first stage")
    passes: int = arg(5, "us / ae: Monte Carlo dropout passes per candidate batch")
    dropout: float = arg(0.05, "us / ae: dropout probability of the Monte Carlo passes")
    gamma: float = arg(2.0, "ae: width multiplier gamma of the confidence bound")
    lora_r: int = arg(0, "LoRA rank (peft): train low-rank adapters on --lora-targets instead of every weight; 0: full "
                      "fine-tuning. model/ then holds the merged weights (with --load-in-4bit merged into the unquantized "
                      "bf16 base; the adapters also in adapter/), gathered first under ZeRO-3")
    lora_alpha: int = arg(16, "LoRA scaling alpha")
    lora_dropout: float = arg(0.05, "LoRA dropout")
    lora_targets: str = arg("all-linear", "modules that get adapters: all-linear, or comma-separated module names "
                            "(e.g. q_proj,v_proj)")
    load_in_4bit: bool = arg(False, "QLoRA: load the policy's (and reference's) base weights in 4-bit NF4 with "
                             "bitsandbytes, bf16 compute; needs --lora-r and a CUDA GPU (pip install bitsandbytes)")
    device: str = arg("auto", "auto (the GPU of this process when there is one, else cpu), cpu or cuda")
    save_every: int = arg(0, "write a checkpoint every N optimizer steps to OUT/.NAME.trainer/ (the weights, optimizer, lr "
                          "schedule, RNG states, the batch scheduler's state and the log so far; the newest 2 are kept); "
                          "0: none. A run killed mid-way then continues with --resume")
    resume: bool = arg(False, "continue the interrupted run OUT/NAME from its newest checkpoint (the run must have had "
                       "--save-every and every other flag the same): its final weights and log are an uninterrupted "
                       "run's, no step run twice")
    gradient_checkpointing: bool = arg(False, "recompute activations in the backward pass instead of storing them "
                                       "(less memory, about a third more compute; transformers' gradient checkpointing)")
    report_to: str = arg("none", REPORT_TO_HELP)
    run_name: str | None = arg(None, RUN_NAME_HELP)
    trust_remote_code: bool = arg(False, "let transformers run code shipped with a model")
    out: str = arg("runs/alignment/train_dpo", "output folder; the run is written to OUT/NAME")
    name: str = arg("dpo", "run name; an older run of that name is replaced")
    dpo: dict = field(default_factory=dict, metadata={"help": "recipe only: extra DPOConfig fields"})


# ------------------------------------------------------------------------------------------- checks

def check_dpo_extras(extra: dict, where: str = "--config: dpo") -> dict:
    from trl import DPOConfig

    known = {f.name for f in dataclasses.fields(DPOConfig)}
    for key in extra:
        if key in OWN_FIELDS:
            raise ConfigError(f"{where}: {key!r} is set by a train_dpo flag or by train_dpo itself; use the flag "
                              f"(see --help) instead of the dpo: mapping")
        if key not in known:
            raise ConfigError(f"{where}: {key!r} is not a DPOConfig field (TRL {__import__('trl').__version__})")
    hints = typing.get_type_hints(DPOConfig)
    fields = {f.name: f for f in dataclasses.fields(DPOConfig)}
    for key, value in extra.items():
        # Checked here, before any model loads: TRL itself only trips over a wrong type mid-training.
        allowed = hints[key]
        if not value_fits(value, allowed):
            raise ConfigError(f"{where}.{key}: must be {type_name(allowed)}, got {value!r} "
                              f"({type(value).__name__})")
        choices = fields[key].metadata.get("choices")
        if choices and isinstance(value, str) and value not in choices:
            raise ConfigError(f"{where}.{key}: must be one of {', '.join(map(str, choices))}, got {value!r}")
    return extra


def value_fits(value, annotation) -> bool:
    """Whether a YAML/JSON value has a DPOConfig field's type; a bool is not a number (YAML true is not 1)."""
    origin = typing.get_origin(annotation)
    if annotation is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(value_fits(value, a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1] or (typing.Any,)
        return isinstance(value, list) and all(value_fits(v, item) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return isinstance(value, str) and value in {m.value for m in annotation}
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # an annotation we cannot read: TRL's own checks decide


def type_name(annotation) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if typing.get_origin(annotation) is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(m.value for m in annotation)
    return getattr(annotation, "__name__", str(annotation))


def check_lora(args: Args) -> None:
    if args.lora_r < 0:
        raise ConfigError(f"--lora-r: must be an integer >= 0 (0: no LoRA), got {args.lora_r}")
    if args.lora_r:
        import importlib.util

        check_positive("lora-alpha", args.lora_alpha)
        if not 0 <= args.lora_dropout < 1:
            raise ConfigError(f"--lora-dropout: must be in [0, 1), got {args.lora_dropout}")
        if not args.lora_targets.strip():
            raise ConfigError("--lora-targets: empty; give all-linear or module names")
        if importlib.util.find_spec("peft") is None:
            raise ConfigError("--lora-r: LoRA needs peft (pip install peft)")
    if args.load_in_4bit and not args.lora_r:
        raise ConfigError("--load-in-4bit: 4-bit weights cannot be trained directly; add --lora-r (QLoRA)")


def resolve(args: Args) -> torch.device:
    """Check every argument before anything is loaded or written; ConfigError names the bad flag."""
    from alignment.training.common import check_budget
    from alignment.training.config import check_sampler_fields, check_trl_loss

    check_lora(args)
    if not args.preferences:
        raise ConfigError("--preferences: required (an annotate run folder, a preference file or a Hub dataset)")
    check_positive("beta", args.beta)
    check_budget(args)
    if not (0 <= args.warmup_ratio < 1):
        raise ConfigError(f"--warmup-ratio: must be in [0, 1), got {args.warmup_ratio}")
    check_positive("grad-accum", args.grad_accum, integer=True)
    if isinstance(args.save_every, bool) or not isinstance(args.save_every, int) or args.save_every < 0:
        raise ConfigError(f"--save-every: must be an integer >= 0 (0: no checkpoints), got {args.save_every!r}")
    check_trackers(args)
    check_name(args.name)
    check_out(args.out)
    check_dpo_extras(args.dpo, f"--config {args.config}: dpo" if args.config else "--config: dpo")
    check_sampler_fields(args)  # --loss, --margin-scale and the selector flags; the selector's canonical name
    d = args.dpo
    check_trl_loss(args.loss, d.get("label_smoothing", 0.0), d.get("f_divergence_type", "reverse_kl"),
                   d.get("use_weighting", False))
    return trainer_device(args.device)  # auto: cuda when there is a GPU


def dpo_config(args: Args, device: torch.device, output_dir: Path):
    """The SamplerDPOConfig of these flags (+ the recipe's dpo: mapping), the trainer's scratch folder output_dir."""
    from alignment.training.common import trainer_kwargs
    from alignment.training.config import SAMPLER_FIELDS, SamplerDPOConfig

    kw = trainer_kwargs(args, device, output_dir) | dict(
        lr_scheduler_type=args.lr_scheduler, warmup_steps=args.warmup_ratio, gradient_accumulation_steps=args.grad_accum,
        beta=args.beta, loss_type=["sigmoid" if args.loss == "rev_kl" else args.loss],
        precompute_ref_log_probs=args.precompute_ref, disable_dropout=args.disable_dropout,
        logging_steps=1, remove_unused_columns=True, save_strategy="steps" if args.save_every else "no", save_steps=args.save_every or 500,
        save_total_limit=2 if args.save_every else None)
    return SamplerDPOConfig(**(kw | {name: getattr(args, name) for name in SAMPLER_FIELDS} | args.dpo))


def scratch_dir(args: Args) -> Path:
    """The trainer's folder of run OUT/NAME (shared by the processes): its checkpoints while it trains."""
    return Path(args.out) / f".{args.name}.trainer"


def _flags_of(args: Args) -> dict:
    return json.loads(dumps({k: v for k, v in dataclasses.asdict(args).items() if k != "resume"}))


def resume_point(args: Args) -> Path | None:
    """The checkpoint --resume continues from: the newest checkpoint-N/ of OUT/.NAME.trainer that is complete (its
    log, written last, is there), of a run with the same flags. Without --resume, a folder holding checkpoints is an
    error rather than something to delete on a guess."""
    from alignment.training.common import newest_checkpoint

    scratch = scratch_dir(args)
    ckpt = newest_checkpoint(scratch)
    if not args.resume:
        if ckpt is not None:
            raise ConfigError(f"--resume: {scratch} holds checkpoints of an interrupted run (newest: {ckpt.name}); "
                              f"add --resume to continue it, or delete that folder to start over")
        return None
    if ckpt is None:
        raise ConfigError(f"--resume: no complete checkpoint in {scratch} (the run needs --save-every N and at least "
                          f"N steps done); drop --resume to start the run")
    try:
        old = json.loads((scratch / CHECKPOINT_ARGS).read_text())
    except (OSError, ValueError):
        raise ConfigError(f"--resume: {scratch / CHECKPOINT_ARGS} is missing or not JSON, so the checkpoints' run "
                          f"cannot be checked; delete {scratch} to start over") from None
    new = _flags_of(args)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        raise ConfigError(f"--resume: the checkpoints in {scratch} belong to a run with other flags (differs in: "
                          f"{', '.join(changed)}); resume with that run's flags, or delete the folder to start over")
    return ckpt


def model_card_settings(args: Args, state, zero3: bool) -> dict:
    """What the model card of model/ lists: where the pairs came from (sampler, rule, selection), the loss and its
    settings, the batch selector, the optimisation budget and the distribution."""
    from alignment.training.common import pair_provenance

    lora = (f"r {args.lora_r}, alpha {args.lora_alpha}, merged" + (" into the bf16 base (QLoRA: trained over 4-bit "
                                                                     "NF4 weights; adapters in ../adapter)"
                                                                     if args.load_in_4bit else "")) if args.lora_r else None
    return pair_provenance(args.preferences) | {
        "loss": args.loss, "beta": args.beta, "margin_scale": args.margin_scale if args.loss == "rev_kl" else None,
        "selector": args.selector, "select_ratio": args.select_ratio if args.selector != "all" else None,
        "reference": args.ref or "the base model", "lr": args.lr, "lr_scheduler": args.lr_scheduler,
        "epochs": args.epochs if args.max_steps is None else None, "max_steps": args.max_steps,
        "batch": f"{args.batch_size} x {args.grad_accum} x {state.num_processes} processes",
        "max_length": args.max_length, "lora": lora, "zero3": zero3 or None, "seed": args.seed}


def save_merged(trainer, folder: Path, is_main: bool) -> None:
    """Merge the LoRA adapters into the base weights and save a plain model folder. Under ZeRO-3 the weights are
    gathered first (every process takes part; the main process merges the full tensors and saves them): merging the
    partitioned placeholders would save empty tensors."""
    from alignment.core.models import gathered

    model = trainer.accelerator.unwrap_model(trainer.model)
    with gathered(model):
        if is_main:
            merged = model.merge_and_unload()
            state = {k: v.detach().clone().contiguous() for k, v in merged.state_dict().items()}
            merged.save_pretrained(folder, state_dict=state)


SAMS_SCHEDULER_FILE = "sams_scheduler.pt"  # OUT/NAME/ of a --selector sams run: the scheduler's final weights


class NoRun:
    """What the processes other than the main one log to: nothing (the main process writes the run)."""

    def log(self, row):
        pass


def run(args: Args) -> Path | None:
    """The train stage on parsed arguments (what `python -m alignment.train_dpo` runs; the pipeline runs it too).
    Returns the run folder in the main process, None in the others."""
    device = resolve(args)
    t0 = time.perf_counter()

    import shutil

    from accelerate import PartialState
    from datasets import disable_progress_bars

    from alignment.core.data import load_preferences
    from alignment.core.models import (DTYPES, check_saved_weights, load_causal_lm, load_tokenizer, merge_adapters,
                                       parameter_shapes, quantization_config, zero3_enabled)
    from alignment.training.common import read_checkpoint_log, write_model_card
    from alignment.training.config import lora_config
    from alignment.training.data import training_rows
    from alignment.training.trainer import fit

    disable_progress_bars()
    # gloo processes on a machine without CUDA (torchrun / accelerate launch --cpu), one per GPU otherwise
    state = PartialState(cpu=device.type == "cpu")
    if args.policy is None and not Path(DEFAULT_POLICY).is_dir():
        raise ConfigError(f"--policy: no model given and the default {DEFAULT_POLICY} does not exist; run "
                          f"`python -m alignment.sft` first, or pass a model folder or Hub name")
    policy_src = model_source(args.policy or DEFAULT_POLICY)
    ref_src = model_source(args.ref) if args.ref else policy_src
    rows = load_preferences(args.preferences, split=args.split, config=args.data_config, data_dir=args.data_dir)
    training_rows(rows, args.loss, args.margin_scale)  # rev_kl's reward check before any model is loaded
    tokenizer = load_tokenizer(policy_src, "--policy", trust_remote_code=args.trust_remote_code)
    quant = quantization_config(args.load_in_4bit, device)
    scratch = scratch_dir(args)
    # --resume needs a checkpoint of this very run; without it, none may be pending (checked here, not in resolve:
    # the pipeline checks every stage's flags up front and adds --resume only when it reruns a killed stage)
    resume_from = resume_point(args)
    # The trainer's config comes before the models: under `accelerate launch` with a ZeRO-3 config it holds the live
    # DeepSpeed config that makes transformers create both models partitioned (zero3_init_flag), 1/N per process,
    # instead of every process materialising the full policy and reference in host memory first.
    dpo_args = dpo_config(args, device, scratch)
    zero3 = zero3_enabled()

    def load(src, flag):
        m = load_causal_lm(src, flag, device=device if quant else "cpu", dtype=args.dtype, seed=0,
                           trust_remote_code=args.trust_remote_code, quantization_config=quant)
        return m if quant or zero3 else m.to(DTYPES[args.dtype])

    policy, ref = load(policy_src, "--policy"), load(ref_src, "--ref")
    shapes = parameter_shapes(policy)  # full shapes, also when partitioned: what the saved model must hold
    num_params = sum(int(torch.tensor(s).prod()) for s in shapes.values())
    config = dataclasses.asdict(args) | {"resolved": {"policy": policy_src, "ref": ref_src, "num_pairs": len(rows),
                                                         "num_params": num_params, "device": str(device),
                                                         "processes": state.num_processes, "zero3": zero3}}
    prior_rows = read_checkpoint_log(resume_from) if resume_from else []
    if state.is_main_process:
        if resume_from is None and scratch.exists():  # a crashed run's leftovers without checkpoints (resume_point)
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / CHECKPOINT_ARGS).write_text(dumps(_flags_of(args)))
    state.wait_for_everyone()
    try:
        with (RunDir(args.out, args.name, config, [args.seed]) if state.is_main_process else nullcontext()) as rundir:
            if state.is_main_process:
                selecting = "" if args.selector == "all" else f", selector {args.selector} (ratio {args.select_ratio})"
                resuming = f", resuming from {resume_from.name}" if resume_from else ""
                print(f"train_dpo: {policy_src} ({num_params / 1e6:.2f}M parameters), {len(rows)} pairs, loss "
                      f"{args.loss}, beta {args.beta}{selecting}, {state.num_processes} process(es) on {device}"
                      f"{' (ZeRO-3)' if zero3 else ''}{resuming}")
            trainer, summary = fit(policy, ref, tokenizer, rows, dpo_args, rundir or NoRun(),
                                   peft_config=lora_config(args.lora_r, args.lora_alpha, args.lora_dropout,
                                                           args.lora_targets),
                                   resume_from=str(resume_from) if resume_from else None, prior_rows=prior_rows)
            if trainer.batch_scheduler is not None and state.is_main_process:  # its weights, for --sams-scheduler
                trainer.batch_scheduler.save_weights(rundir.path(SAMS_SCHEDULER_FILE))
            if args.sams_pretrain_only:
                state.wait_for_everyone()
                if not state.is_main_process:
                    return None
                shutil.rmtree(scratch, ignore_errors=True)
                summary["wall_s"] = time.perf_counter() - t0
                path = rundir.finish(summary=summary)
                print(f"sams scheduler pre-trained for {args.sams_pretrain_steps} batches: {path / SAMS_SCHEDULER_FILE}")
                return path
            if args.lora_r:
                summary["trainable_params"] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
            final = scratch / "final"
            if args.lora_r and not args.load_in_4bit:  # the adapters merged into the weights: a plain model folder
                save_merged(trainer, final, state.is_main_process)
            else:  # every process: ZeRO-3 gathers the shards here; QLoRA: the adapters alone
                trainer.save_model(str(scratch / "adapter" if args.load_in_4bit else final))
            state.wait_for_everyone()
            if not state.is_main_process:
                return None
            if args.load_in_4bit:  # QLoRA: the adapters merged into the unquantized base weights
                check_saved_weights(scratch / "adapter", None, "train_dpo: adapter/")
                shapes = merge_adapters(policy_src, scratch / "adapter", final, "bfloat16", args.trust_remote_code)
                shutil.move(str(scratch / "adapter"), rundir.path("adapter"))
            # read back before the folder joins the run: a ZeRO-3 save that did not gather writes empty tensors
            check_saved_weights(final, shapes, "train_dpo: model/")
            tokenizer.padding_side = "left"
            tokenizer.save_pretrained(final)
            write_model_card(final, "train_dpo", policy_src, args.preferences, model_card_settings(args, state, zero3))
            shutil.move(str(final), rundir.path("model"))
            shutil.rmtree(scratch, ignore_errors=True)
            summary["wall_s"] = time.perf_counter() - t0
            if resume_from:
                summary["resumed_from_step"] = int(resume_from.name.rsplit("-", 1)[1])
            path = rundir.finish(summary=summary)
    except BaseException:
        # without checkpoints the trainer's folder is scratch; with them it is what --resume continues from
        if state.is_main_process:
            from alignment.training.common import newest_checkpoint

            if args.save_every and newest_checkpoint(scratch) is not None:
                import sys

                print(f"train_dpo: checkpoints kept in {scratch}; rerun with --resume to continue", file=sys.stderr)
            else:
                shutil.rmtree(scratch, ignore_errors=True)
        raise
    print(f"{summary['steps']} steps, mean loss {summary['train_loss_mean']:.4f}, {summary['train_runtime_s']:.1f} s "
          f"(finished in {summary['wall_s']:.0f} s)")
    return path


main = entry_point(Args, run, __doc__, defaults=lambda argv: stage_defaults(Args, argv, "train"))

if __name__ == "__main__":
    main()
