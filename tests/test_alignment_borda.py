"""AE-Borda (alignment/selection/borda.py and `alignment.generate --sampler borda`): the bounds against a hand computation,
the prompt selection, and the sampler end to end."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignment.selection.borda import borda_bounds, prompt_gaps, score_batch, select_rows

REPO = Path(__file__).resolve().parents[1]
sig = lambda z: 1 / (1 + math.exp(-z))


def test_bounds_match_a_hand_computation():
    # 2 passes, 1 prompt, policy responses y1, y2, one reference response y'
    h_pi = torch.tensor([[[0.0, 1.0]], [[0.2, 1.4]]], dtype=torch.float64)
    h_ref = torch.tensor([[[0.5]], [[0.3]]], dtype=torch.float64)
    upper, lower = borda_bounds(h_pi, h_ref, gamma=2.0)
    # per response: mean and sample sd (n - 1 = 1) over the 2 passes; y' has mean 0.4, sd 0.1 sqrt(2)
    s_ref = math.sqrt(0.1 ** 2 + 0.1 ** 2)
    for i, (m, s) in enumerate(((0.1, math.sqrt(0.02)), (1.2, math.sqrt(0.08)))):
        assert upper[0, i].item() == pytest.approx(sig(m - 0.4 + 2 * (s + s_ref)), abs=1e-12)
        assert lower[0, i].item() == pytest.approx(sig(m - 0.4 - 2 * (s + s_ref)), abs=1e-12)
    assert prompt_gaps(upper, lower).item() == pytest.approx(max(upper[0]).item() - max(lower[0]).item())
    with pytest.raises(ValueError):
        borda_bounds(h_pi[:1], h_ref[:1], 2.0)


def test_bounds_are_the_ae_borda_codes_formula():
    """The formula of belakaria/active-llm-alignment's select_borda_elements written out on log-probs: per response
    the mean and variance of log pi over the dropout passes, UCB/LCB = mean +- active_beta sqrt(var),
    ucb_logits = beta ((ref(a) - UCB(a)) + (LCB(a') - ref(a'))), U = mean over a' of 1 / (1 + exp(ucb_logits)),
    and L likewise with the bounds swapped. borda_bounds gets h = beta (log pi - log pi_ref) per pass."""
    beta, active_beta = 0.3, 1.5
    logp_a = [[-3.0, -5.0, -2.0], [-3.4, -4.1, -2.2], [-2.9, -4.6, -1.5]]  # [pass][a]: 3 passes, 3 policy samples
    logp_b = [[-4.0, -1.0], [-4.5, -1.3], [-3.2, -0.8]]                    # [pass][a']: 2 reference samples
    ref_a, ref_b = [-3.1, -4.4, -2.0], [-3.9, -1.1]

    def stats(rows, k):
        xs = [r[k] for r in rows]
        m = sum(xs) / len(xs)
        return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))

    U, L = [], []
    for i in range(3):
        ma, sa = stats(logp_a, i)
        u = l = 0.0
        for j in range(2):
            mb, sb = stats(logp_b, j)
            ucb_logits = beta * ((ref_a[i] - (ma + active_beta * sa)) + ((mb - active_beta * sb) - ref_b[j]))
            lcb_logits = beta * ((ref_a[i] - (ma - active_beta * sa)) + ((mb + active_beta * sb) - ref_b[j]))
            u += 1 / (1 + math.exp(ucb_logits)) / 2
            l += 1 / (1 + math.exp(lcb_logits)) / 2
        U.append(u)
        L.append(l)
    h_pi = beta * (torch.tensor(logp_a, dtype=torch.float64) - torch.tensor(ref_a, dtype=torch.float64))[:, None, :]
    h_ref = beta * (torch.tensor(logp_b, dtype=torch.float64) - torch.tensor(ref_b, dtype=torch.float64))[:, None, :]
    upper, lower = borda_bounds(h_pi, h_ref, gamma=active_beta)
    assert upper[0].tolist() == pytest.approx(U, abs=1e-12) and lower[0].tolist() == pytest.approx(L, abs=1e-12)
    assert prompt_gaps(upper, lower).item() == pytest.approx(max(U) - max(L), abs=1e-12)


def _row(i, upper, lower):
    return {"id": f"p{i}", "prompt": "x", "responses": ["a", "b", "r1", "r2"],
            "components": ["policy", "policy", "ref", "ref"], "num_tokens": [1, 2, 3, 4],
            "borda_upper": upper, "borda_lower": lower}


def test_select_rows_keeps_the_widest_prompts_with_their_best_optimistic_response():
    rows = [_row(0, [0.6, 0.7], [0.5, 0.6]),   # gap 0.7 - 0.6 = 0.1
            _row(1, [0.9, 0.5], [0.2, 0.4]),   # gap 0.9 - 0.4 = 0.5, best optimistic: response 0
            _row(2, [0.5, 0.5], [0.5, 0.5]),   # gap 0
            _row(3, [0.3, 0.8], [0.3, 0.5])]   # gap 0.3, best optimistic: response 1
    kept = select_rows(rows, keep=0.5, seed=0)
    assert [r["id"] for r in kept] == ["p1", "p3"]  # the two largest gaps, in the original order
    assert kept[0]["responses"][0] == "a" and kept[1]["responses"][0] == "b"
    assert kept[0]["borda_gap"] == pytest.approx(0.5) and kept[1]["borda_gap"] == pytest.approx(0.3)
    for r in kept:
        assert r["components"] == ["policy", "ref"] and r["responses"][1] in ("r1", "r2")
        assert r["num_tokens"] == [{"a": 1, "b": 2}[r["responses"][0]], {"r1": 3, "r2": 4}[r["responses"][1]]]
    assert select_rows(rows, keep=0.5, seed=0) == kept  # seeded
    assert len(select_rows(rows, keep=0.3, seed=0)) == 1


@pytest.mark.slow
def test_score_batch_is_certain_without_dropout_and_uncertain_with_it():
    from alignment.core import toy
    from tests.conftest import sharp_toy_model

    tok = toy.build_tokenizer()
    model = sharp_toy_model(seed=4, scale=2.0)
    prompts = [tok("write about food in 1 sentence :")["input_ids"], tok("write about sea in 2 sentences :")["input_ids"]]
    pol = [[[5, 6, 2], [7, 2]], [[8, 2], [9, 10, 11, 2]]]
    ref = [[[12, 2], [5, 2]], [[6, 7, 2], [2]]]
    args = dict(pad_token_id=tok.pad_token_id, beta=0.1, gamma=2.0, passes=3, seed=0)
    upper, lower = score_batch(model, model, prompts, pol, ref, dropout=0.0, **args)
    # pi = pi_ref and no dropout: every implicit reward is 0, every bound sigmoid(0)
    assert torch.allclose(torch.tensor(upper), torch.full((2, 2), 0.5)) and upper == lower
    upper, lower = score_batch(model, model, prompts, pol, ref, dropout=0.3, **args)
    assert (torch.tensor(upper) > torch.tensor(lower)).all()
    assert score_batch(model, model, prompts, pol, ref, dropout=0.3, **args) == (upper, lower)


def _run(argv):
    return subprocess.run([sys.executable, "-m", "alignment.generate", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                                                       "PATH": "/usr/bin:/bin"})


def test_generate_borda_writes_one_pair_per_kept_prompt(tmp_path):
    from alignment.generate import main

    path = main(["--policy", "toy:tiny", "--sampler", "borda", "--prompts", "toy:10", "--num-responses", "4",
                 "--max-new-tokens", "6", "--borda-keep", "0.3", "--borda-dropout", "0.2", "--out", str(tmp_path)])
    rows = [json.loads(l) for l in (path / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["components"] == ["policy", "ref"] and len(r["responses"]) == 2 for r in rows)
    assert all(r["borda_candidates"] == 2 and r["borda_gap"] >= 0 for r in rows)
    summary = json.loads((path / "run.json").read_text())["summary"]
    assert summary["borda_candidates"] == 10 and summary["borda_kept"] == 3


@pytest.mark.parametrize("argv, flag", [
    (["--borda-passes", "1"], "--borda-passes"),
    (["--borda-keep", "0"], "--borda-keep"),
    (["--num-responses", "3"], "--num-responses"),
    (["--backend", "vllm"], "--sampler"),
])
@pytest.mark.slow
def test_bad_borda_flags_exit_2(tmp_path, argv, flag):
    r = _run(["--policy", "toy:tiny", "--sampler", "borda", "--out", str(tmp_path / "o"), *argv])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and flag in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()
