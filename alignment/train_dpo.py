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

Batch selection (--selector; alignment/selection/batch.py has the details): each batch the data loader yields is a
*candidate batch* (batch-size pairs per process; n over all processes) of which K = keep_count(n, --select-ratio)
pairs get gradient, the loss being sum over the selected pairs of their DPO (or rev_kl) loss / K:
    all             every pair: TRL's loss as it is (the default; aliases none, full; the code path of before the
                    selectors)
    random_subset   a random K; sams's control, with exactly its loss normalisation
    sams            SamS (Huang et al., NeurIPS 2025): an exploitation and an exploration MLP score each pair from
                    the policy's pooled final hidden states and margin; top K (--sams-mode topk) or K sampled from
                    softmax(scores) (softmax); a reward seen at the next step (the batch loss's change plus a
                    per-pair margin / log-prob term) updates both MLPs. --sams-pretrain-steps N first trains the
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
`train:` section, see alignment/recipes.py) whose values the flags override. DPOConfig fields that have no
flag here go in the recipe's `dpo:` mapping (e.g. {warmup_ratio: 0.03, gradient_checkpointing: true}).

Writes OUT/NAME/{run.json, metrics.jsonl (the trainer's logs: loss, reward margins and accuracies, lr),
model/ (the trained policy and tokenizer)}. --report-to wandb or tensorboard also sends the logs there
(when installed). Under `accelerate launch` (or `torchrun` on a CPU machine) each process trains on its
share of every global batch of batch-size x grad-accum x processes pairs.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alignment.core.models import model_source
from alignment.selection.batch import SAMS_MODES, SELECTORS
from runlog import check_positive, is_ratio
from bandit.vocabulary import SELECTOR, canonical
from runlog import ConfigError, RunDir, arg, check_name, check_out, exit_on_config_error, parse_dataclass

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
    passes: int = arg(5, "us / ae: Monte Carlo dropout passes per candidate batch")
    dropout: float = arg(0.05, "us / ae: dropout probability of the Monte Carlo passes")
    gamma: float = arg(2.0, "ae: width multiplier gamma of the confidence bound")
    lora_r: int = arg(0, "LoRA rank (peft): train low-rank adapters on --lora-targets instead of every weight; 0: full "
                      "fine-tuning. model/ then holds the merged weights (the adapters with --load-in-4bit)")
    lora_alpha: int = arg(16, "LoRA scaling alpha")
    lora_dropout: float = arg(0.05, "LoRA dropout")
    lora_targets: str = arg("all-linear", "modules that get adapters: all-linear, or comma-separated module names "
                            "(e.g. q_proj,v_proj)")
    load_in_4bit: bool = arg(False, "QLoRA: load the policy's (and reference's) base weights in 4-bit NF4 with "
                             "bitsandbytes, bf16 compute; needs --lora-r and a CUDA GPU (pip install bitsandbytes)")
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


def _backbone(model):
    """The transformer under the LM head whose output (the final hidden states) TRL's fused head projects."""
    model = _inner(model)
    if hasattr(model, "get_base_model"):  # PEFT
        model = model.get_base_model()
    return model.base_model


def _fork_rng(device: torch.device):
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


SELECTION_LOG_ENV = "ALIGNMENT_SELECTION_LOG"  # debug: a folder; each process appends its selections to rankR.jsonl
BATCH_SCHEDULER_FILE = "batch_scheduler.pt"  # in each checkpoint-N/ (the Trainer's scheduler.pt is the lr schedule)


def make_trainer_class():
    """DPOTrainer with the rev_kl loss and the batch selectors (built lazily: importing trl is slow)."""
    from trl import DPOTrainer

    from alignment.selection import batch as sch

    class SamplerDPOTrainer(DPOTrainer):
        """TRL's DPOTrainer; with soft_labels=True the loss is rev_kl (module doc), else TRL's sigmoid loss. With a
        selector other than none, each training batch is a candidate batch of which K pairs get gradient
        (alignment/selection/batch.py); evaluation always uses every pair."""

        def __init__(self, *args, soft_labels: bool = False, selector: str = "all", select_ratio: float = 0.5,
                     sams_mode: str = "topk", sams_pretrain_steps: int = 0, sams_hidden: int = 128,
                     sams_lr: float = 1e-3, sams_explore_weight: float = 0.1, passes: int = 5, dropout: float = 0.05,
                     gamma: float = 2.0, **kwargs):
            selector = canonical(selector, SELECTOR, "alignment", "--selector", allowed=sch.SELECTORS)
            self.soft_labels = soft_labels
            self.selector, self.select_ratio, self.sams_pretrain_steps = selector, select_ratio, sams_pretrain_steps
            self.passes, self.dropout, self.gamma = passes, dropout, gamma
            super().__init__(*args, **kwargs)
            if soft_labels:
                if self.loss_types != ["sigmoid"] or self.ld_alpha is not None or self.use_weighting \
                        or self.f_divergence_type != "reverse_kl":
                    raise ConfigError("--loss: rev_kl builds on TRL's plain sigmoid loss; remove loss_type, ld_alpha, "
                                      "use_weighting and f_divergence_type from the recipe's dpo: mapping")
                self.data_collator = _WithTargets(self.data_collator)
            if selector != "all" and (self.loss_types != ["sigmoid"] or self.ld_alpha is not None
                                       or self.use_weighting or self.f_divergence_type != "reverse_kl"):
                raise ConfigError("--selector: the selectors rebuild TRL's plain sigmoid (or rev_kl) loss per pair; "
                                  "remove loss_type, ld_alpha, use_weighting and f_divergence_type from the recipe's "
                                  "dpo: mapping")
            self.batch_scheduler = None
            if selector == "sams":
                hidden = _inner(self.model).config.get_text_config().hidden_size
                self.batch_scheduler = sch.SamsScheduler(2 * hidden + 1, hidden=sams_hidden, lr=sams_lr, mode=sams_mode,
                                                         explore_weight=sams_explore_weight, seed=self.args.seed,
                                                         device=self.accelerator.device)
            self._micro = (None, -1)  # (global step, micro-batch) of the last selection
            self.last_selection = None  # the global indices kept at the last training step (tests, debugging)
            self.pretrain_summary = None

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if self.soft_labels and "target" not in self._signature_columns:
                self._signature_columns = list(self._signature_columns) + ["target"]

        # -- TRL's forward passes, recorded
        def _run_with_capture(self, model, inputs, return_outputs=False, features=False):
            """TRL's own compute_loss (its forward passes, loss and metrics) with forward hooks recording the
            per-token log-probs of the policy's and the reference's passes (in call order: policy, then reference)
            and, with features=True, the policy's final hidden states. Returns (TRL's result, (chosen, rejected,
            ref_chosen, ref_rejected) per-pair log-probs summed over the response tokens as TRL sums them, the
            final hidden states [2B, T, d] or None)."""
            seen, hidden = [], []
            on_logps = lambda mod, inp, out: seen.append(out.log_probs)
            on_hidden = lambda mod, inp, out: hidden.append(out[0]) if not hidden else None
            modules = {id(m): m for m in (_inner(model), _inner(self.ref_model) if self.ref_model is not None else None)
                       if m is not None}
            handles = [m.register_forward_hook(on_logps) for m in modules.values()]
            if features:
                handles.append(_backbone(model).register_forward_hook(on_hidden))
            try:
                result = DPOTrainer.compute_loss(self, model, inputs, return_outputs)
            finally:
                for h in handles:
                    h.remove()
            seq_len = inputs["completion_mask"].size(1) - 1
            chosen, rejected = seen[0][:, -seq_len:].sum(dim=1).chunk(2, dim=0)
            if self.precompute_ref_logps:
                ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            else:
                ref_chosen, ref_rejected = seen[1][:, -seq_len:].sum(dim=1).detach().chunk(2, dim=0)
            return result, (chosen, rejected, ref_chosen, ref_rejected), (hidden[0] if features else None)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.selector != "all" and self.model.training and not return_outputs:
                return self._selected_loss(model, inputs)
            target = inputs.pop("target", None)
            if not self.soft_labels:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            result, logps, _ = self._run_with_capture(model, inputs, return_outputs)
            chosen, rejected, ref_chosen, ref_rejected = logps
            loss, outputs = result if return_outputs else (result, None)
            margin = self.beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
            q = target.to(margin.device, margin.dtype)
            loss = loss + ((1.0 - q) * margin).mean()
            self._log_soft_target(q)
            return (loss, outputs) if return_outputs else loss

        def _log_soft_target(self, q):
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["soft_target"].append(self.accelerator.gather_for_metrics(q.detach()).mean().item())

        # -- selection
        def _next_micro(self) -> tuple[int, int]:
            """(global step, micro-batch index within it): the key of this selection's generator."""
            step = self.state.global_step
            micro = self._micro[1] + 1 if self._micro[0] == step else 0
            self._micro = (step, micro)
            return step, micro

        def _in_batch_select(self, logps, margin, hidden, completion_mask, key):
            """random_subset / sams on the global candidate batch. Returns (this process's 0/1 mask, K, the global
            indices, SamS's update stats or None)."""
            acc = self.accelerator
            local = margin.numel()
            margins = acc.gather(margin.detach())
            n = margins.numel()
            if n != local * acc.num_processes:
                raise RuntimeError(f"uneven candidate batches across processes ({local} here, {n} in all)")
            k = sch.keep_count(n, self.select_ratio)
            gen = sch.step_generator(self.args.seed, *key)
            stats = None
            if self.selector == "sams":
                pooled = sch.pooled_response_states(hidden, completion_mask)
                x = torch.cat([pooled, margin.detach().float()[:, None]], -1)
                idx, stats = self.batch_scheduler.step(acc.gather(x), margins, acc.gather(logps[0].detach()), k, gen)
            else:
                idx = sch.random_indices(n, k, gen)
            mask = torch.zeros(n, device=margin.device)
            mask[idx.to(margin.device)] = 1.0
            start = acc.process_index * local
            return mask[start:start + local], k, idx, stats

        def _per_step_select(self, model, inputs, key):
            """us / ae: Monte Carlo dropout scores of every candidate (no gradients), the global top K, and this
            process's pairs to train on: its members of the selection (weight 1), padded with its first unselected
            pairs (weight 0) to the largest member count of any process, so that every process runs the same
            shapes (TRL gathers its metrics) and DDP sees a backward everywhere. Returns (local pair indices,
            weights, K, the global indices)."""
            from alignment.selection import scores as selection

            acc = self.accelerator
            local = inputs["completion_mask"].size(0) // 2
            with torch.no_grad():
                samples = sch.dropout_samples(_inner(model), inputs, self.passes, self.dropout, self.args.seed, *key,
                                              offset=acc.process_index * local)
                if self.selector == "us":
                    scores = selection.us_scores(samples)
                elif self.precompute_ref_logps:
                    ref = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])
                    scores = selection.ae_scores(samples, ref, self.beta, self.gamma)
                else:
                    ref = torch.cat(self.compute_ref_log_probs(self.ref_model or self.model, inputs))
                    scores = selection.ae_scores(samples, ref, self.beta, self.gamma)
            scores = acc.gather(scores.detach().float())
            n = scores.numel()
            if n != local * acc.num_processes:
                raise RuntimeError(f"uneven candidate batches across processes ({local} here, {n} in all)")
            k = sch.keep_count(n, self.select_ratio)
            idx = torch.as_tensor(selection.select_top(scores.cpu(), k, largest=True)).cpu().sort().values
            counts = torch.bincount(idx // local, minlength=acc.num_processes)
            start = acc.process_index * local
            mine = idx[(idx >= start) & (idx < start + local)] - start
            taken = set(mine.tolist())
            rest = torch.tensor([j for j in range(local) if j not in taken], dtype=torch.long)
            keep = torch.cat([mine, rest[:int(counts.max()) - mine.numel()]])
            weights = torch.zeros(keep.numel(), device=scores.device)
            weights[:mine.numel()] = 1.0
            return keep, weights, k, idx

        def _selected_loss(self, model, inputs):
            """The training loss of a selector: sum over this process's selected pairs of the per-pair DPO
            (or rev_kl) loss x processes / K (schedulers.masked_loss), plus selected-only metrics."""
            key = self._next_micro()
            stats = None
            target = inputs.pop("target", None)
            if self.selector in sch.PER_STEP:
                keep, mask, k, idx = self._per_step_select(model, inputs, key)
                inputs = sch.slice_pairs(inputs, keep, self.args.pad_to_multiple_of)
                target = target[keep.to(target.device)] if target is not None else None
            _, logps, hidden = self._run_with_capture(model, inputs, features=self.selector == "sams")
            losses, margin = sch.pair_losses(*logps, self.beta, target if self.soft_labels else None)
            if self.selector in sch.IN_BATCH:
                mask, k, idx, stats = self._in_batch_select(logps, margin, hidden, inputs["completion_mask"], key)
            mask = mask.to(losses.device)
            loss = sch.masked_loss(losses, mask, k, self.accelerator.num_processes)
            self.last_selection = idx
            acc, metrics = self.accelerator, self._metrics["train"]
            metrics["select/kept"].append(float(k))
            metrics["select/loss"].append(acc.gather(losses.detach() * mask).sum().item() / k)
            metrics["select/margin"].append(acc.gather(margin.detach() * mask).sum().item() / k)
            if stats is not None:
                metrics["select/reward"].append(stats["reward"])
            if self.soft_labels:
                self._log_soft_target(target.to(losses.device))
            log_dir = os.environ.get(SELECTION_LOG_ENV)
            if log_dir:
                with open(Path(log_dir) / f"rank{acc.process_index}.jsonl", "a") as f:
                    f.write(json.dumps({"step": key[0], "micro": key[1], "selected": idx.tolist(),
                                        "loss": float(loss.detach())}) + "\n")
            return loss

        # -- SamS scheduler pre-training, checkpoints, resume
        def pretrain_scheduler(self, steps: int) -> dict:
            """SamS's optional scheduler pre-training on the frozen policy (the paper's 'scheduler pretrain' step;
            the released code's bandit.pretrain: the training loop with the policy's optimizer step skipped):
            `steps` candidate batches of the training data, each a SamS step (observe the last selection's reward,
            update both nets, score, choose) on the policy's no-grad forward; the policy is not changed. The
            data order and global RNG of the training that follows are untouched."""
            if self.batch_scheduler is None:
                raise ValueError("pretrain_scheduler needs selector='sams'")
            rewards = []
            model, was_training = self.model, self.model.training
            model.eval()  # TRL's metrics of these passes go to the eval bucket, cleared below; dropout is off anyway
            try:
                with _fork_rng(self.accelerator.device):
                    loader = self.get_train_dataloader()
                    batches = iter(loader)
                    for i in range(steps):
                        batch = next(batches, None)
                        if batch is None:
                            batches = iter(loader)
                            batch = next(batches)
                        batch = self._prepare_inputs(batch)
                        batch.pop("target", None)
                        with torch.no_grad():
                            _, logps, hidden = self._run_with_capture(model, batch, features=True)
                            _, margin = sch.pair_losses(*logps, self.beta)
                            *_, stats = self._in_batch_select(logps, margin, hidden, batch["completion_mask"],
                                                              (i, 0, "pretrain"))
                        if stats is not None:
                            rewards.append(stats["reward"])
            finally:
                model.train(was_training)
                self._metrics["eval"].clear()
            return {"sams_pretrain_steps": steps, "sams_pretrain_reward_mean": sum(rewards) / len(rewards)
                    if rewards else None}

        def train(self, resume_from_checkpoint=None, *args, **kwargs):
            if resume_from_checkpoint is False:
                resume_from_checkpoint = None
            elif resume_from_checkpoint is True:  # the newest checkpoint (the Trainer raises when there is none)
                from transformers.trainer_utils import get_last_checkpoint

                resume_from_checkpoint = get_last_checkpoint(self.args.output_dir) or True
            if self.batch_scheduler is not None and resume_from_checkpoint is not True:
                if resume_from_checkpoint:
                    path = Path(resume_from_checkpoint) / BATCH_SCHEDULER_FILE
                    if not path.is_file():
                        raise ConfigError(f"resume: {resume_from_checkpoint} has no {BATCH_SCHEDULER_FILE} (not a "
                                          f"checkpoint of a --selector sams run)")
                    self.batch_scheduler.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
                elif self.sams_pretrain_steps:
                    self.pretrain_summary = self.pretrain_scheduler(self.sams_pretrain_steps)
            return super().train(resume_from_checkpoint, *args, **kwargs)

        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            if self.batch_scheduler is not None and self.args.should_save:
                from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

                folder = Path(self._get_output_dir(trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
                torch.save(self.batch_scheduler.state_dict(), folder / BATCH_SCHEDULER_FILE)

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


def quantization(args: Args, device: torch.device):
    """bitsandbytes' 4-bit NF4 config for --load-in-4bit, checked at load time (a dry run on a laptop passes)."""
    if not args.load_in_4bit:
        return None
    import importlib.util

    if device.type != "cuda":
        raise ConfigError("--load-in-4bit: bitsandbytes' 4-bit weights need a CUDA GPU; drop it on a CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("--load-in-4bit: needs bitsandbytes (pip install -r requirements_vllm.txt on a GPU node)")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def lora_config(args: Args):
    if not args.lora_r:
        return None
    from peft import LoraConfig

    targets = args.lora_targets if args.lora_targets == "all-linear" else [t.strip() for t in args.lora_targets.split(",")]
    return LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


def resolve(args: Args) -> torch.device:
    """Check every argument before anything is loaded or written; ConfigError names the bad flag."""

    check_lora(args)
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
    check_name(args.name)
    check_out(args.out)
    check_dpo_extras(args.dpo)
    check_selector(args)
    from alignment.sft import resolve_device  # auto: cuda when there is a GPU

    return resolve_device(args.device)


def check_selector(args: Args) -> None:

    args.selector = canonical(args.selector, SELECTOR, "alignment", "--selector", allowed=SELECTORS)
    if not is_ratio(args.select_ratio):
        raise ConfigError(f"--select-ratio: must be in (0, 1], got {args.select_ratio}")
    if args.sams_mode not in SAMS_MODES:
        raise ConfigError(f"--sams-mode: unknown mode {args.sams_mode!r}; known: {', '.join(SAMS_MODES)}")
    if isinstance(args.sams_pretrain_steps, bool) or not isinstance(args.sams_pretrain_steps, int) \
            or args.sams_pretrain_steps < 0:
        raise ConfigError(f"--sams-pretrain-steps: must be an integer >= 0, got {args.sams_pretrain_steps}")
    if args.sams_pretrain_steps and args.selector != "sams":
        raise ConfigError(f"--sams-pretrain-steps: pre-trains the SamS scheduler; it needs --selector sams, "
                          f"not {args.selector}")
    check_positive("sams-hidden", args.sams_hidden, integer=True)
    check_positive("sams-lr", args.sams_lr)
    if not (isinstance(args.sams_explore_weight, (int, float)) and args.sams_explore_weight >= 0):
        raise ConfigError(f"--sams-explore-weight: must be a number >= 0, got {args.sams_explore_weight}")
    check_positive("passes", args.passes, integer=True)
    if not (0 <= args.dropout < 1):
        raise ConfigError(f"--dropout: must be in [0, 1), got {args.dropout}")
    check_positive("gamma", args.gamma)


def selector_kwargs(args: Args) -> dict:
    """The SamplerDPOTrainer keywords of the selector flags (none: no keywords, the plain trainer)."""
    if args.selector == "all":
        return {}
    return dict(selector=args.selector, select_ratio=args.select_ratio, sams_mode=args.sams_mode,
                sams_pretrain_steps=args.sams_pretrain_steps, sams_hidden=args.sams_hidden, sams_lr=args.sams_lr,
                sams_explore_weight=args.sams_explore_weight, passes=args.passes, dropout=args.dropout,
                gamma=args.gamma)


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
    if args.selector != "all":  # named in every metrics row
        log_extra = (log_extra or {}) | {"selector": args.selector} | (
            {"sams_mode": args.sams_mode} if args.selector == "sams" else {})
    log_cb, quiet = make_callbacks(run, args.seed, "train_dpo", extra=log_extra)
    config = dpo_config(args, device, scratch)
    if not progress:
        config.disable_tqdm = True
    trainer = make_trainer_class()(model=policy, ref_model=ref, args=config, train_dataset=Dataset.from_list(data),
                                   processing_class=tokenizer, callbacks=[log_cb], soft_labels=args.loss == "rev_kl",
                                   peft_config=lora_config(args), **selector_kwargs(args))
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
    if args.selector != "all":
        summary |= {"selector": args.selector, "final_select_loss": last.get("select/loss"),
                    "final_select_margin": last.get("select/margin")} | (trainer.pretrain_summary or {})
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

    from alignment.core.data import load_preferences
    from alignment.core.models import DTYPES, load_causal_lm, load_tokenizer

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
    quant = quantization(args, device)

    def load(src, flag):
        m = load_causal_lm(src, flag, device=device if quant else "cpu", dtype=args.dtype, seed=0,
                           trust_remote_code=args.trust_remote_code, quantization_config=quant)
        return m if quant else m.to(DTYPES[args.dtype])

    policy, ref = load(policy_src, "--policy"), load(ref_src, "--ref")
    num_params = sum(p.numel() for p in policy.parameters())
    config = dataclasses.asdict(args) | {"resolved": {"policy": policy_src, "ref": ref_src, "num_pairs": len(rows),
                                                         "num_params": num_params, "device": str(device),
                                                         "processes": state.num_processes}}
    scratch = Path(args.out) / f".{args.name}.trainer"  # shared by the processes; removed at the end
    with (RunDir(args.out, args.name, config, [args.seed]) if state.is_main_process else nullcontext()) as run:
        if state.is_main_process:
            selecting = "" if args.selector == "all" else f", selector {args.selector} (ratio {args.select_ratio})"
            print(f"train_dpo: {policy_src} ({num_params / 1e6:.2f}M parameters), {len(rows)} pairs, loss {args.loss}, "
                  f"beta {args.beta}{selecting}, {state.num_processes} process(es) on {device}")
        trainer, summary = train(policy, ref, tokenizer, rows, args, run or _NoRun(), device, scratch)
        if args.lora_r:
            summary["trainable_params"] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        if args.lora_r and not args.load_in_4bit:  # the adapters merged into the weights: a plain model folder
            if state.is_main_process:
                merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
                merged.save_pretrained(scratch / "final")
        else:
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
