"""Per-GPU memory plan of the paper recipes' real models under ZeRO-2 and ZeRO-3, from DeepSpeed's own estimators.

    python benchmarks/memory_plan.py                    # 8 x 80 GB, every recipe's models: a markdown table
    python benchmarks/memory_plan.py --gpus 4 --gpu-gib 80 --out plan.json

For each recipe model (the policies of alignment/configs/{iterative_prompt,safe_rlhf,active,sams,difficulty}.yaml,
sams's three, and Qwen2.5-7B-Instruct as a further 7B class) the model is built from its known architecture
(benchmarks/gpu_check.py ARCHITECTURES: a transformers config written in-process, nothing downloaded) on the meta
device (no memory), its parameters counted, and the model states of the trained policy per GPU come from DeepSpeed's
estimators without offload (bf16/fp16 mixed-precision Adam; DeepSpeed's formulas, in bytes, P parameters, N GPUs):
    ZeRO-2  deepspeed.runtime.zero.stage_1_and_2.estimate_zero2_model_states_mem_needs(cpu_offload=False)
            = 2 P (16-bit weights, replicated) + 18 P / N (16-bit and fp32 gradients, fp32 master weights, two fp32
              Adam moments: partitioned)
    ZeRO-3  deepspeed.runtime.zero.stage3.estimate_zero3_model_states_mem_needs(cpu_offload=False,
            cpu_offload_params=False, zero_init=True)
            = 4 L (the largest layer gathered, L its parameters) + 18 P / N
To that the frozen reference model pi_ref (the same architecture, bf16 weights only: no gradients, no optimizer) adds
2 P per GPU under ZeRO-2 (TRL prepares it with ZeRO stage 0 there: every GPU holds a full copy) and 2 P / N under
ZeRO-3 (partitioned like the policy). The last column is what is left of --gpu-gib for everything else.

Not counted (the "activations" of the headroom): the activations of the forward passes (they grow with
batch x sequence length x hidden x layers; gradient checkpointing keeps one layer's worth plus the layer inputs), the
logits of the LM head ([pairs x 2 sequences, length, vocabulary] per micro-batch, upcast to fp32 for the log-softmax:
the "logits" column gives that one tensor for the recipe's batch_size and max_length), the ZeRO communication
buckets (reduce / allgather buckets, ZeRO-3's prefetch and persistence thresholds), the CUDA context and the
allocator's fragmentation (often 1-3 GiB together), and the reward model (annotate runs it on one GPU, apart).
DeepSpeed's additional_buffer_factor applies to its CPU estimates only and does not enter these GPU numbers.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/memory_plan.py` from anywhere

from runlog import ConfigError, arg, check_number, entry_point  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "alignment" / "configs"
GIB = 2**30
# (recipe, model): the recipes' policies; Qwen2.5-7B is no recipe's, a 7B class of its own for comparison
MODELS = (
    ("iterative_prompt", "openlm-research/open_llama_3b_v2"),
    ("safe_rlhf", "PKU-Alignment/alpaca-7b-reproduced"),
    ("active", "openai-community/gpt2-large"),
    ("sams", "meta-llama/Meta-Llama-3-8B-Instruct"),
    ("sams", "mistralai/Mistral-7B-Instruct-v0.2"),
    ("sams", "google/gemma-2-9b-it"),
    ("difficulty", "meta-llama/Llama-3.1-8B-Instruct"),
    ("-", "Qwen/Qwen2.5-7B-Instruct"),
)


@dataclass
class Args:
    gpus: int = arg(8, "GPUs (one node) the policy and the reference are spread over")
    gpu_gib: float = arg(80.0, "memory per GPU in GiB (an 80 GB H100 / A100: 80)")
    out: str | None = arg(None, "also write the table as JSON to this file")


def count_params(name: str) -> tuple[int, int]:
    """(total, largest layer) parameters of the real model `name`, built on the meta device (no memory)."""
    import torch
    from deepspeed.runtime.zero.stage3 import model_to_params
    from transformers import AutoModelForCausalLM

    from benchmarks.gpu_check import full_config

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(full_config(name))
    # model_to_params dedupes tied weights by data_ptr(), which is 0 for every meta tensor (it would count one
    # tensor); model.parameters() already yields a tied embedding once, so the total is counted here
    total = sum(p.numel() for p in model.parameters())
    return total, model_to_params(model)[1]


def recipe_train(recipe: str) -> dict:
    """The recipe's train: section (batch_size, max_length) for the logits column; {} for no recipe."""
    if recipe == "-":
        return {}
    from alignment.pipeline.recipes import load_yaml

    return load_yaml(str(CONFIGS / f"{recipe}.yaml")).get("train") or {}


def plan_row(recipe: str, name: str, gpus: int, gpu_gib: float, params: tuple[int, int] | None = None) -> dict:
    """One table row: DeepSpeed's model-state estimates for the policy plus the reference's weights, in bytes."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    from benchmarks.gpu_check import ARCHITECTURES

    total, largest = params or count_params(name)
    _, zero2 = estimate_zero2_model_states_mem_needs(total, num_gpus_per_node=gpus, num_nodes=1, cpu_offload=False)
    _, zero3, _ = estimate_zero3_model_states_mem_needs(total, largest, num_gpus_per_node=gpus, num_nodes=1,
                                                        cpu_offload=False, cpu_offload_params=False, zero_init=True)
    ref2, ref3 = 2 * total, 2 * total // gpus  # bf16 weights: replicated (ZeRO-2) / partitioned (ZeRO-3)
    train = recipe_train(recipe)
    vocab = ARCHITECTURES[name][1]["vocab_size"]
    logits = (int(train["batch_size"]) * 2 * int(train["max_length"]) * vocab * 4) if train else None
    return {"recipe": recipe, "model": name, "params": total, "largest_layer_params": largest, "gpus": gpus,
            "zero2_policy_bytes": zero2, "zero2_ref_bytes": ref2, "zero2_total_bytes": zero2 + ref2,
            "zero3_policy_bytes": zero3, "zero3_ref_bytes": ref3, "zero3_total_bytes": zero3 + ref3,
            "zero2_headroom_gib": gpu_gib - (zero2 + ref2) / GIB, "zero3_headroom_gib": gpu_gib - (zero3 + ref3) / GIB,
            "logits_bytes": logits}


def table(rows: list[dict], gpus: int, gpu_gib: float) -> str:
    g = lambda b: f"{b / GIB:.1f}" if b is not None else "-"
    lines = [f"| recipe | model | params | ZeRO-2 policy | + ref (full) | ZeRO-2 total | left of {gpu_gib:g} | "
             f"ZeRO-3 policy | + ref (1/{gpus}) | ZeRO-3 total | left of {gpu_gib:g} | logits/micro-batch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['model']} | {r['params'] / 1e9:.2f}B | {g(r['zero2_policy_bytes'])} | "
                     f"{g(r['zero2_ref_bytes'])} | {g(r['zero2_total_bytes'])} | {r['zero2_headroom_gib']:.1f} | "
                     f"{g(r['zero3_policy_bytes'])} | {g(r['zero3_ref_bytes'])} | {g(r['zero3_total_bytes'])} | "
                     f"{r['zero3_headroom_gib']:.1f} | {g(r['logits_bytes'])} |")
    return "\n".join(lines)


def run(a: Args) -> Path | None:
    check_number("gpus", a.gpus, low=1, integer=True)
    check_number("gpu-gib", a.gpu_gib, low=0, low_open=True)
    if a.out is not None and not Path(a.out).resolve().parent.is_dir():
        raise ConfigError(f"--out: the folder of {a.out!r} does not exist")
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("deepspeed is not installed: the plan uses its estimators (pip install deepspeed; "
                          "DS_BUILD_OPS=0 builds nothing)")
    import deepspeed

    rows = [plan_row(recipe, name, a.gpus, a.gpu_gib) for recipe, name in MODELS]
    print(f"Per-GPU memory in GiB, {a.gpus} GPUs of {a.gpu_gib:g} GiB, bf16 mixed-precision Adam, no offload "
          f"(DeepSpeed {deepspeed.__version__} estimators; policy = model states, ref = bf16 weights; "
          f"activations not counted: see --help)\n")
    print(table(rows, a.gpus, a.gpu_gib))
    if a.out is None:
        return None
    from runlog.rundir import atomic_write_json

    atomic_write_json(a.out, {"deepspeed": deepspeed.__version__, "gpus": a.gpus, "gpu_gib": a.gpu_gib, "rows": rows})
    return Path(a.out)


main = entry_point(Args, run, __doc__)

if __name__ == "__main__":
    main()
