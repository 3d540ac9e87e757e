"""The vLLM backend's placement and plumbing (alignment/generation/vllm.py) against a strict stand-in `vllm` module:
--tensor-parallel-size reaches vllm.LLM, detokenize is off, policy and ref get their own GPUs when enough are
visible and share one with half the memory each when not, data-parallel engines write the rows one engine writes,
and the length check stops a too-long prompt (exit 2) even when the engine lacks the max_model_len attribute path.

vLLM cannot be installed on the test machines, so the stand-in carries vLLM 0.31's names, checked by hand against
the vllm-0.31.0 wheel (PyPI, `pip download vllm==0.31.0 --no-deps`; commit gdb9527a46 in vllm/_version.py):
    vllm/entrypoints/llm.py:180-226    LLM.__init__(model, *, tokenizer, trust_remote_code, tensor_parallel_size,
                                       dtype, seed, gpu_memory_utilization, ...,  **kwargs -> EngineArgs)
    vllm/entrypoints/llm.py:283-296    LLM(data_parallel_size > 1) raises ValueError in one process (hence our
                                       own engine-per-GPU-set data parallelism)
    vllm/engine/arg_utils.py:495,523   EngineArgs.max_model_len, .tensor_parallel_size
    vllm/entrypoints/llm.py:344-347    LLM.llm_engine (vllm.v1.engine.llm_engine.LLMEngine) and LLM.model_config
    vllm/v1/engine/llm_engine.py:65    LLMEngine.model_config = vllm_config.model_config
    vllm/config/model.py:217           ModelConfig.max_model_len
    vllm/entrypoints/llm.py:420-430    LLM.generate(prompts, sampling_params, *, use_tqdm, ...)
    vllm/inputs/llm.py:111-114         TokensPrompt (a TypedDict) with prompt_token_ids; exported by vllm/__init__.py
    vllm/sampling_params.py:211-400    SamplingParams' fields (SAMPLING_PARAMS_FIELDS below, the public ones)
    vllm/outputs.py:33-66,108-171      RequestOutput.outputs / .prompt_logprobs; CompletionOutput.token_ids,
                                       .finish_reason, .stop_reason
    vllm/logprobs.py:13-21             Logprob.logprob
"""
import dataclasses
import json
import os
import random
import sys
import types
import zlib
from pathlib import Path

import pytest
import torch

from alignment.core import toy
from alignment.core.models import load_causal_lm
from alignment.generate import main
from alignment.generation import vllm as vllm_backend

pytestmark = pytest.mark.usefixtures("torch_single_thread")

# vllm/entrypoints/llm.py:180-226, LLM.__init__'s named parameters
LLM_KWARGS = ("model", "runner", "convert", "tokenizer", "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code",
              "allowed_local_media_path", "allowed_media_domains", "tensor_parallel_size", "dtype", "quantization",
              "revision", "tokenizer_revision", "chat_template", "seed", "gpu_memory_utilization", "cpu_offload_gb",
              "offload_group_size", "offload_num_in_group", "offload_prefetch_step", "offload_params",
              "enforce_eager", "enable_return_routed_experts", "return_sampling_mask", "disable_custom_all_reduce",
              "hf_token", "hf_overrides", "mm_processor_kwargs", "pooler_config", "structured_outputs_config",
              "profiler_config", "attention_config", "kv_cache_memory_bytes", "compilation_config",
              "quantization_config", "logits_processors", "spec_method", "spec_model", "spec_tokens")
ENGINE_ARGS = ("max_model_len", "data_parallel_size")  # through **kwargs: vllm/engine/arg_utils.py:495,530

# vllm/sampling_params.py:211-400: SamplingParams' public fields and their defaults (output_kind's default is an
# enum there; the underscore fields, set in post-init, are left out)
SAMPLING_PARAMS_FIELDS = {
    "n": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0, "temperature": 1.0,
    "watermarking": True, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "seed": None, "stop": None, "stop_token_ids": None,
    "ignore_eos": False, "max_tokens": 16, "min_tokens": 0, "logprobs": None, "prompt_logprobs": None,
    "prompt_logprob_token_ids": None, "prompt_logprob_start": None, "logprob_token_ids": None, "flat_logprobs": False,
    "detokenize": True, "skip_special_tokens": True, "spaces_between_special_tokens": True,
    "include_stop_str_in_output": False, "output_kind": "CUMULATIVE", "stream_interval": None, "skip_clone": False,
    "output_text_buffer_length": 0, "structured_outputs": None, "logit_bias": None, "allowed_token_ids": None,
    "extra_args": None, "bad_words": None, "skip_reading_prefix_cache": None, "thinking_token_budget": None,
    "repetition_detection": None, "routed_experts_prompt_start": 0, "trace_decode_token_ids": None}

ns = types.SimpleNamespace
EOS = toy.build_tokenizer().eos_token_id
VOCAB = len(toy.build_tokenizer())


def stand_in_vllm(max_model_len: int | None = 128, engine_attrs: bool = True):
    """A `vllm` module with vLLM 0.31's names: LLM accepts only LLM.__init__'s parameters (plus max_model_len),
    SamplingParams only its fields (a misspelt name is a TypeError). LLM.generate answers each request with token
    ids drawn from (model, seed, prompt, completion index) alone, as vLLM's per-request seeds promise: never from
    the request's position in the batch. engine_attrs=False: no llm_engine / model_config attribute at all."""
    mod = types.ModuleType("vllm")
    SamplingParams = dataclasses.make_dataclass(
        "SamplingParams", [(k, object, dataclasses.field(default=v)) for k, v in SAMPLING_PARAMS_FIELDS.items()],
        kw_only=True)

    def TokensPrompt(**kw):  # a TypedDict: calling it builds a plain dict
        assert set(kw) == {"prompt_token_ids"}
        return dict(kw)

    class LLM:
        created = []

        def __init__(self, model, **kwargs):
            unknown = set(kwargs) - set(LLM_KWARGS) - set(ENGINE_ARGS)
            if unknown:
                raise TypeError(f"LLM() got unexpected keyword arguments {sorted(unknown)}")
            if kwargs.get("data_parallel_size", 1) > 1:  # vllm/entrypoints/llm.py:283-296
                raise ValueError("LLM(data_parallel_size>1) is not supported for single-process usage")
            self.kwargs = {"model": model, **kwargs}
            # which model, independent of the temporary folder it was saved to: its config
            config = Path(model) / "config.json"
            self.identity = zlib.crc32(config.read_bytes()) if config.exists() else model
            self.cuda_visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
            self.prompts, self.params = [], []
            if engine_attrs:
                self.llm_engine = ns(model_config=ns(max_model_len=max_model_len))
                self.model_config = self.llm_engine.model_config
            LLM.created.append(self)

        def generate(self, prompts, sampling_params=None, *, use_tqdm=True):
            params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
            assert len(params) == len(prompts) and all(isinstance(p, SamplingParams) for p in params)
            outs = []
            for p, sp in zip(prompts, params):
                ids = p["prompt_token_ids"]
                self.prompts.append(list(ids))
                self.params.append(sp)
                if sp.prompt_logprobs is not None:  # a made-up log-prob per (model, prefix, token)
                    plp = [None] + [{t: ns(logprob=-random.Random(f"{self.identity}/{ids[:i]}/{t}").random())}
                                    for i, t in enumerate(ids) if i > 0]
                    outs.append(ns(prompt_logprobs=plp, outputs=[ns(token_ids=[3], finish_reason="length",
                                                                    stop_reason=None)]))
                    continue
                cos = []
                for j in range(sp.n):
                    rng = random.Random(f"{self.identity}/{sp.seed}/{ids}/{j}")
                    row = []
                    while len(row) < sp.max_tokens:
                        t = rng.randrange(3, VOCAB)
                        if rng.random() < 0.15:
                            t = EOS
                        if t in (sp.stop_token_ids or []):  # like vLLM with a special EOS: left out, stop_reason
                            cos.append(ns(token_ids=row, finish_reason="stop", stop_reason=t))
                            break
                        row.append(t)
                    else:
                        cos.append(ns(token_ids=row, finish_reason="length", stop_reason=None))
                outs.append(ns(prompt_logprobs=None, outputs=cos))
            return outs

    mod.LLM, mod.SamplingParams, mod.TokensPrompt = LLM, SamplingParams, TokensPrompt
    return mod


def inline_worker(vllm, kwargs, gpus):
    """The worker-process seam run in this process: the engine is built while CUDA_VISIBLE_DEVICES names its GPUs,
    as in the spawned worker, so the stand-in records what the worker would see."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    try:
        return vllm_backend.LocalEngine(vllm, kwargs, gpus)
    finally:
        if before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


@pytest.fixture
def fake(monkeypatch):
    """Install a stand-in vllm; returns a function that sets how many GPUs torch sees (0 by default)."""
    state = {"mod": stand_in_vllm(), "gpus": 0}
    monkeypatch.setitem(sys.modules, "vllm", state["mod"])
    monkeypatch.setattr(vllm_backend, "start_worker", inline_worker)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: state["gpus"])

    def setup(gpus=0, **stand_in):
        state["gpus"] = gpus
        if stand_in:
            state["mod"] = stand_in_vllm(**stand_in)
            monkeypatch.setitem(sys.modules, "vllm", state["mod"])
        return state["mod"]
    return setup


TWO = ["--backend", "vllm", "--policy", "toy:tiny", "--ref", "toy:small", "--num-responses", "4",
       "--max-new-tokens", "12"]


def run_json(path):
    return json.loads((Path(path) / "run.json").read_text())


def test_the_stand_in_refuses_misspelt_names():
    mod = stand_in_vllm()
    with pytest.raises(TypeError):
        mod.SamplingParams(max_new_tokens=4)  # vLLM's name is max_tokens
    with pytest.raises(TypeError):
        mod.LLM(model="m", tensor_parallel=2)
    assert mod.SamplingParams(detokenize=False, max_tokens=4).detokenize is False


def test_tensor_parallel_size_reaches_llm_and_detokenize_is_off(fake, tmp_path):
    mod = fake(gpus=2)
    path = main(["--backend", "vllm", "--policy", "toy:tiny", "--prompts", "toy:3", "--sampler", "on_policy",
                 "--tensor-parallel-size", "2", "--max-new-tokens", "8", "--out", str(tmp_path)])
    (engine,) = mod.LLM.created  # one model, 2 GPUs, TP 2: one engine, data parallel 1
    assert engine.kwargs["tensor_parallel_size"] == 2
    assert engine.cuda_visible_devices is None  # the first TP visible GPUs: vLLM's own choice, in this process
    assert engine.params and all(p.detokenize is False for p in engine.params)
    assert run_json(path)["config"]["resolved"]["vllm_layout"]["gpus"] == {"policy": [["0", "1"]]}


def test_scoring_requests_do_not_detokenize_either(fake, tmp_path):
    mod = fake()
    main(TWO + ["--prompts", "toy:2", "--sampler", "mix_p_seq", "--num-candidates", "4", "--out", str(tmp_path)])
    params = [p for e in mod.LLM.created for p in e.params]
    assert any(p.prompt_logprobs is not None for p in params) and all(p.detokenize is False for p in params)


def test_two_models_get_their_own_gpus_when_enough_are_visible(fake, tmp_path, capsys):
    mod = fake(gpus=8)
    path = main(TWO + ["--prompts", "toy:8", "--sampler", "gshf", "--out", str(tmp_path)])
    # 8 GPUs, TP 1, 2 models: 4 engines per model; the policy on GPUs 0-3, the reference on 4-7
    by_model = {}
    for e in mod.LLM.created:
        by_model.setdefault(e.identity, []).append(e)
    (pi, ref) = by_model.values()  # policy first: the order the backend names the models in
    assert [e.cuda_visible_devices for e in pi] == ["0", "1", "2", "3"]
    assert [e.cuda_visible_devices for e in ref] == ["4", "5", "6", "7"]
    assert all(e.kwargs["gpu_memory_utilization"] == 0.85 for e in mod.LLM.created)  # a whole GPU each
    layout = run_json(path)["config"]["resolved"]["vllm_layout"]
    assert layout["shared"] is False and layout["data_parallel_size"] == 4
    out = capsys.readouterr().out
    assert "policy on GPUs 0,1,2,3, ref on GPUs 4,5,6,7" in out


def test_two_models_share_one_gpu_with_half_the_memory_each(fake, tmp_path, capsys):
    mod = fake(gpus=1)
    path = main(TWO + ["--prompts", "toy:2", "--sampler", "gshf", "--out", str(tmp_path)])
    assert len(mod.LLM.created) == 2
    assert [e.kwargs["gpu_memory_utilization"] for e in mod.LLM.created] == pytest.approx([0.425, 0.425])
    layout = run_json(path)["config"]["resolved"]["vllm_layout"]
    assert layout["shared"] is True and layout["gpus"] == {"policy": [["0"]], "ref": [["0"]]}
    assert "policy and ref share GPU 0" in capsys.readouterr().out


@pytest.mark.parametrize("sampler", ["gshf", "mix_p_seq"])
def test_data_parallel_rows_equal_one_engine_rows(fake, tmp_path, sampler):
    argv = TWO + ["--prompts", "toy:7", "--batch-size", "5", "--sampler", sampler]  # batches of 5 and 2 prompts
    mod = fake(gpus=1)
    one = main(argv + ["--out", str(tmp_path / "one")])
    assert len(mod.LLM.created) == 2  # one engine per model
    single = {e.identity: sorted(e.prompts) for e in mod.LLM.created}
    mod = fake(gpus=8, max_model_len=128)  # a fresh stand-in: 4 engines per model
    dp = main(argv + ["--out", str(tmp_path / "dp")])
    assert len(mod.LLM.created) == 8
    # not vacuous: each engine answered a proper part of its model's requests, which together are the one
    # engine's requests, each once
    for identity, requests in single.items():
        engines = [e for e in mod.LLM.created if e.identity == identity]
        assert len(engines) == 4 and all(0 < len(e.prompts) < len(requests) for e in engines)
        assert sorted(p for e in engines for p in e.prompts) == requests
    assert (Path(one) / "generations.jsonl").read_bytes() == (Path(dp) / "generations.jsonl").read_bytes()


def test_shards_are_contiguous_and_cover_every_request():
    assert vllm_backend.shards(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert vllm_backend.shards([0], 3) == [[0], [], []]


def _expect_exit2(argv, flag, capsys, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(argv + ["--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err, err
    assert not out.exists()
    return err


def test_too_long_prompt_stops_without_the_engine_attribute(fake, tmp_path, capsys):
    # no llm_engine / model_config on the engine: the model's own config.json decides (toy: 128 positions)
    fake(gpus=1, engine_attrs=False)
    limit = load_causal_lm("toy:tiny").config.max_position_embeddings
    argv = ["--backend", "vllm", "--policy", "toy:tiny", "--prompts", "toy:2", "--max-new-tokens", str(limit)]
    err = _expect_exit2(argv, "--max-new-tokens", capsys, tmp_path)
    assert f"max_model_len {limit}" in err
    # the engine's own max_model_len, when it has one, is the limit
    fake(gpus=1, max_model_len=20)
    err = _expect_exit2(argv[:-1] + ["16"], "--max-new-tokens", capsys, tmp_path)
    assert "max_model_len 20" in err


def test_unknown_context_length_is_an_error_not_a_skip(fake, tmp_path, capsys, monkeypatch):
    import transformers

    fake(engine_attrs=False)
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *a, **k: ns())  # no max_position_embeddings
    err = _expect_exit2(["--backend", "vllm", "--policy", "toy:tiny", "--prompts", "toy:2"], "--policy", capsys,
                        tmp_path)
    assert "cannot tell the context length" in err


@pytest.mark.parametrize("argv,flag", [
    (["--backend", "vllm", "--tensor-parallel-size", "0"], "--tensor-parallel-size"),
    (["--backend", "vllm", "--data-parallel-size", "0"], "--data-parallel-size"),
    (["--tensor-parallel-size", "2"], "--tensor-parallel-size"),            # --backend hf
    (["--data-parallel-size", "2"], "--data-parallel-size"),
    (["--backend", "vllm", "--tensor-parallel-size", "4"], "--tensor-parallel-size"),   # 2 GPUs visible
    (["--backend", "vllm", "--data-parallel-size", "3"], "--data-parallel-size"),
    (["--backend", "vllm", "--ref", "toy:small", "--sampler", "gshf", "--tensor-parallel-size", "2",
      "--data-parallel-size", "2"], "--data-parallel-size"),                             # 4 needed even shared
], ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_bad_parallel_flags_one_line_exit_2(fake, tmp_path, capsys, argv, flag):
    fake(gpus=2)
    _expect_exit2(["--policy", "toy:tiny", "--prompts", "toy:2"] + argv, flag, capsys, tmp_path)


def test_no_visible_gpu_refuses_parallel_flags(fake, tmp_path, capsys):
    fake(gpus=0)
    err = _expect_exit2(["--backend", "vllm", "--policy", "toy:tiny", "--tensor-parallel-size", "2"],
                        "--tensor-parallel-size", capsys, tmp_path)
    assert "none" in err


WORKER_STAND_IN = '''
import os, types
class LLM:
    def __init__(self, model, **kwargs):
        if model == "broken":
            raise RuntimeError("no such model")
        # what the worker saw, told back through the one integer a job returns: "3,5" -> 35
        seen = int(os.environ["CUDA_VISIBLE_DEVICES"].replace(",", ""))
        self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=seen))
'''


@pytest.mark.slow  # starts a (spawned) process: the project's rule for the slow lane, though it takes < 1 s
def test_worker_process_sees_only_its_gpus(tmp_path, monkeypatch):
    """The real worker: a spawned process with CUDA_VISIBLE_DEVICES = the engine's GPUs (a file stand-in of vllm on
    the path the child inherits); its engine answers jobs, and a failing engine start is one RuntimeError."""
    (tmp_path / "vllm.py").write_text(WORKER_STAND_IN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,5,7")
    engine = vllm_backend.WorkerEngine(None, {"model": "m"}, ["3", "5"])
    try:
        engine.ready()
        engine.submit("max_model_len")
        assert engine.result() == 35  # the stand-in saw CUDA_VISIBLE_DEVICES=3,5
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3,5,7"  # ours is left as it was
    finally:
        engine.close()
    assert not engine.proc.is_alive()
    broken = vllm_backend.WorkerEngine(None, {"model": "broken"}, ["2"])
    with pytest.raises(RuntimeError, match="no such model"):
        broken.ready()
    broken.close()
