"""alignment.evaluate: KL is exactly 0 when pi is pi_ref and matches an exact enumeration otherwise, padding
never changes it, the win rate counts ties as 0.5 from independent draws, the CIs are the Student-t closed
form, the run folder and the AlpacaEval / MT-Bench exports, reproducibility, and bad input (one line,
exit 2, nothing written).

Everything uses toy models (tiny Llamas built in-process) and a few tokens per response.
"""
import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from alignment.core import toy
from alignment.evaluate import (EvalConfig, evaluate_policy, instruction_text, main, mt_bench_rows, question_id,
                                sequence_kl, summarise, write_outputs)
from alignment.core.rewards import load_reward
from conftest import sharp_toy_model

pytestmark = pytest.mark.usefixtures("torch_single_thread")

REPO = Path(__file__).resolve().parents[1]
TOK = toy.build_tokenizer()
ORACLE = load_reward("toy-oracle")
ROW_KEYS = {"id", "prompt", "response", "reward", "ref_response", "ref_reward", "win", "kl", "kl_logratio"}
METRIC_KEYS = {"stage", "seed", "step", "reward_mean", "reward_ci", "ref_reward_mean", "ref_reward_ci", "win_rate",
               "win_rate_ci", "kl", "kl_ci", "kl_logratio", "kl_logratio_ci", "num_prompts", "mean_response_tokens"}
FASTCHAT_KEYS = {"question_id", "answer_id", "model_id", "choices", "tstamp"}


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# ------------------------------------------------------------------------------- pi == pi_ref

def test_policy_equal_to_ref_zero_kl_and_a_fair_win_rate():
    pi = toy.build_model(TOK, "tiny", seed=0).eval()  # near-uniform: varied responses and rewards
    prompts = toy.ToyTask(0).prompts(48, "heldout")
    cfg = EvalConfig(temperature=1.0, max_new_tokens=8, kl_samples=2, batch_size=16)
    same = evaluate_policy(pi, pi, TOK, prompts, ORACLE, cfg, progress=False)
    copied = evaluate_policy(pi, copy.deepcopy(pi), TOK, prompts, ORACLE, cfg, progress=False)
    for summary, rows, _ in (same, copied):
        assert summary["kl"] == pytest.approx(0, abs=1e-6) and summary["kl_logratio"] == pytest.approx(0, abs=1e-6)
        assert all(abs(r["kl"]) <= 1e-6 and abs(r["kl_logratio"]) <= 1e-6 for r in rows)
    summary, rows, _ = same
    assert summary["kl"] == 0 and summary["kl_logratio"] == 0  # the same object: exactly, by construction
    assert [set(r) for r in rows] == [ROW_KEYS] * len(prompts)
    assert [r["id"] for r in rows] == [p["id"] for p in prompts]
    # rewards are the oracle's scores of the texts shown
    assert all(r["reward"] == toy.true_reward(r["prompt"], r["response"]) for r in rows)
    assert all(r["ref_reward"] == toy.true_reward(r["prompt"], r["ref_response"]) for r in rows)
    # policy and reference draw from different streams: independent samples, not copies of each other
    assert sum(r["response"] != r["ref_response"] for r in rows) > len(rows) // 2
    # win rate: a hand count with ties as 0.5; there are ties and non-ties, and it is near 0.5
    ties = sum(r["reward"] == r["ref_reward"] for r in rows)
    wins = sum(r["reward"] > r["ref_reward"] for r in rows)
    assert 0 < ties < len(rows) and 0 < wins
    assert summary["win_rate"] == pytest.approx((wins + 0.5 * ties) / len(rows), abs=1e-12)
    assert [r["win"] for r in rows] == [1.0 if r["reward"] > r["ref_reward"] else 0.5 if r["reward"] == r["ref_reward"]
                                        else 0.0 for r in rows]
    assert 0.3 <= summary["win_rate"] <= 0.7
    # an equal copy gives the same draws and rewards
    assert [{k: v for k, v in r.items() if "kl" not in k} for r in copied[1]] == \
           [{k: v for k, v in r.items() if "kl" not in k} for r in rows]


def test_greedy_policy_equal_to_ref_ties_everywhere():
    """--temperature 0: both sides give the same greedy response, so every prompt is a tie (documented)."""
    pi = sharp_toy_model(1)
    prompts = toy.ToyTask(0).prompts(5, "heldout")
    summary, rows, _ = evaluate_policy(pi, pi, TOK, prompts, ORACLE, EvalConfig(temperature=0, max_new_tokens=4),
                                       progress=False)
    assert all(r["response"] == r["ref_response"] and r["win"] == 0.5 for r in rows)
    assert summary["win_rate"] == 0.5 and summary["win_rate_ci"] == 0 and summary["kl"] == 0


def test_ref_samples_passed_back_equal_regenerated_ones():
    pi1, pi2, ref = sharp_toy_model(1), sharp_toy_model(2), sharp_toy_model(3)
    prompts = toy.ToyTask(0).prompts(6, "heldout")
    cfg = EvalConfig(max_new_tokens=5, batch_size=4)
    _, _, ref_samples = evaluate_policy(pi1, ref, TOK, prompts, ORACLE, cfg, progress=False)
    fresh = evaluate_policy(pi2, ref, TOK, prompts, ORACLE, cfg, progress=False)
    reused = evaluate_policy(pi2, ref, TOK, prompts, ORACLE, cfg, ref_samples=ref_samples, progress=False)
    assert reused[:2] == fresh[:2] and reused[2] is ref_samples and fresh[2] == ref_samples
    assert [s["response"] for s in ref_samples] == [r["ref_response"] for r in fresh[1]]
    with pytest.raises(ValueError, match="ref_samples"):
        evaluate_policy(pi2, ref, TOK, prompts[1:], ORACLE, cfg, ref_samples=ref_samples, progress=False)


# ------------------------------------------------------------------------------- the KL estimators

def exact_sequence_kl(pi, ref, prompt_ids, eos):
    """KL(pi || ref) over all responses of at most 2 tokens (EOS ends a response early), by enumeration."""
    with torch.no_grad():
        def next_logprobs(model, rows):
            return torch.log_softmax(model(input_ids=torch.tensor(rows)).logits[:, -1].double(), -1)

        lp1, lq1 = next_logprobs(pi, [prompt_ids])[0], next_logprobs(ref, [prompt_ids])[0]
        first = [v for v in range(lp1.shape[0]) if v != eos]
        lp2, lq2 = (next_logprobs(m, [prompt_ids + [v] for v in first]) for m in (pi, ref))
    kl_second = (lp2.exp() * (lp2 - lq2)).sum(-1)
    return float((lp1.exp() * (lp1 - lq1)).sum() + (lp1.exp()[first] * kl_second).sum())


def test_monte_carlo_kl_matches_exact_enumeration():
    pi, ref = sharp_toy_model(1), sharp_toy_model(2)
    text = "write about ocean in 2 sentences :"
    exact = exact_sequence_kl(pi, ref, TOK(text)["input_ids"], TOK.eos_token_id)
    assert exact > 0.5  # the models differ: the test has something to find
    # the same prompt under 60 ids, 4 KL samples each: the CI is over the 60 per-prompt means. A low
    # --temperature and top-p must not leak into the KL draws (they would bias the estimate).
    prompts = [{"id": f"p{i}", "prompt": text} for i in range(60)]
    cfg = EvalConfig(temperature=0.5, top_p=0.5, max_new_tokens=2, kl_samples=4, batch_size=60, seed=3)
    summary, rows, _ = evaluate_policy(pi, ref, TOK, prompts, ORACLE, cfg, progress=False)
    for key in ("kl", "kl_logratio"):
        half = summary[f"{key}_ci"]
        assert half < (0.05 if key == "kl" else 0.35) * exact, (key, half, exact)  # precise enough to mean something
        assert abs(summary[key] - exact) < 2 * half, (key, summary[key], half, exact)
    # the Rao-Blackwellised estimator has the smaller spread, and every exact per-token KL sum is >= 0
    assert summary["kl_ci"] < summary["kl_logratio_ci"]
    assert all(r["kl"] >= -1e-6 for r in rows)


def gpt2_model(seed):
    """A tiny GPT-2 on the toy vocabulary: absolute position embeddings, so wrong positions under left
    padding would change its outputs (Llama's rotary positions are blind to a common shift)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(TOK), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=TOK.bos_token_id, eos_token_id=TOK.eos_token_id, pad_token_id=TOK.pad_token_id)
    return GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_padding_never_matters(arch):
    build = sharp_toy_model if arch == "llama" else gpt2_model
    pi, ref = build(1), build(2)
    texts = ["write about ocean in 1 sentence :", "the", "write about space", "write about city in 4 sentences : the"]
    prompt_ids = [TOK(t)["input_ids"] for t in texts]
    g = torch.Generator().manual_seed(0)
    responses = [torch.randint(4, len(TOK), (n,), generator=g).tolist() for n in (1, 6, 3, 4)]
    responses[2] += [TOK.eos_token_id]  # a response that ended with EOS: its EOS token counts
    kl, logratio = sequence_kl(pi, ref, prompt_ids, responses, TOK.pad_token_id, batch_size=8)
    for p, y, k, lr in zip(prompt_ids, responses, kl, logratio):
        one_kl, one_lr = sequence_kl(pi, ref, [p], [y], TOK.pad_token_id)
        assert k == pytest.approx(one_kl[0], abs=1e-5) and lr == pytest.approx(one_lr[0], abs=1e-5)
        # and both against a plain unpadded forward pass, computed here
        with torch.no_grad():
            lp, lq = (torch.log_softmax(m(input_ids=torch.tensor([p + y])).logits[0].double(), -1) for m in (pi, ref))
        rows = range(len(p) - 1, len(p) + len(y) - 1)  # the positions that predict the response tokens
        want_lr = sum(float(lp[t, tok] - lq[t, tok]) for t, tok in zip(rows, y))
        want_kl = sum(float((lp[t].exp() * (lp[t] - lq[t])).sum()) for t in rows)
        assert lr == pytest.approx(want_lr, abs=1e-4) and k == pytest.approx(want_kl, abs=1e-4)
    assert min(kl) > 0


# ------------------------------------------------------------------------------- statistics

def test_confidence_interval_is_the_student_t_closed_form():
    rng = np.random.default_rng(0)
    n = 7
    rows = [{"reward": float(rng.normal()), "ref_reward": float(rng.integers(-3, 3)), "win": [0.0, 0.5, 1.0][i % 3],
             "kl": float(rng.exponential()), "kl_logratio": float(rng.normal(1, 2))} for i in range(n)]
    s = summarise(rows, [3, 4, 5, 6, 7, 8, 9])
    for mean_key, ci_key, field in [("reward_mean", "reward_ci", "reward"), ("ref_reward_mean", "ref_reward_ci", "ref_reward"),
                                    ("win_rate", "win_rate_ci", "win"), ("kl", "kl_ci", "kl"),
                                    ("kl_logratio", "kl_logratio_ci", "kl_logratio")]:
        x = np.array([r[field] for r in rows])
        assert s[mean_key] == pytest.approx(x.mean(), rel=1e-12)
        assert s[ci_key] == pytest.approx(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n), rel=1e-10)
    assert s["num_prompts"] == n and s["mean_response_tokens"] == 6.0
    one = summarise(rows[:1], [2])
    assert one["reward_mean"] == rows[0]["reward"] and math.isnan(one["reward_ci"]) and math.isnan(one["kl_ci"])


# ------------------------------------------------------------------------------- exports

def test_export_fields():
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second"}]
    assert instruction_text(chat) == "second" and instruction_text("plain text") == "plain text"
    assert [question_id(x) for x in ("81", "0", "-3", "007", "q81", "8.1")] == [81, 0, -3, "007", "q81", "8.1"]
    rows = [{"id": "81", "response": "a"}, {"id": "82", "response": "a"}, {"id": "81", "response": "b"}]
    answers = mt_bench_rows(rows, "m")
    assert len({a["answer_id"] for a in answers}) == 3  # the id depends on question and output
    assert mt_bench_rows(rows, "m") == answers and mt_bench_rows(rows, "n")[0]["answer_id"] != answers[0]["answer_id"]

    class Run:  # write_outputs needs only run.path
        path = staticmethod(lambda name: Path("/nonexistent") / name)

    with pytest.raises(ValueError, match="num_prompts|prompts"):
        write_outputs(Run(), {"num_prompts": 2}, rows, ["alpaca_eval"], "m")


# ------------------------------------------------------------------------------- the entry point

def test_main_writes_the_run_and_reruns_identically(tmp_path, capsys):
    prompt_file = tmp_path / "prompts.jsonl"
    rows = [{"id": 81, "prompt": "write about ocean in 2 sentences :"},
            {"id": "82", "prompt": "write about space in 1 sentence :"},
            {"id": "toy-x", "prompt": "write about city in 3 sentences :"}]
    prompt_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    argv = ["--policy", "toy:tiny", "--prompts", str(prompt_file), "--max-new-tokens", "5", "--batch-size", "2",
            "--out", str(out), "--generator-name", "tiny-model"]
    path = main(argv)
    assert path == out / "eval"
    files = ["alpaca_eval.json", "evaluations.jsonl", "metrics.jsonl", "model_answer/tiny-model.jsonl", "run.json"]
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) == files
    assert "wrote" in capsys.readouterr().out

    [metrics] = read_jsonl(path / "metrics.jsonl")
    assert set(metrics) == METRIC_KEYS
    assert (metrics["stage"], metrics["seed"], metrics["step"], metrics["num_prompts"]) == ("evaluate", 0, 0, 3)
    assert metrics["kl"] == 0 and metrics["kl_logratio"] == 0  # --ref defaults to --policy: one model
    run = json.loads((path / "run.json").read_text())
    assert run["finished"] and run["summary"] == {k: v for k, v in metrics.items() if k not in ("stage", "seed", "step")}
    assert run["config"]["resolved"]["generator"] == "tiny-model"

    evals = read_jsonl(path / "evaluations.jsonl")
    assert [set(r) for r in evals] == [ROW_KEYS] * 3 and [r["id"] for r in evals] == ["81", "82", "toy-x"]
    assert metrics["reward_mean"] == pytest.approx(sum(r["reward"] for r in evals) / 3)
    alpaca = json.loads((path / "alpaca_eval.json").read_text())
    assert isinstance(alpaca, list) and all(set(a) == {"instruction", "output", "generator"} for a in alpaca)
    assert [(a["instruction"], a["output"], a["generator"]) for a in alpaca] == \
           [(r["prompt"], e["response"], "tiny-model") for r, e in zip(rows, evals)]
    answers = read_jsonl(path / "model_answer" / "tiny-model.jsonl")  # FastChat: <model_id>.jsonl
    assert all(set(a) == FASTCHAT_KEYS for a in answers)
    assert [a["question_id"] for a in answers] == [81, 82, "toy-x"]
    # {id, prompt} rows are one user turn each: one answer turn, the evaluated response
    assert [a["choices"] for a in answers] == [[{"index": 0, "turns": [e["response"]]}] for e in evals]
    assert all(a["model_id"] == "tiny-model" and isinstance(a["answer_id"], str) for a in answers)

    # the same command again writes the same bytes (run.json aside: it holds times); another seed other draws
    before = {f: (path / f).read_bytes() for f in files if f != "run.json"}
    main(argv)
    assert {f: (path / f).read_bytes() for f in files if f != "run.json"} == before
    main(argv + ["--seed", "1", "--export", "none"])
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*")) == ["evaluations.jsonl", "metrics.jsonl", "run.json"]
    assert (path / "evaluations.jsonl").read_bytes() != before["evaluations.jsonl"]
    main(argv + ["--export", "mt_bench", "--name", "only-mt"])
    assert "alpaca_eval.json" not in {p.name for p in (out / "only-mt").iterdir()}
    mt_file = "model_answer/tiny-model.jsonl"  # --generator-name, not --name, names the model
    assert (out / "only-mt" / mt_file).read_bytes() == before[mt_file]


BAD = [
    ([], "--policy"),
    (["--temperature", "-1"], "--temperature"),
    (["--temperature", "nan"], "--temperature"),
    (["--top-p", "0"], "--top-p"),
    (["--kl-samples", "0"], "--kl-samples"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
    (["--batch-size", "0"], "--batch-size"),
    (["--export", "alpaca"], "--export"),
    (["--export", "alpaca_eval,none"], "--export"),
    (["--policy", "./no/such/model"], "--policy"),
    (["--ref", "./no/such/model"], "--ref"),
    (["--reward", "./no/such/reward_model"], "--reward"),
    (["--prompts", "toy:0"], "--prompts"),
    (["--max-new-tokens", "200"], "--max-new-tokens"),  # past the toy model's 128 positions
    (["--name", "a/b"], "--name"),
    (["--generator-name", " "], "--generator-name"),
    (["--generator-name", "org/model"], "--generator-name"),
    (["--prompt-field", ""], "--prompt-field"),
    (["--prompt-field", "instruction"], "--prompt-field"),  # toy prompts have 'prompt'
    (["--device", "nonsense"], "--device"),
]


@pytest.mark.parametrize("argv,flag", BAD, ids=[" ".join(a) or "no policy" for a, _ in BAD])
def test_bad_input_one_line_exit_2_nothing_written(argv, flag, capsys, tmp_path):
    out = tmp_path / "out"
    policy = [] if not argv or "--policy" in argv else ["--policy", "toy:tiny"]
    prompts = [] if "--prompts" in argv else ["--prompts", "toy:2"]
    with pytest.raises(SystemExit) as e:
        main(policy + prompts + argv + ["--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err, err
    assert not out.exists()


def test_toy_oracle_refuses_other_prompts(capsys, tmp_path):
    prompt_file = tmp_path / "p.jsonl"
    prompt_file.write_text(json.dumps({"id": "a", "prompt": "tell me a story"}) + "\n")
    with pytest.raises(SystemExit) as e:
        main(["--policy", "toy:tiny", "--prompts", str(prompt_file), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--reward" in err and "toy-oracle" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_python_dash_m_bad_flag(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "alignment.evaluate", "--policy", "toy:tiny", "--kl-samples", "0",
                          "--out", str(tmp_path / "out")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "--kl-samples" in res.stderr
    assert not (tmp_path / "out").exists()
