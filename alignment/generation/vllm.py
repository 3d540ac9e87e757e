"""The vLLM generation backend (generation/backend.py's interface) for `python -m alignment.generate --backend vllm`
(GPU nodes only).

vLLM is imported only here and only when --backend vllm is chosen; without it the command stops with
one line telling the user to `pip install -r requirements_vllm.txt` (GPU nodes only), exit code 2.

What vLLM runs: offline, on_policy and gshf (plain sampling from pi_ref and/or pi) and mix_p_seq (M
candidates sampled from pi, then both models score them: each engine computes the prompt log-probs of
prompt + response, and the sum over the response tokens, EOS included, is log pi_m(y | x); the
resampling is generation/samplers.py's, shared with the HF backend). vLLM cannot fuse two models' logits token by
token, so mix_p is refused before anything is loaded (generate.resolve).

One engine per distinct model: when --ref names another model than --policy (gshf, mix_p_seq), two
engines share the GPU, each with half of --vllm-gpu-memory. Prompts go in as token ids (tokenized by
generate.py exactly as for the HF backend) and responses come back as token ids, decoded by the same
tokenizer, so both backends write the same row format. Each request (prompt) has its own seed, derived
from the batch seed and its index. A toy:SIZE model is saved to a temporary folder for vLLM to load.
"""
from __future__ import annotations

import tempfile
import zlib

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
        self._tmp = []
        paths = {}
        for spec in dict.fromkeys(self.specs.values()):
            if is_toy(spec):  # vLLM loads from a folder: save the in-process toy model and tokenizer
                tmp = tempfile.TemporaryDirectory(prefix="toy-vllm-")
                self._tmp.append(tmp)
                load_causal_lm(spec, "--policy", seed=TASK_SEED).save_pretrained(tmp.name)
                load_tokenizer(spec).save_pretrained(tmp.name)
                paths[spec] = tmp.name
            else:
                paths[spec] = spec
        share = args.vllm_gpu_memory / len(paths)
        self.engines = {spec: self.vllm.LLM(model=path, tokenizer=path, dtype=args.dtype, seed=args.seed,
                                            gpu_memory_utilization=share, trust_remote_code=args.trust_remote_code)
                        for spec, path in paths.items()}
        eos = None
        try:
            from transformers import GenerationConfig

            eos = GenerationConfig.from_pretrained(paths[self.specs[main_key]]).eos_token_id
        except Exception:  # no generation_config.json: the tokenizer's EOS
            pass
        eos = self.tok.eos_token_id if eos is None else eos
        self.eos = [eos] if isinstance(eos, int) else [e for e in eos if e is not None]

    def engine(self, key: str):
        return self.engines[self.specs[key]]

    def check_lengths(self, prompt_ids, max_new_tokens: int, rows):
        for key in self.specs:
            try:
                limit = self.engine(key).llm_engine.model_config.max_model_len
            except AttributeError:
                continue
            i = max(range(len(prompt_ids)), key=lambda j: len(prompt_ids[j]))
            if len(prompt_ids[i]) + max_new_tokens > limit:
                raise ConfigError(f"--max-new-tokens: prompt {rows[i]['id']!r} has {len(prompt_ids[i])} tokens; "
                                  f"with {max_new_tokens} new ones that is more than --{key}'s max_model_len {limit}")

    def _params(self, n: int, seed: int, **extra):
        a = self.args
        return self.vllm.SamplingParams(n=n, temperature=a.temperature, top_p=a.top_p, max_tokens=a.max_new_tokens,
                                        seed=seed, stop_token_ids=self.eos, **extra)

    def _sample(self, key: str, prompt_ids, n: int, seed: int):
        from alignment.generation.backend import Draws

        params = [self._params(n, request_seed(seed, i)) for i in range(len(prompt_ids))]
        outs = self.engine(key).generate([{"prompt_token_ids": list(ids)} for ids in prompt_ids], params,
                                         use_tqdm=False)
        tokens, finished = [], []
        for ro in outs:
            tk, fin = [], []
            for co in ro.outputs:
                ids = list(co.token_ids)
                done = co.finish_reason == "stop"
                if done and (not ids or ids[-1] not in self.eos):  # EOS left out of token_ids: count it, as HF does
                    ids.append(co.stop_reason if isinstance(co.stop_reason, int) else self.eos[0])
                tk.append(ids)
                fin.append(done)
            tokens.append(tk)
            finished.append(fin)
        return Draws(tokens, finished)

    def score(self, key: str, prompt_ids, responses) -> list:
        """[P][n] sum over each response's tokens of log pi_key(token | prefix), from prompt log-probs."""
        flat = [(list(p), list(r)) for p, rs in zip(prompt_ids, responses) for r in rs]
        params = self.vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        outs = self.engine(key).generate([{"prompt_token_ids": p + r} for p, r in flat], params, use_tqdm=False)
        sums = []
        for (p, r), ro in zip(flat, outs):
            total = 0.0
            for pos, tok in zip(range(len(p), len(p) + len(r)), r):
                total += ro.prompt_logprobs[pos][tok].logprob
            sums.append(total)
        out, k = [], 0
        for rs in responses:
            out.append(sums[k:k + len(rs)])
            k += len(rs)
        return out

    def draw(self, prompt_ids, tilt: Tilt, n: int, seed: int):
        if tilt not in (POLICY, REF):
            raise ConfigError(f"--sampler: the tilt {tilt} needs per-token fusion, which vLLM cannot do; "
                              f"use --backend hf")
        return self._sample("policy" if tilt == POLICY else "ref", prompt_ids, n, seed)

    def draw_scored(self, prompt_ids, n: int, seed: int):
        d = self._sample("policy", prompt_ids, n, seed)
        lp_pi = self.score("policy", prompt_ids, d.tokens)
        lp_ref = lp_pi if self.specs["ref"] == self.specs["policy"] else self.score("ref", prompt_ids, d.tokens)
        d.logprobs = [[(a, b) for a, b in zip(pa, pr)] for pa, pr in zip(lp_pi, lp_ref)]
        return d
