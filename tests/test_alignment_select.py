"""alignment.selection.scores and alignment.select: implicit-reward gaps, MC-dropout scores, keep counts, the CLI.

Expected values come from independent computations: each sequence alone through the model's own forward pass
(full logits, float64 log-softmax, response positions indexed by hand), closed forms for the US and AE scores,
and invariants (padding, seeds, restored state)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignment.selection import scores as sel
from alignment.core import toy
from conftest import sharp_toy_model

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
PAD = 0  # the toy tokenizer's <pad>

# (prompt, chosen, rejected) token ids; lengths differ so batches pad, and one response is a single token
PAIRS = [
    ([1, 79, 10, 44, 33, 7, 55, 9], [70, 15, 77, 50, 4, 2], [70, 20, 2]),
    ([1, 79, 10, 44], [8], [70, 15, 77, 50, 4, 70, 21, 30, 40, 4, 2]),
    ([1, 5, 6], [70, 11, 12, 13, 4, 2], [2]),
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def models():
    return sharp_toy_model(0), sharp_toy_model(1)


def examples(pairs=PAIRS):
    return [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in pairs]


def collate(exs, **kw):
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    return DataCollatorForPreference(pad_token_id=PAD, **kw)(exs)


def hand_logp(model, prompt, response) -> tuple[float, int]:
    """(sum, count) of log p(response | prompt): the sequence alone, full logits, float64 log-softmax."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    total = sum(float(logp[len(prompt) - 1 + j, tok]) for j, tok in enumerate(response))
    return total, len(response)


def hand_rows(model, pairs=PAIRS, mean=False):
    """[chosen rows; rejected rows] as the collated layout orders them."""
    out = []
    for k in (1, 2):
        for pair in pairs:
            s, n = hand_logp(model, pair[0], pair[k])
            out.append(s / n if mean else s)
    return torch.tensor(out, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------ log-probs and gaps

def test_sequence_logps_match_the_hand_computation(models):
    pi, _ = models
    batch = collate(examples())
    assert batch["attention_mask"].eq(0).any()  # the batch really is padded
    got = sel.sequence_logps(pi, batch)
    assert got.shape == (6,) and got.dtype == torch.float32 and not got.requires_grad
    torch.testing.assert_close(got.double(), hand_rows(pi), atol=1e-5, rtol=0)
    # a one-token response is the log-prob of that one token
    assert abs(float(got[1]) - hand_logp(pi, [1, 79, 10, 44], [8])[0]) < 1e-5
    mean = sel.sequence_logps(pi, batch, length_normalise=True)
    torch.testing.assert_close(mean.double(), hand_rows(pi, mean=True), atol=1e-5, rtol=0)


def test_padding_never_contributes(models):
    pi, _ = models
    exs = examples()
    padded = collate(exs)
    alone = torch.stack([sel.sequence_logps(pi, collate([e])) for e in exs], dim=1).reshape(-1)  # [c0 c1 c2 r0 ...]
    torch.testing.assert_close(sel.sequence_logps(pi, padded), alone, atol=1e-5, rtol=0)
    # whatever sits in the padded slots, and however many padded columns there are, nothing changes
    garbage = dict(padded, input_ids=padded["input_ids"].masked_fill(padded["attention_mask"] == 0, 42))
    torch.testing.assert_close(sel.sequence_logps(pi, garbage), sel.sequence_logps(pi, padded), atol=0, rtol=0)
    wide = collate(exs, pad_to_multiple_of=32)
    assert wide["input_ids"].shape[1] == 32
    torch.testing.assert_close(sel.sequence_logps(pi, wide), sel.sequence_logps(pi, padded), atol=1e-5, rtol=0)


def test_implicit_reward_margins_hand_computation(models):
    pi, ref = models
    beta, batch = 0.3, collate(examples())
    for mean in (False, True):
        h = beta * (hand_rows(pi, mean=mean) - hand_rows(ref, mean=mean))
        want = h[:3] - h[3:]  # signed: chosen minus rejected
        got = sel.implicit_reward_margins(pi, ref, batch, beta, length_normalise=mean)
        assert got.shape == (3,)
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
    assert (want > 0).any() or (want < 0).any()
    # TRL's precomputed reference log-probs stand in for the reference model
    ref_lp = hand_rows(ref).float()
    pre = dict(batch, ref_chosen_logps=ref_lp[:3], ref_rejected_logps=ref_lp[3:])
    torch.testing.assert_close(sel.implicit_reward_margins(pi, None, pre, beta),
                               sel.implicit_reward_margins(pi, ref, batch, beta), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="length_normalise"):
        sel.implicit_reward_margins(pi, None, pre, beta, length_normalise=True)
    # pi_ref = pi: every gap is exactly 0
    assert torch.equal(sel.implicit_reward_margins(pi, pi, batch, beta), torch.zeros(3))


def test_reward_gap_keeps_the_smallest_signed_gaps_and_abs_the_smallest_magnitudes(models):
    pi, ref = models
    rng = torch.Generator().manual_seed(0)
    pairs = []
    for _ in range(10):  # random pairs of toy vocabulary ids, lengths 1..6
        n = [int(x) for x in torch.randint(1, 7, (3,), generator=rng)]
        ids = lambda k: torch.randint(4, len(toy.VOCAB), (k,), generator=rng).tolist()
        pairs.append(([1] + ids(n[0]), ids(n[1]), ids(n[2])))
    beta = 0.1
    h = beta * (hand_rows(pi, pairs) - hand_rows(ref, pairs))
    gaps = (h[:10] - h[10:]).tolist()
    got = sel.score_pairs("reward_gap", pi, ref, examples(pairs), PAD, beta=beta, batch_size=4)
    torch.testing.assert_close(got.double(), torch.tensor(gaps, dtype=torch.float64), atol=1e-5, rtol=0)
    assert min(gaps) < 0 < max(gaps)  # signed gaps of both signs: |gap| orders them differently
    k = sel.keep_count(10, 0.3)
    assert k == 3
    assert sel.select_top(got, k, largest=sel.keeps_largest("reward_gap")).tolist() == \
        sorted(range(10), key=lambda i: gaps[i])[:3]
    assert sel.select_top(got.abs(), k, largest=False).tolist() == sorted(range(10), key=lambda i: abs(gaps[i]))[:3]
    # pair batches in data order (TRL's layout) give the same scores as length-bucketed sequences
    trl_order = sel.score_pairs("reward_gap", pi, ref, examples(pairs), PAD, beta=beta, batch_size=3, bucket=False)
    torch.testing.assert_close(trl_order, got, atol=1e-5, rtol=0)


def test_sequence_batches_bucket_by_length_and_cover_every_sequence():
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    exs = examples()  # sequence lengths: chosen 14, 5, 9; rejected 11, 15, 4
    batches = sel.sequence_batches(exs, PAD, batch_size=2)
    assert [idx for idx, _ in batches] == [[4, 0, 3, 2], [1, 5]]  # longest first, every sequence once
    assert [b["input_ids"].shape for _, b in batches] == [(4, 15), (2, 5)]
    idx, b = batches[1]
    assert b["completion_mask"][1].tolist() == [0, 0, 0, 1, 0]  # prompt [1, 5, 6] + rejected [2], padded by one
    # bucket=False: pairs in data order, each batch exactly what TRL's collator makes of them
    for max_length in (None, 9):
        for (idx, b), start in zip(sel.sequence_batches(exs, PAD, 2, max_length, bucket=False), (0, 2), strict=True):
            want = DataCollatorForPreference(pad_token_id=PAD, max_length=max_length)(exs[start:start + 2])
            assert idx == [start + i for i in range(len(exs[start:start + 2]))] + \
                [3 + start + i for i in range(len(exs[start:start + 2]))]
            assert all(torch.equal(b[k], want[k]) for k in want), (max_length, start)


# ------------------------------------------------------------------------------------------------ keeping

@pytest.mark.parametrize("n, ratio, k", [
    (30, 0.1, 3), (25, 0.1, 3), (24, 0.1, 2), (5, 0.1, 1), (4, 0.1, 1), (1, 0.1, 1), (64000, 0.1, 6400),
    (10, 1.0, 10), (7, 0.5, 4), (6, 0.5, 3), (100, 0.07, 7), (0, 0.5, 0), (3, 1 / 3, 1), (1000, 0.333, 333),
])
def test_keep_count_is_exact(n, ratio, k):
    assert sel.keep_count(n, ratio) == k


def test_keep_count_rule_and_bad_input():
    for n in range(1, 200):
        for ratio in (0.01, 0.1, 0.25, 1 / 3, 0.5, 0.9, 1.0):
            k = sel.keep_count(n, ratio)
            assert 1 <= k <= n and (k == 1 or abs(k - ratio * n) <= 0.5 + 1e-9)
    for b in range(1, 60):  # a candidate batch of 3B pairs at ratio 1/3 keeps B
        assert sel.keep_count(3 * b, 1 / 3) == b
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="ratio"):
            sel.keep_count(10, bad)
    with pytest.raises(ValueError, match="n must"):
        sel.keep_count(-1, 0.5)


def test_select_top_is_stable_and_checked():
    s = torch.tensor([1.0, 3.0, 3.0, 2.0, 3.0, 1.0])
    assert sel.select_top(s, 4).tolist() == [1, 2, 4, 3]  # ties in index order
    assert sel.select_top(s, 3, largest=False).tolist() == [0, 5, 3]
    assert sel.select_top(s, 0).tolist() == []
    with pytest.raises(ValueError, match="k must"):
        sel.select_top(s, 7)
    with pytest.raises(ValueError, match="NaN"):
        sel.select_top(torch.tensor([1.0, float("nan")]), 1)


# ------------------------------------------------------------------------------------------------ MC dropout

def _flags(model):
    return [m.training for m in model.modules()]


def test_dropout_off_gives_exactly_zero_uncertainty(models):
    pi, ref = models
    batch = collate(examples())
    assert sel.own_dropout_modules(pi) == []  # the toy Llama has no dropout of its own (attention_dropout 0)
    s = sel.dropout_logps(pi, batch, passes=4, p=0.0, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, 6)
    assert all(torch.equal(s[i], s[0]) for i in range(4))
    torch.testing.assert_close(s[0], sel.sequence_logps(pi, batch), atol=1e-6, rtol=0)
    assert torch.equal(sel.us_scores(s), torch.zeros(3))
    assert torch.equal(sel.ae_scores(s, sel.sequence_logps(ref, batch), beta=0.1), torch.zeros(3))


def test_head_dropout_is_nonzero_repeatable_and_leaves_everything_as_it_was(models):
    pi, _ = models
    batch = collate(examples())
    flags, before, rng = _flags(pi), sel.sequence_logps(pi, batch), torch.get_rng_state()
    a = sel.dropout_logps(pi, batch, passes=5, p=0.05, generator=torch.Generator().manual_seed(7))
    b = sel.dropout_logps(pi, batch, passes=5, p=0.05, generator=torch.Generator().manual_seed(7))
    c = sel.dropout_logps(pi, batch, passes=5, p=0.05, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (sel.us_scores(a) > 0).all() and (sel.ae_scores(a, before, beta=0.1) > 0).all()
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's global RNG is untouched
    assert _flags(pi) == flags
    assert torch.equal(sel.sequence_logps(pi, batch), before)


def test_the_models_own_dropout_is_switched_on_for_the_call_only():
    model = sharp_toy_model(2)
    attn = [m for m in model.modules() if hasattr(m, "attention_dropout")]
    for m in attn:
        m.attention_dropout = 0.3
    assert sel.own_dropout_modules(model) == attn
    batch = collate(examples())
    flags, before = _flags(model), sel.sequence_logps(model, batch)
    assert not any(flags)  # eval mode
    s = sel.dropout_logps(model, batch, passes=3, p=0.0, generator=torch.Generator().manual_seed(0))
    assert (sel.us_scores(s) > 0).all()  # no head dropout: all the variance is the model's own dropout
    assert torch.equal(s, sel.dropout_logps(model, batch, passes=3, p=0.0, generator=torch.Generator().manual_seed(0)))
    assert _flags(model) == flags
    assert torch.equal(sel.sequence_logps(model, batch), before)  # eval mode again: deterministic, unchanged


def test_us_and_ae_scores_closed_forms():
    # passes x [chosen0, chosen1, rejected0, rejected1]
    s = torch.tensor([[-10.0, -3.0, -20.0, -3.0],
                      [-12.0, -5.0, -20.0, -5.0],
                      [-11.0, -4.0, -26.0, -4.0]])
    var = lambda xs: sum((x - sum(xs) / len(xs)) ** 2 for x in xs) / (len(xs) - 1)
    cols = [s[:, j].tolist() for j in range(4)]
    torch.testing.assert_close(sel.us_scores(s), torch.tensor([(var(cols[0]) + var(cols[2])) / 2,
                                                               (var(cols[1]) + var(cols[3])) / 2]))
    beta, gamma = 0.5, 2.0
    ref = torch.tensor([-11.0, -4.0, -30.0, -4.0])
    want = []
    for j in range(2):  # chosen j, rejected j
        m = [sum(cols[j]) / 3, sum(cols[j + 2]) / 3]
        sd = [math.sqrt(var(cols[j])), math.sqrt(var(cols[j + 2]))]
        r = [float(ref[j]), float(ref[j + 2])]
        upper = max(beta * (m[y] + gamma * sd[y] - r[y]) for y in (0, 1))
        lower = max(beta * (m[y] - gamma * sd[y] - r[y]) for y in (0, 1))
        want.append(upper - lower)
    got = sel.ae_scores(s, ref, beta, gamma)
    torch.testing.assert_close(got, torch.tensor(want))
    # pair 1: two identical responses -> width 2 beta gamma sd; pair 0: mean h(chosen) = 0 +- 2 beta, mean
    # h(rejected) = 8 beta +- 2 beta sqrt(12): both of rejected's bounds are above chosen's -> its own width
    assert abs(float(got[1]) - 2 * beta * gamma * 1.0) < 1e-6
    assert abs(float(got[0]) - 2 * beta * gamma * math.sqrt(12.0)) < 1e-5
    assert sel.ae_scores(s, ref, beta, gamma=0.0).abs().max() == 0
    # both choose the top B of a candidate batch by their score
    scores = sel.us_scores(torch.randn(5, 16, generator=torch.Generator().manual_seed(3)))
    assert sel.select_top(scores, 3).tolist() == sorted(range(8), key=lambda i: -float(scores[i]))[:3]
    with pytest.raises(ValueError, match="passes >= 2"):
        sel.us_scores(s[:1])


# ------------------------------------------------------------------------------------------------ tokenization

def test_tokenize_pair_is_trls_tokenization(tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tok = toy.build_tokenizer()
    rows = [{"prompt": toy.make_prompt("ocean", 1), "chosen": " the calm wave rests .", "rejected": " the cold ice ."},
            {"prompt": toy.make_prompt("space", 2), "chosen": " the star .<eos>", "rejected": ""}]
    # TRL's own tokenization: what a DPOTrainer holds as its train_dataset
    trainer = DPOTrainer(model=toy.build_model(tok, "tiny"), ref_model=toy.build_model(tok, "tiny"),
                         processing_class=tok, train_dataset=Dataset.from_list(rows),
                         args=DPOConfig(output_dir=str(tmp_path), max_length=None, report_to="none", use_cpu=True,
                                        bf16=False))
    theirs = trainer.train_dataset
    for row, t in zip(rows, theirs, strict=True):
        assert sel.tokenize_pair(tok, row) == {k: t[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
    assert sel.tokenize_pair(tok, rows[1])["rejected_ids"] == [tok.eos_token_id]  # an empty response is EOS alone


# ------------------------------------------------------------------------------------------------ the command line

@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("select")
    tok = toy.build_tokenizer()
    for seed in (0, 1):
        sharp_toy_model(seed).save_pretrained(root / f"m{seed}")
        tok.save_pretrained(root / f"m{seed}")
    task, rows = toy.ToyTask(0), []
    import random
    rng = random.Random(0)
    for i, r in enumerate(task.prompts(14)):
        a, b = (" " + task.demonstration(r["prompt"], rng) for _ in range(2))
        row = {"id": f"p{i}", "prompt": r["prompt"], "chosen": a, "rejected": b, "note": i}
        if i % 3:  # rewards on some rows only
            row.update(chosen_reward=toy.true_reward(r["prompt"], a), rejected_reward=toy.true_reward(r["prompt"], b))
        rows.append(row)
    (root / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, rows


def _main(argv):
    from alignment.select import main

    return main([str(a) for a in argv])


def _read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("method, ratio, extra", [("reward_gap", "0.25", []), ("reward_gap", None, ["--abs"]),
                                                  ("us", "0.5", []), ("ae", None, ["--passes", "3"])])
def test_cli_writes_the_kept_rows_and_every_score(cli_files, tmp_path, method, ratio, extra):
    root, rows = cli_files
    argv = ["--method", method, "--policy", root / "m0", "--ref", root / "m1", "--data", root / "prefs.jsonl",
            "--out", tmp_path, "--batch-size", "4", *extra] + (["--ratio", ratio] if ratio else [])
    path = _main(argv)
    assert sorted(p.name for p in path.iterdir()) == ["metrics.jsonl", "preferences.jsonl", "run.json", "scores.jsonl"]
    scores = _read(path / "scores.jsonl")
    assert [s["id"] for s in scores] == [r["id"] for r in rows]  # every row, in order
    r = float(ratio) if ratio else {"reward_gap": 0.1, "us": 1 / 3, "ae": 1 / 3}[method]
    k = sel.keep_count(len(rows), r)
    kept = [s for s in scores if s["kept"]]
    assert len(kept) == k
    # the kept ones are the top k by the method's order (smallest gap; largest uncertainty)
    largest = method != "reward_gap"
    order = sorted(range(len(rows)), key=lambda i: (-scores[i]["score"] if largest else scores[i]["score"], i))
    assert {scores[i]["id"] for i in order[:k]} == {s["id"] for s in kept}
    if "--abs" in extra:
        assert all(s["score"] == abs(s["gap"]) for s in scores) and any(s["gap"] < 0 for s in scores)
    prefs = _read(path / "preferences.jsonl")
    assert prefs == [row for row in rows if row["id"] in {s["id"] for s in kept}]  # unchanged, original order
    (m,) = _read(path / "metrics.jsonl")
    assert (m["method"], m["n"], m["kept"]) == (method, len(rows), k)
    assert m["score_min"] == min(s["score"] for s in scores) and m["score_max"] == max(s["score"] for s in scores)
    rewarded = [row for row in rows if "chosen_reward" in row]
    flipped = lambda rs: sum(row["chosen_reward"] < row["rejected_reward"] for row in rs) / len(rs)
    kept_ids = {s["id"] for s in kept}
    assert m["with_rewards"] == len(rewarded)
    assert m["flipped_all"] == flipped(rewarded)
    dropped = [row for row in rewarded if row["id"] not in kept_ids]
    assert m["flipped_dropped"] == flipped(dropped)
    run = json.loads((path / "run.json").read_text())
    assert run["config"]["resolved"]["ratio"] == r and run["config"]["method"] == method


def test_cli_reward_gap_scores_are_the_hand_gaps(cli_files, tmp_path):
    root, rows = cli_files
    from transformers import AutoModelForCausalLM

    path = _main(["--method", "reward_gap", "--policy", root / "m0", "--ref", root / "m1", "--data",
                  root / "prefs.jsonl", "--out", tmp_path, "--beta", "0.2", "--ratio", "0.3"])
    pi, ref = (AutoModelForCausalLM.from_pretrained(root / f"m{s}").eval() for s in (0, 1))
    tok = toy.build_tokenizer()
    for row, s in zip(rows[:4], _read(path / "scores.jsonl")):
        prompt = tok(row["prompt"])["input_ids"]
        h = [0.2 * (hand_logp(pi, prompt, tok(row["prompt"] + c + "<eos>")["input_ids"][len(prompt):])[0]
                    - hand_logp(ref, prompt, tok(row["prompt"] + c + "<eos>")["input_ids"][len(prompt):])[0])
             for c in (row["chosen"], row["rejected"])]
        assert abs(s["score"] - (h[0] - h[1])) < 1e-5


@pytest.mark.parametrize("flags, field", [
    (["--ratio", "0"], "--ratio"), (["--ratio", "1.5"], "--ratio"), (["--ratio", "nan"], "--ratio"),
    (["--no-ref"], "--ref"), (["--same-ref"], "--ref"), (["--beta", "0"], "--beta"),
    (["--method", "us", "--passes", "1"], "--passes"), (["--method", "ae", "--dropout", "1"], "--dropout"),
    (["--method", "us", "--abs"], "--abs"), (["--batch-size", "0"], "--batch-size"),
    (["--max-length", "4"], "--max-length"), (["--data", "missing.jsonl"], "--data"),
    (["--policy", "toy:huge"], "--policy"), (["--name", "a/b"], "--name"),
])
def test_cli_bad_input_is_one_error_line_exit_2_and_writes_nothing(cli_files, tmp_path, capsys, flags, field):
    root, _ = cli_files
    opts = {"--method": "reward_gap", "--policy": str(root / "m0"), "--ref": str(root / "m1"),
            "--data": str(root / "prefs.jsonl"), "--out": str(tmp_path / "out")}
    rest = []
    it = iter(flags)
    for f in it:
        if f == "--no-ref":
            del opts["--ref"]
        elif f == "--same-ref":
            opts["--ref"] = str(root / "m0" / ".." / "m0")
        elif f == "--abs":
            rest.append(f)
        else:
            opts[f] = next(it)
    argv = [x for kv in opts.items() for x in kv] + rest
    with pytest.raises(SystemExit) as e:
        _main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"error: {field}" in err[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_as_a_module(cli_files, tmp_path):
    root, rows = cli_files
    bad = subprocess.run([sys.executable, "-m", "alignment.select", "--method", "ae", "--policy", root / "m0",
                          "--data", root / "prefs.jsonl", "--out", tmp_path], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("python -m alignment.select: error: --ref")
    assert list(tmp_path.iterdir()) == []
    ok = subprocess.run([sys.executable, "-m", "alignment.select", "--method", "us", "--policy", root / "m0",
                         "--data", root / "prefs.jsonl", "--out", tmp_path, "--name", "u", "--seed", "3"],
                        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    (m,) = _read(tmp_path / "u" / "metrics.jsonl")
    assert (m["method"], m["kept"], m["n"]) == ("us", 5, 14) and len(_read(tmp_path / "u" / "preferences.jsonl")) == 5
    # the same seed in-process gives the same scores: the dropout masks are seeded
    again = _main(["--method", "us", "--policy", root / "m0", "--data", root / "prefs.jsonl", "--out", tmp_path,
                   "--name", "u2", "--seed", "3"])
    assert _read(tmp_path / "u" / "scores.jsonl") == _read(again / "scores.jsonl")
