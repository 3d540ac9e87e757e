"""Speed of our alignment code next to the library code it builds on, measured side by side in one run.

--what decode (the default): fused Mix-P decoding (two models, one KV cache each) against single-model sampling.
Tokens per second of alignment.generation.decoding.sample on [pi, pi_ref] with weights (1+a, -a), against the same
sampler on pi alone and against transformers' own `model.generate(do_sample=True)` on pi, at the same
batch size and lengths (every row generates exactly --new-tokens tokens: EOS is ignored, or masked for
`generate`). Fused decoding runs two forward passes per token, so 0.5 of single-model speed is the ideal;
anything much lower would mean prefix recomputation or overhead. Timings alternate between the
variants (best of --repeats each) so that load from other programs hits them alike; peak memory is read
in a fresh process per variant (peak RSS on the CPU, where the interpreter and libraries dominate it for
toy models; peak allocated GPU memory on CUDA), next to the weights plus full KV caches each variant holds.

--what dpo: DPO training through our layer against a plain TRL DPOTrainer. `ours, sigmoid` and `ours, rev_kl`
are alignment.training.trainer.fit(...) itself (SamplerDPOTrainer, train_dpo.dpo_config, the metrics.jsonl callback
writing through RunDir.log, the quiet progress bar; rev_kl adds its forward hooks and soft-label term); `TRL DPOTrainer`
is trl.DPOTrainer with its default callbacks and a DPOConfig written out by hand with the same hyperparameters
(checked field by field against dpo_config's: report_to none, run_name the run's name, logging every step, no
saving, dropout off, fp32 on the CPU, bf16 autocast on a GPU that has it). Every run starts from deep copies of one toy:--dpo-size init (the
policy and an explicit reference) and trains on the same --dpo-pairs toy preference pairs (two demonstrations per
ToyTask prompt, their true rewards as chosen_reward / rejected_reward) for --dpo-steps optimizer steps of
--dpo-batch-size pairs, in the same order (same seed): ours with sigmoid reaches TRL's final loss bit for bit.
The three trainers run in lockstep, one thread each, taking turns one optimizer step at a time, so that load from
other programs hits them alike step by step; a step is timed from the end of one step's log to the end of the
next (forward and backward passes, optimizer step, callbacks, logging), steps 2..N. Setup (trainer construction,
dataset tokenization, dataloader and optimizer) plus the first step runs alone, one trainer after the other, and
is shown apart. A short warm-up round first, then --dpo-repeats rounds in a rotating order; the table gives the
median step and each round's sum. Peak memory: one fresh process per variant (as for decode) running one
training alone. The aim: ours / TRL >= 0.95 (our layer should cost nothing).

--what select: reward_gap scoring (alignment.selection.scores.implicit_reward_margins: one no-grad pass of pi and of
pi_ref over every pair, the LM head only where a response token is predicted) against a plain no-grad forward pass
of the same two models, `model(input_ids, attention_mask).logits`, over the same batches (--select-pairs toy pairs,
tokenized as TRL tokenizes them, --select-batch-size pairs per batch, length-bucketed as alignment.select batches
them: the 2N sequences sorted by length). Tokens per second count the real (unpadded) tokens each model reads. Also
timed: the same scoring through the full [2B, T, V] log-softmax and a gather (the naive way), and our scoring over
pair batches in data order in TRL's layout (what a trainer's batches would cost, padding included). Variants
alternate, best of --select-repeats each. The aim: ours / plain forward >= 0.9 (scoring wastes no work on padding
or on the prompt's logits).

--what sams: a SamS and a random_subset training step (alignment.train_dpo --selector, half of each batch of 16
trained) against a plain DPO step on the same model and batch, in lockstep: benchmarks/bench_sams.py with its
defaults (run that script directly for its own flags). Aim: at most 10% overhead.

    python benchmarks/bench_alignment.py                              # decode: toy:base on the CPU, < 1 minute
    python benchmarks/bench_alignment.py --device cuda --dtype bfloat16 --model Qwen/Qwen2.5-0.5B-Instruct --batch-size 64
    python benchmarks/bench_alignment.py --what dpo                   # toy:base, 40 steps x 16 pairs, about 2 minutes
    python benchmarks/bench_alignment.py --what dpo --dpo-size tiny --dpo-steps 10 --dpo-repeats 1 --no-memory
    python benchmarks/bench_alignment.py --what select                # toy:base, 256 pairs, < 1 minute
    python benchmarks/bench_alignment.py --what select --device cuda --dtype bfloat16 --select-model Qwen/Qwen2.5-0.5B
    python benchmarks/bench_alignment.py --what all --device cuda
"""
from __future__ import annotations

import argparse
import copy
import gc
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/bench_alignment.py` from anywhere

from benchmarks.common import dpo_pairs, run_isolated

VARIANTS = ("generate", "single", "mixp")


def _load(a):
    """pi and pi_ref (two separate copies: the fused path really runs two models), the tokenizer, prompts."""
    import torch

    from alignment.generation.decoding import left_pad
    from alignment.core.models import DTYPES, is_toy, load_causal_lm, load_tokenizer
    from alignment.core.toy import ToyTask

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

    from alignment.generation.decoding import Stepper, position_ids_from_mask

    steppers = [Stepper(m) for m in models]
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

    from alignment.generation.decoding import sample

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


def peak_rss_mib() -> float:
    """Peak resident memory of this process's own address space: VmHWM on Linux. Not ru_maxrss there: Linux carries
    it over from the parent across fork + exec, so a spawned child would report at least its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
        queue.put({"peak_mib": peak_rss_mib()})


def peak_memory(variant, a) -> dict:
    return run_isolated(_peak, variant, a)


# ------------------------------------------------------------------------------------------- DPO training

DPO_VARIANTS = ("trl", "sigmoid", "rev_kl")
DPO_NAMES = {"trl": "TRL DPOTrainer", "sigmoid": "ours, sigmoid", "rev_kl": "ours, rev_kl"}
# DPOConfig fields that may differ between the two trainers' configs (where they write, not what they do)
DPO_CONFIG_FREE = {"output_dir", "logging_dir"}


def _dpo_args(a, loss: str, steps: int):
    """Our train_dpo Args: its defaults (beta, lr, schedule, warmup, max length, seed), the benchmark's budget."""
    from alignment.train_dpo import Args

    return Args(preferences="bench", loss=loss, max_steps=steps, batch_size=a.dpo_batch_size, device=a.device)


def trl_config(a, device, output_dir, steps: int):
    """A plain TRL DPOConfig with train_dpo's hyperparameters, written out by hand (not through dpo_config)."""
    import torch
    from trl import DPOConfig

    d = _dpo_args(a, "sigmoid", steps)
    cuda = device.type == "cuda"
    return DPOConfig(
        output_dir=str(output_dir), learning_rate=d.lr, per_device_train_batch_size=d.batch_size,
        per_device_eval_batch_size=d.batch_size, gradient_accumulation_steps=d.grad_accum, num_train_epochs=d.epochs,
        max_steps=steps, lr_scheduler_type=d.lr_scheduler, warmup_steps=d.warmup_ratio, weight_decay=0.0,
        seed=d.seed, data_seed=d.seed, use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(), fp16=False,
        gradient_checkpointing=False, save_strategy="no", report_to="none", run_name=d.name, logging_steps=1,
        dataloader_num_workers=0, dataloader_pin_memory=cuda, max_length=d.max_length, beta=d.beta,
        loss_type=["sigmoid"], precompute_ref_log_probs=False, disable_dropout=True, remove_unused_columns=True)


def config_differences(a, device, scratch) -> list[str]:
    """DPOConfig fields where TRL's hand-written config and our dpo_config differ (apart from DPO_CONFIG_FREE)."""
    from alignment.train_dpo import dpo_config
    from alignment.training.config import SAMPLER_FIELDS

    ours = dpo_config(_dpo_args(a, "sigmoid", a.dpo_steps), device, scratch / "ours").to_dict()
    ours = {k: v for k, v in ours.items() if k not in SAMPLER_FIELDS}  # our loss and selector fields: not TRL's
    theirs = trl_config(a, device, scratch / "trl", a.dpo_steps).to_dict()
    return [f"{k}: ours {ours.get(k)!r}, TRL {theirs.get(k)!r}" for k in sorted(set(ours) | set(theirs))
            if k not in DPO_CONFIG_FREE and ours.get(k) != theirs.get(k)]


def _scratch_run_class():
    from runlog import RunDir

    class ScratchRun(RunDir):
        """RunDir's own log() (one JSON line per trainer log) into a scratch metrics.jsonl; no run.json, so no
        package-version or git look-ups that a real run does once at its start. `hook(step)` runs first."""

        def __init__(self, path, hook):
            self._metrics = open(path, "w")
            self.hook = hook

        def log(self, row):
            self.hook(row["step"])
            super().log(row)

    return ScratchRun


def _hook_callback(hook):
    from transformers import TrainerCallback

    class StepHook(TrainerCallback):
        """The TRL run's counterpart of ScratchRun's hook: at each step's log (not at the end-of-training summary)."""

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                hook(state.global_step)

    return StepHook()


class DPOBench:
    """What every DPO run shares: the tokenizer, one policy init, the pairs, the device, a scratch folder."""

    def __init__(self, a):
        import torch
        from datasets import disable_progress_bars

        from alignment.training.common import trainer_device
        from alignment.core.toy import build_model, build_tokenizer

        if a.threads:
            torch.set_num_threads(a.threads)
        disable_progress_bars()  # datasets' tokenization bars
        self.a = a
        self.device = trainer_device(a.device)
        self.tok = build_tokenizer()
        self.init = build_model(self.tok, a.dpo_size, seed=0).float()
        self.rows = dpo_pairs(a.dpo_pairs)
        self.trl_rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in self.rows]
        self._tmp = tempfile.TemporaryDirectory(prefix="bench_dpo.")
        self.scratch = Path(self._tmp.name)
        self.runs = 0

    def run(self, variant: str, steps: int, hook=lambda step: None) -> dict:
        """One whole training run of `variant` from fresh copies of the init; hook(step) runs at each step's log.
        Returns the final loss."""
        from alignment.train_dpo import dpo_config
        from alignment.training.trainer import fit

        policy, ref = copy.deepcopy(self.init), copy.deepcopy(self.init)  # identical weights, an explicit reference
        self.runs += 1
        out = self.scratch / f"{self.runs}-{variant}"
        if variant == "trl":
            from datasets import Dataset
            from trl import DPOTrainer

            trainer = DPOTrainer(model=policy, ref_model=ref, args=trl_config(self.a, self.device, out, steps),
                                 train_dataset=Dataset.from_list(self.trl_rows), processing_class=self.tok,
                                 callbacks=[_hook_callback(hook)])
            trainer.train()
        else:
            log = _scratch_run_class()(self.scratch / f"{self.runs}-{variant}.jsonl", hook)
            args = _dpo_args(self.a, variant, steps)
            trainer, _ = fit(policy, ref, self.tok, self.rows, dpo_config(args, self.device, out), log)
            log._metrics.close()
            logged = Path(log._metrics.name).read_text().splitlines()
            assert len(logged) == steps, f"{len(logged)} metrics.jsonl rows for {steps} steps"
        hist = [r for r in trainer.state.log_history if "loss" in r]
        assert trainer.state.global_step == steps and len(hist) == steps, (trainer.state.global_step, len(hist))
        return {"final_loss": hist[-1]["loss"]}

    def close(self):
        self._tmp.cleanup()


class Lockstep:
    """Runs trainers in threads that take turns, one optimizer step each in a fixed order, so that load from other
    programs hits every variant alike, step by step. Only the thread whose turn it is runs: the others wait at
    their step's log. The trainers start one after another (setup and the first step uncontended), wait until all
    have made their first step, then take turns for steps 2..N; at step N each waits until all are there.
    Records the seconds of every step 2..N of every trainer (the step's passes, optimizer step, callbacks and log:
    from the end of one log hook to the next) and the seconds from a trainer's start to its first step's log."""

    def __init__(self, order, steps: int, cuda: bool):
        self.order, self.steps, self.cuda = list(order), steps, cuda
        self.cond = threading.Condition()
        self.turn = None  # index into order, from when all have made their first step
        self.arrived, self.finished, self.errors = set(), set(), []
        self.started, self.first = {}, {}
        self.step_s = {v: [] for v in self.order}
        self.resumed = {}

    def _wait(self, done):
        if not self.cond.wait_for(lambda: done() or self.errors, timeout=900):
            raise TimeoutError("lockstep: a trainer stopped taking its turns")
        if self.errors:
            raise RuntimeError("lockstep: another trainer failed")

    def hook(self, v: str, step: int):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        now = time.perf_counter()
        i, n = self.order.index(v), len(self.order)
        with self.cond:
            if step == 1:
                self.first[v] = now - self.started[v]
                self.arrived.add(v)
                if len(self.arrived) == n:
                    self.turn = 0
            else:
                self.step_s[v].append(now - self.resumed[v])
                self.turn = (i + 1) % n
                if step == self.steps:
                    self.finished.add(v)
            self.cond.notify_all()
            if step == self.steps:
                self._wait(lambda: len(self.finished) == n)
                return
            self._wait(lambda: self.turn == i)
        self.resumed[v] = time.perf_counter()

    def run(self, bench: DPOBench) -> dict:
        """Every variant of `order` once, in lockstep; returns {variant: bench.run's dict + step_s, first_s}."""
        out, threads = {}, []

        def target(v):
            try:
                self.started[v] = time.perf_counter()
                out[v] = bench.run(v, self.steps, lambda step: self.hook(v, step))
            except BaseException as e:  # wake the others, which then fail too
                with self.cond:
                    self.errors.append(e)
                    self.cond.notify_all()

        gc.collect()
        for v in self.order:  # one after another: each sets up and makes its first step alone
            t = threading.Thread(target=target, args=(v,), name=f"dpo-{v}", daemon=True)
            threads.append(t)
            t.start()
            with self.cond:
                self.cond.wait_for(lambda: v in self.arrived or self.errors)
            if self.errors:
                break
        for t in threads:
            t.join()
        if self.errors:
            raise self.errors[0]
        return {v: out[v] | {"step_s": self.step_s[v], "first_s": self.first[v]} for v in self.order}


def time_dpo(a) -> dict:
    """Per variant: the seconds of every lockstep step of every round, each round's total over steps 2..N, the time
    to the first step, and the final loss."""
    bench = DPOBench(a)
    cuda = bench.device.type == "cuda"
    res = {v: {"step_s": [], "loop_s": [], "first_s": [], "final_loss": None} for v in DPO_VARIANTS}
    # progress bars and TRL's per-step log dicts go nowhere, alike for all (a terminal would make them cost more)
    with open(os.devnull, "w") as null, redirect_stdout(null), redirect_stderr(null):
        try:
            diffs = config_differences(a, bench.device, bench.scratch)
            # warm-up: first-call costs (imports, kernels, allocator) are nobody's
            Lockstep(DPO_VARIANTS, min(a.dpo_steps, 5), cuda).run(bench)
            for r in range(a.dpo_repeats):
                order = DPO_VARIANTS[r % 3:] + DPO_VARIANTS[:r % 3]  # rotate who steps first
                for v, o in Lockstep(order, a.dpo_steps, cuda).run(bench).items():
                    res[v]["step_s"] += o["step_s"]
                    res[v]["loop_s"].append(sum(o["step_s"]))
                    res[v]["first_s"].append(o["first_s"])
                    res[v]["final_loss"] = o["final_loss"]
        finally:
            bench.close()
    return res, diffs


def _dpo_peak(variant, a, queue):
    import torch

    bench = DPOBench(a)
    try:
        if bench.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with open(os.devnull, "w") as null, redirect_stdout(null), redirect_stderr(null):
            bench.run(variant, a.dpo_steps)
        if bench.device.type == "cuda":
            queue.put({"peak_mib": torch.cuda.max_memory_allocated() / 2**20})
        else:
            queue.put({"peak_mib": peak_rss_mib()})
    finally:
        bench.close()


def run_dpo(a):
    import torch
    import transformers
    import trl

    from alignment.core.toy import SIZES

    cuda = a.device.startswith("cuda")
    gpu = f" ({torch.cuda.get_device_name()}, bf16 autocast)" if cuda else " (fp32)"
    threads = a.threads or torch.get_num_threads()
    hidden, layers, _, _ = SIZES[a.dpo_size]
    print(f"DPO training: toy:{a.dpo_size} ({hidden} hidden, {layers} layers), {a.dpo_pairs} toy pairs, "
          f"{a.dpo_steps} steps x {a.dpo_batch_size} pairs, device {a.device}{gpu}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, trl {trl.__version__}, {threads} CPU thread(s), "
          f"{a.dpo_repeats} lockstep round(s) after a warm-up")
    res, diffs = time_dpo(a)
    print("DPOConfig: TRL's hand-written config equals dpo_config's" if not diffs else
          "DPOConfig differences (TRL's hand-written config vs dpo_config's):\n  " + "\n  ".join(diffs))
    mem = {v: run_isolated(_dpo_peak, v, a) for v in DPO_VARIANTS} if not a.no_memory else {}
    unit = "peak GPU MiB" if cuda else "peak RSS MiB"
    head = (f"{'variant':<16} {'pairs/s':>8} {'steps/s':>8} {'step ms':>8} {'loop s best':>11} {'median':>7} "
            f"{'first s':>7} {'final loss':>10} {unit:>13}")
    print(head + "\n" + "-" * len(head))
    step = {v: statistics.median(res[v]["step_s"]) for v in DPO_VARIANTS}
    best = {v: min(res[v]["loop_s"]) for v in DPO_VARIANTS}
    med = {v: statistics.median(res[v]["loop_s"]) for v in DPO_VARIANTS}
    for v in DPO_VARIANTS:
        print(f"{DPO_NAMES[v]:<16} {a.dpo_batch_size / step[v]:>8.1f} {1 / step[v]:>8.2f} {1e3 * step[v]:>8.2f} "
              f"{best[v]:>11.3f} {med[v]:>7.3f} {statistics.median(res[v]['first_s']):>7.3f} "
              f"{res[v]['final_loss']:>10.6f} {mem.get(v, {}).get('peak_mib', float('nan')):>13.1f}")
    print(f"pairs/s, steps/s, step ms: the median step (forward and backward passes, optimizer step, callbacks, log) "
          f"over steps 2..{a.dpo_steps} of all rounds; loop s: steps 2..{a.dpo_steps} summed, best and median of "
          f"{a.dpo_repeats} round(s); first s: setup (trainer construction, tokenization, dataloader, optimizer) and "
          f"the first step, run alone")
    for v in ("sigmoid", "rev_kl"):
        print(f"{DPO_NAMES[v]} / TRL pairs per second: {step['trl'] / step[v]:.3f} per median step "
              f"({1e3 * (step[v] - step['trl']):+.2f} ms a step); whole loop {best['trl'] / best[v]:.3f} best, "
              f"{med['trl'] / med[v]:.3f} median  (aim >= 0.95)")
    same = res["sigmoid"]["final_loss"] == res["trl"]["final_loss"]
    print(f"ours sigmoid and TRL reach the same final loss: {'yes, bit for bit' if same else 'NO'} "
          f"(the same computation on the same batches)")
    print("loop seconds of each round: " + "; ".join(
        f"{DPO_NAMES[v]} " + " ".join(f"{t:.3f}" for t in res[v]["loop_s"]) for v in DPO_VARIANTS))


# ------------------------------------------------------------------------------------------- selection scoring

SELECT_VARIANTS = ("plain", "ours", "naive", "pairs")
SELECT_NAMES = {"plain": "plain forward", "ours": "ours, reward_gap", "naive": "full log-softmax",
                "pairs": "ours, pair batches"}


def _select_setup(a):
    """pi and pi_ref (two inits), the toy pairs tokenized as TRL does, in alignment.select's length-bucketed sequence
    batches and in TRL-layout pair batches in data order; all on the device."""
    import torch

    from alignment.core.models import DTYPES, is_toy, load_causal_lm, load_tokenizer
    from alignment.selection.scores import sequence_batches, tokenize_pair

    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    tok = load_tokenizer(a.select_model)
    models = []
    for seed in (0, 1):
        m = load_causal_lm(a.select_model, device=device, dtype=a.dtype, seed=seed)
        if is_toy(a.select_model) and a.dtype not in ("auto", "float32"):
            m = m.to(DTYPES[a.dtype])
        models.append(m.eval())
    examples = [tokenize_pair(tok, r) for r in dpo_pairs(a.select_pairs)]
    on = lambda batches: [(idx, {k: v.to(device) for k, v in b.items()}) for idx, b in batches]
    bucketed = on(sequence_batches(examples, tok.pad_token_id, a.select_batch_size))
    in_order = on(sequence_batches(examples, tok.pad_token_id, a.select_batch_size, bucket=False))
    return models, bucketed, in_order, len(examples)


def _naive_gaps(models, batches, n: int, beta: float = 0.1):
    """The same gaps the textbook way: full logits, log-softmax over the vocabulary, gather, masked sum."""
    import torch

    logps = [torch.empty(2 * n, device=batches[0][1]["input_ids"].device) for _ in models]
    for idx, b in batches:
        ids, mask = b["input_ids"], b["completion_mask"][:, 1:].float()
        for m, out in zip(models, logps):
            logits = m(input_ids=ids, attention_mask=b["attention_mask"]).logits[:, :-1].float()
            out[torch.as_tensor(idx, device=ids.device)] = \
                (torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1) * mask).sum(-1)
    h = beta * (logps[0] - logps[1])
    return (h[:n] - h[n:]).cpu()


@__import__("torch").no_grad()
def _run_select(variant, models, bucketed, in_order, n):
    from alignment.selection.scores import score_batches

    pi, ref = models
    if variant == "plain":
        return [m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits for _, b in bucketed
                for m in models]
    if variant == "naive":
        return _naive_gaps(models, bucketed, n)
    return score_batches("reward_gap", pi, ref, bucketed if variant == "ours" else in_order, n, beta=0.1)


def time_select(a) -> dict:
    """Seconds of every repeat per variant (the variants interleaved, after a warm-up of each), the tokens and padded
    cells of the batches, and the largest |ours - naive| gap difference."""
    models, bucketed, in_order, n = _select_setup(a)
    out = {v: _run_select(v, models, bucketed, in_order, n) for v in SELECT_VARIANTS}  # warm-up, and the gaps
    diff = float((out["ours"] - out["naive"]).abs().max())
    del out
    secs = {v: [] for v in SELECT_VARIANTS}
    for r in range(a.select_repeats):
        order = SELECT_VARIANTS[r % 4:] + SELECT_VARIANTS[:r % 4]  # rotate who goes first
        for v in order:
            _sync(a.device)
            t0 = time.perf_counter()
            _run_select(v, models, bucketed, in_order, n)
            _sync(a.device)
            secs[v].append(time.perf_counter() - t0)
    tokens = int(sum(int(b["attention_mask"].sum()) for _, b in bucketed))
    cells = {"bucketed": sum(b["input_ids"].numel() for _, b in bucketed),
             "in_order": sum(b["input_ids"].numel() for _, b in in_order)}
    response = int(sum(int(b["completion_mask"].sum()) for _, b in bucketed))
    return secs, tokens, cells, response, diff


def run_select(a):
    import torch
    import transformers

    a.threads = a.threads or 1
    gpu = f" ({torch.cuda.get_device_name()})" if a.device.startswith("cuda") else ""
    print(f"selection scoring (reward_gap): {a.select_model} as pi and pi_ref (two inits), {a.select_pairs} toy pairs, "
          f"{a.select_batch_size} pairs per batch, device {a.device}{gpu}, dtype {a.dtype}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {a.threads} CPU thread(s)")
    secs, tokens, cells, response, diff = time_select(a)
    best = {v: min(secs[v]) for v in SELECT_VARIANTS}
    med = {v: statistics.median(secs[v]) for v in SELECT_VARIANTS}
    pad = {v: 1 - tokens / cells["in_order" if v == "pairs" else "bucketed"] for v in SELECT_VARIANTS}
    head = f"{'variant':<18} {'tokens/s':>10} {'best s':>8} {'median s':>8} {'padding':>8}"
    print(head + "\n" + "-" * len(head))
    for v in SELECT_VARIANTS:
        print(f"{SELECT_NAMES[v]:<18} {2 * tokens / best[v]:>10.0f} {best[v]:>8.4f} {med[v]:>8.4f} {pad[v]:>8.1%}")
    print(f"tokens/s: the real tokens both models read ({tokens} per model, {response} of them response tokens), "
          f"best of {a.select_repeats}; padding: padded share of the batches' cells")
    print(f"ours / plain forward tokens per second: {best['plain'] / best['ours']:.3f} best, "
          f"{med['plain'] / med['ours']:.3f} median  (aim >= 0.9)")
    print(f"ours / full log-softmax: {best['naive'] / best['ours']:.3f};  length-bucketed sequences / pair batches in "
          f"data order: {best['pairs'] / best['ours']:.3f}")
    print(f"max |ours - full log-softmax| gap difference: {diff:.2e}")


# ------------------------------------------------------------------------------------------- command line

def run_decode(a):
    import torch
    import transformers

    a.threads = a.threads or 1
    gpu = f" ({torch.cuda.get_device_name()})" if a.device.startswith("cuda") else ""
    print(f"{a.model}, batch {a.batch_size}, {a.new_tokens} new tokens per row, device {a.device}{gpu}, "
          f"dtype {a.dtype}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{a.threads} CPU thread(s)")
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


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return n


def _at_least_two(text: str) -> int:
    n = int(text)
    if n < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2, got {text}")
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Modes: " + __doc__.split("\n\n", 1)[1].split("\n\n    python")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", default="decode", choices=["decode", "dpo", "select", "sams", "all"],
                    help="decode: fused Mix-P decoding vs single-model sampling (default); dpo: a DPO training run "
                         "through alignment.train_dpo vs a plain TRL DPOTrainer; select: reward_gap scoring vs a "
                         "plain forward pass; sams: a SamS / random_subset training step vs a plain DPO step "
                         "(benchmarks/bench_sams.py with its defaults; run that script for its own flags); all: the four")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    ap.add_argument("--threads", type=_positive, default=None,
                    help="torch CPU threads (default: 1 for decode and select, torch's default for dpo)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    g = ap.add_argument_group("decode")
    g.add_argument("--model", default="toy:base", help="toy:SIZE, a model folder or a Hub name (default: toy:base)")
    g.add_argument("--batch-size", type=_positive, default=32, help="rows sampled together (default: 32)")
    g.add_argument("--new-tokens", type=_positive, default=64,
                   help="tokens generated per row, EOS ignored (default: 64)")
    g.add_argument("--alpha", type=float, default=0.5, help="Mix-P strength a (default: 0.5)")
    g.add_argument("--repeats", type=_positive, default=5, help="timed runs per variant, best kept (default: 5)")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="model dtype, also of select (default: auto)")
    g = ap.add_argument_group("dpo")
    g.add_argument("--dpo-size", default="base", choices=["tiny", "small", "base"],
                   help="toy Llama size trained (default: base, about 1M parameters)")
    g.add_argument("--dpo-pairs", type=_positive, default=256, help="toy preference pairs (default: 256)")
    g.add_argument("--dpo-steps", type=_at_least_two, default=40,
                   help="optimizer steps per run, at least 2; steps 2..N are timed (default: 40)")
    g.add_argument("--dpo-batch-size", type=_positive, default=16, help="pairs per step (default: 16)")
    g.add_argument("--dpo-repeats", type=_positive, default=3,
                   help="lockstep rounds, each training every variant once (default: 3)")
    g = ap.add_argument_group("select")
    g.add_argument("--select-model", default="toy:base",
                   help="pi and pi_ref (two inits of toy:SIZE, else the same weights twice): toy:SIZE, a model folder "
                        "or a Hub name (default: toy:base)")
    g.add_argument("--select-pairs", type=_positive, default=256, help="toy preference pairs scored (default: 256)")
    g.add_argument("--select-batch-size", type=_positive, default=16, help="pairs per batch (default: 16)")
    g.add_argument("--select-repeats", type=_positive, default=10,
                   help="timed runs per variant, best kept (default: 10)")
    a = ap.parse_args(argv)

    if a.what in ("decode", "all"):
        run_decode(argparse.Namespace(**vars(a)))  # decode resolves --threads its own way
    if a.what == "all":
        print()
    if a.what in ("dpo", "all"):
        run_dpo(argparse.Namespace(**vars(a)))
    if a.what == "all":
        print()
    if a.what in ("select", "all"):
        run_select(argparse.Namespace(**vars(a)))
    if a.what == "all":
        print()
    if a.what in ("sams", "all"):
        from benchmarks import bench_sams

        bench_sams.main(["--device", a.device] + (["--threads", str(a.threads)] if a.threads else []))


if __name__ == "__main__":
    main()
