"""Fused Mix-P decoding (two models, one KV cache each) against single-model sampling.

Tokens per second of alignment.decoding.sample on [pi, pi_ref] with weights (1+a, -a), against the same
sampler on pi alone and against transformers' own `model.generate(do_sample=True)` on pi, at the same
batch size and lengths (every row generates exactly --new-tokens tokens: EOS is ignored, or masked for
`generate`). Fused decoding runs two forward passes per token, so 0.5 of single-model speed is the ideal;
anything much lower would mean prefix recomputation or overhead. Timings alternate between the
variants (best of --repeats each) so that load from other programs hits them alike; peak memory is read
in a fresh process per variant (peak RSS on the CPU, where the interpreter and libraries dominate it for
toy models; peak allocated GPU memory on CUDA), next to the weights plus full KV caches each variant holds.

    python benchmarks/bench_alignment.py                              # toy:base on the CPU, < 1 minute
    python benchmarks/bench_alignment.py --device cuda --dtype bfloat16 --model Qwen/Qwen2.5-0.5B-Instruct --batch-size 64
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from isolated import run_isolated  # benchmarks/isolated.py, beside this script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/bench_alignment.py` from anywhere

VARIANTS = ("generate", "single", "mixp")


def _load(a):
    """pi and pi_ref (two separate copies: the fused path really runs two models), the tokenizer, prompts."""
    import torch

    from alignment.decoding import left_pad
    from alignment.models import DTYPES, is_toy, load_causal_lm, load_tokenizer
    from alignment.toy import ToyTask

    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    tok = load_tokenizer(a.model)
    models = []
    for seed in (0, 1):
        m = load_causal_lm(a.model, device=device, dtype=a.dtype, seed=seed)
        if is_toy(a.model) and a.dtype not in ("auto", "float32"):
            m = m.to(DTYPES[a.dtype])
        models.append(m)
    rows = ToyTask(0).prompts(a.batch_size)
    ids, mask = left_pad([tok(r["prompt"])["input_ids"] for r in rows], tok.pad_token_id, device)
    return models, tok, ids, mask


@__import__("torch").no_grad()
def _bare_forwards(models, ids, mask, n):
    """The forward passes fused decoding needs (prefill, then n - 1 one-token steps per model), nothing else."""
    import torch

    from alignment.decoding import _Stepper, position_ids_from_mask

    steppers = [_Stepper(m) for m in models]
    pos = position_ids_from_mask(mask)
    for s in steppers:
        s(ids, mask, pos)
    pos = pos[:, -1:]
    nxt = torch.full((ids.shape[0], 1), 5, dtype=torch.long, device=ids.device)
    for _ in range(n - 1):
        mask = torch.cat([mask, mask.new_ones((ids.shape[0], 1))], dim=-1)
        pos = pos + 1
        for s in steppers:
            s(nxt, mask, pos)


def _run(variant, models, tok, ids, mask, a, seed=0):
    import torch

    from alignment.decoding import sample

    pi, ref = models
    n = a.new_tokens
    if variant in ("bare1", "bare2"):
        return _bare_forwards([pi] if variant == "bare1" else [pi, ref], ids, mask, n)
    if variant == "generate":
        torch.manual_seed(seed)
        out = pi.generate(input_ids=ids, attention_mask=mask, do_sample=True, top_k=0, max_new_tokens=n,
                          min_new_tokens=n, pad_token_id=tok.pad_token_id)
        assert out.shape[1] - ids.shape[1] == n
        return
    g = torch.Generator(device=ids.device).manual_seed(seed)
    ms, ws = ([pi], [1.0]) if variant == "single" else ([pi, ref], [1 + a.alpha, -a.alpha])
    out = sample(ms, ws, ids, mask, max_new_tokens=n, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                 generator=g, ignore_eos=True)
    assert out.tokens.shape[1] == n


def state_mib(models, rows: int, length: int) -> float:
    """Weights plus a full KV cache (rows x length positions) of each model, in MiB."""
    total = 0
    for m in models:
        c = m.config.get_text_config()
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        size = next(m.parameters()).element_size()
        total += sum(p.numel() * p.element_size() for p in m.parameters())
        total += 2 * c.num_hidden_layers * rows * kv_heads * head_dim * length * size
    return total / 2**20


def _sync(device: str):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_variants(a) -> dict:
    """Best-of-repeats seconds per variant, the variants interleaved."""
    models, tok, ids, mask = _load(a)
    for v in VARIANTS:  # warm-up: first-call costs (kernels, allocator) are not the sampler's
        _run(v, models, tok, ids, mask, a)
    timed = VARIANTS + ("bare1", "bare2")
    best = {v: float("inf") for v in timed}
    for r in range(a.repeats):
        for v in timed:
            _sync(a.device)
            t0 = time.perf_counter()
            _run(v, models, tok, ids, mask, a, seed=r + 1)
            _sync(a.device)
            best[v] = min(best[v], time.perf_counter() - t0)
    length = ids.shape[1] + a.new_tokens
    state = {v: state_mib(models if v == "mixp" else models[:1], ids.shape[0], length) for v in VARIANTS}
    return best, state


def _peak(variant, a, queue):
    import torch

    models, tok, ids, mask = _load(a)
    if variant != "mixp":
        del models[1]  # single-model sampling holds one model
        models.append(None)
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    _run(variant, models, tok, ids, mask, a)
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
        queue.put({"peak_mib": torch.cuda.max_memory_allocated() / 2**20})
    else:
        queue.put({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def peak_memory(variant, a) -> dict:
    return run_isolated(_peak, variant, a)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="toy:base", help="toy:SIZE, a model folder or a Hub name (default: toy:base)")
    ap.add_argument("--batch-size", type=int, default=32, help="rows sampled together (default: 32)")
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens generated per row, EOS ignored (default: 64)")
    ap.add_argument("--alpha", type=float, default=0.5, help="Mix-P strength a (default: 0.5)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per variant, best kept (default: 5)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                    help="model dtype (default: auto)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    a = ap.parse_args()

    import torch
    import transformers

    gpu = f" ({torch.cuda.get_device_name()})" if a.device.startswith("cuda") else ""
    print(f"{a.model}, batch {a.batch_size}, {a.new_tokens} new tokens per row, device {a.device}{gpu}, dtype {a.dtype}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}, {a.threads} CPU thread(s)")
    secs, state = time_variants(a)
    mem = {v: peak_memory(v, a) for v in VARIANTS} if not a.no_memory else {}
    tokens = a.batch_size * a.new_tokens
    names = {"generate": "HF generate (pi)", "single": "ours, pi alone", "mixp": "ours, mixp fused"}
    cuda = a.device.startswith("cuda")
    unit = "peak GPU MiB" if cuda else "peak RSS MiB"
    head = f"{'variant':<18} {'tokens/s':>10} {'seconds':>8} {unit:>13} {'weights+KV MiB':>15}"
    print(head + "\n" + "-" * len(head))
    for v in VARIANTS:
        m = mem.get(v, {})
        print(f"{names[v]:<18} {tokens / secs[v]:>10.0f} {secs[v]:>8.3f} {m.get('peak_mib', float('nan')):>13.1f} "
              f"{state[v]:>15.1f}")
    r = secs["single"] / secs["mixp"]
    print(f"fused / single-model tokens per second: {r:.3f} (two forward passes per token: 0.5 is ideal; aim >= 0.45)")
    print(f"fused / HF generate: {secs['generate'] / secs['mixp']:.3f};  ours single / HF generate: "
          f"{secs['generate'] / secs['single']:.3f}")
    print(f"bare forward passes alone (prefill + one token per step, no sampling): pi {secs['bare1']:.3f} s, "
          f"pi and pi_ref {secs['bare2']:.3f} s (ratio {secs['bare1'] / secs['bare2']:.3f})")
    print(f"time beyond the forward passes (warpers, softmax, multinomial, fusion): single "
          f"{secs['single'] - secs['bare1']:.3f} s, fused {secs['mixp'] - secs['bare2']:.3f} s")


if __name__ == "__main__":
    main()
