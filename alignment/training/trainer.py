"""SamplerDPOTrainer: TRL's DPOTrainer with the soft-label rev_kl loss and the batch selectors, reading every
setting from its SamplerDPOConfig (alignment/training/config.py), and `fit`, one DPO training run on preference rows.

rev_kl runs TRL's own forward passes, loss and metrics, and adds the soft-label term (1 - q) D
(alignment/training/losses.py): forward hooks on the policy and the reference record the per-token log-probs
of TRL's passes, so that TRL's distributed code, metrics and fused LM head stay untouched.

Batch selection (config.selector; the math in alignment/selection/batch.py): each training batch is a candidate
batch of which K pairs get gradient. A BatchSelection object chosen by name does the choosing:
    RandomSubset, Sams       in-batch: TRL's forward over the whole candidate batch, then a 0/1 mask over its pairs
    UncertaintySampling,     per-step: Monte Carlo dropout scores of every candidate without gradients first, then
    ActiveExploration        the forward with gradients on the selected pairs only
and the loss is losses.masked_mean of the per-pair losses (the same normalisation for every selector), or for
random_subset and sams with sams_normalisation="anchor" losses.anchor_mean (the released SamS code's: unselected
losses detached, the mean over all n candidates). Every
process selects the same global indices (scores gathered, generators seeded from the run seed and the global step).
The SamS state is saved in each checkpoint as batch_scheduler.pt and restored by train(resume_from_checkpoint=...).
Evaluation always uses every pair.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from trl import DPOTrainer

from alignment.selection import batch as sch
from alignment.selection import scores as selection_scores
from alignment.training import losses
from alignment.training.config import SamplerDPOConfig
from runlog import ConfigError

SELECTION_LOG_ENV = "ALIGNMENT_SELECTION_LOG"  # debug: a folder; each process appends its selections to rankR.jsonl
BATCH_SCHEDULER_FILE = "batch_scheduler.pt"  # in each checkpoint-N/ (the Trainer's scheduler.pt is the lr schedule)


class WithTargets:
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


# ------------------------------------------------------------------------------------------- selections

@dataclass
class Picked:
    """A selection: the weights of this process's pairs in the forward with gradients (1 selected, 0 not), K, the
    selected global indices (ascending), SamS's update stats (or None)."""
    mask: torch.Tensor
    k: int
    indices: torch.Tensor
    stats: dict | None = None


class BatchSelection:
    """Which pairs of a candidate batch get gradient. Per-step selections choose in before_forward (and may slice
    the batch), in-batch ones in after_forward from TRL's forward over the whole batch."""

    needs_features = False  # after_forward needs the policy's final hidden states
    stateful = False  # state_dict() is saved in every checkpoint and restored on resume

    def __init__(self, trainer: "SamplerDPOTrainer"):
        self.trainer = trainer

    def before_forward(self, model, inputs: dict, target, key) -> tuple[dict, torch.Tensor | None, Picked | None]:
        return inputs, target, None

    def after_forward(self, logps, margin, hidden, completion_mask, key) -> Picked:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What a checkpoint keeps of a stateful selection."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def _keep_count(self, local: int, n: int) -> int:
        acc = self.trainer.accelerator
        if n != local * acc.num_processes:
            raise RuntimeError(f"uneven candidate batches across processes ({local} here, {n} in all)")
        return sch.keep_count(n, self.trainer.args.select_ratio)


class RandomSubset(BatchSelection):
    """random_subset: a uniformly random K of the global candidate batch (sams's control)."""

    def choose(self, logps, margin, hidden, completion_mask, margins, k: int, gen) -> tuple[torch.Tensor, dict | None]:
        """(the K global indices, update stats or None) from the gathered margins and this process's tensors."""
        return sch.random_indices(margins.numel(), k, gen), None

    def after_forward(self, logps, margin, hidden, completion_mask, key) -> Picked:
        acc = self.trainer.accelerator
        local = margin.numel()
        margins = acc.gather(margin.detach())
        n = margins.numel()
        k = self._keep_count(local, n)
        gen = sch.step_generator(self.trainer.args.seed, *key)
        idx, stats = self.choose(logps, margin, hidden, completion_mask, margins, k, gen)
        mask = torch.zeros(n, device=margin.device)
        mask[idx.to(margin.device)] = 1.0
        start = acc.process_index * local
        return Picked(mask[start:start + local], k, idx, stats)


class Sams(RandomSubset):
    """sams: the SamS scheduler (alignment.selection.batch.SamsScheduler) scores every candidate from the policy's
    pooled final hidden states and margin and picks K; the reward of a selection updates it one step later."""

    needs_features = True
    stateful = True

    def __init__(self, trainer: "SamplerDPOTrainer"):
        super().__init__(trainer)
        cfg = trainer.args
        hidden = _inner(trainer.model).config.get_text_config().hidden_size
        self.scheduler = sch.SamsScheduler(2 * hidden + 1, hidden=cfg.sams_hidden, lr=cfg.sams_lr, mode=cfg.sams_mode,
                                           explore_weight=cfg.sams_explore_weight, seed=cfg.seed,
                                           device=trainer.accelerator.device, update=cfg.sams_update)
        if cfg.sams_scheduler:  # pre-trained weights (every process reads the same file)
            self.scheduler.load_weights(cfg.sams_scheduler, "--sams-scheduler")
        self.reward = "dpo"  # the reward its steps observe; pretrain_scheduler switches it to --sams-pretrain-reward

    def choose(self, logps, margin, hidden, completion_mask, margins, k, gen):
        acc = self.trainer.accelerator
        pooled = sch.pooled_response_states(hidden, completion_mask)
        x = torch.cat([pooled, margin.detach().float()[:, None]], -1)
        return self.scheduler.step(acc.gather(x), margins, acc.gather(logps[0].detach()), k, gen, reward=self.reward)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


class PerStepSelection(BatchSelection):
    """us / ae: Monte Carlo dropout scores of every candidate (no gradients), the global top K, and this process's
    pairs to train on: its members of the selection (weight 1), padded with its first unselected pairs (weight 0)
    to the largest member count of any process, so that every process runs the same shapes (TRL gathers its
    metrics) and DDP sees a backward everywhere."""

    def scores(self, model, inputs: dict, samples: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def before_forward(self, model, inputs, target, key):
        t = self.trainer
        acc = t.accelerator
        local = inputs["completion_mask"].size(0) // 2
        with torch.no_grad():
            samples = sch.dropout_samples(_inner(model), inputs, t.args.passes, t.args.dropout, t.args.seed, *key,
                                          offset=acc.process_index * local)
            scores = self.scores(model, inputs, samples)
        scores = acc.gather(scores.detach().float())
        n = scores.numel()
        k = self._keep_count(local, n)
        idx = torch.as_tensor(selection_scores.select_top(scores.cpu(), k, largest=True)).cpu().sort().values
        counts = torch.bincount(idx // local, minlength=acc.num_processes)
        start = acc.process_index * local
        mine = idx[(idx >= start) & (idx < start + local)] - start
        taken = set(mine.tolist())
        rest = torch.tensor([j for j in range(local) if j not in taken], dtype=torch.long)
        keep = torch.cat([mine, rest[:int(counts.max()) - mine.numel()]])
        weights = torch.zeros(keep.numel(), device=scores.device)
        weights[:mine.numel()] = 1.0
        inputs = sch.slice_pairs(inputs, keep, t.args.pad_to_multiple_of)
        target = target[keep.to(target.device)] if target is not None else None
        return inputs, target, Picked(weights, k, idx)


class UncertaintySampling(PerStepSelection):
    """us: the mean over the two responses of the variance of log pi over the dropout passes."""

    def scores(self, model, inputs, samples):
        return selection_scores.us_scores(samples)


class ActiveExploration(PerStepSelection):
    """ae: the width of the optimistic and pessimistic implicit-reward bounds, mean +- gamma std over the passes."""

    def scores(self, model, inputs, samples):
        t = self.trainer
        if t.precompute_ref_logps:
            ref = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])
        else:
            ref = torch.cat(t.compute_ref_log_probs(t.ref_model or t.model, inputs))
        return selection_scores.ae_scores(samples, ref, t.beta, t.args.gamma)


SELECTIONS = {"random_subset": RandomSubset, "sams": Sams, "us": UncertaintySampling, "ae": ActiveExploration}


# ------------------------------------------------------------------------------------------- the trainer

class SamplerDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer; with args.loss == "rev_kl" the loss is the soft-label one, else TRL's sigmoid loss. With a
    selector other than all, each training batch is a candidate batch of which K pairs get gradient; evaluation
    always uses every pair. args must be a SamplerDPOConfig; pass ref_model (the frozen reference) explicitly."""

    def __init__(self, model, ref_model, args: SamplerDPOConfig, **kwargs):
        if ref_model is None:
            raise ValueError("SamplerDPOTrainer: pass the frozen reference model as ref_model (TRL would otherwise "
                             "load or derive one itself)")
        if not isinstance(args, SamplerDPOConfig):
            raise TypeError(f"SamplerDPOTrainer: args must be a SamplerDPOConfig, got {type(args).__name__}")
        self.soft_labels = args.loss == "rev_kl"
        if not args.disable_dropout:  # TRL then leaves both models' dropout alone: the policy trains with it on,
            from trl.trainer.utils import disable_dropout_in_model

            disable_dropout_in_model(ref_model)  # the reference gets p = 0 (TRL does not put it in eval mode)
        super().__init__(model=model, ref_model=ref_model, args=args, **kwargs)
        if self.soft_labels:
            self.data_collator = WithTargets(self.data_collator)
        self.selection = SELECTIONS[self.args.selector](self) if self.args.selector != "all" else None
        self._micro = (None, -1)  # (global step, micro-batch) of the last selection
        self.last_selection = None  # the global indices kept at the last training step (tests, debugging)
        self.pretrain_summary = None

    @property
    def batch_scheduler(self):
        """The SamS scheduler (selector sams), else None."""
        return getattr(self.selection, "scheduler", None)

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
        if self.selection is not None and self.model.training and not return_outputs:
            return self._selected_loss(model, inputs)
        target = inputs.pop("target", None)
        if not self.soft_labels:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        result, logps, _ = self._run_with_capture(model, inputs, return_outputs)
        loss, outputs = result if return_outputs else (result, None)
        margin = losses.dpo_margins(*logps, self.beta)
        loss = loss + losses.soft_label_term(margin, target).mean()
        self._log_soft_target(target.to(margin.device, margin.dtype))
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

    def _selected_loss(self, model, inputs):
        """The training loss of a selector: sum over this process's selected pairs of the per-pair DPO
        (or rev_kl) loss x processes / K (losses.masked_mean), plus selected-only metrics."""
        key = self._next_micro()
        target = inputs.pop("target", None)
        inputs, target, picked = self.selection.before_forward(model, inputs, target, key)
        _, logps, hidden = self._run_with_capture(model, inputs, features=self.selection.needs_features)
        pair_losses, margin = losses.preference_loss(self.args.loss, *logps, self.beta, target)
        if picked is None:
            picked = self.selection.after_forward(logps, margin, hidden, inputs["completion_mask"], key)
        mask, k, idx = picked.mask.to(pair_losses.device), picked.k, picked.indices
        if self.args.sams_normalisation == "anchor" and self.args.selector in sch.IN_BATCH:
            # the released SamS code's: unselected losses detached, the mean over all n candidates
            loss = losses.anchor_mean(pair_losses, mask, mask.numel() * self.accelerator.num_processes,
                                      self.accelerator.num_processes)
        else:
            loss = losses.masked_mean(pair_losses, mask, k, self.accelerator.num_processes)
        self.last_selection = idx
        acc, metrics = self.accelerator, self._metrics["train"]
        metrics["select/kept"].append(float(k))
        metrics["select/loss"].append(acc.gather(pair_losses.detach() * mask).sum().item() / k)
        metrics["select/margin"].append(acc.gather(margin.detach() * mask).sum().item() / k)
        if picked.stats is not None:
            metrics["select/reward"].append(picked.stats["reward"])
        if self.soft_labels:
            self._log_soft_target(target.to(pair_losses.device))
        log_dir = os.environ.get(SELECTION_LOG_ENV)
        if log_dir:
            with open(Path(log_dir) / f"rank{acc.process_index}.jsonl", "a") as f:
                f.write(json.dumps({"step": key[0], "micro": key[1], "selected": idx.tolist(),
                                    "loss": float(loss.detach())}) + "\n")
        return loss

    # -- SamS scheduler pre-training, checkpoints, resume
    def pretrain_scheduler(self, steps: int) -> dict:
        """SamS's optional scheduler pre-training on the frozen policy (the paper's 'scheduler pretrain' step;
        the released code's bandit.pretrain: the training loop with the policy's optimizer step skipped,
        trainers_dist.py line 841): `steps` candidate batches of the training data, each a SamS step (observe the
        last selection's reward, update both nets, score, choose) on the policy's no-grad forward, under the reward
        args.sams_pretrain_reward (sft: the released run_scheduler_pretrain.sh's, alignment.selection.batch.
        sft_reward; dpo: DPO training's); the policy is not changed, and the nets learn even under
        sams_update="frozen" (which freezes them for the DPO that follows). The data order and global RNG of the
        training that follows are untouched. The last pre-training selection is observed at the first DPO step,
        under its own reward (before that step's update, so on the pre-trained-on policy)."""
        if not isinstance(self.selection, Sams):
            raise ValueError("pretrain_scheduler needs selector='sams'")
        rewards = []
        model, was_training = self.model, self.model.training
        model.eval()  # TRL's metrics of these passes go to the eval bucket, cleared below; dropout is off anyway
        scheduler, update = self.selection.scheduler, self.selection.scheduler.update
        scheduler.update, self.selection.reward = "online", self.args.sams_pretrain_reward  # pre-training learns
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
                        margin = losses.dpo_margins(*logps, self.beta)
                        picked = self.selection.after_forward(logps, margin, hidden, batch["completion_mask"],
                                                              (i, 0, "pretrain"))
                    if picked.stats is not None:
                        rewards.append(picked.stats["reward"])
        finally:
            model.train(was_training)
            self._metrics["eval"].clear()
            scheduler.update, self.selection.reward = update, "dpo"
        return {"sams_pretrain_steps": steps, "sams_pretrain_reward": self.args.sams_pretrain_reward,
                "sams_pretrain_reward_mean": sum(rewards) / len(rewards) if rewards else None}

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint is False:
            resume_from_checkpoint = None
        elif resume_from_checkpoint is True:  # the newest checkpoint (the Trainer raises when there is none)
            from transformers.trainer_utils import get_last_checkpoint

            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir) or True
        if self.selection is not None and self.selection.stateful and resume_from_checkpoint is not True:
            if resume_from_checkpoint:
                path = Path(resume_from_checkpoint) / BATCH_SCHEDULER_FILE
                if not path.is_file():
                    raise ConfigError(f"resume: {resume_from_checkpoint} has no {BATCH_SCHEDULER_FILE} (not a "
                                      f"checkpoint of a --selector {self.args.selector} run)")
                self.selection.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            elif self.args.sams_pretrain_steps:
                self.pretrain_summary = self.pretrain_scheduler(self.args.sams_pretrain_steps)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.selection is not None and self.selection.stateful and self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = Path(self._get_output_dir(trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            torch.save(self.selection.state_dict(), folder / BATCH_SCHEDULER_FILE)


# ------------------------------------------------------------------------------------------- one training run

def fit(policy, ref, tokenizer, rows: list[dict], config: SamplerDPOConfig, run, peft_config=None,
        log_extra: dict | None = None, progress: bool = True, resume_from: str | None = None, prior_rows=()):
    """Train `policy` against the frozen `ref` on checked preference rows (alignment.core.data.load_preferences)
    with `config`; the trainer's logs go to run.log (a RunDir, or anything with a log(row) method), each row with
    `log_extra`. config.output_dir is the trainer's scratch folder, the same in every process. resume_from: a
    checkpoint-N/ folder to continue from, prior_rows its log (written to `run` first, so the log has every step
    once). Returns (trainer, summary); the trained model is trainer.model."""
    from datasets import Dataset

    from alignment.training.common import make_callbacks, use_quiet_progress
    from alignment.training.data import training_rows

    if ref is policy:
        raise ValueError("ref must be a separate copy of the reference weights, not the policy object itself")
    for p in ref.parameters():
        p.requires_grad_(False)
    ref.eval()
    policy.train()
    data = training_rows(rows, config.loss, config.margin_scale)
    if config.selector != "all":  # named in every metrics row
        log_extra = (log_extra or {}) | {"selector": config.selector} | (
            {"sams_mode": config.sams_mode} if config.selector == "sams" else {})
    log_cb, quiet = make_callbacks(run, config.seed, "train_dpo", extra=log_extra)
    for row in prior_rows:
        log_cb.rows.append(row)
        run.log(row)
    if not progress:
        config.disable_tqdm = True
    trainer = SamplerDPOTrainer(model=policy, ref_model=ref, args=config, train_dataset=Dataset.from_list(data),
                                processing_class=tokenizer, callbacks=[log_cb], peft_config=peft_config)
    use_quiet_progress(trainer, quiet)
    if not progress:  # transformers prints each log dict instead of a bar when tqdm is off: neither, here
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    if config.selector == "sams" and config.sams_pretrain_only:  # the released recipe's first stage alone
        pre = trainer.pretrain_scheduler(config.sams_pretrain_steps)
        return trainer, {"steps": 0, "num_pairs": len(data), "selector": "sams", "sams_pretrain_only": True} | pre
    result = trainer.train(resume_from_checkpoint=resume_from)
    hist = [r for r in trainer.state.log_history if "loss" in r]
    last = hist[-1] if hist else {}
    loss_mean = result.metrics.get("train_loss")
    if resume_from:  # the Trainer's mean covers the resumed steps only; the log has them all
        losses_ = [r["train_loss"] for r in log_cb.rows if "train_loss" in r]
        loss_mean = sum(losses_) / len(losses_) if losses_ else loss_mean
    summary = {"steps": trainer.state.global_step, "num_pairs": len(data), "train_loss_mean": loss_mean,
               "final_loss": last.get("loss"), "final_reward_accuracy": last.get("rewards/accuracies"),
               "final_reward_margin": last.get("rewards/margins"), "train_runtime_s": result.metrics.get("train_runtime")}
    if config.selector != "all":
        summary |= {"selector": config.selector, "final_select_loss": last.get("select/loss"),
                    "final_select_margin": last.get("select/margin")} | (trainer.pretrain_summary or {})
    return trainer, summary
