"""Vectorised bandit runner against a per-seed Python loop over the same update code.

For the paper's exact and empirical settings (tabular, A = 20, beta = 3), prints seed-iterations per
second of `simulate` on all seeds at once and of a loop calling it on one seed at a time, their ratio,
and each variant's peak memory. Each measurement runs in a fresh subprocess so peaks do not mix.

    python benchmarks/bench_bandit.py                   # 1000 seeds on the CPU
    python benchmarks/bench_bandit.py --device cuda
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/bench_bandit.py` from anywhere

from benchmarks.common import run_isolated


def _measure(variant: str, setting: str, seeds: int, iters: int, device: str, sampler: str, queue):
    """Time one variant on `seeds` seeds; report seed-iterations per second and peak memory."""
    import torch

    from bandit.envs import TabularEnv
    from bandit.examples.common import PAPER
    from bandit.runner import simulate

    env = TabularEnv.from_seeds(range(seeds), 1, 20, 3.0, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    kw = dict(sampler=sampler, setting=setting, iters=iters, lr=PAPER[setting]["lr"], generator=gen)
    simulate(env.select([0]), **{**kw, "iters": 2})  # warm-up: first-call costs are not the runner's
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if variant == "vectorised":
        simulate(env, **kw)
    else:
        for b in range(seeds):
            simulate(env.select([b]), **kw)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
    queue.put({"seconds": seconds, "rate": seeds * iters / seconds, "rss_mib": rss / 1024,
               "rss_growth_mib": (rss - rss0) / 1024, "gpu_mib": gpu})


def measure(*args):
    return run_isolated(_measure, *args)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=1000, help="seeds advanced by each variant (default: 1000)")
    ap.add_argument("--exact-iters", type=int, default=20, help="iterations timed in the exact setting (default: 20)")
    ap.add_argument("--empirical-iters", type=int, default=5, help="iterations timed in the empirical setting (default: 5)")
    ap.add_argument("--loop-seeds", type=int, default=None,
                    help="seeds the per-seed loop runs (default: --seeds); its rate per seed-iteration does not "
                         "depend on the count, so fewer seeds time it faster")
    ap.add_argument("--sampler", default="mix_p", help="sampler to time (default: mix_p)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    a = ap.parse_args()

    import torch

    gpu = f" ({torch.cuda.get_device_name()})" if a.device.startswith("cuda") else ""
    print(f"tabular bandit, A=20, beta=3, sampler {a.sampler}, {a.seeds} seeds (loop: {a.loop_seeds or a.seeds}), "
          f"device {a.device}{gpu}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    head = f"{'setting':<10} {'variant':<11} {'seed-iters/s':>13} {'seconds':>8} {'peak RSS MiB':>13} {'RSS growth':>11} {'GPU MiB':>8}"
    print(head + "\n" + "-" * len(head))
    for setting, iters in (("exact", a.exact_iters), ("empirical", a.empirical_iters)):
        res = {"vectorised": measure("vectorised", setting, a.seeds, iters, a.device, a.sampler),
               "loop": measure("loop", setting, a.loop_seeds or a.seeds, iters, a.device, a.sampler)}
        for v, r in res.items():
            print(f"{setting:<10} {v:<11} {r['rate']:>13.0f} {r['seconds']:>8.2f} {r['rss_mib']:>13.0f} "
                  f"{r['rss_growth_mib']:>11.0f} {r['gpu_mib']:>8.0f}")
        print(f"{setting:<10} speed-up of the vectorised runner over the per-seed loop: "
              f"{res['vectorised']['rate'] / res['loop']['rate']:.0f}x")


if __name__ == "__main__":
    main()
