"""Where the toy comparison's time goes, and how close its DPO step comes to the machine's compute (issue 15).

    python benchmarks/bench_toy.py                   # all three parts, ~2 minutes on 2 cores
    python benchmarks/bench_toy.py --what stages     # or: step, precompute

--what stages: one toy pipeline (alignment/configs/toy.yaml's stages and sizes, --iterations iterations; the SFT policy
replaced by a toy:base random init (its size) and the reward model by the toy oracle, so that nothing needs training first),
run in this process with each stage timed: the share of generate, annotate, train and evaluate in the run's time.

--what step: the DPO step of the toy policy as toy.yaml trains it (16 pairs, the toy task's lengths): the forward pass
of pi over chosen and rejected, pi_ref's (no grad), the sigmoid loss, the backward pass and AdamW, one torch thread
(as toy.sh runs it). Its FLOPs are counted by torch's own FlopCounterMode; achieved FLOP/s = FLOPs / the step's
median time, side by side with a plain matmul's FLOP/s measured in the same run, on the same thread: at the shape
of the step's largest matmul (the LM head, tokens x hidden x vocab) and at a square 1024^3.

--what precompute: alignment.train_dpo on the same pairs, toy.yaml's train section, with and without
--precompute-ref (TRL's precomputed reference log-probs: pi_ref runs once per pair instead of once per pair and
epoch), alternating, best of --repeats each: the measured gain.

Every number is measured in this run; ratios are what carry from machine to machine.
"""
from __future__ import annotations

import contextlib
import io
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runlog import arg, check_positive, entry_point  # noqa: E402

RECIPE = ROOT / "alignment" / "configs" / "toy.yaml"


@dataclass
class Args:
    what: str = arg("all", "stages, step, precompute or all")
    iterations: int = arg(2, "--what stages: pipeline iterations")
    steps: int = arg(20, "--what step: timed DPO steps (after 3 warm-up steps)")
    repeats: int = arg(2, "--what precompute: runs of each variant (best of)")


# ------------------------------------------------------------------------------------------------ stages

def stages(args: Args) -> None:
    from alignment.pipeline import driver

    times: dict[str, float] = {}
    original = driver.run_stage

    def timed(plan, stage, t):
        t0 = time.perf_counter()
        original(plan, stage, t)
        times[stage] = times.get(stage, 0.0) + time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        driver.run_stage = timed
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                driver.main(["--config", str(RECIPE), "--policy", "toy:base", "--reward", "toy-oracle",
                             "--sampler", "on_policy", "--iterations", str(args.iterations), "--out", f"{tmp}/run"])
        finally:
            driver.run_stage = original
        total = time.perf_counter() - t0
    print(f"\n== stages: one toy pipeline, {args.iterations} iterations, {total:.1f} s in all")
    print(f"{'stage':<10} {'seconds':>8} {'share':>6}")
    for stage, s in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"{stage:<10} {s:8.2f} {s / total:6.1%}")
    rest = total - sum(times.values())
    print(f"{'(rest)':<10} {rest:8.2f} {rest / total:6.1%}   importing the stages' libraries (torch, transformers, "
          f"TRL: paid once per process), checking every stage, prompts, logs")


# ------------------------------------------------------------------------------------------------ step

def _logps(model, ids, mask, completion):
    import torch

    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    lp = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
    return (lp * completion[:, 1:]).sum(-1)


def step(args: Args) -> None:
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from alignment.core.toy import build_model, build_tokenizer
    from benchmarks.common import dpo_pairs

    torch.set_num_threads(1)
    tok = build_tokenizer()
    policy = build_model(tok, "base", seed=0)  # the SFT policy's size (alignment.sft: toy:base)
    ref = copy.deepcopy(policy).eval()
    policy.train()
    pairs = dpo_pairs(16, seed=0)
    seqs, comp = [], []
    for side in ("chosen", "rejected"):
        for p in pairs:
            prompt = tok(p["prompt"])["input_ids"]
            full = prompt + tok(p[side], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            seqs.append(full)
            comp.append([0] * len(prompt) + [1] * (len(full) - len(prompt)))
    width = max(map(len, seqs))
    pad = tok.pad_token_id
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    completion = torch.tensor([c + [0] * (width - len(c)) for c in comp], dtype=torch.float32)
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-4)
    beta = 0.5

    def one():
        with torch.no_grad():
            ref_lp = _logps(ref, ids, mask, completion)
        lp = _logps(policy, ids, mask, completion)
        n = len(pairs)
        margin = beta * ((lp[:n] - ref_lp[:n]) - (lp[n:] - ref_lp[n:]))
        loss = -torch.nn.functional.logsigmoid(margin).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    counter = FlopCounterMode(display=False)
    with counter:
        one()
    flops = counter.get_total_flops()
    for _ in range(3):
        one()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        one()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)

    hidden, vocab = policy.config.hidden_size, policy.config.vocab_size
    tokens = ids.numel()

    def matmul_rate(m, k, n, reps=20):
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
        return 2 * m * k * n / best

    head = matmul_rate(tokens, hidden, vocab)
    square = matmul_rate(1024, 1024, 1024, reps=5)
    params = sum(p.numel() for p in policy.parameters())
    print(f"\n== step: one DPO step of the toy policy ({params / 1e6:.2f}M parameters, {len(pairs)} pairs, "
          f"{tokens} padded tokens per model), one thread")
    print(f"step time median {med * 1e3:.1f} ms over {args.steps} steps (range {min(times) * 1e3:.1f}.."
          f"{max(times) * 1e3:.1f}); FLOPs counted {flops / 1e9:.2f} GFLOP")
    print(f"{'':<34} {'GFLOP/s':>8} {'step / this':>11}")
    achieved = flops / med
    print(f"{'the DPO step (achieved)':<34} {achieved / 1e9:8.2f} {'1.00':>11}")
    print(f"{f'matmul {tokens}x{hidden}x{vocab} (LM head)':<34} {head / 1e9:8.2f} {achieved / head:11.2f}")
    print(f"{'matmul 1024x1024x1024':<34} {square / 1e9:8.2f} {achieved / square:11.2f}")


# ------------------------------------------------------------------------------------------------ precompute

def precompute(args: Args) -> None:
    import json

    from alignment import train_dpo
    from benchmarks.common import dpo_pairs

    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "pairs.jsonl"
        pairs.write_text("".join(json.dumps(p) + "\n" for p in dpo_pairs(256, seed=0)))
        best = {True: float("inf"), False: float("inf")}
        for r in range(args.repeats):
            for pre in (False, True) if r % 2 == 0 else (True, False):
                t0 = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    train_dpo.main(["--config", str(RECIPE), "--preferences", str(pairs), "--policy", "toy:base",
                                    "--precompute-ref" if pre else "--no-precompute-ref", "--out", f"{tmp}/o",
                                    "--name", f"r{r}-{pre}"])
                best[pre] = min(best[pre], time.perf_counter() - t0)
    print("\n== precompute: train_dpo, toy.yaml's train section (256 pairs, 2 epochs), best of", args.repeats)
    print(f"without --precompute-ref {best[False]:.2f} s, with {best[True]:.2f} s: "
          f"{best[False] / best[True]:.2f}x")


def run(args: Args) -> None:
    parts = {"stages": stages, "step": step, "precompute": precompute}
    if args.what != "all" and args.what not in parts:
        from runlog import ConfigError

        raise ConfigError(f"--what: one of all, {', '.join(parts)}, got {args.what!r}")
    check_positive("iterations", args.iterations, integer=True)
    check_positive("steps", args.steps, integer=True)
    check_positive("repeats", args.repeats, integer=True)
    for name, part in parts.items():
        if args.what in ("all", name):
            part(args)


main = entry_point(Args, run, __doc__)

if __name__ == "__main__":
    main()
