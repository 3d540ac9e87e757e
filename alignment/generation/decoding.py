"""Batched sampling from one causal LM, or from a per-token fusion of several (Mix-P decoding).

    out = sample([policy, ref], [1.5, -0.5], input_ids, attention_mask, max_new_tokens=64,
                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, generator=g)

At every step the next-token logits of each model are combined as sum_m w_m * l_m (in float32), and
the result goes through Hugging Face's own warpers (TemperatureLogitsWarper, then TopPLogitsWarper)
and `torch.multinomial`, in the order and with the random-number use of `model.generate(do_sample=True)`:
with one model and weight 1 (or weights (1, 0)) the tokens are exactly those of `generate` under the
same seed (tests/test_alignment_decoding.py checks this).

Each model keeps its own KV cache (transformers' DynamicCache) and is fed only the newly sampled token
after the prompt's prefill: nothing is recomputed. Prompts are left-padded: the attention mask marks the
padding, position ids come from the mask (cumsum - 1, 0 on padding, as `generate` does), and each new
token gets the next position of its row. transformers 5.x has no `cache_position` argument any more:
the cache knows how many positions it holds and the causal mask is built from that and the 2D mask.
A row stops at its first EOS (unless `ignore_eos`); later positions hold `pad_token_id`. The loop ends
when every row has stopped or after `max_new_tokens`.

Weights may be one list for all rows or a [B, M] tensor (one weight vector per row). temperature 0
means greedy (argmax of the fused logits). `return_logprobs` adds, per row and model, the sum over the
generated tokens (EOS included, padding excluded) of that model's own log-softmax at temperature 1:
the sequence log-probability log pi_m(y | x) that the sequence-level Mix-P variant needs.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, ... over each row's real tokens (left padding gets 0), as `generate` computes them."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 0)


def left_pad(sequences: list[list[int]], pad_token_id: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> (input_ids, attention_mask), left-padded to the longest."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        if s:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def logits_processors(temperature: float = 1.0, top_p: float = 1.0):
    """Hugging Face's sampling warpers, added under the same conditions and in the same order as in
    `GenerationMixin._get_logits_processor` (temperature, then top-p; no top-k)."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    procs = LogitsProcessorList()
    if temperature > 0 and temperature != 1.0:
        procs.append(TemperatureLogitsWarper(temperature))
    if top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return procs


@dataclass
class DecodeOutput:
    tokens: torch.Tensor             # [B, T] generated ids; pad_token_id after a row's EOS (T: the longest row)
    lengths: torch.Tensor            # [B] generated tokens per row, its EOS included
    finished: torch.Tensor           # [B] bool: the row ended with EOS (False: cut at max_new_tokens)
    logprobs: torch.Tensor | None    # [B, M] per model: sum of log pi_m(token) over the row's tokens
    step_logits: list | None         # per step, the fused logits [B, V] before temperature / top-p

    def row(self, i: int) -> list[int]:
        return self.tokens[i, : int(self.lengths[i])].tolist()


class Stepper:
    """One model and its KV cache: prefill the prompt once, then one new token per call."""

    def __init__(self, model):
        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache(config=model.config)
        params = inspect.signature(model.forward).parameters
        self.takes_positions = "position_ids" in params
        self.takes_keep = "logits_to_keep" in params

    def __call__(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        kw = {"attention_mask": attention_mask, "past_key_values": self.cache, "use_cache": True}
        if self.takes_positions:
            kw["position_ids"] = position_ids
        if self.takes_keep:
            kw["logits_to_keep"] = 1
        out = self.model(input_ids=input_ids, **kw)
        self.cache = out.past_key_values
        # float32 copy of the last position's logits, exactly what `generate` takes
        return out.logits[:, -1].to(copy=True, dtype=torch.float32)


def _weights(weights, batch: int, n_models: int, device) -> list:
    """Per model: a Python float (same for all rows) or a [B, 1] float32 column."""
    if isinstance(weights, torch.Tensor):
        if weights.shape != (batch, n_models):
            raise ValueError(f"weights: expected shape {(batch, n_models)}, got {tuple(weights.shape)}")
        w = weights.to(device=device, dtype=torch.float32)
        return [w[:, m:m + 1] for m in range(n_models)]
    weights = [float(x) for x in weights]
    if len(weights) != n_models:
        raise ValueError(f"weights: {len(weights)} given for {n_models} models")
    return weights


def _eos_tensor(eos_token_id, device) -> torch.Tensor | None:
    if eos_token_id is None:
        return None
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    return torch.tensor(ids, dtype=torch.long, device=device) if ids else None


@torch.no_grad()
def sample(models, weights, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
           eos_token_id, pad_token_id: int, temperature: float = 1.0, top_p: float = 1.0,
           generator: torch.Generator | None = None, ignore_eos: bool = False,
           return_logprobs: bool = False, return_step_logits: bool = False) -> DecodeOutput:
    """Sample continuations of left-padded prompts from the fusion sum_m weights[m] * logits_m.

    `models`: one or more causal LMs on the device of `input_ids`, sharing a vocabulary. Every model
    runs on every row (pass only the models a fusion needs). `generator`: the torch.Generator of the
    draws (None: torch's global one, as `generate` uses).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    models = list(models)
    device = input_ids.device
    batch = input_ids.shape[0]
    w = _weights(weights, batch, len(models), device)
    procs = logits_processors(temperature, top_p)
    eos = None if ignore_eos else _eos_tensor(eos_token_id, device)
    steppers = [Stepper(m) for m in models]

    mask = attention_mask.to(device)
    pos = position_ids_from_mask(mask)
    logits = [s(input_ids, mask, pos) for s in steppers]
    pos = pos[:, -1:]

    seq = input_ids  # what the warpers see as input_ids (they ignore it; kept for custom processors)
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    logprobs = torch.zeros(batch, len(models), dtype=torch.float32, device=device) if return_logprobs else None
    step_logits = [] if return_step_logits else None
    pad = torch.tensor(pad_token_id, dtype=torch.long, device=device)
    new = []
    for step in range(max_new_tokens):
        fused = w[0] * logits[0]
        for wm, lm in zip(w[1:], logits[1:]):
            fused = fused + wm * lm
        if step_logits is not None:
            step_logits.append(fused.clone())
        if temperature == 0:
            nxt = torch.argmax(fused, dim=-1)
        else:
            scores = procs(seq, fused)
            probs = torch.nn.functional.softmax(scores, dim=-1)
            nxt = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
        if logprobs is not None:
            for m, lm in enumerate(logits):
                lp = torch.log_softmax(lm, dim=-1).gather(1, nxt[:, None]).squeeze(1)
                logprobs[:, m] += torch.where(unfinished, lp, torch.zeros_like(lp))
        nxt = torch.where(unfinished, nxt, pad)
        new.append(nxt)
        lengths += unfinished.long()
        if eos is not None:
            unfinished = unfinished & ~torch.isin(nxt, eos)
        if step == max_new_tokens - 1 or not bool(unfinished.any()):
            break
        seq = torch.cat([seq, nxt[:, None]], dim=-1)
        mask = torch.cat([mask, mask.new_ones((batch, 1))], dim=-1)
        pos = pos + 1
        logits = [s(nxt[:, None], mask, pos) for s in steppers]
    tokens = torch.stack(new, dim=1)
    finished = (~unfinished) if eos is not None else torch.zeros(batch, dtype=torch.bool, device=device)
    return DecodeOutput(tokens, lengths, finished, logprobs, step_logits)


def importance_weights(logp_policy: torch.Tensor, logp_ref: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-normalised weights over the last dimension (the candidates of one prompt), proportional to
    (pi / pi_ref)^{+alpha} and (pi / pi_ref)^{-alpha}, from sequence log-probabilities."""
    ratio = (logp_policy - logp_ref).double()
    return torch.softmax(alpha * ratio, dim=-1), torch.softmax(-alpha * ratio, dim=-1)


def resample(weights: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k distinct indices per row of `weights` [P, M], drawn without replacement with probability
    proportional to the weights (successive draws; Gumbel-top-k)."""
    if k > weights.shape[-1]:
        raise ValueError(f"cannot draw {k} distinct candidates from {weights.shape[-1]}")
    u = torch.rand(weights.shape, generator=generator, dtype=torch.float64, device=weights.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
    keys = torch.log(weights.double()) + gumbel
    return torch.topk(keys, k, dim=-1).indices


def effective_sample_size(weights: torch.Tensor) -> torch.Tensor:
    """1 / sum w^2 per row of normalised weights: M for uniform weights, 1 when one candidate has all."""
    return 1.0 / (weights.double() ** 2).sum(-1)
