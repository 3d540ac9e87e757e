"""Evaluate a policy against the fixed reference policy on held-out prompts: reward, win rate, KL.

    python -m alignment.evaluate --policy runs/alignment/sft/toy                  # iteration 0: pi = pi_ref, KL 0
    python -m alignment.evaluate --policy PATH/TO/DPO/model --ref runs/alignment/sft/toy --name iter1
    python -m alignment.evaluate --policy toy:small --prompts toy:50 --export none
    python -m alignment.evaluate --policy runs/.../model --ref ORG/MODEL --prompts ORG/DATA --split test \\
        --reward runs/alignment/reward_model/NAME --device cuda --dtype bfloat16

What is measured, per prompt, and why:
    reward       r(x, y) of one sample y of the policy at a low temperature (--temperature, default 0.7;
                 0 means greedy), scored by --reward ("toy-oracle": the toy task's true reward; else a
                 reward-model folder or Hub name). The same for one sample of the reference (ref_reward).
                 Low temperature is how a trained policy is used, so that is the reward that matters.
    win          1 if r(policy sample) > r(reference sample), 0.5 on a tie, 0 otherwise. The two samples
                 come from different random streams, so they are independent draws: at iteration 0
                 (policy == reference) the win rate is about 0.5 without being exactly 0.5 by construction
                 (unless --temperature 0, where both are the same greedy response and every prompt ties).
    kl           Monte Carlo KL(pi || pi_ref) of the sequence distribution: --kl-samples responses per
                 prompt drawn from the policy itself (temperature 1, no top-p, whatever --temperature is),
                 then both models are run once on prompt + response (teacher forcing, padding masked).
                 Per response: the sum over its tokens (EOS included) of the exact next-token KL
                 KL(pi(.|prefix) || pi_ref(.|prefix)) over the whole vocabulary. Its expectation under pi is
                 the sequence KL, and it has lower variance than the plain log-ratio (Rao-Blackwellised).
    kl_logratio  the same responses' plain sum of log pi(y_t|prefix) - log pi_ref(y_t|prefix): the textbook
                 estimator, kept because it is what DPO's implicit reward measures.
                 Per prompt, kl and kl_logratio are means over its --kl-samples responses. A response cut at
                 --max-new-tokens counts its generated tokens: the KL is that of the distributions truncated
                 at --max-new-tokens, as both models are used. When policy and reference are the same
                 object, the reference is not run again and both estimates are exactly 0.
Summary: the mean of each over the prompts with a 95% confidence interval, reported as its half-width
<metric>_ci = t_{0.975, n-1} * sd / sqrt(n) (Student t, sd with n - 1 degrees of freedom). The per-prompt
values are the units of the interval. With fewer than 2 prompts the half-width is NaN (null in JSON):
one value says nothing about its spread. mean_response_tokens is the mean length (EOS included) of the
policy's low-temperature responses.

Prompts (--prompts): "toy:N" (the first N of ToyTask(0)'s --split, default heldout: prompts no training
stage saw), or a .json/.jsonl/.parquet file or Hub dataset in one of three layouts, named by --prompt-field or
found from the first row's fields (auto: the first that fits):
    prompt       {id, prompt} rows (prompt: text or chat messages); any other field name works the same way
    turns        MT-Bench's question.jsonl, {question_id, category, turns: [turn 1, turn 2]}: turn 1 is the
                 prompt; the question id is kept as written (an int stays an int)
    instruction  AlpacaEval's eval set (alpaca_eval.json: {instruction, output, generator, dataset}): the
                 instruction is the prompt (the reference's output is not read); dataset is kept
Rows of another layout are one error naming the file and the fields its rows have. Conversational prompts go
through the tokenizer's chat template (as in alignment.generate); so do a benchmark's questions (layouts turns
and instruction) when the tokenizer has one, as a user message each; a tokenizer without one (the toy's) reads
their plain text. Responses are decoded without special tokens; toy responses also get their whitespace
normalised (as alignment.sft's samples), other models' responses are kept as decoded, since their spacing and
newlines are part of the answer a judge reads.

Seeds: each batch draws from three torch.Generators seeded from --seed, the stream (policy, reference,
KL; and one per later turn of multi-turn questions) and the batch's first prompt id and size: the same
command twice gives the same files, and the
reference's responses depend only on the reference, the prompts and the sampling settings, so a caller
evaluating several policies (the pipeline, one per iteration) generates them once and passes them back in
(`evaluate_policy(..., ref_samples=...)`). Another --batch-size gives other (equally valid) draws.

Output: OUT/NAME/ (NAME default "eval"), written atomically (runlog.RunDir):
    run.json             config and the summary
    metrics.jsonl        one row {"stage": "evaluate", "seed", "step": 0, reward_mean, reward_ci, ref_reward_mean,
                         ref_reward_ci, win_rate, win_rate_ci, kl, kl_ci, kl_logratio, kl_logratio_ci,
                         num_prompts, mean_response_tokens}
    evaluations.jsonl    per prompt {"id", "prompt", "response", "reward", "ref_response", "ref_reward", "win",
                         "kl", "kl_logratio"} (of turn 1: every metric is)
The exports name the model MODEL = --generator-name, default NAME (the pipeline passes LABEL-seedS-iterT, e.g.
mix_p-seed0-iter2, so the models of one run folder stay apart); a blank name, or one with '/', is an error.
    alpaca_eval.json     (--export alpaca_eval) AlpacaEval 2's model-outputs file: a JSON list of
                         {"instruction", "output", "generator": MODEL} plus "dataset" where the eval set has it.
                         instruction = the eval set's instruction verbatim (AlpacaEval pairs outputs with its
                         reference outputs by it), else the prompt text or a conversation's last user message.
                         AlpacaEval skips a generator already in its leaderboard: each model needs its own MODEL.
    model_answer/MODEL.jsonl (--export mt_bench) FastChat's MT-Bench answer file, as FastChat lays it out
                         (data/mt_bench/model_answer/<model_id>.jsonl; copy it there), one line per question:
                         {"question_id", "answer_id", "model_id": MODEL, "choices": [{"index": 0, "turns": [...]}],
                         "tstamp"}, one answer per user turn of the question. Turn 1 is the evaluated response;
                         turn 2 (and on) is sampled like it (--temperature, --top-p, --max-new-tokens, the policy's
                         own stream per turn) from the conversation so far: user turn 1, the model's answer,
                         user turn 2, through the chat template, or with no template as the plain texts one
                         after another (turn 1's tokens, the answer's, a blank line and turn 2's). question_id is
                         MT-Bench's own; for other prompts the id, as an int when it is an integer string (those
                         are one turn: FastChat's multi-turn judge skips them). answer_id is a hash of (model_id,
                         question_id, turns) and tstamp is 0.0, so a rerun writes the same bytes.
--export takes a comma-separated list of alpaca_eval, mt_bench (default both) or "none".
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from alignment.core.toy import TASK_SEED
from alignment.generation.backend import batch_seed
from analysis.aggregate import t_interval as mean_ci  # the project's one t-interval: (mean, half-width)
from alignment.core.data import DATA_CONFIG_HELP, DATA_DIR_HELP
from runlog import ConfigError, RunDir, arg, atomic_write_json, check_name, check_number, check_out, check_seed, entry_point

EXPORTS = ("alpaca_eval", "mt_bench")
EVALUATIONS_FILE = "evaluations.jsonl"
ALPACA_EVAL_FILE = "alpaca_eval.json"
MT_BENCH_DIR = "model_answer"  # FastChat's data/mt_bench/model_answer/<model_id>.jsonl
MT_BENCH_TSTAMP = 0.0  # a fixed time stamp: FastChat only displays it, and reruns stay byte-identical
# the three random streams of a batch; distinct names give independent policy and reference draws
POLICY_STREAM, REF_STREAM, KL_STREAM = "eval-policy", "eval-ref", "eval-kl"
TURN_STREAM = "eval-policy-turn{}"  # turn 2, 3, ... of multi-turn questions (MT-Bench)
# --prompts layouts found from the rows' fields (--prompt-field auto), in this order: the field that holds the
# prompt, the fields a row must have, what it is
LAYOUTS = (("prompt", ("prompt",), "{id, prompt} rows"),
           ("turns", ("question_id", "turns"), "MT-Bench's question.jsonl {question_id, category, turns}"),
           ("instruction", ("instruction",), "AlpacaEval's eval set {instruction, dataset, ...}"))
# summary key, its CI key, the per-prompt field it averages
METRICS = (("reward_mean", "reward_ci", "reward"), ("ref_reward_mean", "ref_reward_ci", "ref_reward"),
           ("win_rate", "win_rate_ci", "win"), ("kl", "kl_ci", "kl"), ("kl_logratio", "kl_logratio_ci", "kl_logratio"))


@dataclass
class EvalConfig:
    """The sampling settings of an evaluation (the CLI's flags of the same names)."""
    temperature: float = 0.7     # reward / win-rate samples (0: greedy); KL samples always use 1
    top_p: float = 1.0           # reward / win-rate samples only
    max_new_tokens: int = 64
    kl_samples: int = 1          # policy responses per prompt for the KL estimates
    batch_size: int = 32         # prompts per batch; the KL draws of a batch are batch_size * kl_samples
                                 # responses, scored by forward passes over batch_size sequences at a time
    seed: int = 0


def check_config(cfg: EvalConfig) -> None:
    """ConfigError naming the flag of the first bad setting."""
    check_number("temperature", cfg.temperature, low=0)
    check_number("top-p", cfg.top_p, low=0, high=1, low_open=True)
    check_number("max-new-tokens", cfg.max_new_tokens, low=1, integer=True)
    check_number("kl-samples", cfg.kl_samples, low=1, integer=True)
    check_number("batch-size", cfg.batch_size, low=1, integer=True)
    check_seed("seed", cfg.seed)


@dataclass
class Args:
    policy: str | None = arg(None, "the policy pi: a model folder (or a run folder holding model/), a Hub name, or "
                             "toy:SIZE (a random init; tiny, small, base) (required)")
    ref: str | None = arg(None, "the reference policy pi_ref (default: the same as --policy)")
    prompts: str = arg("toy:200", "held-out prompts: toy:N, a .json/.jsonl/.parquet file or a Hub dataset of "
                       "{id, prompt} rows, AlpacaEval's eval set (instruction) or MT-Bench's question.jsonl (turns)")
    prompt_field: str = arg("auto", "field of the --prompts rows that holds the prompt: prompt, instruction "
                            "(AlpacaEval), turns (MT-Bench: a list of user turns), any other field of text or chat "
                            "messages, or auto (prompt, else turns with question_id, else instruction)")
    split: str = arg("heldout", "split of the toy task or of a Hub dataset")
    data_config: str | None = arg(None, DATA_CONFIG_HELP, metavar="NAME")
    data_dir: str | None = arg(None, DATA_DIR_HELP, metavar="DIR")
    reward: str = arg("toy-oracle", "reward: 'toy-oracle' (the toy task's true reward), a reward-model folder "
                      "(or an alignment.reward_model run folder) or a Hub name", metavar="SPEC")
    temperature: float = arg(EvalConfig.temperature, "temperature of the reward and win-rate samples (0: greedy); "
                             "the KL samples always use 1")
    top_p: float = arg(EvalConfig.top_p, "nucleus sampling of the reward and win-rate samples")
    max_new_tokens: int = arg(EvalConfig.max_new_tokens, "most tokens generated per response")
    kl_samples: int = arg(EvalConfig.kl_samples, "policy responses per prompt for the Monte Carlo KL")
    batch_size: int = arg(EvalConfig.batch_size, "prompts per batch")
    seed: int = arg(EvalConfig.seed, "random seed of the draws (toy:N prompts and toy:SIZE models do not depend on it)")
    device: str = arg("auto", "torch device of the models and the reward model: auto (cuda if available, else cpu), "
                      "cpu, cuda, cuda:N")
    dtype: str = arg("auto", "model dtype", choices=["auto", "float32", "bfloat16", "float16"])
    export: str = arg(",".join(EXPORTS), "files for external judges: a comma-separated list of "
                      f"{', '.join(EXPORTS)}, or none")
    generator_name: str | None = arg(None, "the model's name in the exports: AlpacaEval's generator, MT-Bench's "
                                     "model_id and answer file name (default: --name)")
    trust_remote_code: bool = arg(False, "let transformers run code shipped with a model")
    out: str = arg("runs/alignment/evaluate", "output folder; the run is written to OUT/NAME")
    name: str = arg("eval", "run name; an older run of that name is replaced")


def eval_config(args: Args) -> EvalConfig:
    return EvalConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EvalConfig)})


def parse_exports(spec: str) -> list[str]:
    """'alpaca_eval,mt_bench' -> ['alpaca_eval', 'mt_bench']; 'none' -> []."""
    names = [s.strip() for s in spec.split(",")]
    if names == ["none"]:
        return []
    bad = [n for n in names if n not in EXPORTS]
    if bad or not names:
        raise ConfigError(f"--export: unknown export {bad[0]!r}; give a comma-separated list of "
                          f"{', '.join(EXPORTS)}, or none")
    return list(dict.fromkeys(names))  # in the order given, without repeats


@dataclass
class Plan:
    cfg: EvalConfig
    policy: str
    ref: str
    exports: list
    generator: str
    name: str


def resolve(args: Args) -> Plan:
    """Check every flag before anything is loaded or written; ConfigError names the bad flag."""
    from alignment.core.models import model_source

    if not args.policy or not args.policy.strip():
        raise ConfigError("--policy: required; give a model folder, a run folder holding model/, a Hub name "
                          "or toy:SIZE")
    if args.ref is not None and not args.ref.strip():
        raise ConfigError("--ref: empty model name")
    cfg = eval_config(args)
    check_config(cfg)
    exports = parse_exports(args.export)
    if args.device != "auto":
        from runlog import resolve_device

        resolve_device(args.device)  # an unknown device, or cuda without a GPU, fails here
    check_out(args.out)
    check_name(args.name)
    generator = args.generator_name if args.generator_name is not None else args.name
    flag = "--generator-name" if args.generator_name is not None else "--name"
    if not generator.strip() or generator != generator.strip() or "/" in generator or generator.startswith("."):
        # it names MT-Bench's answer file <model_id>.jsonl and AlpacaEval's leaderboard row
        raise ConfigError(f"{flag}: {generator!r} cannot name the model in the exports: give a non-blank name without "
                          f"'/', surrounding spaces or a leading '.'")
    if not args.prompt_field.strip():
        raise ConfigError("--prompt-field: empty field name; give a field of the --prompts rows, or auto")
    policy = model_source(args.policy)
    ref = model_source(args.ref) if args.ref is not None else policy
    return Plan(cfg, policy, ref, exports, generator, args.name)


# ------------------------------------------------------------------------------------------------ statistics

def summarise(rows: list[dict], response_tokens: list[int]) -> dict:
    """The summary metrics of per-prompt rows (and the policy responses' token counts)."""
    out = {}
    for mean_key, ci_key, field in METRICS:
        out[mean_key], out[ci_key] = mean_ci([r[field] for r in rows])
    out["num_prompts"] = len(rows)
    out["mean_response_tokens"] = math.fsum(response_tokens) / len(response_tokens) if response_tokens else math.nan
    return out


def win(reward: float, ref_reward: float) -> float:
    return 1.0 if reward > ref_reward else 0.5 if reward == ref_reward else 0.0


# ------------------------------------------------------------------------------------------------ sampling and KL

def _device(model):
    return next(model.parameters()).device


def _eos(model, tokenizer):
    eos = getattr(model.generation_config, "eos_token_id", None)
    return eos if eos is not None else tokenizer.eos_token_id


def draw(model, tokenizer, prompt_ids: list[list[int]], cfg: EvalConfig, seed: int, temperature: float,
         top_p: float) -> list[list[int]]:
    """One response per prompt row (token ids, EOS included, no padding), from `model` alone."""
    import torch

    from alignment.generation.decoding import left_pad, sample

    device = _device(model)
    input_ids, mask = left_pad(prompt_ids, tokenizer.pad_token_id, device)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = sample([model], [1.0], input_ids, mask, max_new_tokens=cfg.max_new_tokens,
                 eos_token_id=_eos(model, tokenizer), pad_token_id=tokenizer.pad_token_id,
                 temperature=temperature, top_p=top_p, generator=gen)
    return [out.row(i) for i in range(len(prompt_ids))]


def _is_toy_tokenizer(tokenizer) -> bool:
    from alignment.core import toy

    return tokenizer.get_vocab() == {w: i for i, w in enumerate(toy.VOCAB)}


def decode(tokenizer, tokens: list[int], normalise_whitespace: bool) -> str:
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    return " ".join(text.split()) if normalise_whitespace else text


def _next_token_logprobs(model, input_ids, attention_mask, keep: int):
    """float32 log-softmax of the logits at the last `keep` positions but one: the predictions of the last
    keep - 1 tokens of each (left-padded) row. [B, keep - 1, V]"""
    import inspect

    import torch

    from alignment.generation.decoding import position_ids_from_mask

    params = inspect.signature(model.forward).parameters
    kw = {"attention_mask": attention_mask, "use_cache": False}
    if "position_ids" in params:  # positions count real tokens only, as when the response was sampled
        kw["position_ids"] = position_ids_from_mask(attention_mask)
    if "logits_to_keep" in params:  # the prompt's logits are not needed: [B, T, V] can be large
        kw["logits_to_keep"] = keep
    logits = model(input_ids=input_ids, **kw).logits[:, -keep:-1]
    return torch.log_softmax(logits.float(), dim=-1)


def sequence_kl(policy, ref, prompt_ids: list[list[int]], response_ids: list[list[int]], pad_token_id: int,
                batch_size: int = 32) -> tuple[list[float], list[float]]:
    """Per (prompt, response): (sum over response tokens of KL(pi(.|prefix) || pi_ref(.|prefix)),
    sum over response tokens of log pi - log pi_ref), from one forward pass of each model per sequence.

    Prompt + response rows are left-padded together, so every response ends at the last column and the
    logits of the last max-response-length + 1 positions are all that is computed. `ref is policy`
    skips the second pass: both sums are then exactly 0.
    """
    import torch

    from alignment.generation.decoding import left_pad

    device = _device(policy)
    kl, logratio = [], []
    for start in range(0, len(prompt_ids), batch_size):
        prompts = prompt_ids[start:start + batch_size]
        responses = response_ids[start:start + batch_size]
        ids, mask = left_pad([p + r for p, r in zip(prompts, responses, strict=True)], pad_token_id, device)
        lengths = torch.tensor([len(r) for r in responses], device=device)
        n_pred = int(lengths.max())  # predicted columns: the last n_pred tokens of each row
        with torch.no_grad():
            lp_pi = _next_token_logprobs(policy, ids, mask, n_pred + 1)
            lp_ref = lp_pi if ref is policy else _next_token_logprobs(ref, ids, mask, n_pred + 1)
        targets = ids[:, ids.shape[1] - n_pred:]
        # column j predicts a response token iff it lies in the row's last `length` columns
        in_response = torch.arange(n_pred, device=device)[None, :] >= (n_pred - lengths)[:, None]
        diff = lp_pi - lp_ref
        p = lp_pi.exp()
        token_kl = torch.where(p > 0, p * diff, torch.zeros_like(diff)).sum(-1)  # 0 log 0 = 0
        token_lr = diff.gather(-1, targets[..., None]).squeeze(-1)
        # where, not a product with the mask: logits at padded positions may be NaN
        zero = torch.zeros_like(token_kl)
        kl += torch.where(in_response, token_kl, zero).double().sum(-1).tolist()
        logratio += torch.where(in_response, token_lr, zero).double().sum(-1).tolist()
    return kl, logratio


def score(reward, prompts: list, responses: list[str], ids: list[str], field: str = "--reward") -> list[float]:
    values = [float(s) for s in reward.score(prompts, responses)]
    for rid, s in zip(ids, values, strict=True):
        if not math.isfinite(s):
            raise ConfigError(f"{field}: {getattr(reward, 'name', 'reward')} gave a non-finite score ({s}) to the "
                              f"response to prompt id {rid!r}")
    return values


def _check_ref_samples(ref_samples: list[dict], prompts: list[dict]) -> None:
    if [s["id"] for s in ref_samples] != [p["id"] for p in prompts]:
        raise ValueError("ref_samples: not the reference samples of these prompts (ids differ); pass the "
                         "ref_samples an evaluate_policy call on the same prompts returned")


def evaluate_policy(policy, ref, tokenizer, prompts: list[dict], reward, cfg: EvalConfig,
                    ref_samples: list[dict] | None = None, progress: bool = True) -> tuple[dict, list[dict], list[dict]]:
    """Evaluate `policy` against `ref` on `prompts` (rows {"id", "prompt"}); see the module docstring.

    Returns (summary: the metrics row without stage/seed/step, per-prompt rows of evaluations.jsonl,
    ref_samples: per prompt {"id", "response", "reward", "num_tokens"} of the reference). A caller
    evaluating several policies against the same reference, with the same prompts, cfg and seed, passes
    ref_samples back in to skip regenerating and rescoring them. `policy` and `ref` may be one object.
    Models are used on the device they are on; the tokenizer must pad (pad_token_id set).
    """
    from tqdm.auto import tqdm

    from alignment.generation.backend import encode_prompts

    check_config(cfg)
    if not prompts:
        raise ValueError("prompts: nothing to evaluate")
    if ref_samples is not None:
        _check_ref_samples(ref_samples, prompts)
    prompt_ids = encode_prompts(tokenizer, prompts)
    normalise = _is_toy_tokenizer(tokenizer)
    new_ref_samples = []
    rows, response_tokens = [], []
    batches = [list(range(i, min(i + cfg.batch_size, len(prompts)))) for i in range(0, len(prompts), cfg.batch_size)]
    with tqdm(total=len(batches), desc="evaluate", unit="batch", disable=None if progress else True) as bar:
        for idx in batches:
            batch, ids = [prompts[i] for i in idx], [prompt_ids[i] for i in idx]
            texts, rids = [r["prompt"] for r in batch], [r["id"] for r in batch]

            def seed(stream):
                return batch_seed(cfg.seed, stream, rids[0], len(batch))

            tokens = draw(policy, tokenizer, ids, cfg, seed(POLICY_STREAM), cfg.temperature, cfg.top_p)
            responses = [decode(tokenizer, t, normalise) for t in tokens]
            rewards = score(reward, texts, responses, rids)
            response_tokens += [len(t) for t in tokens]

            if ref_samples is None:
                ref_tokens = draw(ref, tokenizer, ids, cfg, seed(REF_STREAM), cfg.temperature, cfg.top_p)
                ref_responses = [decode(tokenizer, t, normalise) for t in ref_tokens]
                ref_rewards = score(reward, texts, ref_responses, rids)
                batch_ref = [{"id": rid, "response": y, "reward": r, "num_tokens": len(t)}
                             for rid, y, r, t in zip(rids, ref_responses, ref_rewards, ref_tokens)]
                new_ref_samples += batch_ref
            else:
                batch_ref = [ref_samples[i] for i in idx]

            # the KL is that of the policy's own distribution: temperature 1, no top-p, whatever cfg says
            k = cfg.kl_samples
            kl_prompts = [p for p in ids for _ in range(k)]
            kl_tokens = draw(policy, tokenizer, kl_prompts, cfg, seed(KL_STREAM), 1.0, 1.0)
            kl, logratio = sequence_kl(policy, ref, kl_prompts, kl_tokens, tokenizer.pad_token_id, cfg.batch_size)

            for j, row in enumerate(batch):
                mine = slice(j * k, (j + 1) * k)
                rows.append({"id": row["id"], "prompt": row["prompt"], "response": responses[j], "reward": rewards[j],
                             "ref_response": batch_ref[j]["response"], "ref_reward": batch_ref[j]["reward"],
                             "win": win(rewards[j], batch_ref[j]["reward"]),
                             "kl": math.fsum(kl[mine]) / k, "kl_logratio": math.fsum(logratio[mine]) / k})
            bar.update(1)
    return summarise(rows, response_tokens), rows, (ref_samples if ref_samples is not None else new_ref_samples)


# ------------------------------------------------------------------------------------------------ prompts

def _layout_of(row: dict, source: str) -> str:
    """The prompt field of a file's layout, from its first row's fields (--prompt-field auto)."""
    for field, needs, _ in LAYOUTS:
        if all(row.get(k) is not None for k in needs):
            return field
    known = "; ".join(f"{what} (field {field!r})" for field, _, what in LAYOUTS)
    raise ConfigError(f"--prompts: {source} has rows with fields {', '.join(map(repr, sorted(row))) or 'none'}, not a "
                      f"layout evaluate knows: {known}; name the prompt's field with --prompt-field")


def _check_turns(turns, where: str) -> list[str]:
    if not (isinstance(turns, list) and turns and all(isinstance(t, str) and t.strip() for t in turns)):
        raise ConfigError(f"{where}: field 'turns' must be a non-empty list of non-empty strings (the user turns)")
    return turns


def load_eval_prompts(spec: str, split: str, prompt_field: str = "auto", config: str | None = None,
                      data_dir: str | None = None) -> list[dict]:
    """Prompt rows {"id", "prompt"} of --prompts. A benchmark's rows also keep what its judge needs back:
    "turns" (its user turns: MT-Bench's two, AlpacaEval's one instruction; turn 1 is the prompt), "question_id"
    (MT-Bench's, as written there: an int stays an int) and "dataset" (AlpacaEval's column)."""
    from alignment.core.data import load_prompts, load_rows_located, validate_prompts

    if spec == "toy" or spec.startswith("toy:"):
        if prompt_field not in ("auto", "prompt"):
            raise ConfigError(f"--prompt-field: toy prompts have field 'prompt', not {prompt_field!r}")
        return load_prompts(spec, "--prompts", split=split, seed=TASK_SEED, config=config, data_dir=data_dir)
    rows, source, lines = load_rows_located(
        spec, "--prompts", split, "a .json, .jsonl or .parquet file, 'toy[:N]' or a Hub dataset name", config=config,
        data_dir=data_dir)
    if not rows:
        raise ConfigError(f"--prompts: {source} has no rows")
    field = _layout_of(rows[0], source) if prompt_field == "auto" else prompt_field
    out = []
    for i, row in enumerate(rows):
        where = f"--prompts: {source} row {i}" + (f" (line {lines[i]})" if lines else "")
        if row.get(field) is None:
            raise ConfigError(f"{where}: no field {field!r} (--prompt-field {prompt_field}); its fields: "
                              f"{', '.join(map(repr, sorted(row))) or 'none'}")
        if field == "prompt":
            out.append(row)
        elif field == "turns":
            turns = _check_turns(row["turns"], where)
            qid = row.get("question_id", row.get("id"))
            out.append({"id": qid, "prompt": turns[0], "turns": turns}
                       | ({"question_id": qid} if qid is not None else {}))
        elif field == "instruction":
            if not isinstance(row["instruction"], str):
                raise ConfigError(f"{where}: field 'instruction' must be a string, got {type(row['instruction']).__name__}")
            out.append({"id": row.get("id"), "prompt": row["instruction"], "turns": [row["instruction"]]}
                       | ({"dataset": row["dataset"]} if row.get("dataset") is not None else {}))
        else:
            out.append({"id": row.get("id"), "prompt": row[field]})
    return validate_prompts(out, source, "--prompts", lines)


def chat_prompts(prompts: list[dict], tokenizer) -> list[dict]:
    """A benchmark's questions (rows with "turns") are chat: with a chat template, turn 1 becomes the user message
    of a conversation (so it goes through the template); a tokenizer without one (the toy's) reads the plain text."""
    if not getattr(tokenizer, "chat_template", None):
        return prompts
    return [dict(p, prompt=[{"role": "user", "content": p["turns"][0]}]) if "turns" in p else p for p in prompts]


def conversation_ids(tokenizer, prompt: dict, first_ids: list[int], answers: list[str]) -> list[int]:
    """Token ids of the prompt of turn len(answers) + 1 of a multi-turn question: its user turns so far with the
    model's own answers in between (user t1, assistant answers[0], user t2, ...). With a chat template that
    conversation goes through it, as conversational prompts do; without one (the toy tokenizer) turn 1's ids
    (`first_ids`) are followed by each answer's and each next turn's text, tokenised without special tokens and
    separated by a blank line (the plain-text turn boundary a base model reads)."""
    j = len(answers)
    turns = prompt["turns"]
    if getattr(tokenizer, "chat_template", None):
        messages = []
        for user, answer in zip(turns[:j], answers, strict=True):
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        text = tokenizer.apply_chat_template(messages + [{"role": "user", "content": turns[j]}],
                                             add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = list(first_ids)
    for user, answer in zip(turns[1:j + 1], answers, strict=True):
        ids += tokenizer(answer, add_special_tokens=False)["input_ids"]
        ids += tokenizer("\n\n" + user, add_special_tokens=False)["input_ids"]
    return ids


def check_turn_lengths(model, tokenizer, prompts: list[dict], prompt_ids: list[list[int]], max_new_tokens: int):
    """Before any generation: the last turn of every multi-turn question fits the model's positions, counting
    max_new_tokens for each of its answers (the conversation with empty answers, plus that room)."""
    limit = getattr(model.config, "max_position_embeddings", None)
    for p, ids in zip(prompts, prompt_ids):
        n = len(p.get("turns", ()))
        if limit is None or n < 2:
            continue
        need = len(conversation_ids(tokenizer, p, ids, [""] * (n - 1))) + n * max_new_tokens
        if need > limit:
            raise ConfigError(f"--max-new-tokens: question {p['id']!r} has {n} turns; with {max_new_tokens} new "
                              f"tokens per answer its last turn needs up to {need} positions, more than --policy's "
                              f"max_position_embeddings {limit} (or give --export alpaca_eval)")


def answer_turns(policy, tokenizer, prompts: list[dict], prompt_ids: list[list[int]], rows: list[dict],
                 cfg: EvalConfig) -> list[list[str]]:
    """Per prompt, the policy's answers to each of its user turns. Turn 1 is the evaluation's response
    (rows[i]["response"]); each later turn (MT-Bench's turn 2) is sampled as turn 1 was (--temperature, --top-p,
    --max-new-tokens) from the conversation so far, the model's own answers included (conversation_ids), in
    batches of --batch-size questions, each seeded from --seed, the turn and its first id: reproducible."""
    answers = [[r["response"]] for r in rows]
    normalise = _is_toy_tokenizer(tokenizer)
    turn = 1
    while todo := [i for i, p in enumerate(prompts) if len(p.get("turns", ())) > turn]:
        for start in range(0, len(todo), cfg.batch_size):
            idx = todo[start:start + cfg.batch_size]
            ids = [conversation_ids(tokenizer, prompts[i], prompt_ids[i], answers[i]) for i in idx]
            seed = batch_seed(cfg.seed, TURN_STREAM.format(turn + 1), prompts[idx[0]]["id"], len(idx))
            for i, tokens in zip(idx, draw(policy, tokenizer, ids, cfg, seed, cfg.temperature, cfg.top_p)):
                answers[i].append(decode(tokenizer, tokens, normalise))
        turn += 1
    return answers


# ------------------------------------------------------------------------------------------------ exports

def instruction_text(prompt) -> str:
    """The instruction a judge sees: the prompt text, or the last user message of a conversation."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else prompt[-1]["content"]


def question_id(rid: str):
    """MT-Bench question ids are integers: an id that is an integer string becomes that int."""
    return int(rid) if re.fullmatch(r"-?(0|[1-9][0-9]*)", rid) else rid


def answer_id(model_id: str, qid, turns: list[str]) -> str:
    """A deterministic stand-in for FastChat's random shortuuid (22 characters)."""
    return hashlib.sha256(json.dumps([model_id, qid, turns]).encode()).hexdigest()[:22]


def alpaca_eval_rows(rows: list[dict], generator: str, prompts: list[dict] | None = None) -> list[dict]:
    """AlpacaEval's model outputs. AlpacaEval pairs them with its reference outputs by the instruction text, so a
    question of its eval set keeps its instruction verbatim (and its dataset)."""
    prompts = prompts if prompts is not None else [{}] * len(rows)
    out = []
    for r, p in zip(rows, prompts, strict=True):
        instruction = p["turns"][0] if "turns" in p else instruction_text(r["prompt"])
        out.append({"instruction": instruction, "output": r["response"], "generator": generator}
                   | ({"dataset": p["dataset"]} if "dataset" in p else {}))
    return out


def mt_bench_rows(rows: list[dict], model_id: str, prompts: list[dict] | None = None,
                  answers: list[list[str]] | None = None) -> list[dict]:
    """FastChat's answer rows: one per question, its answers to every user turn (`answers`, default the one
    response of each row). MT-Bench's own question ids are kept as they were; other ids that are integer strings
    become ints."""
    prompts = prompts if prompts is not None else [{}] * len(rows)
    answers = answers if answers is not None else [[r["response"]] for r in rows]
    out = []
    for r, p, turns in zip(rows, prompts, answers, strict=True):
        qid = p["question_id"] if "question_id" in p else question_id(str(r["id"]))
        out.append({"question_id": qid, "answer_id": answer_id(model_id, qid, turns), "model_id": model_id,
                    "choices": [{"index": 0, "turns": list(turns)}], "tstamp": MT_BENCH_TSTAMP})
    return out


def mt_bench_file(generator: str) -> str:
    """The answer file's path in the run folder: FastChat reads the model_id from the file name."""
    return f"{MT_BENCH_DIR}/{generator}.jsonl"


def write_outputs(run, summary: dict, rows: list[dict], export: list[str], generator: str,
                  prompts: list[dict] | None = None, answers: list[list[str]] | None = None) -> None:
    """evaluations.jsonl and the chosen exports (names from EXPORTS) into an open RunDir. `summary` is the
    one evaluate_policy returned with `rows`; a mismatch (rows of another evaluation) is an error. `prompts` (the
    evaluated rows, for the benchmark fields they keep) and `answers` (answer_turns) are optional."""
    from alignment.core.data import write_jsonl

    if summary.get("num_prompts") != len(rows):
        raise ValueError(f"write_outputs: the summary counts {summary.get('num_prompts')} prompts but {len(rows)} "
                         f"rows were given")
    unknown = [e for e in export if e not in EXPORTS]
    if unknown:
        raise ValueError(f"export: unknown {unknown[0]!r}; known: {', '.join(EXPORTS)}")
    write_jsonl(run.path(EVALUATIONS_FILE), rows)
    if "alpaca_eval" in export:
        atomic_write_json(run.path(ALPACA_EVAL_FILE), alpaca_eval_rows(rows, generator, prompts))
    if "mt_bench" in export:
        run.path(MT_BENCH_DIR).mkdir(exist_ok=True)
        write_jsonl(run.path(mt_bench_file(generator)), mt_bench_rows(rows, generator, prompts, answers))


# ------------------------------------------------------------------------------------------------ the run

def _check_reward_prompts(reward, prompts: list[dict]) -> None:
    """The toy oracle scores toy prompts only: say so before any generation."""
    if getattr(reward, "name", None) != "toy-oracle":
        return
    from alignment.core.toy import parse_prompt

    for i, row in enumerate(prompts):
        try:
            parse_prompt(row["prompt"] if isinstance(row["prompt"], str) else "")
        except ValueError:
            raise ConfigError(f"--reward: 'toy-oracle' scores toy prompts only; --prompts row {i} (id {row['id']!r}) "
                              f"has prompt {row['prompt']!r}; give a reward model") from None


def format_summary(s: dict) -> str:
    def f(mean, ci):
        return f"{mean:.3f}" + ("" if math.isnan(ci) else f" +- {ci:.3f}")

    return (f"{s['num_prompts']} prompts: reward {f(s['reward_mean'], s['reward_ci'])} "
            f"(reference {f(s['ref_reward_mean'], s['ref_reward_ci'])})  "
            f"win rate {f(s['win_rate'], s['win_rate_ci'])}  KL {f(s['kl'], s['kl_ci'])} "
            f"(log-ratio {f(s['kl_logratio'], s['kl_logratio_ci'])})  "
            f"mean response tokens {s['mean_response_tokens']:.1f}")


def run(args: Args) -> Path | None:
    """The evaluate stage on parsed arguments (what `python -m alignment.evaluate` runs; the pipeline calls it too)."""
    plan = resolve(args)

    from alignment import generate
    from alignment.generation.backend import check_generation_memory, check_lengths, encode_prompts, load_models
    from runlog import resolve_device
    from alignment.core.rewards import load_reward

    device = resolve_device(args.device)
    prompts = load_eval_prompts(args.prompts, args.split, args.prompt_field, args.data_config, args.data_dir)
    # generate's loader: one object when --policy and --ref name the same model (exact-zero KL then),
    # tokenizers and output vocabularies of the two checked to agree
    loading = generate.Plan(sampler="evaluate", components=[], policy=plan.policy, ref=plan.ref, candidates=None,
                            batch_size=plan.cfg.batch_size, name=plan.name)
    tokenizer, models = load_models(loading, args, device)
    prompts = chat_prompts(prompts, tokenizer)
    prompt_ids = encode_prompts(tokenizer, prompts)
    check_lengths(models, prompt_ids, plan.cfg.max_new_tokens, prompts)
    cfg = plan.cfg
    # the policy's and pi_ref's responses and the KL draws are kept; a batch draws batch_size * kl_samples at once
    check_generation_memory(models, len(prompts), cfg.kl_samples + 2, min(cfg.batch_size, len(prompts)),
                            max(map(len, prompt_ids), default=0), cfg.max_new_tokens,
                            "--kl-samples, --max-new-tokens, --batch-size")
    multi_turn = "mt_bench" in plan.exports and any(len(p.get("turns", ())) > 1 for p in prompts)
    if multi_turn:
        check_turn_lengths(models["policy"], tokenizer, prompts, prompt_ids, plan.cfg.max_new_tokens)
    reward = load_reward(args.reward, device=device, batch_size=plan.cfg.batch_size)
    _check_reward_prompts(reward, prompts)

    summary, rows, _ = evaluate_policy(models["policy"], models["ref"], tokenizer, prompts, reward, plan.cfg)
    # MT-Bench's later turns: only its export reads them (the metrics are of turn 1)
    answers = answer_turns(models["policy"], tokenizer, prompts, prompt_ids, rows, plan.cfg) if multi_turn else None

    config = dataclasses.asdict(args) | {"resolved": {"policy": plan.policy, "ref": plan.ref, "name": plan.name,
                                                         "device": str(device), "export": plan.exports,
                                                         "generator": plan.generator}}
    with RunDir(args.out, plan.name, config, [plan.cfg.seed]) as run:
        write_outputs(run, summary, rows, plan.exports, plan.generator, prompts, answers)
        run.log({"stage": "evaluate", "seed": plan.cfg.seed, "step": 0, **summary})
        path = run.finish(summary=summary)
    print(format_summary(summary))
    return path


main = entry_point(Args, run, __doc__)

if __name__ == "__main__":
    main()
