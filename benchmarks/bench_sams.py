"""Cost of a SamS training step against a plain DPO step, measured side by side in one run.

Three trainers, each alignment.training's SamplerDPOTrainer with train_dpo.dpo_config's settings, on the same toy
preference pairs, from deep copies of one policy init (and one explicit reference), the same candidate batch of --batch-size
pairs per step:
    all             plain DPO: TRL's loss over every pair of the batch
    random_subset   TRL's forward and backward over the whole batch, the loss masked to a random K (its forward
                    hooks, per-pair losses and selection: the masking machinery alone)
    sams            the same plus the SamS scheduler: pooled final hidden states as features, the exploitation and
                    exploration MLPs' scoring, K chosen, and both MLPs' update on the last step's reward
The three run in threads that take turns one optimizer step at a time (so that load from other programs hits them
alike, step by step); a step (forward and backward passes, optimizer step) is timed from the trainer's
on_step_begin to its on_step_end, synchronising the GPU, steps 2..N. One warm-up round, then --repeats rounds
rotating who steps first; the table gives each one's median step over all rounds. The aim: sams / all <= 1.10
(at most 10% overhead).
The time SamS spends inside its scheduler (scoring, choosing, updating) is shown apart.

    python benchmarks/bench_sams.py                                    # toy:base on the CPU, about a minute
    python benchmarks/bench_sams.py --model llama:1024x8 --device cuda --batch-size 16 --steps 30
    python benchmarks/bench_sams.py --model toy:tiny --steps 4 --repeats 1   # smoke test

--model toy:SIZE builds the toy Llama (alignment.core.toy); llama:HxL a random Llama of hidden size H and L layers on the
toy tokenizer (bigger than the toy sizes: closer to the ratio of scheduler to LLM cost of a real run).
This benchmark belongs in bench_alignment.py (--what sams); it is a separate script while that file is being
edited elsewhere. run(args) returns the numbers as a dict.
"""
from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/bench_sams.py` from anywhere

from benchmarks.common import dpo_pairs  # the same toy pairs as bench_alignment

VARIANTS = ("all", "random_subset", "sams")  # train_dpo --selector values


def build_model(spec: str, tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignment.core import toy

    if spec.startswith("toy:"):
        return toy.build_model(tokenizer, spec[4:], seed=seed)
    if spec.startswith("llama:"):
        hidden, layers = (int(x) for x in spec[6:].split("x"))
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 64),
                             intermediate_size=4 * hidden, max_position_embeddings=128, tie_word_embeddings=True,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)
    raise SystemExit(f"--model: expected toy:SIZE or llama:HIDDENxLAYERS, got {spec!r}")


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _trainer(variant: str, a, policy, ref, tokenizer, rows, scratch: Path, device, turns, sched_time: list):
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback

    from alignment.train_dpo import Args, dpo_config
    from alignment.training.data import training_rows
    from alignment.training.trainer import SamplerDPOTrainer

    args = Args(preferences="bench", selector=variant, select_ratio=a.ratio, max_steps=a.steps,
                batch_size=a.batch_size, device=str(device), dtype=a.dtype, warmup_ratio=0.0, lr=1e-5)

    class TakeTurns(TrainerCallback):
        def on_step_begin(self, targs, state, control, **kw):
            turns.begin(variant)

        def on_step_end(self, targs, state, control, **kw):
            turns.end(variant)

    config = dpo_config(args, device, scratch)
    config.disable_tqdm = True
    trainer = SamplerDPOTrainer(model=policy, ref_model=ref, args=config,
                                train_dataset=Dataset.from_list(training_rows(rows, "sigmoid", 1.0)),
                                processing_class=tokenizer, callbacks=[TakeTurns()])
    trainer.remove_callback(PrinterCallback)
    if trainer.batch_scheduler is not None:  # time spent inside the scheduler itself
        inner = trainer.batch_scheduler.step

        def timed_step(*args_, **kw):
            _sync(device)
            t0 = time.perf_counter()
            out = inner(*args_, **kw)
            _sync(device)
            sched_time.append(time.perf_counter() - t0)
            return out

        trainer.batch_scheduler.step = timed_step
    return trainer


class Turns:
    """The trainers run in threads that take turns one optimizer step at a time, in a fixed order, so that load
    from other programs hits every variant alike, step by step; each step is timed from its start (the trainer's
    on_step_begin, once its turn has come) to its end (on_step_end, GPU synchronised)."""

    def __init__(self, order, device):
        self.order, self.device = list(order), device
        self.cond = threading.Condition()
        self.turn, self.t0 = 0, None
        self.step_s = {v: [] for v in order}
        self.failed = False

    def begin(self, v):
        with self.cond:
            if not self.cond.wait_for(lambda: self.failed or self.order[self.turn] == v, timeout=900) or self.failed:
                raise RuntimeError("bench_sams: another trainer stopped taking its turns")
        _sync(self.device)
        self.t0 = time.perf_counter()

    def end(self, v):
        _sync(self.device)
        self.step_s[v].append(time.perf_counter() - self.t0)
        with self.cond:
            self.turn = (self.turn + 1) % len(self.order)
            self.cond.notify_all()

    def fail(self):
        with self.cond:
            self.failed = True
            self.cond.notify_all()


def run(a) -> dict:
    """Time the three trainers; returns {"steps": {variant: [seconds per step]}, "median_s": {...},
    "sams_overhead": sams / all - 1, "random_subset_overhead": ..., "scheduler_median_s": ...}."""
    import torch
    from datasets import disable_progress_bars

    from alignment.core import toy

    disable_progress_bars()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    tokenizer = toy.build_tokenizer()
    dtype = getattr(torch, a.dtype)
    init = build_model(a.model, tokenizer).to(device, dtype)
    ref = copy.deepcopy(init).eval()
    rows = dpo_pairs(a.steps * a.batch_size)
    steps = {v: [] for v in VARIANTS}
    sched = []
    with tempfile.TemporaryDirectory(prefix="bench_sams.") as tmp:
        for r in range(a.repeats + 1):  # round 0: warm-up, not counted
            order = VARIANTS[r % 3:] + VARIANTS[:r % 3]  # rotate who steps first
            turns, sched_round, errors = Turns(order, device), [], []
            trainers = {v: _trainer(v, a, copy.deepcopy(init).train(), ref, tokenizer, rows, Path(tmp) / f"{v}{r}",
                                    device, turns, sched_round) for v in order}

            def target(v):
                try:
                    trainers[v].train()
                except BaseException as e:  # wake the others, which then fail too
                    errors.append(e)
                    turns.fail()

            threads = [threading.Thread(target=target, args=(v,), daemon=True) for v in order]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            if r:
                for v in VARIANTS:
                    steps[v] += turns.step_s[v][1:]  # step 1 (first calls) apart
                sched += sched_round[1:]
            del trainers
            gc.collect()
    med = {v: statistics.median(s) for v, s in steps.items()}
    return {"model": a.model, "device": str(device), "batch_size": a.batch_size, "ratio": a.ratio,
            "steps": steps, "median_s": med, "sams_overhead": med["sams"] / med["all"] - 1,
            "random_subset_overhead": med["random_subset"] / med["all"] - 1,
            "scheduler_median_s": statistics.median(sched) if sched else None,
            "num_params": sum(p.numel() for p in init.parameters())}


def print_table(res: dict) -> None:
    print(f"SamS step against a plain DPO step: {res['model']} ({res['num_params'] / 1e6:.2f}M parameters) on "
          f"{res['device']}, candidate batch {res['batch_size']} pairs, K = ratio {res['ratio']}")
    print(f"{'variant':<15} {'median step ms':>15} {'vs all':>9} {'steps timed':>12}")
    for v in VARIANTS:
        m = res["median_s"][v]
        print(f"{v:<15} {m * 1e3:>15.2f} {m / res['median_s']['all']:>9.3f} {len(res['steps'][v]):>12}")
    if res["scheduler_median_s"] is not None:
        print(f"inside the SamS scheduler (score, choose, update): {res['scheduler_median_s'] * 1e3:.2f} ms per step")
    verdict = "yes" if res["sams_overhead"] <= 0.10 else "no"
    print(f"sams overhead: {res['sams_overhead'] * 100:+.1f}% "
          f"(random_subset: {res['random_subset_overhead'] * 100:+.1f}%)"
          f"; within the 10% aim: {verdict}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="toy:base", help="toy:SIZE or llama:HIDDENxLAYERS (default: toy:base)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch-size", type=int, default=16, help="candidate pairs per step (default: 16)")
    p.add_argument("--ratio", type=float, default=0.5, help="--select-ratio of sams / random_subset (default: 0.5)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per run (default: 20)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up round (default: 3)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    a = p.parse_args(argv)
    if a.steps < 2 or a.repeats < 1 or a.batch_size < 1:
        p.error("--steps must be >= 2, --repeats and --batch-size >= 1")
    res = run(a)
    print_table(res)
    return res


if __name__ == "__main__":
    main()
