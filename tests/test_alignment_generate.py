"""python -m alignment.generate: the samplers draw from the models they claim, the run folder and row
format, reproducibility, bad input (one line, exit 2, nothing written), the vLLM backend's guard and its
plumbing (against a stand-in vllm module), and one real `python -m` subprocess.

Everything uses toy models (tiny Llamas built from configs) and a few tokens per response.
"""
import json
import os
import signal
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

from alignment.core import toy
from conftest import sharp_toy_model
from alignment.generation.decoding import sample
from alignment.generate import Args, main, resolve
from bandit.spec import POLICY
from alignment.generation.backend import HFBackend, batch_seed, encode_prompts
from alignment.generation.samplers import SAMPLERS, component_plan, generate_batch

pytestmark = pytest.mark.usefixtures("torch_single_thread")

REPO = Path(__file__).resolve().parents[1]
TOK = toy.build_tokenizer()
ROW_KEYS = {"id", "prompt", "responses", "components", "num_tokens"}
TINY = ["--policy", "toy:tiny", "--max-new-tokens", "6", "--prompts", "toy:5", "--batch-size", "2"]


@pytest.fixture(scope="module")
def models():
    return {"pi": sharp_toy_model(1), "pi2": sharp_toy_model(2), "ref": sharp_toy_model(3), "ref2": sharp_toy_model(4)}


def run_batch(sampler, pi, ref, **kw):
    """generate_batch on in-memory models: 4 prompts, K = 4, 8 new tokens."""
    args = Args(policy="toy:tiny", ref="toy:tiny", sampler=sampler, num_responses=4, max_new_tokens=8, **kw)
    plan = resolve(args)
    rows = toy.ToyTask(0).prompts(4)
    backend = HFBackend({"policy": pi, "ref": ref}, TOK, args, torch.device("cpu"))
    out, _ = generate_batch(backend, plan, args, rows, encode_prompts(TOK, rows))
    return out, backend, plan, args, rows


def by_component(rows, component):
    return [[r for r, c in zip(row["responses"], row["components"]) if c == component] for row in rows]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# ------------------------------------------------------------------------------- who draws from what

def test_offline_draws_from_ref_only(models):
    a, *_ = run_batch("offline", models["pi"], models["ref"])
    b, *_ = run_batch("offline", models["pi2"], models["ref"])
    c, *_ = run_batch("offline", models["pi"], models["ref2"])
    assert a == b and a != c
    assert all(row["components"] == ["ref"] * 4 for row in a)


def test_online_draws_from_policy_only(models):
    a, *_ = run_batch("on_policy", models["pi"], models["ref"])
    b, *_ = run_batch("on_policy", models["pi"], models["ref2"])
    c, *_ = run_batch("on_policy", models["pi2"], models["ref"])
    assert a == b and a != c
    assert all(row["components"] == ["policy"] * 4 for row in a)


def test_gshf_ref_half_from_ref_and_policy_half_from_policy(models):
    a, *_ = run_batch("gshf", models["pi"], models["ref"])
    new_pi, *_ = run_batch("gshf", models["pi2"], models["ref"])
    new_ref, *_ = run_batch("gshf", models["pi"], models["ref2"])
    assert all(row["components"] == ["ref", "ref", "policy", "policy"] for row in a)
    assert by_component(a, "ref") == by_component(new_pi, "ref")
    assert by_component(a, "policy") != by_component(new_pi, "policy")
    assert by_component(a, "policy") == by_component(new_ref, "policy")
    assert by_component(a, "ref") != by_component(new_ref, "ref")


def test_mixp_depends_on_both_models_and_uses_the_fused_logits(models):
    pi, ref = models["pi"], models["ref"]
    a, backend, plan, args, rows = run_batch("mix_p", pi, ref)
    assert all(row["components"] == ["mix+", "mix+", "mix-", "mix-"] for row in a)
    for other in (run_batch("mix_p", models["pi2"], ref)[0], run_batch("mix_p", pi, models["ref2"])[0]):
        assert by_component(a, "mix+") != by_component(other, "mix+")
        assert by_component(a, "mix-") != by_component(other, "mix-")
    # each component is exactly the fused sampler with its weights, under the batch's seed
    ids = encode_prompts(TOK, rows)
    from alignment.generation.decoding import left_pad
    for comp, w in (("mix+", [1.5, -0.5]), ("mix-", [0.5, 0.5])):
        x, m = left_pad([s for s in ids for _ in range(2)], TOK.pad_token_id)
        g = torch.Generator().manual_seed(batch_seed(0, comp, rows[0]["id"], len(rows)))
        out = sample([pi, ref], w, x, m, max_new_tokens=8, eos_token_id=TOK.eos_token_id,
                     pad_token_id=TOK.pad_token_id, generator=g)
        want = [TOK.decode(out.row(i), skip_special_tokens=True) for i in range(len(x))]
        assert sum(by_component(a, comp), []) == want


def test_mixp_with_pi_equal_to_ref_is_on_policy_sampling(models):
    """Both fusions of a model with itself are that model: one forward per token, pi's own draws."""
    a, backend, plan, args, rows = run_batch("mix_p", models["pi"], models["pi"])
    ids = encode_prompts(TOK, rows)
    d = backend.draw(ids, POLICY, 2, batch_seed(0, "mix+", rows[0]["id"], len(rows)))
    assert by_component(a, "mix+") == [[TOK.decode(t, skip_special_tokens=True) for t in ts] for ts in d.tokens]


def test_mixp_online_pair_adds_two_policy_responses(models):
    a, backend, plan, args, rows = run_batch("mix_p", models["pi"], models["ref"], mixp_online_pair=True)
    assert all(row["components"] == ["mix+", "mix+", "mix-", "mix-", "policy", "policy"] for row in a)
    # the pair is on-policy: pi's own draws, whatever the reference model
    d = backend.draw(encode_prompts(TOK, rows), POLICY, 2, batch_seed(0, "policy", rows[0]["id"], len(rows)))
    assert by_component(a, "policy") == [[TOK.decode(t, skip_special_tokens=True) for t in ts] for ts in d.tokens]
    b, *_ = run_batch("mix_p", models["pi"], models["ref2"], mixp_online_pair=True)
    assert by_component(a, "policy") == by_component(b, "policy")
    assert by_component(a, "mix+") != by_component(b, "mix+")


def test_mixp_seq_resamples_policy_candidates_by_the_ratio(models):
    pi, ref = models["pi"], models["ref"]
    a, backend, plan, args, rows = run_batch("mix_p_seq", pi, ref, num_candidates=8)
    assert all(row["components"] == ["mixseq+", "mixseq+", "mixseq-", "mixseq-"] for row in a)
    ids = encode_prompts(TOK, rows)
    seed = batch_seed(0, "candidates", rows[0]["id"], len(rows))
    cand = backend.draw_scored(ids, 8, seed)
    # candidates are pi's draws (ref runs alongside with weight 0 and does not change them)
    online = HFBackend({"policy": pi, "ref": models["ref2"]}, TOK, args, torch.device("cpu")).draw_scored(ids, 8, seed)
    assert cand.tokens == online.tokens
    texts = [[TOK.decode(t, skip_special_tokens=True) for t in ts] for ts in cand.tokens]
    for row, cands in zip(a, texts):
        assert all(r in cands for r in row["responses"])
        plus = [r for r, c in zip(row["responses"], row["components"]) if c == "mixseq+"]
        assert len(set(plus)) == len(plus) or len(set(cands)) < len(cands)  # distinct candidates
    # the log-probs are the models' own sequence log-probs
    for i, s in enumerate(ids):
        for j in range(2):
            y = cand.tokens[i][j]
            for m, model in enumerate((pi, ref)):
                with torch.no_grad():
                    lp = torch.log_softmax(model(input_ids=torch.tensor([s + y])).logits[0].double(), -1)
                want = sum(float(lp[len(s) - 1 + t, tok]) for t, tok in enumerate(y))
                assert cand.logprobs[i][j][m] == pytest.approx(want, abs=1e-4)
    # another ref: same candidates, other importance weights, so (with these sharp models) other picks
    b, *_ = run_batch("mix_p_seq", pi, models["ref2"], num_candidates=8)
    assert a != b


# --------------------------------------------------------------------------------- the entry point

@pytest.mark.parametrize("sampler", [s for s in SAMPLERS if s != "borda"])  # borda keeps a subset: its own tests
def test_main_writes_the_run(tmp_path, sampler):
    extra = ["--mixp-online-pair"] if sampler == "mix_p" else []
    path = main(TINY + ["--sampler", sampler, "--num-responses", "2", "--out", str(tmp_path)] + extra)
    assert path == tmp_path / sampler
    assert sorted(p.name for p in path.iterdir()) == ["generations.jsonl", "metrics.jsonl", "run.json"]
    rows = read_jsonl(path / "generations.jsonl")
    assert [r["id"] for r in rows] == [f"toy-train-{i}" for i in range(5)]
    want = [c for c, n in component_plan(sampler, 2, bool(extra)) for _ in range(n)]
    for r in rows:
        assert set(r) == ROW_KEYS
        assert r["components"] == want and len(r["responses"]) == len(want) == len(r["num_tokens"])
        assert all(isinstance(x, str) for x in r["responses"])
        assert all(isinstance(n, int) and 1 <= n <= 6 for n in r["num_tokens"])
    run = json.loads((path / "run.json").read_text())
    assert run["config"]["sampler"] == sampler and run["finished"]
    assert run["summary"]["prompts"] == 5 and run["summary"]["responses"] == 5 * len(want)
    metrics = read_jsonl(path / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1, 2]  # 5 prompts, batches of 2
    assert all(m["sampler"] == sampler and m["seed"] == 0 and m["tokens_per_s"] > 0 for m in metrics)
    # the same command twice gives the same file; another seed other draws
    text = (path / "generations.jsonl").read_text()
    main(TINY + ["--sampler", sampler, "--num-responses", "2", "--out", str(tmp_path)] + extra)
    assert (path / "generations.jsonl").read_text() == text
    main(TINY + ["--sampler", sampler, "--num-responses", "2", "--out", str(tmp_path), "--seed", "1"] + extra)
    assert (path / "generations.jsonl").read_text() != text


def test_default_policy_is_the_sft_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "runs/alignment/sft/toy/model"
    toy.build_model(TOK, "tiny", seed=7).save_pretrained(folder)
    TOK.save_pretrained(folder)
    path = main(["--prompts", "toy:2", "--max-new-tokens", "4", "--num-responses", "2"])
    assert path == Path("runs/alignment/generate/on_policy")
    run = json.loads((path / "run.json").read_text())
    assert run["config"]["resolved"]["policy"] == "runs/alignment/sft/toy/model"
    assert len(read_jsonl(path / "generations.jsonl")) == 2
    # a run folder holding model/ stands for its model, as in alignment.sft and rewards
    path = main(["--policy", "runs/alignment/sft/toy", "--prompts", "toy:2", "--max-new-tokens", "4", "--name", "r"])
    assert json.loads((path / "run.json").read_text())["config"]["resolved"]["policy"] == "runs/alignment/sft/toy/model"


def test_prompt_file_with_messages_uses_the_chat_template(tmp_path):
    tok = toy.build_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}:{% endif %}"
    rows = [{"id": "a", "prompt": [{"role": "user", "content": "write about ocean in 2 sentences"}]},
            {"id": "b", "prompt": "write about city in 1 sentence :"}]
    ids = encode_prompts(tok, rows)
    assert ids[0] == tok("write about ocean in 2 sentences :", add_special_tokens=False)["input_ids"]
    assert ids[1] == tok("write about city in 1 sentence :")["input_ids"]  # plain text: with <bos>


# ------------------------------------------------------------------------------------------ bad input

BAD = [
    (["--sampler", "gshf", "--num-responses", "3"], "--num-responses"),
    (["--sampler", "mix_p", "--num-responses", "0"], "--num-responses"),
    (["--sampler", "mix_p", "--alpha", "0"], "--alpha"),
    (["--sampler", "mix_p", "--alpha", "nan"], "--alpha"),
    (["--top-p", "0"], "--top-p"),
    (["--top-p", "1.5"], "--top-p"),
    (["--temperature", "-1"], "--temperature"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
    (["--max-new-tokens", "500"], "--max-new-tokens"),  # toy models have 128 positions
    (["--batch-size", "0"], "--batch-size"),
    (["--seed", "-1"], "--seed"),
    (["--sampler", "bogus"], "--sampler"),
    (["--sampler", "mix_p", "--backend", "vllm"], "--sampler"),
    (["--sampler", "on_policy", "--mixp-online-pair"], "--mixp-online-pair"),
    (["--sampler", "on_policy", "--num-candidates", "4"], "--num-candidates"),
    (["--sampler", "mix_p_seq", "--num-candidates", "1"], "--num-candidates"),
    (["--policy", "toy:huge"], "--policy"),
    (["--sampler", "gshf", "--ref", "./no/such/model"], "--ref"),
    (["--prompts", "missing.jsonl"], "--prompts"),
    (["--prompts", "toy:0"], "--prompts"),
    (["--device", "nonsense"], "--device"),
    (["--name", "a/b"], "--name"),
]


def _expect_exit2(argv, flag, capsys, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(argv + ["--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err, err
    assert not out.exists()  # nothing written, not even the folder
    return err


@pytest.mark.parametrize("argv,flag", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_one_line_exit_2_nothing_written(argv, flag, capsys, tmp_path):
    err = _expect_exit2(argv if "--policy" in argv else ["--policy", "toy:tiny"] + argv, flag, capsys, tmp_path)
    if "vllm" in argv:
        assert "--backend hf" in err and "mix_p_seq" in err


def test_missing_default_policy_says_run_sft_first(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = _expect_exit2([], "--policy", capsys, tmp_path)
    assert "python -m alignment.sft" in err and "toy:small" in err


def test_bad_prompt_files(capsys, tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"id": "x", "prompt": [{"role": "user", "content": "hi"}]}) + "\n")
    err = _expect_exit2(["--policy", "toy:tiny", "--prompts", str(chat)], "--prompts", capsys, tmp_path)
    assert "chat template" in err
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"id": "x", "text": "no prompt field"}) + "\n")
    _expect_exit2(["--policy", "toy:tiny", "--prompts", str(broken)], "--prompts", capsys, tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_requested_without_a_gpu(capsys, tmp_path):
    _expect_exit2(["--policy", "toy:tiny", "--device", "cuda"], "--device", capsys, tmp_path)


# ------------------------------------------------------------------------------------------ vLLM

def test_vllm_missing_is_one_clear_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    for sampler in ("on_policy", "gshf", "mix_p_seq"):
        err = _expect_exit2(["--policy", "toy:tiny", "--backend", "vllm", "--sampler", sampler], "--backend",
                            capsys, tmp_path)
        assert "pip install -r requirements_vllm.txt" in err and "GPU nodes only" in err


def _fake_vllm():
    """A stand-in `vllm` module with the API the backend uses (LLM.generate with token-id prompts, per-request
    seeds, stop_token_ids, prompt_logprobs), run by transformers on the CPU. Like vLLM it leaves the EOS
    token out of token_ids and reports finish_reason "stop" / stop_reason = that id."""
    from transformers import AutoModelForCausalLM

    mod = types.ModuleType("vllm")
    ns = types.SimpleNamespace

    class SamplingParams:
        def __init__(self, n=1, temperature=1.0, top_p=1.0, max_tokens=16, seed=None, stop_token_ids=None,
                     prompt_logprobs=None, detokenize=True):
            self.__dict__.update(locals())

    class LLM:
        created = []

        def __init__(self, model, *, tokenizer, dtype, seed, gpu_memory_utilization, tensor_parallel_size,
                     trust_remote_code):
            self.model = AutoModelForCausalLM.from_pretrained(model).eval()
            self.kwargs = dict(model=model, gpu_memory_utilization=gpu_memory_utilization)
            self.llm_engine = ns(model_config=ns(max_model_len=128))
            LLM.created.append(self)

        def generate(self, prompts, params, use_tqdm=True):
            params = params if isinstance(params, list) else [params] * len(prompts)
            outs = []
            for p, sp in zip(prompts, params):
                ids = p["prompt_token_ids"]
                if sp.prompt_logprobs is not None:
                    with torch.no_grad():
                        lp = torch.log_softmax(self.model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
                    plp = [None] + [{t: ns(logprob=float(lp[i - 1, t]))} for i, t in enumerate(ids) if i > 0]
                    outs.append(ns(prompt_logprobs=plp, outputs=[ns(token_ids=[0], finish_reason="length",
                                                                    stop_reason=None)]))
                    continue
                x = torch.tensor([ids] * sp.n)
                out = sample([self.model], [1.0], x, torch.ones_like(x), max_new_tokens=sp.max_tokens,
                             eos_token_id=sp.stop_token_ids, pad_token_id=0, temperature=sp.temperature,
                             top_p=sp.top_p, generator=torch.Generator().manual_seed(sp.seed))
                cos = []
                for i in range(sp.n):
                    row = out.row(i)
                    if out.finished[i]:
                        cos.append(ns(token_ids=row[:-1], finish_reason="stop", stop_reason=row[-1]))
                    else:
                        cos.append(ns(token_ids=row, finish_reason="length", stop_reason=None))
                outs.append(ns(prompt_logprobs=None, outputs=cos))
            return outs

    mod.LLM, mod.SamplingParams, mod.TokensPrompt = LLM, SamplingParams, dict  # TokensPrompt: a TypedDict
    return mod


def test_vllm_backend_plumbing_with_a_stand_in(tmp_path, monkeypatch):
    fake = _fake_vllm()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    argv = ["--backend", "vllm", "--policy", "toy:tiny", "--ref", "toy:small", "--prompts", "toy:3",
            "--max-new-tokens", "40", "--num-responses", "4", "--out", str(tmp_path)]
    path = main(argv + ["--sampler", "gshf"])
    assert len(fake.LLM.created) == 2  # one engine per model, each with half the memory
    assert [e.kwargs["gpu_memory_utilization"] for e in fake.LLM.created] == pytest.approx([0.425, 0.425])
    rows = read_jsonl(path / "generations.jsonl")
    assert [r["components"] for r in rows] == [["ref", "ref", "policy", "policy"]] * 3
    assert all(set(r) == ROW_KEYS for r in rows)
    # EOS counted in num_tokens as with the HF backend: a finished response has fewer than 40 tokens
    assert any(n < 40 for r in rows for n in r["num_tokens"])
    path = main(argv + ["--sampler", "mix_p_seq", "--num-candidates", "4"])
    rows = read_jsonl(path / "generations.jsonl")
    assert [r["components"] for r in rows] == [["mixseq+", "mixseq+", "mixseq-", "mixseq-"]] * 3
    # the scores: prompt log-probs summed over the response (EOS included) = the models' sequence log-probs
    from alignment.generation.vllm import VLLMBackend

    args = Args(backend="vllm", policy="toy:tiny", ref="toy:small", sampler="mix_p_seq", max_new_tokens=40)
    backend = VLLMBackend(resolve(args), args)
    ids = encode_prompts(backend.tok, toy.ToyTask(0).prompts(2))
    d = backend.draw_scored(ids, 3, seed=5)
    hf = {0: fake.LLM.created[-2].model, 1: fake.LLM.created[-1].model}
    for i, s in enumerate(ids):
        for j, y in enumerate(d.tokens[i]):
            assert d.finished[i][j] == (y[-1] == TOK.eos_token_id)
            for m in (0, 1):
                with torch.no_grad():
                    lp = torch.log_softmax(hf[m](input_ids=torch.tensor([s + y])).logits[0].double(), -1)
                want = sum(float(lp[len(s) - 1 + t, tok]) for t, tok in enumerate(y))
                assert d.logprobs[i][j][m] == pytest.approx(want, abs=1e-6)


# ------------------------------------------------------------------------------------- a real process

@pytest.mark.slow
def test_python_dash_m_subprocess(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    res = subprocess.run([sys.executable, "-m", "alignment.generate", "--policy", "toy:tiny", "--prompts", "toy:3",
                          "--sampler", "gshf", "--num-responses", "2", "--max-new-tokens", "5", "--out", str(tmp_path)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rows = read_jsonl(tmp_path / "gshf" / "generations.jsonl")
    assert len(rows) == 3 and all(r["components"] == ["ref", "policy"] for r in rows)
    assert "wrote" in res.stdout
    bad = subprocess.run([sys.executable, "-m", "alignment.generate", "--policy", "toy:tiny", "--sampler", "gshf",
                          "--num-responses", "3", "--out", str(tmp_path / "bad")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--num-responses" in bad.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_two_processes_under_torchrun_shard_and_gather(tmp_path):
    """torchrun --nproc_per_node 2 (two gloo processes on a CPU): each generates its share of the prompts,
    the main process writes every row once, in prompt order; a batch is drawn as in a one-process run."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    common = ["-m", "alignment.generate", "--policy", "toy:tiny", "--prompts", "toy:5", "--sampler", "gshf",
              "--num-responses", "2", "--max-new-tokens", "5", "--batch-size", "2", "--device", "cpu"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    def launch():
        proc = subprocess.Popen(torchrun + common + ["--out", str(tmp_path / "two")], cwd=REPO, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and its two workers
            proc.communicate()
            raise
        return proc.returncode, stdout, stderr

    code, stdout, stderr = launch()
    if code != 0:  # once seen on the shared 2-core machine, not reproduced: one retry, both errors shown
        first = stderr[-2000:]
        code, stdout, stderr = launch()
        assert code == 0, first + "\n---- retry ----\n" + stderr[-2000:]
        warnings.warn(f"torchrun failed once, then passed; first error: {first[-500:]}")
    assert stdout.count("wrote") == 1  # the main process alone writes
    two = read_jsonl(tmp_path / "two" / "gshf" / "generations.jsonl")
    assert [r["id"] for r in two] == [f"toy-train-{i}" for i in range(5)]
    run = json.loads((tmp_path / "two" / "gshf" / "run.json").read_text())
    assert run["summary"]["processes"] == 2 and run["summary"]["responses"] == 10
    metrics = read_jsonl(tmp_path / "two" / "gshf" / "metrics.jsonl")
    assert sorted({m["process"] for m in metrics}) == [0, 1] and sum(m["prompts"] for m in metrics) == 5
    # process 0's first batch (prompts 0 and 1) is the one-process run's first batch
    one = read_jsonl(main(common[2:] + ["--out", str(tmp_path / "one")]) / "generations.jsonl")
    assert two[:2] == one[:2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("sampler", ["mix_p", "mix_p_seq", "gshf"])
def test_cuda_run(tmp_path, sampler):
    path = main(["--policy", "toy:tiny", "--ref", "toy:small", "--prompts", "toy:6", "--max-new-tokens", "8",
                 "--sampler", sampler, "--device", "cuda", "--batch-size", "4", "--out", str(tmp_path)])
    rows = read_jsonl(path / "generations.jsonl")
    assert len(rows) == 6 and all(set(r) == ROW_KEYS and len(r["responses"]) == 4 for r in rows)
    assert json.loads((path / "run.json").read_text())["config"]["device"] == "cuda"


def test_an_alias_runs_as_its_canonical_sampler(tmp_path):
    # mixp is the seed repository's name of mix_p (bandit/vocabulary.py): the same run, the same file
    a = main(TINY + ["--sampler", "mix_p", "--num-responses", "2", "--out", str(tmp_path / "a")])
    b = main(TINY + ["--sampler", "mixp", "--num-responses", "2", "--out", str(tmp_path / "b")])
    assert a.name == b.name == "mix_p"
    assert (a / "generations.jsonl").read_bytes() == (b / "generations.jsonl").read_bytes()
    assert json.loads((b / "run.json").read_text())["config"]["sampler"] == "mix_p"


def test_unknown_or_bandit_only_sampler_lists_the_known_ones(capsys, tmp_path):
    for name, says in (("nope", "unknown sampler 'nope'"), ("mix_r", "bandit-only")):
        err = _expect_exit2(["--policy", "toy:tiny", "--sampler", name], "--sampler", capsys, tmp_path)
        assert says in err and "on_policy (or online)" in err and "mix_p (or mixp)" in err, err
