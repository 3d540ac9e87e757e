"""Generate K responses per prompt with a generation sampler: offline, on_policy, gshf, mix_p, mix_p_seq, borda.

    python -m alignment.generate --sampler mix_p                       # SFT'd toy model, toy:64 train prompts
    python -m alignment.generate --policy toy:small --sampler gshf     # a random-init toy model, no SFT needed
    accelerate launch -m alignment.generate --policy ORG/MODEL --prompts ORG/DATA --sampler mix_p --device auto
    python -m alignment.generate --backend vllm --policy runs/.../model --ref ORG/MODEL --sampler gshf

Samplers (their names and aliases: `python -m bandit.vocabulary`; their code: alignment/generation/samplers.py).
Each is a product-mixture spec of bandit/spec.py (`sampler_spec`): its tilts are the components, whose labels the
responses of each row carry:
    offline    K responses from pi_ref                                    "ref"
    on_policy  K responses from pi (alias online)                         "policy"
    gshf       K/2 from pi_ref, K/2 from pi                               "ref", "policy"
    mix_p      per-token fused logits, K/2 from (1+a) l_pi - a l_ref      "mix+"
               and K/2 from (1-a) l_pi + a l_ref (a = --alpha)            "mix-"
    mix_p_seq  sequence-level Mix-P: M candidates from pi, K/2 resampled  "mixseq+"
               with weights (pi/pi_ref)^{+a}, K/2 with (pi/pi_ref)^{-a}   "mixseq-"
    borda      AE-Borda: K/2 from pi and K/2 from pi_ref per candidate    "policy", "ref"
               prompt (scores: alignment/selection/borda.py); keeps the --borda-keep fraction of the prompts whose best Borda
               score is most uncertain (MC dropout), each with one pair: its best optimistic policy response
               and a random reference response
--mixp-online-pair adds one on-policy pair (2 more responses from pi, "policy") to each mix_p / mix_p_seq
row; the annotation's pair rule later picks the fused pair or the on-policy pair. Aliases (online, mixp,
mixp_seq, ...) are accepted and the canonical name is what the run records.

--temperature T samples every component at temperature T: the spec's tilts with their pi and pi_ref
coefficients divided by T (PairSpec.at_temperature), exactly for one-token responses.

mix_p fuses two models token by token, which only the Hugging Face backend (--backend hf, CPU or GPU)
can do: each model keeps its own KV cache and is fed one new token per step (alignment/generation/decoding.py).
vLLM (--backend vllm, GPU nodes, `pip install -r requirements_vllm.txt`) runs offline, on_policy, gshf and
mix_p_seq; asking it for mix_p is an error, never a silent substitute.

mix_p_seq details: the M candidates (--num-candidates, default 4K) are drawn from pi with the sampling
settings; log pi(y|x) and log pi_ref(y|x) are the models' own (temperature 1) sequence log-probs, EOS
included. Each fused component keeps K/2 distinct candidates, drawn without replacement with probability
proportional to (pi/pi_ref)^{+-a} (Gumbel-top-k), so the kept responses follow q(y) (pi/pi_ref)^{+-a},
q the sampling distribution: exactly pi^{1+-a} pi_ref^{-+a} at --temperature 1 --top-p 1, as M grows.

Output: OUT/NAME/generations.jsonl (NAME defaults to the sampler), one row per prompt:
    {"id", "prompt", "responses": [str], "components": [str], "num_tokens": [int]}
responses grouped by component in the order above; num_tokens counts the generated tokens, EOS included
(a response without EOS was cut at --max-new-tokens). Also run.json (config, seeds, versions, summary)
and metrics.jsonl (one row per batch and process: tokens, seconds, tokens/s).

Prompts (--prompts): "toy:N" (the first N prompts of ToyTask(0)'s --split, default train: these are DPO
training prompts; evaluate on another split such as "heldout"), a local .json/.jsonl/.parquet file of {"id",
"prompt"} rows, or a Hub dataset name (its --split). Plain-text prompts are tokenized as they are (with
the tokenizer's special tokens); conversational ones (lists of {"role", "content"}) go through the
tokenizer's chat template with add_generation_prompt=True.

Batches and seeds: --batch-size prompts per batch (each forward pass has batch-size x responses-per-
component rows). Each (batch, component) draws from its own torch.Generator seeded from --seed, the
component and the batch's first prompt id, so a component's draws never depend on the other model's
draws: the same command twice gives the same file; another --batch-size or process count gives other
(equally valid) draws. Under `accelerate launch` the prompts are split between the processes, each uses
its own device (--device auto), and the main process gathers and writes the rows (on a CPU machine
`torchrun --nproc_per_node 2 -m alignment.generate ...` gives two gloo processes).

--backend vllm runs as one command (not under accelerate launch) and places its engines itself
(alignment/generation/vllm.py): each engine spans --tensor-parallel-size GPUs, each model has
--data-parallel-size engines (default: the visible GPUs // (TP x models)), each in its own worker process on its
own GPUs, and the prompts of every call are split between them (each request keeps its own seed, so the rows are
those of one engine). gshf and mix_p_seq with two models put policy and ref on different GPUs when there are
enough, else both share the GPUs with half of --vllm-gpu-memory each; the run prints which.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from alignment.core.models import model_source
from alignment.core.toy import TASK_SEED
from alignment.generation.samplers import (PAIRED, SAMPLERS, VLLM_SAMPLERS, component_models, component_plan,
                                           generate_batch, sampler_spec)
from bandit.vocabulary import PAIR_SAMPLER, canonical
from alignment.core.data import DATA_CONFIG_HELP, DATA_DIR_HELP
from runlog import ConfigError, RunDir, arg, check_name, check_number, check_out, check_seed, entry_point, resolve_device

DEFAULT_POLICY = "runs/alignment/sft/toy/model"



@dataclass
class Args:
    policy: str | None = arg(None, "the policy pi: a model folder (or a run folder holding model/), a Hub name, "
                             "or toy:SIZE (a random init; "
                             f"tiny, small, base) (default: {DEFAULT_POLICY}, written by `python -m alignment.sft`)")
    ref: str | None = arg(None, "the reference model pi_ref (default: the same as --policy)")
    prompts: str = arg("toy:64", "prompts: toy:N, a .json/.jsonl/.parquet file of {id, prompt} rows, or a Hub dataset")
    split: str = arg("train", "split of the toy task or of a Hub dataset")
    data_config: str | None = arg(None, DATA_CONFIG_HELP, metavar="NAME")
    data_dir: str | None = arg(None, DATA_DIR_HELP, metavar="DIR")
    sampler: str = arg("on_policy", "generation sampler: " + ", ".join(SAMPLERS) + " (or an alias: online, mixp, "
                       "mixp_seq, ...; python -m bandit.vocabulary)")
    num_responses: int = arg(4, "responses per prompt K (even for gshf, mix_p, mix_p_seq: K/2 per component)")
    alpha: float = arg(0.5, "Mix-P strength a: fused logits (1+a) l_pi - a l_ref and (1-a) l_pi + a l_ref")
    mixp_online_pair: bool = arg(False, "mix_p / mix_p_seq: add an on-policy pair (2 responses from pi) to each row")
    num_candidates: int | None = arg(None, "mix_p_seq: candidates M drawn from pi per prompt (default: 4 K)")
    borda_keep: float = arg(0.5, "borda: fraction of the candidate prompts kept (largest Borda-score uncertainty)")
    borda_beta: float = arg(0.1, "borda: beta of the implicit reward beta log(pi / pi_ref)")
    borda_gamma: float = arg(2.0, "borda: optimism, in standard deviations over the dropout passes")
    borda_passes: int = arg(5, "borda: Monte Carlo dropout passes of pi")
    borda_dropout: float = arg(0.05, "borda: dropout on pi's final hidden state (plus the model's own dropout)")
    temperature: float = arg(1.0, "sampling temperature (0: greedy)")
    top_p: float = arg(1.0, "nucleus sampling: keep the smallest set of tokens with this much probability")
    max_new_tokens: int = arg(64, "most tokens generated per response")
    batch_size: int | None = arg(None, "prompts per batch (default: 16 with --backend hf, all with vllm)")
    seed: int = arg(0, "random seed of the draws (toy:N prompts and toy:SIZE models do not depend on it)")
    backend: str = arg("hf", "hf: transformers on CPU or GPU; vllm: GPU nodes, not mix_p", choices=["hf", "vllm"])
    device: str = arg("auto", "torch device for --backend hf: auto (this process's accelerator, else cpu), cpu, cuda, cuda:N")
    dtype: str = arg("auto", "model dtype", choices=["auto", "float32", "bfloat16", "float16"])
    vllm_gpu_memory: float = arg(0.85, "--backend vllm: fraction of each GPU's memory for vLLM (halved per engine "
                                 "when policy and ref must share GPUs)")
    tensor_parallel_size: int = arg(1, "--backend vllm: GPUs per engine (vLLM tensor parallelism, for a model too big "
                                    "for one GPU)")
    data_parallel_size: int | None = arg(None, "--backend vllm: engines per model, each on its own GPUs in a worker "
                                         "process, the prompts split between them (default: the visible GPUs // "
                                         "(tensor-parallel-size x models), at least 1)")
    trust_remote_code: bool = arg(False, "let transformers / vLLM run code shipped with a model")
    out: str = arg("runs/alignment/generate", "output folder; the run is written to OUT/NAME")
    name: str | None = arg(None, "run name (default: the sampler); an older run of that name is replaced")


@dataclass
class Plan:
    sampler: str
    components: list            # [(component, responses per prompt)]
    policy: str | None          # model specs; None when the sampler does not use that model
    ref: str | None
    candidates: int | None      # mix_p_seq: M
    batch_size: int | None
    name: str


def resolve(args: Args) -> Plan:
    """Check every argument before anything is loaded or written; ConfigError names the bad flag."""
    args.sampler = canonical(args.sampler, PAIR_SAMPLER, "alignment", "--sampler")
    k = args.num_responses
    check_number("num-responses", k, low=1, integer=True)
    if args.sampler in PAIRED and k % 2:
        raise ConfigError(f"--num-responses: {args.sampler} splits K into two halves, so K must be even, got {k}")
    check_number("alpha", args.alpha, low=0, low_open=True)
    check_number("temperature", args.temperature, low=0)
    check_number("top-p", args.top_p, low=0, high=1, low_open=True)
    check_number("max-new-tokens", args.max_new_tokens, low=1, integer=True)
    if args.batch_size is not None:
        check_number("batch-size", args.batch_size, low=1, integer=True)
    check_seed("seed", args.seed)
    check_number("vllm-gpu-memory", args.vllm_gpu_memory, low=0, high=1, low_open=True)
    check_number("tensor-parallel-size", args.tensor_parallel_size, low=1, integer=True)
    if args.data_parallel_size is not None:
        check_number("data-parallel-size", args.data_parallel_size, low=1, integer=True)
    if args.backend != "vllm":
        if args.tensor_parallel_size != 1:
            raise ConfigError("--tensor-parallel-size: applies to --backend vllm only (--backend hf runs one model "
                              "per process; use accelerate launch for more GPUs)")
        if args.data_parallel_size is not None:
            raise ConfigError("--data-parallel-size: applies to --backend vllm only (--backend hf: accelerate launch "
                              "runs one process per GPU)")
    if args.sampler == "borda":
        check_number("borda-keep", args.borda_keep, low=0, high=1, low_open=True)
        check_number("borda-beta", args.borda_beta, low=0, low_open=True)
        check_number("borda-gamma", args.borda_gamma, low=0)
        check_number("borda-passes", args.borda_passes, low=2, integer=True)
        check_number("borda-dropout", args.borda_dropout, low=0)
        if args.borda_dropout >= 1:
            raise ConfigError(f"--borda-dropout: must be below 1, got {args.borda_dropout}")
    if args.mixp_online_pair and args.sampler not in ("mix_p", "mix_p_seq"):
        raise ConfigError(f"--mixp-online-pair: applies to mix_p and mix_p_seq only, not {args.sampler}")
    candidates = None
    if args.num_candidates is not None and args.sampler != "mix_p_seq":
        raise ConfigError(f"--num-candidates: applies to mix_p_seq only, not {args.sampler}")
    if args.sampler == "mix_p_seq":
        candidates = args.num_candidates if args.num_candidates is not None else 4 * k
        check_number("num-candidates", candidates, low=1, integer=True)
        if candidates < k // 2:
            raise ConfigError(f"--num-candidates: each mix_p_seq component keeps K/2 = {k // 2} distinct candidates, "
                              f"so M must be at least {k // 2}, got {candidates}")
    if args.backend == "vllm":
        if args.sampler == "borda":
            raise ConfigError("--sampler: borda scores responses with Monte Carlo dropout of the policy, which needs "
                              "the model in this process; use --backend hf")
        if args.sampler not in VLLM_SAMPLERS:
            raise ConfigError("--sampler: mix_p fuses the logits of two models token by token, which vLLM cannot do; "
                              "use --backend hf (CPU or GPU), or --sampler mix_p_seq (the sequence-level variant, "
                              "which vLLM runs)")
        if args.device not in ("auto", "cuda"):
            raise ConfigError(f"--device: --backend vllm places the models itself on the GPU; leave --device auto "
                              f"(got {args.device!r}), or use --backend hf")
    check_out(args.out)
    name = args.sampler if args.name is None else args.name  # a blank --name is an error, not the default
    check_name(name)

    components = component_plan(args.sampler, k, args.mixp_online_pair, args.alpha)
    uses = {m for c, _ in components for m in component_models(c)}
    policy = args.policy
    if policy is None and ("policy" in uses or args.ref is None):
        if not Path(DEFAULT_POLICY).is_dir():
            raise ConfigError(f"--policy: no model given and the default {DEFAULT_POLICY} does not exist; run "
                              f"`python -m alignment.sft` first, or pass --policy toy:small (a random init), "
                              f"a model folder or a Hub name")
        policy = DEFAULT_POLICY
    ref = args.ref if args.ref is not None else policy
    for flag, spec in (("policy", policy), ("ref", ref)):
        if spec is not None and not spec.strip():
            raise ConfigError(f"--{flag}: empty model name")
    policy, ref = (model_source(s) if s is not None else None for s in (policy, ref))
    return Plan(args.sampler, components, policy if "policy" in uses else None, ref if "ref" in uses else None,
                candidates, args.batch_size, name)


# ------------------------------------------------------------------------------------------------ the run

def summarise(rows: list[dict], batch_logs: list[dict], finished: list, ess: dict, processes: int = 1) -> dict:
    """run.json's summary: counts per component (responses, tokens, cut at --max-new-tokens), throughput."""
    comps = {}
    for c, n, f in finished:
        s = comps.setdefault(c, {"responses": 0, "tokens": 0, "truncated": 0})
        s["responses"] += 1
        s["tokens"] += n
        s["truncated"] += int(not f)
    for s in comps.values():
        s["mean_tokens"] = s["tokens"] / s["responses"]
    tokens = sum(b["new_tokens"] for b in batch_logs)
    per_process = {}
    for b in batch_logs:
        per_process[b["process"]] = per_process.get(b["process"], 0.0) + b["seconds"]
    seconds = max(per_process.values(), default=0.0)  # the processes run side by side: the slowest one's time
    out = {"prompts": len(rows), "responses": sum(len(r["responses"]) for r in rows), "new_tokens": tokens,
           "seconds": seconds, "tokens_per_s": tokens / seconds if seconds > 0 else None, "components": comps,
           "processes": processes}
    if ess["plus"]:
        out["mixseq_ess_mean"] = {"mixseq+": sum(ess["plus"]) / len(ess["plus"]),
                                  "mixseq-": sum(ess["minus"]) / len(ess["minus"])}
    return out


def run(args: Args) -> Path | None:
    """The generate stage on parsed arguments (what `python -m alignment.generate` runs; the pipeline calls it too)."""
    plan = resolve(args)

    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    from alignment.core.data import load_prompts, write_jsonl
    from alignment.generation.backend import check_generation_memory, check_lengths, encode_prompts

    # gloo processes on a machine without CUDA (torchrun / accelerate launch --cpu), one per GPU otherwise
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    if args.backend == "vllm":
        from alignment.generation import vllm

        vllm.require_vllm()
        if state.num_processes > 1:
            raise ConfigError("--backend: run --backend vllm as one process (it starts an engine per GPU set "
                              "itself: --tensor-parallel-size, --data-parallel-size); use accelerate launch with "
                              "--backend hf")
    prompts = load_prompts(args.prompts, "--prompts", split=args.split, seed=TASK_SEED, config=args.data_config,
                           data_dir=args.data_dir)
    if args.backend == "hf":
        from alignment.generation.backend import HFBackend, load_models

        device = resolve_device(args.device, auto=state.device)  # auto: this process's device
        tok, models = load_models(plan, args, device)
        backend = HFBackend(models, tok, args, device)
    else:
        backend = vllm.VLLMBackend(plan, args)
        tok, models = backend.tok, {}
    prompt_ids = encode_prompts(tok, prompts)
    if models:
        check_lengths(models, prompt_ids, args.max_new_tokens, prompts)
    else:
        try:
            backend.check_lengths(prompt_ids, args.max_new_tokens, prompts)
        except ConfigError:
            backend.close()
            raise
    per_prompt = max(args.num_responses, plan.candidates or 0)
    batch_prompts = min(plan.batch_size or 16, len(prompts))
    try:
        check_generation_memory(models, len(prompts), per_prompt, batch_prompts, max(map(len, prompt_ids), default=0),
                                args.max_new_tokens, "--num-responses, --max-new-tokens, --batch-size")
    except ConfigError:
        if not models:
            backend.close()
        raise

    indices = list(range(len(prompts)))
    indices_of = {p["id"]: i for i, p in enumerate(prompts)}
    with state.split_between_processes(indices) as mine:
        mine = list(mine)
    bs = plan.batch_size or (16 if args.backend == "hf" else max(len(mine), 1))
    batches = [mine[i:i + bs] for i in range(0, len(mine), bs)]
    rows, logs, finished, ess = [], [], [], {"plus": [], "minus": []}
    with tqdm(total=len(batches), desc=f"generate/{plan.sampler}", unit="batch",
              disable=None if state.is_main_process else True) as pbar:
        for b, idx in enumerate(batches):
            t0 = time.perf_counter()
            batch_rows, stats = generate_batch(backend, plan, args, [prompts[i] for i in idx],
                                               [prompt_ids[i] for i in idx])
            seconds = time.perf_counter() - t0
            new = sum(sum(r["num_tokens"]) for r in batch_rows)
            log = {"sampler": plan.sampler, "seed": args.seed, "step": b, "process": state.process_index,
                   "prompts": len(idx), "responses": sum(len(r["responses"]) for r in batch_rows),
                   "new_tokens": new + stats.get("candidate_tokens", 0), "kept_tokens": new,
                   "seconds": seconds}
            log["tokens_per_s"] = log["new_tokens"] / seconds if seconds > 0 else None
            rows += batch_rows
            logs.append(log)
            finished += stats["finished"]
            ess["plus"] += stats["ess_plus"]
            ess["minus"] += stats["ess_minus"]
            pbar.update(1)
    if args.backend == "vllm":
        layout = backend.layout_record()
        backend.close()  # frees the GPUs (and ends the worker processes) before the rows are written
    if state.num_processes > 1:
        rows, logs, finished = gather_object(rows), gather_object(logs), gather_object(finished)
        ess = {k: gather_object(v) for k, v in ess.items()}
    if not state.is_main_process:
        state.wait_for_everyone()
        return None

    if plan.sampler == "borda":  # the selection needs every candidate prompt's scores: after the gather
        from alignment.selection.borda import select_rows

        candidates = len(rows)
        rows = select_rows(sorted(rows, key=lambda r: indices_of[r["id"]]), args.borda_keep, args.seed)
    summary = summarise(rows, logs, finished, ess, state.num_processes)
    if plan.sampler == "borda":
        summary |= {"borda_candidates": candidates, "borda_kept": len(rows)}
    config = dataclasses.asdict(args) | {"resolved": {"policy": plan.policy, "ref": plan.ref, "name": plan.name,
                                                         "spec": dataclasses.asdict(sampler_spec(plan.sampler, args.alpha)),
                                                         "components": plan.components, "candidates": plan.candidates,
                                                         "batch_size": bs, "processes": state.num_processes}}
    if args.backend == "vllm":
        config["resolved"]["vllm_layout"] = layout
    with RunDir(args.out, plan.name, config, [args.seed]) as run:
        write_jsonl(run.path("generations.jsonl"), rows)
        for log in sorted(logs, key=lambda x: (x["process"], x["step"])):
            run.log(log)
        path = run.finish(summary=summary)
    if state.num_processes > 1:
        state.wait_for_everyone()
    tps = summary["tokens_per_s"]
    print(f"{summary['prompts']} prompts, {summary['responses']} responses, {summary['new_tokens']} new tokens"
          + (f", {tps:.0f} tokens/s" if tps else ""))
    return path


main = entry_point(Args, run, __doc__)

if __name__ == "__main__":
    main()
