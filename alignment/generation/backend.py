"""The generation backend interface, and its transformers implementation (DESIGN.md section 4).

A backend draws responses for a batch of prompts (token ids) from one component of a generation plan:

    backend.tok                                   the tokenizer (responses are decoded with it)
    backend.draw(prompt_ids, tilt, n, seed)       n responses per prompt from a tilt of bandit/spec.py -> Draws
    backend.draw_scored(prompt_ids, n, seed)      n responses from pi, each with (log pi, log pi_ref) -> Draws
    backend.check_lengths(prompt_ids, max_new_tokens, rows)   ConfigError when a prompt cannot fit

HFBackend (here) runs transformers models in this process, on CPU or GPU, and realises any tilt of pi and pi_ref
by per-token fused decoding (generation/decoding.py); VLLMBackend (generation/vllm.py, GPU nodes) draws the
plain tilts pi and pi_ref only. Both take prompts tokenized by `encode_prompts` and return token ids, so every
backend writes the same rows.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

from alignment.core.toy import TASK_SEED
from bandit.spec import Tilt
from runlog import ConfigError, check_memory


def encode_prompts(tokenizer, rows: list[dict], field: str = "--prompts") -> list[list[int]]:
    """Token ids of each prompt: chat template (with the generation prompt) for message lists, plain
    tokenization (with the tokenizer's special tokens) for text."""
    ids = []
    for i, row in enumerate(rows):
        p = row["prompt"]
        if isinstance(p, list):
            if not getattr(tokenizer, "chat_template", None):
                raise ConfigError(f"{field}: row {i} (id {row['id']!r}) is a list of messages, but the tokenizer has "
                                  f"no chat template; give plain-text prompts or a chat model")
            text = tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
            ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        else:
            ids.append(tokenizer(p)["input_ids"])
        if not ids[-1]:
            raise ConfigError(f"{field}: row {i} (id {row['id']!r}) tokenizes to nothing")
    return ids


def batch_seed(seed: int, component: str, first_id: str, size: int) -> int:
    return zlib.crc32(f"{seed}/{component}/{first_id}/{size}".encode())


class Backend:
    """What generation/samplers.generate_batch needs from a backend (see the module docstring)."""

    tok = None

    def draw(self, prompt_ids, tilt: Tilt, n: int, seed: int) -> "Draws":
        raise NotImplementedError

    def draw_scored(self, prompt_ids, n: int, seed: int) -> "Draws":
        raise NotImplementedError

    def check_lengths(self, prompt_ids, max_new_tokens: int, rows) -> None:
        raise NotImplementedError


@dataclass
class Draws:
    """One component's draws for a batch of prompts: per prompt, n responses."""
    tokens: list          # [P][n] token-id lists (EOS included, no padding)
    finished: list        # [P][n] bool
    logprobs: list | None = None   # [P][n] (log pi, log pi_ref), when asked for


class HFBackend(Backend):
    """transformers models in this process: plain sampling from one model, or per-token fusion of two."""

    def __init__(self, models: dict, tokenizer, args: Args, device):
        self.models, self.tok, self.args, self.device = models, tokenizer, args, device
        eos = getattr(models.get("policy", models.get("ref")).generation_config, "eos_token_id", None)
        self.eos = eos if eos is not None else tokenizer.eos_token_id

    def _run(self, prompt_ids, n, weights: dict, seed, logprobs=False):
        import torch

        from alignment.generation.decoding import left_pad, sample

        keys = list(weights)
        models = [self.models[k] for k in keys]
        w = [weights[k] for k in keys]
        shared = len(models) == 2 and models[0] is models[1]
        if shared:  # pi is pi_ref: the fusion is that one model (weights sum to 1); run it once
            models, w = models[:1], [1.0]
        rows = [ids for ids in prompt_ids for _ in range(n)]
        input_ids, mask = left_pad(rows, self.tok.pad_token_id, self.device)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        out = sample(models, w, input_ids, mask, max_new_tokens=self.args.max_new_tokens, eos_token_id=self.eos,
                     pad_token_id=self.tok.pad_token_id, temperature=self.args.temperature, top_p=self.args.top_p,
                     generator=gen, return_logprobs=logprobs)
        tokens = [out.row(i) for i in range(len(rows))]
        finished = out.finished.tolist()
        lp = None
        if logprobs:
            lp = out.logprobs.double().cpu()
            lp = (lp.repeat(1, 2) if shared else lp).tolist()
        group = lambda xs: [xs[i * n:(i + 1) * n] for i in range(len(prompt_ids))]
        return Draws(group(tokens), group(finished), group(lp) if lp is not None else None)

    def draw(self, prompt_ids, tilt: Tilt, n: int, seed: int) -> Draws:
        """n responses per prompt from the tilt, by per-token fusion of the models' logits with its coefficients."""
        return self._run(prompt_ids, n, tilt.logit_weights(), seed)

    def draw_scored(self, prompt_ids, n: int, seed: int) -> Draws:
        """n responses from pi with (log pi, log pi_ref) of each: ref is fed the same tokens with weight 0."""
        return self._run(prompt_ids, n, {"policy": 1.0, "ref": 0.0}, seed, logprobs=True)


def load_models(plan, args, device):
    """Tokenizer and the models a plan uses (plan.policy / plan.ref: model specs or None; one object when both
    name the same model), checked to share one vocabulary. args: dtype, trust_remote_code."""
    from alignment.core.models import DTYPES, is_toy, load_causal_lm, load_tokenizer

    specs = {k: v for k, v in (("policy", plan.policy), ("ref", plan.ref)) if v is not None}
    main_key = "policy" if "policy" in specs else "ref"
    tok = load_tokenizer(specs[main_key], f"--{main_key}", trust_remote_code=args.trust_remote_code)
    if tok.pad_token_id is None:
        raise ConfigError(f"--{main_key}: the tokenizer of {specs[main_key]!r} has neither a pad nor an EOS token")
    if len(set(specs.values())) == 2:
        other = "ref" if main_key == "policy" else "policy"
        tok2 = load_tokenizer(specs[other], f"--{other}", trust_remote_code=args.trust_remote_code)
        if tok2.get_vocab() != tok.get_vocab():
            raise ConfigError(f"--ref: the tokenizer of {specs['ref']!r} differs from that of --policy "
                              f"{specs['policy']!r}; {plan.sampler} needs both models on one vocabulary")
    models, by_spec = {}, {}
    for key, spec in specs.items():
        if spec not in by_spec:
            m = load_causal_lm(spec, f"--{key}", device=device, dtype=args.dtype, seed=TASK_SEED,
                               trust_remote_code=args.trust_remote_code)
            if is_toy(spec) and args.dtype not in ("auto", "float32"):
                m = m.to(DTYPES[args.dtype])
            by_spec[spec] = m
        models[key] = by_spec[spec]
    widths = {k: m.get_output_embeddings().weight.shape[0] for k, m in models.items()}
    if len(set(widths.values())) > 1:
        raise ConfigError(f"--ref: its output vocabulary ({widths['ref']} logits) differs from --policy's "
                          f"({widths['policy']}); {plan.sampler} needs both models on one vocabulary")
    if min(widths.values()) < len(tok):
        raise ConfigError(f"--{main_key}: the model has {min(widths.values())} logits but its tokenizer {len(tok)} tokens")
    return tok, models


def check_lengths(models: dict, prompt_ids, max_new_tokens: int, rows):
    for key, m in models.items():
        limit = getattr(m.config, "max_position_embeddings", None)
        if limit is None:
            continue
        i = max(range(len(prompt_ids)), key=lambda j: len(prompt_ids[j]))
        need = len(prompt_ids[i]) + max_new_tokens
        if need > limit:
            raise ConfigError(f"--max-new-tokens: prompt {rows[i]['id']!r} has {len(prompt_ids[i])} tokens; with "
                              f"{max_new_tokens} new ones that is {need} positions, more than --{key}'s "
                              f"max_position_embeddings {limit}")


# bytes per generated token a run keeps until it is written: its int64 id, its share of the decoded text and of the
# JSON row, Python's object overhead (a generous count, not a measurement)
HELD_BYTES_PER_TOKEN = 64


def generation_bytes(models: dict, sequences: int, length: int) -> int:
    """Estimated bytes of one batch of `sequences` rows of up to `length` positions (exact ints, so 400-digit sizes
    never go through float): the int64 ids, and each distinct model's key/value cache (2 x layers x hidden float32
    per position, an upper bound under grouped-query attention) and next-token logits."""
    n = sequences * length * 8
    for m in {id(m): m for m in models.values()}.values():
        c = m.config
        layers, hidden, vocab = (int(getattr(c, f, 0) or 0) for f in ("num_hidden_layers", "hidden_size", "vocab_size"))
        n += sequences * (length * 2 * layers * hidden + 2 * vocab) * 4
    return n


def check_generation_memory(models: dict, prompts: int, per_prompt: int, batch_prompts: int, longest_prompt: int,
                            max_new_tokens: int, flags: str) -> None:
    """Refuse, with the estimate, a generation whose responses (all kept until the run is written) or whose largest
    batch cannot fit in the available memory, before anything is drawn."""
    check_memory(f"{prompts} prompts x {per_prompt} responses x {max_new_tokens} tokens",
                 prompts * per_prompt * max_new_tokens * HELD_BYTES_PER_TOKEN, flags)
    if models:
        check_memory(f"batches of {batch_prompts} prompts x {per_prompt} responses",
                     generation_bytes(models, batch_prompts * per_prompt, longest_prompt + max_new_tokens), flags)


