"""Scores for choosing preference pairs: DPO implicit-reward gaps, MC-dropout uncertainty, active-exploration widths.

Every function takes a batch in the layout of TRL's `DataCollatorForPreference`: a dict with `input_ids`,
`attention_mask` and `completion_mask`, each [2B, T], the B prompt+chosen rows first and then the B
prompt+rejected rows, right-padded; `completion_mask` marks the response tokens. The optional
`ref_chosen_logps` / `ref_rejected_logps` ([B] each, TRL's precomputed reference log-probs) stand in for a
reference model. So the functions plug into a DPO trainer's step as they are. `score_pairs` runs the same
computations over a whole dataset (what `python -m alignment.select` does): there the 2N sequences are sorted by
length and batched without regard to pairs (nothing couples one row's value to another's), so a batch pads
next to nothing, and the pairs' scores are assembled afterwards.

Log-probabilities (`sequence_logps`). log pi(y|x) = sum over the response tokens y_t of log pi(y_t | x, y_<t):
one no-grad forward pass of the model's backbone over prompt + response, then the LM head only at the
positions that predict a response token (a position t predicts token t+1; positions where the next token
is prompt or padding are skipped), in chunks of tokens, float32 logsumexp, the target logit gathered: the
[2B, T, V] logits and their log-softmax are never built. The head output gets the model's own logit scale
and final soft-capping (read from the config the way TRL's fused head reads them). Padding never
contributes: padded columns are outside both masks, and right padding cannot reach the real tokens
through causal attention, so a padded batch gives what each pair alone gives (to float rounding).
length_normalise=True divides each sum by the row's number of response tokens (0 for a row without any).

Implicit reward and gap (reward_gap, Qi et al. 2025, "Difficulty-Based Preference Data Selection by DPO
Implicit Reward Gap"): h(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)), and the pair's **signed** gap
    gap = h(x, chosen) - h(x, rejected)
from a DPO-trained selection model pi and its reference pi_ref. The paper keeps the pairs with the smallest
gap (the hardest: the ones the model separates least, or orders wrongly), 10% of them. Ablations: |gap|
(`--abs`) and length-normalised log-probs (`--length-normalise`, the mean instead of the sum).

Monte Carlo dropout (`dropout_logps`), as in Mehta et al. ("Sample Efficient Preference Alignment in LLMs via
Active Exploration", arXiv:2312.00267, and its code github.com/belakaria/active-llm-alignment, which uses 5
samples and dropout 0.05 on the final hidden state on top of the model's own dropout). Each pass draws fresh
dropout masks:
  * the model's own dropout: every torch.nn.Dropout-family module with p > 0 and every module carrying a
    numeric `attention_dropout` > 0 (the transformers attention modules, which apply it only when their
    `training` flag is set) get training = True for the call, and only those modules (no recursion into
    children: nothing else changes); every flag is restored afterwards, also on error. Functional dropout
    that a model gates on some other module's flag is not switched on.
  * dropout with probability p on the final hidden state (after the backbone's final norm), before the LM head,
    scaled by 1 / (1 - p) like nn.Dropout.
When the model has no active dropout of its own, the backbone runs once and only the head dropout is redrawn
per pass (the same distribution, `passes` times less work). Seeding: one seed is drawn from `generator` (or,
when None, from torch's global generator), and the passes run under a forked RNG seeded with it, so the same
generator state gives the same samples bit for bit and the caller's global RNG is left as it was.

From S = dropout_logps(policy, batch) ([passes, 2B], log pi per pass), with Var and Std over the passes using
the unbiased (n - 1) estimator (torch.var's default, as the reference code), a = chosen, a' = rejected:
    us_scores   (Var[S_a] + Var[S_a']) / 2                                             (needs passes >= 2)
    ae_scores   U - L with, for y in {a, a'},  m_y = mean over passes of S_y,  s_y = Std[S_y],
                U = max_y beta * (m_y + gamma s_y - log pi_ref(y|x))   (optimistic value of the best response)
                L = max_y beta * (m_y - gamma s_y - log pi_ref(y|x))   (its pessimistic value)
This is the acquisition of AE-DPO in Mehta et al.: the width of the confidence interval on the best implicit
reward max_y h(x, y), upper bound minus lower bound, with gamma = 2 (the code's `active_beta`); it is
`select_ae_elements` of the reference code (there without the factor beta, which scales every width alike and
so leaves the choice unchanged; and there the reference log-prob comes from one dropout pass of pi_ref, here
from pi_ref without dropout, its actual value). U - L >= 0 always; when one response dominates both bounds
the width is 2 beta gamma s of that response. Both methods score a candidate batch of B / ratio pairs and
train on the top B (`select_top`).

`keep_count(n, ratio)` is how many of n pairs a ratio keeps (see there); `select_top` breaks ties by position.
"""
from __future__ import annotations

import inspect
import json
import math
from contextlib import contextmanager
from fractions import Fraction

import torch
import torch.nn.functional as F

METHODS = ("reward_gap", "us", "ae")
CHUNK_ELEMENTS = 2 ** 25  # logits per head chunk (tokens x vocabulary): 128 MiB of float32
BATCH_KEYS = ("input_ids", "attention_mask", "completion_mask")


# ------------------------------------------------------------------------------------------------ the model's parts

def _unwrap(model):
    """The transformers model under DDP / DeepSpeed wrappers and PEFT (whose LoRA layers stay in it)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


class _Parts:
    """Backbone, LM head and the head's logit transform of a causal LM."""

    def __init__(self, model):
        model = _unwrap(model)
        self.model = model
        self.backbone = model.base_model
        if self.backbone is model:
            raise ValueError(f"{type(model).__name__}: no backbone under base_model_prefix "
                             f"{getattr(model, 'base_model_prefix', None)!r}")
        self.head = model.get_output_embeddings()
        if self.head is None:
            raise ValueError(f"{type(model).__name__} has no output embeddings (LM head)")
        config = model.config.get_text_config()
        # the rules of TRL's add_fused_lm_head (trl/trainer/utils.py), so log-probs match TRL's
        self.softcap = getattr(config, "final_logit_softcapping", None)
        scale = getattr(config, "logit_scale", None)
        if scale is None:
            scale = getattr(config, "output_multiplier", None)
        if scale is None:
            scale = getattr(config, "lm_head_multiplier", None)
        if scale is None and getattr(config, "logits_scaling", None) is not None:
            scale = config.logits_scaling if config.model_type == "hyperclovax" else 1 / config.logits_scaling
        self.scale = 1.0 if scale is None else float(scale)
        self.positions = "position_ids" in inspect.signature(self.backbone.forward).parameters
        self.device = self.head.weight.device if hasattr(self.head, "weight") else next(model.parameters()).device

    def hidden(self, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Final hidden states [R, T, H] (after the backbone's final norm)."""
        kw = {"attention_mask": attn, "use_cache": False}
        if self.positions:  # real tokens count from 0 whatever the padding side (right padding: 0..L-1 anyway)
            kw["position_ids"] = (attn.long().cumsum(-1) - 1).clamp(min=0)
        out = self.backbone(input_ids=ids, **kw)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return hidden.to(self.device)

    def token_logps(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) [N] (float32) of hidden states [N, H], the head applied in chunks of tokens."""
        out = torch.empty(targets.shape[0], dtype=torch.float32, device=hidden.device)
        vocab = getattr(self.head, "out_features", None) or self.model.config.get_text_config().vocab_size
        step = max(1, CHUNK_ELEMENTS // max(1, vocab))
        for start in range(0, targets.shape[0], step):
            logits = self.head(hidden[start:start + step]).float()
            if self.scale != 1.0:
                logits = logits * self.scale
            if self.softcap is not None:
                logits = self.softcap * torch.tanh(logits / self.softcap)
            tgt = targets[start:start + step, None]
            out[start:start + step] = (logits.gather(-1, tgt) - torch.logsumexp(logits, -1, keepdim=True)).squeeze(-1)
        return out


class _Layout:
    """Which positions predict which response tokens, from a TRL-collated batch (moved to `device`); paired=False
    accepts any number of rows (score_batches' batches of single sequences)."""

    def __init__(self, batch: dict, device, paired: bool = True):
        for key in BATCH_KEYS:
            if key not in batch:
                raise KeyError(f"batch has no {key!r} (expected TRL's DataCollatorForPreference layout)")
        attn = batch["attention_mask"].to(device)
        comp = batch["completion_mask"].to(device)
        ids = batch["input_ids"].to(device)
        if ids.dim() != 2 or ids.shape != attn.shape or ids.shape != comp.shape:
            raise ValueError(f"input_ids, attention_mask and completion_mask must share one [2B, T] shape; got "
                             f"{tuple(ids.shape)}, {tuple(attn.shape)}, {tuple(comp.shape)}")
        if paired and ids.shape[0] % 2:
            raise ValueError(f"a preference batch has 2B rows (chosen, then rejected); got {ids.shape[0]}")
        used = attn.bool().any(0).nonzero()
        width = int(used.max()) + 1 if used.numel() else 1  # drop columns that are padding in every row
        self.ids, self.attn = ids[:, :width], attn[:, :width]
        predicts = comp[:, 1:width].bool() & attn[:, 1:width].bool()  # position t predicts response token t + 1
        self.rows, cols = predicts.nonzero(as_tuple=True)
        self.cols = cols
        self.targets = self.ids[:, 1:][self.rows, cols]
        self.n_rows = ids.shape[0]
        self.counts = torch.bincount(self.rows, minlength=self.n_rows)

    def gather(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden[self.rows, self.cols]

    def sums(self, token_logps: torch.Tensor, length_normalise: bool = False) -> torch.Tensor:
        """[2B] float32 per-row sums (or means) of per-token log-probs, accumulated in float64."""
        total = torch.zeros(self.n_rows, dtype=torch.float64, device=token_logps.device)
        total.index_add_(0, self.rows, token_logps.double())
        if length_normalise:
            total = total / self.counts.clamp(min=1)
        return total.float()


# ------------------------------------------------------------------------------------------------ log-probs and gaps

@torch.no_grad()
def sequence_logps(model, batch: dict, length_normalise: bool = False) -> torch.Tensor:
    """[2B] float32: each row's sum (or, length_normalise, mean) of response-token log-probs; no grad.

    The model runs as it is (call it in eval mode for deterministic values)."""
    return _logps(model, batch, length_normalise)


def _logps(model, batch: dict, length_normalise: bool = False, paired: bool = True) -> torch.Tensor:
    parts = _Parts(model)
    layout = _Layout(batch, parts.device, paired)
    hidden = parts.hidden(layout.ids, layout.attn)
    return layout.sums(parts.token_logps(layout.gather(hidden), layout.targets), length_normalise)


def _ref_logps(ref, batch: dict, length_normalise: bool) -> torch.Tensor:
    if ref is not None:
        return sequence_logps(ref, batch, length_normalise)
    if "ref_chosen_logps" not in batch or "ref_rejected_logps" not in batch:
        raise ValueError("ref is None and the batch carries no ref_chosen_logps / ref_rejected_logps")
    if length_normalise:
        raise ValueError("length_normalise needs the reference model: precomputed ref log-probs are sums")
    return torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]]).float()


@torch.no_grad()
def implicit_reward_margins(policy, ref, batch: dict, beta: float, length_normalise: bool = False) -> torch.Tensor:
    """[B] signed gaps h(chosen) - h(rejected), h = beta (log pi - log pi_ref) (module doc).

    ref=None takes the batch's precomputed ref_chosen_logps / ref_rejected_logps."""
    pi = sequence_logps(policy, batch, length_normalise).double()
    ref_lp = _ref_logps(ref, batch, length_normalise).to(pi.device).double()
    h = beta * (pi - ref_lp)
    chosen, rejected = h.chunk(2)
    return (chosen - rejected).float()


# ------------------------------------------------------------------------------------------------ MC dropout

def own_dropout_modules(model) -> list[torch.nn.Module]:
    """The modules of `model` that drop something when their `training` flag is set (module doc)."""
    found = []
    for m in _unwrap(model).modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd):
            if m.p > 0:
                found.append(m)
            continue
        rate = getattr(m, "attention_dropout", None)
        if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0:
            found.append(m)
    return found


@contextmanager
def _own_dropout_on(modules):
    saved = [m.training for m in modules]
    try:
        for m in modules:
            m.training = True  # this module only: its children keep their flags
        yield
    finally:
        for m, flag in zip(modules, saved):
            m.training = flag


def _draw_seed(generator) -> int:
    if generator is None:
        return int(torch.randint(0, 2 ** 62, (1,)))
    return int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device))


@contextmanager
def _seeded(seed: int, device: torch.device):
    """torch's RNG of the CPU (and of `device` when it is a GPU) seeded with `seed`, restored afterwards."""
    gpu = device.type == "cuda"
    index = device.index if device.index is not None else (torch.cuda.current_device() if gpu else None)
    with torch.random.fork_rng(devices=[index] if gpu else [], device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        if gpu:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


@torch.no_grad()
def dropout_logps(model, batch: dict, passes: int = 5, p: float = 0.05, generator=None) -> torch.Tensor:
    """[passes, 2B] float32: response log-prob sums under `passes` Monte Carlo dropout draws (module doc)."""
    return _dropout(model, batch, passes, p, generator)


def _dropout(model, batch: dict, passes: int, p: float, generator, paired: bool = True) -> torch.Tensor:
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes must be an integer >= 1, got {passes!r}")
    if not (0.0 <= p < 1.0):
        raise ValueError(f"p must be in [0, 1), got {p!r}")
    parts = _Parts(model)
    layout = _Layout(batch, parts.device, paired)
    own = own_dropout_modules(parts.model)
    seed = _draw_seed(generator)
    out = []
    with _seeded(seed, parts.device), _own_dropout_on(own):
        hidden = None if own else layout.gather(parts.hidden(layout.ids, layout.attn))
        for _ in range(passes):
            h = layout.gather(parts.hidden(layout.ids, layout.attn)) if own else hidden
            if p > 0:
                h = F.dropout(h, p=p, training=True)
            out.append(layout.sums(parts.token_logps(h, layout.targets)))
    return torch.stack(out)


def _check_samples(policy_samples: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(policy_samples)
    if s.dim() != 2 or s.shape[1] % 2:
        raise ValueError(f"policy_samples must be [passes, 2B] (dropout_logps' output), got {tuple(s.shape)}")
    if s.shape[0] < 2:
        raise ValueError(f"a variance over dropout passes needs passes >= 2, got {s.shape[0]}")
    return s.double()


def us_scores(policy_samples: torch.Tensor) -> torch.Tensor:
    """[B] float32: (Var[log pi(chosen)] + Var[log pi(rejected)]) / 2 over the passes (unbiased variance)."""
    var = _check_samples(policy_samples).var(dim=0, correction=1)
    chosen, rejected = var.chunk(2)
    return ((chosen + rejected) / 2).float()


def ae_scores(policy_samples: torch.Tensor, ref_logps: torch.Tensor, beta: float, gamma: float = 2.0) -> torch.Tensor:
    """[B] float32: AE-DPO's width U - L of the best implicit reward's confidence interval (module doc).

    ref_logps: [2B] log pi_ref of the same rows (sequence_logps(ref, batch)), chosen first."""
    s = _check_samples(policy_samples)
    ref = torch.as_tensor(ref_logps).to(s.device).double()
    if ref.shape != (s.shape[1],):
        raise ValueError(f"ref_logps must be [2B] = [{s.shape[1]}], got {tuple(ref.shape)}")
    mean, std = s.mean(dim=0), s.std(dim=0, correction=1)
    upper = beta * (mean + gamma * std - ref)
    lower = beta * (mean - gamma * std - ref)
    (uc, ur), (lc, lr) = upper.chunk(2), lower.chunk(2)
    return (torch.maximum(uc, ur) - torch.maximum(lc, lr)).float()


# ------------------------------------------------------------------------------------------------ choosing

def keep_count(n: int, ratio: float) -> int:
    """How many of n pairs a ratio in (0, 1] keeps: round(ratio * n), halves rounded up, at least 1 (for n >= 1).

    ratio is taken at its decimal value (the shortest repr of the float, as typed: 0.1 is exactly 1/10), so
    0.1 of 30 is 3, not the 4 a ceil of 3.0000000000000004 would give; 0.1 of 25 is 3 (2.5 rounded up);
    1/3 of 3B candidates is B. Exactly: min(n, max(1, floor(Fraction(repr(ratio)) * n + 1/2)))."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if isinstance(ratio, bool) or not (0.0 < float(ratio) <= 1.0):
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
    if n == 0:
        return 0
    k = math.floor(Fraction(repr(float(ratio))) * n + Fraction(1, 2))
    return min(n, max(1, k))


def select_top(scores: torch.Tensor, k: int, largest: bool = True) -> torch.Tensor:
    """Indices of the k largest (or smallest) scores, best first; equal scores in index order (a stable sort)."""
    s = torch.as_tensor(scores)
    if s.dim() != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {tuple(s.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or not (0 <= k <= s.shape[0]):
        raise ValueError(f"k must be an integer in [0, {s.shape[0]}], got {k!r}")
    if torch.isnan(s).any():
        raise ValueError("scores contain NaN")
    return torch.sort(s, descending=largest, stable=True).indices[:k]


def keeps_largest(method: str) -> bool:
    """reward_gap keeps the smallest gaps; us and ae the largest uncertainties."""
    return method != "reward_gap"


# ------------------------------------------------------------------------------------------------ whole datasets

def tokenize_pair(tokenizer, row: dict) -> dict:
    """{"prompt_ids", "chosen_ids", "rejected_ids"} of a preference row, tokenized as TRL's DPOTrainer does
    (trl 1.16 `_prepare_dataset`): plain text gets the EOS token appended to chosen and rejected, a
    conversational row goes through the chat template (the prompt with the generation prompt), and the
    completions start where the tokenized prompt and prompt + completion diverge."""
    from trl.data_utils import _tokenize, common_prefix_length, is_conversational

    example = {"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}
    if is_conversational(example):
        tools = row.get("tools")
        kw = {"tools": json.loads(tools) if isinstance(tools, str) else tools,
              **(row.get("chat_template_kwargs") or {})}
        prompt_ids = _tokenize(tokenizer, example["prompt"], add_generation_prompt=True, **kw)["input_ids"]
        chosen_ids = _tokenize(tokenizer, example["prompt"] + example["chosen"], **kw)["input_ids"]
        rejected_ids = _tokenize(tokenizer, example["prompt"] + example["rejected"], **kw)["input_ids"]
    else:
        eos = tokenizer.eos_token or ""
        chosen, rejected = (c if c.endswith(eos) else c + eos for c in (example["chosen"], example["rejected"]))
        prompt_ids = _tokenize(tokenizer, example["prompt"])["input_ids"]
        chosen_ids = _tokenize(tokenizer, example["prompt"] + chosen)["input_ids"]
        rejected_ids = _tokenize(tokenizer, example["prompt"] + rejected)["input_ids"]
    n = min(common_prefix_length(prompt_ids, chosen_ids), common_prefix_length(prompt_ids, rejected_ids))
    return {"prompt_ids": list(prompt_ids[:n]), "chosen_ids": list(chosen_ids[n:]),
            "rejected_ids": list(rejected_ids[n:])}


def pad_sequences(sequences: list[tuple[list[int], list[int]]], pad_token_id: int,
                  max_length: int | None = None) -> dict:
    """(prompt_ids, response_ids) rows right-padded into {input_ids, attention_mask, completion_mask}, each row cut
    to its first max_length tokens: what TRL's DataCollatorForPreference does to each of its rows."""
    rows = [(p + r, [0] * len(p) + [1] * len(r)) for p, r in sequences]
    if max_length is not None:
        rows = [(ids[:max_length], comp[:max_length]) for ids, comp in rows]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    completion = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, comp) in enumerate(rows):
        input_ids[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[i, :len(ids)] = 1
        completion[i, :len(ids)] = torch.tensor(comp, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion}


class _Batches:
    """A list of (sequence indices, padded batch) that pads each batch when it is read (a whole dataset's padded
    tensors are never held at once)."""

    def __init__(self, seqs, groups, pad_token_id, max_length):
        self.seqs, self.groups, self.pad, self.max_length = seqs, groups, pad_token_id, max_length

    def __len__(self):
        return len(self.groups)

    def __getitem__(self, i):
        g = self.groups[i]
        return g, pad_sequences([self.seqs[j] for j in g], self.pad, self.max_length)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def sequence_batches(examples: list[dict], pad_token_id: int, batch_size: int = 16, max_length: int | None = None,
                     bucket: bool = True):
    """The 2N sequences of N tokenized pairs (tokenize_pair's dicts; sequence j is prompt + chosen of pair j,
    sequence N + j its prompt + rejected) as a list-like of (sequence indices, padded batch) of 2 x batch_size
    sequences (each padded when read).

    bucket=True: sorted by length, longest first (ties by index), so a batch pads next to nothing (scores do not
    depend on the batching: nothing couples a row to another) and the largest batch comes first.
    bucket=False: pairs in data order, each batch in TRL's layout (its B chosen rows, then their B rejected rows):
    what a trainer's batch looks like."""
    n = len(examples)
    seqs = [(e["prompt_ids"], e[k]) for k in ("chosen_ids", "rejected_ids") for e in examples]
    if bucket:
        cut = (lambda x: x) if max_length is None else (lambda x: min(x, max_length))
        order = sorted(range(2 * n), key=lambda j: (-cut(len(seqs[j][0]) + len(seqs[j][1])), j))
        groups = [order[i:i + 2 * batch_size] for i in range(0, 2 * n, 2 * batch_size)]
    else:
        groups = [list(range(i, min(i + batch_size, n))) + list(range(n + i, n + min(i + batch_size, n)))
                  for i in range(0, n, batch_size)]
    return _Batches(seqs, groups, pad_token_id, max_length)


@torch.no_grad()
def score_batches(method: str, policy, ref, batches, n_pairs: int, *,
                  beta: float = 0.1, length_normalise: bool = False, passes: int = 5, p: float = 0.05,
                  gamma: float = 2.0, generator=None, progress: bool = False) -> torch.Tensor:
    """[n_pairs] float32 raw scores from sequence_batches' batches, in pair order:
        reward_gap  the signed gap (implicit_reward_margins)
        us          us_scores of the MC-dropout log-probs of policy (dropout_logps)
        ae          ae_scores of them and of sequence_logps(ref)
    The models run as they are (put them in eval mode); the dropout generator is drawn from batch after batch,
    so a seeded generator makes the whole run repeatable."""
    from tqdm.auto import tqdm

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    dropout = method != "reward_gap"
    pi = torch.empty((passes if dropout else 1, 2 * n_pairs), dtype=torch.float32)
    ref_lp = torch.empty(2 * n_pairs, dtype=torch.float32) if method != "us" else None
    covered = torch.zeros(2 * n_pairs, dtype=torch.bool)
    for idx, batch in tqdm(batches, desc=f"select/{method}", unit="batch", disable=None if progress else True):
        at = torch.as_tensor(idx)
        if dropout:
            pi[:, at] = _dropout(policy, batch, passes, p, generator, paired=False).cpu()
        else:
            pi[0, at] = _logps(policy, batch, length_normalise, paired=False).cpu()
        if ref_lp is not None:
            ref_lp[at] = _logps(ref, batch, length_normalise, paired=False).cpu()
        covered[at] = True
    if not covered.all():
        raise ValueError(f"the batches miss {int((~covered).sum())} of the {2 * n_pairs} sequences")
    if method == "us":
        return us_scores(pi)
    if method == "ae":
        return ae_scores(pi, ref_lp, beta, gamma)
    h = beta * (pi[0].double() - ref_lp.double())
    return (h[:n_pairs] - h[n_pairs:]).float()


def score_pairs(method: str, policy, ref, examples: list[dict], pad_token_id: int, *, batch_size: int = 16,
                max_length: int | None = None, bucket: bool = True, **kw) -> torch.Tensor:
    """[N] float32 raw scores of tokenized pairs (tokenize_pair's dicts), in their order: score_batches over
    sequence_batches (keyword arguments as there)."""
    batches = sequence_batches(examples, pad_token_id, batch_size, max_length, bucket)
    return score_batches(method, policy, ref, batches, len(examples), **kw)
