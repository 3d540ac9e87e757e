"""Load tokenizers and causal LMs by name: "toy" / "toy:SIZE" (built in-process), a local folder, or a Hub name.

Nothing here is toy-only: on a GPU node the same flags take e.g. "Qwen/Qwen2.5-0.5B-Instruct".
trust_remote_code stays off unless the caller asks for it.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from alignment.core import toy
from runlog import ConfigError

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# what from_pretrained raises on a folder or name that does not hold a loadable model; UnpicklingError: .bin weights
# that torch's weights-only loader refuses (a pickle that would run code), never loaded any other way
LOAD_ERRORS = (OSError, ValueError, pickle.UnpicklingError)


def load_failure(e: Exception) -> str:
    """The reason of a LOAD_ERRORS error, in one line."""
    if isinstance(e, pickle.UnpicklingError):
        return ("its .bin weights are not a plain tensor file: torch's weights-only loader refuses them, as unpickling "
                "them could run code; use a safetensors copy of the model")
    return str(e).splitlines()[0]


def is_toy(name: str) -> bool:
    return name == "toy" or name.startswith("toy:")


def toy_size(name: str, field: str) -> str:
    size = name.split(":", 1)[1] if ":" in name else "small"
    if size not in toy.SIZES:
        raise ConfigError(f"{field}: unknown toy size {size!r}; known: {', '.join(toy.SIZES)}")
    return size


def model_source(name: str) -> str:
    """A run folder holding model/ (what alignment.sft and alignment.reward_model write) stands for that folder."""
    if Path(name, "model").is_dir() and not Path(name, "config.json").exists():
        return str(Path(name, "model"))
    return name


def check_source(name: str, field: str) -> None:
    """A local-looking path must exist; anything else is tried as a Hub name (fails clearly offline)."""
    looks_local = name.startswith((".", "/", "~")) or Path(name).exists() or name.count("/") > 1
    if looks_local and not Path(name).expanduser().exists():
        raise ConfigError(f"{field}: no such model folder {name!r}")


def load_tokenizer(name: str, field: str = "--model", trust_remote_code: bool = False):
    """Tokenizer with a pad token and left padding (what batched generation needs)."""
    if is_toy(name):
        return toy.build_tokenizer()
    from transformers import AutoTokenizer

    check_source(name, field)
    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    except LOAD_ERRORS as e:
        raise ConfigError(f"{field}: cannot load a tokenizer from {name!r} ({load_failure(e)})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_causal_lm(name: str, field: str = "--model", device="cpu", dtype: str = "auto", seed: int = 0,
                   trust_remote_code: bool = False, quantization_config=None):
    """A causal LM in eval mode on `device`. "toy:SIZE" is a fresh random init (seeded). quantization_config
    (e.g. bitsandbytes 4-bit) loads a Hub / folder model quantized, placed on `device` by transformers."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype: unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    if is_toy(name):
        model = toy.build_model(toy.build_tokenizer(), toy_size(name, field), seed=seed)
    else:
        from transformers import AutoModelForCausalLM

        check_source(name, field)
        quant = {} if quantization_config is None else {"quantization_config": quantization_config,
                                                          "device_map": {"": str(device)}}
        try:
            model = AutoModelForCausalLM.from_pretrained(name, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code,
                                                         **quant)
        except LOAD_ERRORS as e:
            raise ConfigError(f"{field}: cannot load a causal LM from {name!r} ({load_failure(e)})") from None
        if quantization_config is not None:  # already placed; quantized weights cannot be moved with .to()
            return model.eval()
    if zero3_enabled():  # partitioned at creation; DeepSpeed places the shards itself
        return model.eval()
    return model.to(device).eval()


# ------------------------------------------------------------------------------------- DeepSpeed ZeRO-3

def zero3_enabled() -> bool:
    """True while a DeepSpeed ZeRO-3 config is live (a TrainingArguments made under `accelerate launch` with a ZeRO-3
    config): transformers then creates models partitioned (deepspeed.zero.Init), each process holding 1/N."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def parameter_shapes(model) -> dict[str, tuple[int, ...]]:
    """Each parameter's full shape, also for a ZeRO-3 partitioned model (whose local tensors are empty)."""
    return {n: tuple(getattr(p, "ds_shape", p.shape)) for n, p in model.named_parameters()}


def num_parameters(model) -> int:
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


def gathered(model):
    """Context in which every parameter of `model` holds its full tensor (ZeRO-3: gathered from all processes, a
    collective every process must enter; read-only, changes are dropped on exit); a no-op without ZeRO-3."""
    from contextlib import nullcontext

    if not any(hasattr(p, "ds_id") for p in model.parameters()):
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)


def without_zero3():
    """Context in which transformers creates models whole even while a ZeRO-3 config is live (it is restored on
    exit): a merged copy built on the main process alone must not be partitioned (that would be a collective)."""
    from contextlib import contextmanager

    from transformers.integrations import deepspeed as hf_deepspeed

    @contextmanager
    def ctx():
        ref = hf_deepspeed._hf_deepspeed_config_weak_ref
        live = ref() if ref is not None else None
        hf_deepspeed.unset_hf_deepspeed_config()
        try:
            yield
        finally:
            if live is not None:
                hf_deepspeed.set_hf_deepspeed_config(live)

    return ctx()


def merge_adapters(base: str, adapters, out, dtype: str = "bfloat16", trust_remote_code: bool = False) -> dict:
    """QLoRA's saved model: the LoRA adapters (trained over the 4-bit base) merged into the base weights loaded
    unquantized in `dtype` on the CPU (merging into 4-bit weights would round the adapters away), saved to `out` as
    a plain model folder. Returns the merged model's parameter shapes (for check_saved_weights)."""
    from peft import PeftModel

    with without_zero3():
        model = load_causal_lm(base, "--policy", device="cpu", dtype=dtype, trust_remote_code=trust_remote_code)
        merged = PeftModel.from_pretrained(model, str(adapters)).merge_and_unload()
        merged.save_pretrained(out)
    return parameter_shapes(merged)


def check_saved_weights(folder, shapes: dict[str, tuple[int, ...]] | None, what: str) -> int:
    """Read back the safetensors files of a saved model folder: no tensor may be empty, and with `shapes` (the
    model's full parameter shapes) they must hold at least as many values as the model has. A ZeRO-3 save that did
    not gather writes shape-(0,) tensors, or none, and reports success; this turns that into a ConfigError (exit code
    2) before the folder becomes part of a run. Totals rather than names: transformers may rename or split tensors
    on save (tied weights, fused layers), never drop values. Returns the number of saved values."""
    from safetensors import safe_open

    saved = {}
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            saved |= {k: tuple(st.get_slice(k).get_shape()) for k in st.keys()}
    size = lambda shape: int(torch.tensor(shape, dtype=torch.int64).prod()) if shape else 1
    total = sum(size(s) for s in saved.values())
    expected = sum(size(s) for s in (shapes or {}).values())
    empty = sorted(k for k, s in saved.items() if size(s) == 0)
    if not saved or empty or total < expected:
        found = f"{len(empty)} of {len(saved)} tensors empty" if saved else "no .safetensors file"
        raise ConfigError(f"{what}: the saved weights are incomplete ({found}; {total:,} of the model's {expected:,} "
                          f"values{', e.g. ' + empty[0] if empty else ''}); under ZeRO-3 the weights must be gathered "
                          f"to save them (accelerate's zero3_save_16bit_model: true, DeepSpeed's "
                          f"stage3_gather_16bit_weights_on_model_save); nothing was written to the run")
    return total


def quantization_config(load_in_4bit: bool, device, field: str = "--load-in-4bit"):
    """bitsandbytes' 4-bit NF4 config (bf16 compute) for QLoRA, or None; checked when the models are loaded (a dry
    run on a laptop passes)."""
    if not load_in_4bit:
        return None
    import importlib.util

    if torch.device(device).type != "cuda":
        raise ConfigError(f"{field}: bitsandbytes' 4-bit weights need a CUDA GPU; drop it on a CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"{field}: needs bitsandbytes (pip install -r requirements_vllm.txt on a GPU node)")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)
