"""The Bradley-Terry reward model that alignment.reward_model trains with TRL's RewardTrainer: the sequence
classifier with one output (a toy Llama built in-process, or any backbone with a fresh score head), its scores of
tokenized texts, and the held-out pairwise accuracy (also as a callback logging it every few steps)."""
from __future__ import annotations

import torch
from transformers import TrainerCallback

from alignment.core.models import LOAD_ERRORS, load_failure
from runlog import ConfigError


def build_classifier(source: str, tokenizer, seed: int, trust_remote_code: bool):
    from alignment.core import toy
    from alignment.core.models import check_source, is_toy, toy_size

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
        except LOAD_ERRORS as e:
            raise ConfigError(f"--model: cannot load a sequence classifier from {source!r} "
                              f"({load_failure(e)})") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


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


class HeldoutAccuracy(TrainerCallback):
    """Logs the held-out pairwise accuracy to `run` every `every` steps (0: never), not at the last step (the
    stage measures it after training itself)."""

    def __init__(self, run, seed: int, pad_id: int, heldout: list[dict], every: int, batch_size: int,
                 stage: str = "reward_model"):
        self.run, self.seed, self.pad_id, self.heldout = run, seed, pad_id, heldout
        self.every, self.batch_size, self.stage = every, batch_size, stage

    def on_step_end(self, targs, state, control, model=None, **kw):
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self.run.log({"stage": self.stage, "seed": self.seed, "step": state.global_step,
                          "heldout_accuracy": pair_accuracy(model, self.pad_id, self.heldout, self.batch_size)})
