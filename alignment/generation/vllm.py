"""The vLLM generation backend (generation/backend.py's interface) for `python -m alignment.generate --backend vllm`
(GPU nodes only).

vLLM is imported only here and only when --backend vllm is chosen; without it the command stops with
one line telling the user to `pip install -r requirements_vllm.txt` (GPU nodes only), exit code 2.

What vLLM runs: offline, on_policy and gshf (plain sampling from pi_ref and/or pi) and mix_p_seq (M
candidates sampled from pi, then both models score them: each engine computes the prompt log-probs of
prompt + response, and the sum over the response tokens, EOS included, is log pi_m(y | x); the
resampling is generation/samplers.py's, shared with the HF backend). vLLM cannot fuse two models' logits token by
token, so mix_p is refused before anything is loaded (generate.resolve).

Placement (`plan_layout`; the run prints which case held and run.json records it under resolved.vllm_layout).
The models are the distinct specs (two for gshf / mix_p_seq when --ref names another model than --policy); each engine
spans --tensor-parallel-size TP GPUs (vLLM's tensor parallelism, LLM(tensor_parallel_size=TP)); each model has
--data-parallel-size DP engines (default: the visible GPUs // (TP x models), at least 1). vLLM 0.31's offline
LLM refuses data_parallel_size > 1 in one process, so data parallelism is ours: one engine per GPU set, each in
its own worker process with CUDA_VISIBLE_DEVICES set to that set, and every call's requests split into DP
contiguous shards whose results are joined back in request order.
- DP x TP x models GPUs visible: each model has its own GPUs (policy on the first DP x TP, ref on the next), each
  engine with --vllm-gpu-memory of its GPUs.
- fewer (but at least DP x TP): the two models share each engine's GPUs, each with half of --vllm-gpu-memory.
- no GPU visible to torch: one engine per model in this process (TP = DP = 1 only), vLLM chooses its device.
Engines run in this process when each is on the first TP visible GPUs (one engine per model), else in workers.

Prompts go in as token ids (TokensPrompt, tokenized by generate.py exactly as for the HF backend) and responses
come back as token ids, decoded by the same tokenizer, so both backends write the same row format; vLLM's own
detokenizer is off (SamplingParams(detokenize=False)). Each request (prompt) has its own seed, derived from the
batch seed and its index in the batch, never from its shard, so a DP run draws what one engine draws (vLLM's
seeded sampling is per request; its kernels' numerics may still depend on the batch a request shares).
The length check reads each engine's max_model_len (LLM.llm_engine.model_config.max_model_len, vLLM 0.31), else
the model's config.json max_position_embeddings, else stops with a ConfigError: it is never skipped.
A toy:SIZE model is saved to a temporary folder for vLLM to load.
"""
from __future__ import annotations

import multiprocessing
import os
import tempfile
import traceback
import weakref
import zlib
from dataclasses import asdict, dataclass

from alignment.core.toy import TASK_SEED
from alignment.generation.backend import Backend
from bandit.spec import POLICY, REF, Tilt
from runlog import ConfigError

INSTALL = "pip install -r requirements_vllm.txt"


def require_vllm():
    """The vllm module, or a ConfigError (one line, exit code 2) saying how to install it."""
    try:
        import vllm
    except ImportError as e:
        raise ConfigError(f"--backend vllm: vLLM is not installed ({e}); on a GPU node run `{INSTALL}` "
                          f"(GPU nodes only), or use --backend hf") from None
    except Exception as e:  # a broken install (CUDA libraries, ABI): still one clear line
        raise ConfigError(f"--backend vllm: vLLM failed to import ({type(e).__name__}: {str(e).splitlines()[0]}); "
                          f"reinstall it with `{INSTALL}` on a GPU node, or use --backend hf") from None
    return vllm


def request_seed(batch_seed: int, index: int) -> int:
    return zlib.crc32(f"{batch_seed}/{index}".encode()) & 0x7FFFFFFF


# ------------------------------------------------------------------------------------------ placement

def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (so a worker's set is a subset of ours)."""
    import torch

    count = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [d.strip() for d in env.split(",") if d.strip()] if env is not None else [str(i) for i in range(count)]
    return names[:count]


@dataclass
class Layout:
    """Where each model's engines run: gpus[model key] = one GPU set per engine ([] = vLLM chooses)."""
    gpus: dict
    memory: float               # gpu_memory_utilization of each engine
    shared: bool                # the models share their GPUs (half the memory each)
    in_process: bool            # engines in this process (else one worker process per engine)
    tensor_parallel_size: int
    data_parallel_size: int
    visible: int
    note: str


def plan_layout(keys: list[str], tp: int, dp: int | None, gpus: list[str], memory: float) -> Layout:
    """Engines of the models `keys` (one or two) over the visible `gpus`: see the module docstring."""
    m, g = len(keys), len(gpus)
    both = " and ".join(keys)
    if g == 0:
        if tp > 1 or (dp or 1) > 1:
            flag = "--tensor-parallel-size" if tp > 1 else "--data-parallel-size"
            raise ConfigError(f"{flag}: {tp * (dp or 1)} GPUs needed per model, but torch sees none "
                              f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                              f"leave both at 1 to let vLLM choose its device")
        share = memory / m
        return Layout({k: [[]] for k in keys}, share, m > 1, True, 1, 1, 0,
                      f"vLLM: no GPU visible to torch; {both} in this process, vLLM chooses the device"
                      + (f", each engine with {share:g} of its memory" if m > 1 else ""))
    if tp > g:
        raise ConfigError(f"--tensor-parallel-size: {tp} GPUs per engine, but only {g} are visible")
    if dp is None:
        dp = max(g // (m * tp), 1)
    if dp * tp * m <= g:
        shared, share = False, memory
        sets = {k: [gpus[(j * dp + r) * tp:(j * dp + r + 1) * tp] for r in range(dp)] for j, k in enumerate(keys)}
    elif dp * tp <= g:
        shared, share = True, memory / m
        sets = {k: [gpus[r * tp:(r + 1) * tp] for r in range(dp)] for k in keys}
    else:
        raise ConfigError(f"--data-parallel-size: {dp} engines of {tp} GPU(s) (--tensor-parallel-size) need "
                          f"{dp * tp} GPUs, but only {g} are visible")
    in_process = dp == 1 and all(s == [gpus[:tp]] for s in sets.values())
    engines = f"{dp} engine{'s' if dp > 1 else ''} of {tp} GPU{'s' if tp > 1 else ''}"
    where = lambda k: "GPU" + ("s " if sum(map(len, sets[k])) > 1 else " ") + ",".join(sum(sets[k], []))
    if shared:
        note = (f"vLLM: {both} share {where(keys[0])} ({engines} each, {share:g} of the memory each): "
                f"{g} GPU{'s' if g > 1 else ''} visible, {dp * tp * m} needed to give each model its own")
    else:
        note = "vLLM: " + ", ".join(f"{k} on {where(k)}" for k in keys) + f" ({engines} per model, {share:g} of " \
               f"the memory each)"
    return Layout(sets, share, shared, in_process, tp, dp, g, note)


# ------------------------------------------------------------------------------------------ engine jobs
# What an engine does, as functions of (vllm module, LLM, plain arguments) returning plain data, so that the same
# code runs in this process and in a worker (whose requests and answers travel pickled).

def job_sample(vllm, llm, prompts, params):
    """[request][completion] (token ids, finish_reason, stop_reason); params: SamplingParams kwargs per request."""
    outs = llm.generate([vllm.TokensPrompt(prompt_token_ids=list(p)) for p in prompts],
                        [vllm.SamplingParams(**kw) for kw in params], use_tqdm=False)
    return [[(list(co.token_ids), co.finish_reason, co.stop_reason) for co in ro.outputs] for ro in outs]


def job_score(vllm, llm, sequences, starts, params):
    """Per sequence, the sum of log p(token | prefix) over its tokens from position `start` on (prompt log-probs)."""
    outs = llm.generate([vllm.TokensPrompt(prompt_token_ids=list(s)) for s in sequences], vllm.SamplingParams(**params),
                        use_tqdm=False)
    return [sum(ro.prompt_logprobs[pos][s[pos]].logprob for pos in range(start, len(s)))
            for s, start, ro in zip(sequences, starts, outs)]


def job_max_model_len(vllm, llm):
    """The engine's context length (vLLM 0.31: LLM.llm_engine.model_config.max_model_len; LLM.model_config is the
    same object), or None when neither attribute path exists."""
    for path in (("llm_engine", "model_config", "max_model_len"), ("model_config", "max_model_len")):
        obj = llm
        try:
            for name in path:
                obj = getattr(obj, name)
        except AttributeError:
            continue
        if isinstance(obj, int):
            return obj
    return None


JOBS = {"sample": job_sample, "score": job_score, "max_model_len": job_max_model_len}


class LocalEngine:
    """An engine in this process; submit runs the job at once, result returns its answer."""

    def __init__(self, vllm, kwargs: dict, gpus: list[str]):
        self.vllm, self.gpus = vllm, gpus
        self.llm = vllm.LLM(**kwargs)

    def ready(self):
        pass

    def submit(self, job: str, *args):
        self._answer = JOBS[job](self.vllm, self.llm, *args)

    def result(self):
        return self._answer

    def close(self):
        pass


def _worker_main(conn, kwargs):
    """A worker process: one vLLM engine on the GPUs of its CUDA_VISIBLE_DEVICES, answering jobs until told to stop."""
    try:
        import vllm

        llm = vllm.LLM(**kwargs)
        conn.send(("ok", None))
    except BaseException as e:
        conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        return
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the parent went away
            return
        if msg is None:
            return
        job, args = msg
        try:
            conn.send(("ok", JOBS[job](vllm, llm, *args)))
        except BaseException as e:
            conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


class WorkerEngine:
    """An engine in a worker process of its own, whose CUDA_VISIBLE_DEVICES is the engine's GPU set (spawned, so
    the variable holds before CUDA starts there). submit sends a job; result waits for its answer."""

    def __init__(self, vllm, kwargs: dict, gpus: list[str]):
        ctx = multiprocessing.get_context("spawn")
        self.gpus = gpus
        self.conn, child = ctx.Pipe()
        before = os.environ.get("CUDA_VISIBLE_DEVICES")
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)  # inherited by the spawned interpreter
        try:
            self.proc = ctx.Process(target=_worker_main, args=(child, kwargs), name=f"vllm-gpus-{'-'.join(gpus)}")
            self.proc.start()
        finally:
            if before is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = before
        child.close()
        # closes the worker when this object goes, or at exit before multiprocessing joins its children
        self._finalizer = weakref.finalize(self, _stop_worker, self.conn, self.proc)

    def _answer(self, what: str):
        try:
            status, value = self.conn.recv()
        except EOFError:
            status, value = "error", f"the worker process ended (exit code {self.proc.exitcode})"
        if status != "ok":
            raise RuntimeError(f"vLLM engine on GPUs {','.join(self.gpus)}: {what} failed: {value}")
        return value

    def ready(self):
        self._answer("starting the engine")

    def submit(self, job: str, *args):
        self.conn.send((job, args))

    def result(self):
        return self._answer("a generate call")

    def close(self):
        self._finalizer()


def _stop_worker(conn, proc):
    try:
        conn.send(None)
    except (BrokenPipeError, OSError):
        pass
    proc.join(timeout=60)
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout=10)
    conn.close()


start_worker = WorkerEngine  # the engines of a multi-engine layout; tests put an in-process stand-in here


def shards(items: list, parts: int) -> list[list]:
    """items in `parts` contiguous slices (sizes differing by at most one; empty ones when items are few)."""
    size, extra = divmod(len(items), parts)
    out, k = [], 0
    for r in range(parts):
        n = size + (r < extra)
        out.append(items[k:k + n])
        k += n
    return out


# ------------------------------------------------------------------------------------------ the backend

class VLLMBackend(Backend):
    """The generate.py backend interface (tok, draw, draw_scored, check_lengths) on vLLM engines."""

    def __init__(self, plan, args):
        from alignment.core.models import is_toy, load_causal_lm, load_tokenizer

        self.vllm = require_vllm()
        self.args = args
        self.specs = {k: v for k, v in (("policy", plan.policy), ("ref", plan.ref)) if v is not None}
        main_key = "policy" if "policy" in self.specs else "ref"
        self.tok = load_tokenizer(self.specs[main_key], f"--{main_key}", trust_remote_code=args.trust_remote_code)
        if len(set(self.specs.values())) == 2:
            other = load_tokenizer(self.specs["ref"], "--ref", trust_remote_code=args.trust_remote_code)
            if other.get_vocab() != self.tok.get_vocab():
                raise ConfigError(f"--ref: the tokenizer of {self.specs['ref']!r} differs from that of --policy "
                                  f"{self.specs['policy']!r}; {plan.sampler} needs both models on one vocabulary")
        # one engine set per distinct model, named by the first key that uses it
        self.model_key = {}
        for key, spec in self.specs.items():
            self.model_key.setdefault(spec, key)
        self.layout = plan_layout(list(self.model_key.values()), args.tensor_parallel_size, args.data_parallel_size,
                                  visible_gpus(), args.vllm_gpu_memory)
        print(self.layout.note, flush=True)
        self._tmp = []
        self.paths = {}
        for spec in self.model_key:
            if is_toy(spec):  # vLLM loads from a folder: save the in-process toy model and tokenizer
                from transformers.utils import logging as hf_logging

                tmp = tempfile.TemporaryDirectory(prefix="toy-vllm-")
                self._tmp.append(tmp)
                bar = hf_logging.is_progress_bar_enabled()
                hf_logging.disable_progress_bar()  # an instant save: its bar on stderr would only be noise
                try:
                    load_causal_lm(spec, "--policy", seed=TASK_SEED).save_pretrained(tmp.name)
                finally:
                    if bar:
                        hf_logging.enable_progress_bar()
                load_tokenizer(spec).save_pretrained(tmp.name)
                self.paths[spec] = tmp.name
            else:
                self.paths[spec] = spec
        self.engines = {}
        try:
            for spec, key in self.model_key.items():
                kwargs = dict(model=self.paths[spec], tokenizer=self.paths[spec], dtype=args.dtype, seed=args.seed,
                              gpu_memory_utilization=self.layout.memory,
                              tensor_parallel_size=self.layout.tensor_parallel_size,
                              trust_remote_code=args.trust_remote_code)
                self.engines[spec] = [LocalEngine(self.vllm, kwargs, gpus) if self.layout.in_process
                                      else start_worker(self.vllm, kwargs, gpus) for gpus in self.layout.gpus[key]]
            for replicas in self.engines.values():  # the workers start side by side; wait for all
                for e in replicas:
                    e.ready()
        except BaseException:
            self.close()
            raise
        eos = None
        try:
            from transformers import GenerationConfig

            eos = GenerationConfig.from_pretrained(self.paths[self.specs[main_key]]).eos_token_id
        except Exception:  # no generation_config.json: the tokenizer's EOS
            pass
        eos = self.tok.eos_token_id if eos is None else eos
        self.eos = [eos] if isinstance(eos, int) else [e for e in eos if e is not None]

    def close(self):
        for replicas in self.engines.values():
            for e in replicas:
                e.close()
        self.engines = {}

    def replicas(self, key: str) -> list:
        return self.engines[self.specs[key]]

    def _submit(self, key: str, job: str, items: list, *shared):
        """Send job over contiguous shards of `items` (tuples of per-request arguments) to the key's engines."""
        parts = shards(items, len(self.replicas(key)))
        pending = []
        for engine, part in zip(self.replicas(key), parts):
            if part:
                engine.submit(job, *[list(col) for col in zip(*part)], *shared)
                pending.append(engine)
        return pending

    @staticmethod
    def _collect(pending) -> list:
        return [x for engine in pending for x in engine.result()]  # shards in order: the requests' order

    def max_model_len(self, key: str) -> int:
        """The engine's context length, else the model config's max_position_embeddings; never unknown."""
        engine = self.replicas(key)[0]
        engine.submit("max_model_len")
        limit = engine.result()
        if limit is not None:
            return limit
        from transformers import AutoConfig

        path = self.paths[self.specs[key]]
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=self.args.trust_remote_code)
        except Exception as e:
            raise ConfigError(f"--{key}: cannot tell the context length of {self.specs[key]!r}: vLLM's engine has no "
                              f"llm_engine.model_config.max_model_len and its config does not load "
                              f"({type(e).__name__})") from None
        limit = getattr(config, "max_position_embeddings", None)
        if not isinstance(limit, int):
            raise ConfigError(f"--{key}: cannot tell the context length of {self.specs[key]!r}: vLLM's engine has no "
                              f"llm_engine.model_config.max_model_len and its config no max_position_embeddings")
        return limit

    def check_lengths(self, prompt_ids, max_new_tokens: int, rows):
        i = max(range(len(prompt_ids)), key=lambda j: len(prompt_ids[j]))
        for key in self.specs:
            limit = self.max_model_len(key)
            if len(prompt_ids[i]) + max_new_tokens > limit:
                raise ConfigError(f"--max-new-tokens: prompt {rows[i]['id']!r} has {len(prompt_ids[i])} tokens; "
                                  f"with {max_new_tokens} new ones that is more than --{key}'s max_model_len {limit}")

    def _params(self, n: int, seed: int) -> dict:
        a = self.args
        return dict(n=n, temperature=a.temperature, top_p=a.top_p, max_tokens=a.max_new_tokens, seed=seed,
                    stop_token_ids=self.eos, detokenize=False)  # we decode the token ids ourselves

    def _submit_sample(self, key: str, prompt_ids, n: int, seed: int):
        # the seed of request i depends on i in the whole batch, not in its shard: DP draws = one engine's draws
        items = [(list(ids), self._params(n, request_seed(seed, i))) for i, ids in enumerate(prompt_ids)]
        return self._submit(key, "sample", items)

    def _draws(self, answers):
        from alignment.generation.backend import Draws

        tokens, finished = [], []
        for completions in answers:
            tk, fin = [], []
            for ids, finish_reason, stop_reason in completions:
                ids = list(ids)
                done = finish_reason == "stop"
                if done and (not ids or ids[-1] not in self.eos):  # EOS left out of token_ids: count it, as HF does
                    ids.append(stop_reason if isinstance(stop_reason, int) else self.eos[0])
                tk.append(ids)
                fin.append(done)
            tokens.append(tk)
            finished.append(fin)
        return Draws(tokens, finished)

    def _submit_score(self, key: str, prompt_ids, responses):
        items = [(list(p) + list(r), len(p)) for p, rs in zip(prompt_ids, responses) for r in rs]
        return self._submit(key, "score", items, dict(max_tokens=1, prompt_logprobs=0, temperature=0.0,
                                                      detokenize=False))

    @staticmethod
    def _regroup(sums, responses) -> list:
        out, k = [], 0
        for rs in responses:
            out.append(sums[k:k + len(rs)])
            k += len(rs)
        return out

    def score(self, key: str, prompt_ids, responses) -> list:
        """[P][n] sum over each response's tokens of log pi_key(token | prefix), from prompt log-probs."""
        return self._regroup(self._collect(self._submit_score(key, prompt_ids, responses)), responses)

    def draw(self, prompt_ids, tilt: Tilt, n: int, seed: int):
        if tilt not in (POLICY, REF):
            raise ConfigError(f"--sampler: the tilt {tilt} needs per-token fusion, which vLLM cannot do; "
                              f"use --backend hf")
        return self._draws(self._collect(self._submit_sample("policy" if tilt == POLICY else "ref", prompt_ids,
                                                             n, seed)))

    def draw_scored(self, prompt_ids, n: int, seed: int):
        d = self._draws(self._collect(self._submit_sample("policy", prompt_ids, n, seed)))
        pending_pi = self._submit_score("policy", prompt_ids, d.tokens)
        same = self.specs["ref"] == self.specs["policy"]
        pending_ref = None if same else self._submit_score("ref", prompt_ids, d.tokens)  # both models at once
        lp_pi = self._regroup(self._collect(pending_pi), d.tokens)
        lp_ref = lp_pi if same else self._regroup(self._collect(pending_ref), d.tokens)
        d.logprobs = [[(a, b) for a, b in zip(pa, pr)] for pa, pr in zip(lp_pi, lp_ref)]
        return d

    def layout_record(self) -> dict:
        """run.json's resolved.vllm_layout."""
        return asdict(self.layout)
