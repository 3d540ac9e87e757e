"""The reward interface: `reward.score(prompts, responses) -> list[float]`, one float per (prompt, response).

    load_reward("toy-oracle")        the toy task's true reward (a Python callable)
    load_reward("path/to/model")     a sequence classifier with one logit (e.g. from alignment.reward_model)
    load_reward("org/name")          the same from the Hub, on a connected machine
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from alignment.core.models import LOAD_ERRORS, load_failure
from runlog import ConfigError


def join_text(prompt: str, response: str) -> str:
    """Prompt and response as one plain text, with exactly one space between them."""
    return prompt.rstrip() + " " + response.lstrip()


@dataclass
class CallableReward:
    """A Python function f(prompt, response) -> float behind the reward interface."""

    fn: Callable[[str, str], float]
    name: str = "callable"

    def score(self, prompts, responses) -> list[float]:
        return [float(self.fn(p, r)) for p, r in zip(prompts, responses, strict=True)]


class HFRewardModel:
    """A sequence classifier with a single output: the score of prompt + response. Batched, no grad."""

    def __init__(self, name: str, device="cpu", batch_size: int = 64, field: str = "--reward",
                 trust_remote_code: bool = False):
        from transformers import AutoModelForSequenceClassification

        from alignment.core.models import check_source, load_tokenizer

        check_source(name, field)
        self.tokenizer = load_tokenizer(name, field, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "right"  # the classifier reads the last non-pad token
        try:
            self.model = AutoModelForSequenceClassification.from_pretrained(name, trust_remote_code=trust_remote_code)
        except LOAD_ERRORS as e:
            raise ConfigError(f"{field}: cannot load a reward model from {name!r} ({load_failure(e)})") from None
        if self.model.config.num_labels != 1:
            raise ConfigError(f"{field}: {name!r} has {self.model.config.num_labels} outputs; a reward model needs 1")
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device).eval()
        self.device, self.batch_size, self.name = device, batch_size, name

    def texts(self, prompts, responses) -> list[str]:
        out = []
        for p, r in zip(prompts, responses, strict=True):
            if isinstance(p, list):  # conversational: the tokenizer's chat template
                out.append(self.tokenizer.apply_chat_template(p + [{"role": "assistant", "content": r}], tokenize=False))
            else:
                out.append(join_text(p, r))
        return out

    @torch.no_grad()
    def score(self, prompts, responses) -> list[float]:
        texts = self.texts(prompts, responses)
        # chat-rendered texts already hold the template's special tokens (e.g. BOS): don't add them twice
        chat = [isinstance(p, list) for p in prompts]
        scores = [0.0] * len(texts)
        for kind in (False, True):
            idx = [i for i, c in enumerate(chat) if c == kind]
            for j in range(0, len(idx), self.batch_size):
                part = idx[j:j + self.batch_size]
                batch = self.tokenizer([texts[i] for i in part], return_tensors="pt", padding=True,
                                       add_special_tokens=not kind)
                logits = self.model(**batch.to(self.device)).logits[:, 0]
                for i, v in zip(part, logits.float().cpu().tolist()):
                    scores[i] = v
        return scores


def load_reward(spec: str, device="cpu", batch_size: int = 64, field: str = "--reward"):
    if spec == "toy-oracle":
        from alignment.core.toy import true_reward

        return CallableReward(true_reward, name="toy-oracle")
    if not spec:
        raise ConfigError(f"{field}: give 'toy-oracle' or a reward model folder / Hub name")
    from alignment.core.models import model_source

    return HFRewardModel(model_source(spec), device=device, batch_size=batch_size, field=field)
