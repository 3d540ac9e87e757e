"""alignment.annotate: pair rules on hand-made rewards, ties, reward scoring through the interface
(toy oracle and a tiny HF reward model built here), the command line end to end, bad input, and the
output as TRL's DPOTrainer reads it. Everything is tiny and writes under tmp_path only.
"""
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignment import annotate as ann
from alignment.annotate import Pick, annotate, completion, max_min, pick_pair, score_all
from alignment.core.data import load_preferences
from alignment.core.rewards import CallableReward, load_reward
from alignment.core.toy import build_tokenizer, true_reward
from runlog import ConfigError

pytestmark = pytest.mark.usefixtures("torch_single_thread")

REPO = Path(__file__).resolve().parents[1]
P1 = "write about ocean in 2 sentences :"
P2 = "write about city in 1 sentence :"
P3 = "write about space in 3 sentences :"
GEN = [
    {"id": "a", "prompt": P1, "responses": ["the bright wave shines . the calm tide rests .", "the dull rose grows .",
                                            "the kind coral sings .", "wave wave"],
     "components": ["policy"] * 4, "num_tokens": [11, 6, 6, 2]},
    # two responses with the same reward: a tie under every rule
    {"id": "b", "prompt": P2, "responses": ["the tall street waits .", "the new tower moves ."]},
    {"id": "c", "prompt": P3, "responses": ["the cold star rests .", "", "the warm moon sings . the lovely comet shines ."]},
    {"id": "d", "prompt": P2, "responses": ["the kind street waits ."]},  # one response: no pair
]
ROW_KEYS = ["id", "prompt", "chosen", "rejected", "chosen_reward", "rejected_reward", "responses", "rewards"]


def write_gen(path: Path, rows=GEN) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def no_hidden(folder: Path):
    assert not list(Path(folder).rglob(".*")), list(Path(folder).rglob(".*"))


# ------------------------------------------------------------------------------------------------ pair rules

def test_max_min_hand_computed():
    assert max_min([1.0, 3.0, -2.0, 0.0], range(4)) == (1, 2)
    assert max_min([1.0, 3.0, -2.0, 0.0], [0, 3]) == (0, 3)
    assert max_min([2.0, 5.0, 5.0, -1.0, -1.0], range(5)) == (1, 3)  # equal rewards: first in list order
    rng = random.Random(0)
    assert pick_pair([1.0, 3.0, -2.0, 0.0], "max_min", rng) == Pick(1, 2, "max_min")
    assert pick_pair([4.0], "max_min", rng) is None


def test_random_rule_is_a_uniform_pair_of_distinct_positions_with_chosen_higher():
    rewards = [0.0, 2.0, 1.0, -1.0]
    seen = {}
    n = 3000
    for s in range(n):
        pick = pick_pair(rewards, "random", random.Random(s))
        assert pick.how == "random" and pick.chosen != pick.rejected
        assert rewards[pick.chosen] > rewards[pick.rejected]
        key = frozenset((pick.chosen, pick.rejected))
        seen[key] = seen.get(key, 0) + 1
    assert len(seen) == 6  # every pair of the 4 responses
    se = math.sqrt((1 / 6) * (5 / 6) / n)
    assert all(abs(c / n - 1 / 6) < 5 * se for c in seen.values()), seen
    assert pick_pair([1.0, 7.0], "random", random.Random(3)) == Pick(1, 0, "random")  # two responses: that pair


@pytest.mark.parametrize("p", [0.7, 0.3])
def test_mixed_rule_picks_max_min_with_probability_p(p):
    n = 4000
    rows = [{"id": f"q{i}", "prompt": P1, "responses": [f"r{j}" for j in range(4)]} for i in range(n)]
    scores = [[0.0, 2.0, 1.0, -1.0]] * n
    prefs, counts = annotate(rows, scores, "mixed_max_min", p, seed=5)
    share = counts["picks"]["max_min"] / n
    assert counts["picks"]["max_min"] + counts["picks"]["random"] == n
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / n), share
    # every max_min pick is (1, 3); random picks spread over the other pairs as well
    mm = sum(1 for r in prefs if (r["chosen"], r["rejected"]) == (" r1", " r3"))
    assert mm >= counts["picks"]["max_min"]
    again, _ = annotate(rows, scores, "mixed_max_min", p, seed=5)
    assert again == prefs  # seeded
    other, _ = annotate(rows, scores, "mixed_max_min", p, seed=6)
    assert other != prefs


def test_mixed_rule_extremes():
    rewards = [0.0, 2.0, 1.0, -1.0]
    assert all(pick_pair(rewards, "mixed_max_min", random.Random(s), p=1.0) == Pick(1, 3, "max_min") for s in range(50))
    assert all(pick_pair(rewards, "mixed_max_min", random.Random(s), p=0.0).how == "random" for s in range(50))


@pytest.mark.parametrize("plus, minus", [("mix+", "mix-"), ("mixseq+", "mixseq-")])
def test_mixp_component_pick(plus, minus):
    components = [plus, plus, minus, minus, "policy", "policy", "ref"]
    rewards = [1.0, 5.0, -3.0, 2.0, 0.5, -0.5, 10.0]
    # fused: max_min over positions 0-3 -> (1, 2); on-policy: positions 4-5 -> (4, 5); "ref" never takes part
    assert pick_pair(rewards, "mixed_max_min", random.Random(0), 1.0, components) == Pick(1, 2, "fused")
    assert pick_pair(rewards, "mixed_max_min", random.Random(0), 0.0, components) == Pick(4, 5, "policy")
    n, p = 3000, 0.7
    picks = [pick_pair(rewards, "mixed_max_min", random.Random(s), p, components) for s in range(n)]
    assert {(q.chosen, q.rejected, q.how) for q in picks} == {(1, 2, "fused"), (4, 5, "policy")}
    share = sum(q.how == "fused" for q in picks) / n
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / n)
    # max_min and random ignore components: the whole list
    assert pick_pair(rewards, "max_min", random.Random(0), p, components) == Pick(6, 2, "max_min")


def test_mixp_without_both_kinds_is_the_plain_mixed_rule():
    rewards = [1.0, 5.0, -3.0, 2.0]
    for components in (["mix+", "mix+", "mix-", "mix-"], ["ref", "ref", "policy", "policy"], None):
        hows = {pick_pair(rewards, "mixed_max_min", random.Random(s), 0.5, components).how for s in range(40)}
        assert hows == {"max_min", "random"}
    # one fused response only: the fused pick has no pair
    assert pick_pair([1.0, 2.0, 3.0], "mixed_max_min", random.Random(0), 1.0, ["mix+", "policy", "policy"]) is None


def test_unknown_rule():
    with pytest.raises(ConfigError, match="--rule"):
        pick_pair([1.0, 2.0], "best_worst", random.Random(0))


def test_ties_dropped_and_counted():
    rows = [{"id": "t1", "prompt": P1, "responses": ["a", "b", "c"]},       # all equal: tie
            {"id": "t2", "prompt": P1, "responses": ["a", "b"]},            # distinct: a pair
            {"id": "t3", "prompt": P1, "responses": ["same", "same"]},      # same text: a tie whatever the scores
            {"id": "t4", "prompt": P1, "responses": ["only"]}]              # too few
    scores = [[1.0, 1.0, 1.0], [0.0, 2.0], [1.0, 1.0 + 1e-7], [3.0]]
    for rule in ("max_min", "random", "mixed_max_min"):
        prefs, counts = annotate(rows, scores, rule, 0.7, seed=0)
        assert [r["id"] for r in prefs] == ["t2"]
        assert (counts["prompts"], counts["pairs"], counts["ties_dropped"], counts["too_few_responses"]) == (4, 1, 2, 1)
        assert prefs[0]["chosen"] == " b" and prefs[0]["rejected"] == " a"
        assert counts["mean_chosen_reward"] == 2.0 and counts["mean_rejected_reward"] == 0.0
        assert counts["mean_reward_gap"] == 2.0


def test_completion_as_trl_reads_it():
    assert completion("q :", "the x .") == " the x ."
    assert completion("q : ", "the x .") == "the x ."
    assert completion("q :", " the x .") == " the x ."
    assert completion("q :", "") == ""
    msgs = [{"role": "user", "content": "hi"}]
    assert completion(msgs, "hello") == [{"role": "assistant", "content": "hello"}]


# ------------------------------------------------------------------------------------------------ rewards

def test_toy_oracle_scores_equal_true_reward():
    reward = load_reward("toy-oracle")
    rows = [r for r in GEN]
    scores = score_all(reward, rows, batch_size=2)
    assert scores == [[true_reward(r["prompt"], x) for x in r["responses"]] for r in rows]


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    """A tiny LlamaForSequenceClassification (1 output) with the toy tokenizer, saved like a trained one."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128, num_labels=1,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():  # spread the scores so that differences are visible
        model.score.weight.mul_(20.0)
    run = tmp_path_factory.mktemp("rm_run")
    model.save_pretrained(run / "model")
    tok.save_pretrained(run / "model")
    return run


def test_hf_reward_batched_equals_one_at_a_time(tiny_rm):
    prompts = [r["prompt"] for r in GEN for _ in r["responses"]]
    responses = [x for r in GEN for x in r["responses"]]
    one = [load_reward(str(tiny_rm / "model"), batch_size=1).score([p], [x])[0] for p, x in zip(prompts, responses)]
    assert len(set(round(s, 4) for s in one)) > 5  # the scores differ between texts
    for bs in (2, 3, 64):
        batched = load_reward(str(tiny_rm), batch_size=bs).score(prompts, responses)  # run folder form too
        assert batched == pytest.approx(one, abs=1e-5, rel=1e-5)
    # score_all (length-sorted batches) gives each response its own score back
    reward = load_reward(str(tiny_rm), batch_size=3)
    nested = score_all(reward, GEN, batch_size=3)
    assert [s for row in nested for s in row] == pytest.approx(one, abs=1e-5, rel=1e-5)


def test_non_finite_score_is_an_error():
    bad = CallableReward(lambda p, r: math.nan if r == "" else 1.0, name="bad")
    with pytest.raises(ConfigError, match=r"--reward: bad gave a non-finite score \(nan\) to prompt id 'c' response 1"):
        score_all(bad, GEN, batch_size=4)


# ------------------------------------------------------------------------------------------------ command line

def run_cli(argv, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "alignment.annotate", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def check_run(run_dir: Path, gen=GEN) -> list[dict]:
    assert {p.name for p in run_dir.iterdir()} == {"run.json", "metrics.jsonl", "preferences.jsonl"}
    no_hidden(run_dir.parent)
    rows = read_jsonl(run_dir / "preferences.jsonl")
    by_id = {g["id"]: g for g in gen}
    for r in rows:
        assert list(r) == ROW_KEYS
        g = by_id[r["id"]]
        assert r["prompt"] == g["prompt"] and r["responses"] == g["responses"]
        assert r["chosen_reward"] > r["rejected_reward"]
        assert r["chosen_reward"] == max(r["rewards"]) or len(r["rewards"]) > 2
    return rows


def test_smoke_main_toy_oracle(tmp_path, capsys):
    gen_run = tmp_path / "gen" / "online-it0"
    write_gen(gen_run / "generations.jsonl")
    (gen_run / "run.json").write_text(json.dumps({"config": {"sampler": "online"}}))
    out = tmp_path / "ann"
    path = ann.main(["--generations", str(gen_run), "--out", str(out)])
    assert path == out / "online-it0"  # name from the generations run
    rows = check_run(path)
    for r in rows:  # max_min with the oracle: rewards are the true rewards, the pair is the max and the min
        g = next(g for g in GEN if g["id"] == r["id"])
        truth = [true_reward(g["prompt"], x) for x in g["responses"]]
        assert r["rewards"] == truth
        hi, lo = max_min(truth, range(len(truth)))
        assert (r["chosen"].lstrip(), r["rejected"].lstrip()) == (g["responses"][hi], g["responses"][lo])
        assert r["chosen"] == " " + g["responses"][hi]  # a toy response is joined to its prompt with a space
    assert [r["id"] for r in rows] == ["a", "c"]  # b is a tie, d has one response
    (metrics,) = read_jsonl(path / "metrics.jsonl")
    assert metrics["sampler"] == "on_policy" and metrics["rule"] == "max_min" and metrics["seed"] == 0
    assert metrics["step"] == 0
    assert (metrics["prompts"], metrics["pairs"], metrics["ties_dropped"], metrics["too_few_responses"]) == (4, 2, 1, 1)
    assert metrics["mean_chosen_reward"] == pytest.approx(sum(r["chosen_reward"] for r in rows) / 2)
    assert metrics["mean_reward_gap"] == pytest.approx(
        sum(r["chosen_reward"] - r["rejected_reward"] for r in rows) / 2)
    run = json.loads((path / "run.json").read_text())
    assert run["summary"]["pairs"] == 2 and run["summary"]["ties_dropped"] == 1
    assert run["config"]["reward"] == "toy-oracle" and run["finished"]
    assert capsys.readouterr().out == f"{ann.format_summary(run['summary'])}\nwrote {path}\n"  # what was logged
    assert load_preferences(str(path)) == [dict(r) for r in rows]  # what annotate writes loads back


def test_seeded_and_replaces_an_older_run(tmp_path, capsys):
    gen = write_gen(tmp_path / "gens.jsonl")
    argv = ["--generations", gen, "--out", tmp_path / "o", "--rule", "mixed_max_min", "--p", "0.5", "--seed", "3"]
    first = ann.main([str(a) for a in argv])
    assert first.name == "gens"
    text = (first / "preferences.jsonl").read_text()
    second = ann.main([str(a) for a in argv])
    assert (second / "preferences.jsonl").read_text() == text
    no_hidden(tmp_path / "o")


def test_reward_model_folder_through_main(tiny_rm, tmp_path, capsys):
    gen = write_gen(tmp_path / "gens.jsonl")
    path = ann.main(["--generations", str(gen), "--reward", str(tiny_rm), "--batch-size", "3",
                     "--out", str(tmp_path / "o"), "--name", "rm"])
    rows = check_run(path)
    reward = load_reward(str(tiny_rm), batch_size=1)
    for r in rows:
        assert r["rewards"] == pytest.approx([reward.score([r["prompt"]], [x])[0] for x in r["responses"]], abs=1e-5)


@pytest.mark.slow
def test_subprocess_smoke_and_help(tmp_path):
    gen = write_gen(tmp_path / "gens.jsonl")
    res = run_cli(["--generations", gen, "--out", "o", "--rule", "random", "--seed", "1"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    check_run(tmp_path / "o" / "gens")
    assert "wrote" in res.stdout
    res = run_cli(["--help"], cwd=tmp_path)
    assert res.returncode == 0
    for flag in ("--generations", "--reward", "--rule", "--p", "--seed", "--batch-size", "--device", "--out", "--name"):
        assert flag in res.stdout


@pytest.mark.slow
def test_subprocess_bad_input_one_line_exit_2_nothing_written(tmp_path):
    gen = tmp_path / "gens.jsonl"
    gen.write_text(json.dumps(GEN[0]) + "\n" + json.dumps(dict(GEN[1], responses=[1, 2])) + "\n")
    res = run_cli(["--generations", gen, "--out", "o"], cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert "--generations" in lines[0] and "gens.jsonl" in lines[0] and "row 1" in lines[0]
    assert not (tmp_path / "o").exists()


def _bad_cases(tmp: Path):
    good = write_gen(tmp / "good.jsonl")
    base = ["--out", tmp / "o"]
    problems = {
        "missing field": ('{"id": "z", "responses": ["x", "y"]}', "missing field 'prompt'"),
        "empty text": (json.dumps(dict(GEN[0], prompt="")), "'prompt' is empty"),
        "non-string text": (json.dumps(dict(GEN[0], responses=["x", None])), "'responses[1]' must be a string"),
        "non-finite reward": (json.dumps(GEN[0])[:-1] + ', "rewards": [1, 2, 3, Infinity]}', "'rewards[3]'"),
        "duplicate id": (json.dumps(dict(GEN[1], id="a")), "duplicate id 'a'"),
        "malformed JSON": ('{"id": "z", ', "not valid JSON"),
    }
    cases = {}
    for name, (line, text) in problems.items():
        f = tmp / f"{name.replace(' ', '_')}.jsonl"
        f.write_text(json.dumps(GEN[0]) + "\n" + line + "\n")
        cases[name] = (["--generations", f, *base], ["--generations", f.name, "row 1 (line 2)", text])
    (tmp / "gens.txt").write_text("x")
    lonely = write_gen(tmp / "lonely.jsonl", [GEN[3]])
    not_toy = write_gen(tmp / "not_toy.jsonl", [dict(GEN[0], prompt="tell me a story")])
    (tmp / "afile").write_text("x")
    cases.update({
        "wrong suffix": (["--generations", tmp / "gens.txt", *base], ["--generations", "gens.txt"]),
        "missing file": (["--generations", tmp / "nope.jsonl", *base], ["--generations", "no such file", "nope.jsonl"]),
        "no generations": (base, ["--generations", "required"]),
        "single responses": (["--generations", lonely, *base], ["--generations", "fewer than 2"]),
        "p above 1": (["--generations", good, "--p", "1.5", *base], ["--p", "[0, 1]"]),
        "p nan": (["--generations", good, "--p", "nan", *base], ["--p"]),
        "batch size": (["--generations", good, "--batch-size", "0", *base], ["--batch-size", ">= 1"]),
        "seed": (["--generations", good, "--seed", "-1", *base], ["--seed"]),
        "rule": (["--generations", good, "--rule", "best", *base], ["--rule", "max_min"]),
        "reward folder": (["--generations", good, "--reward", tmp / "no_rm", *base], ["--reward", "no_rm"]),
        "not a toy prompt": (["--generations", not_toy, *base], ["--reward", "toy-oracle", "row 0", "tell me a story"]),
        "name": (["--generations", good, "--name", "a/b", *base], ["--name"]),
        "out is a file": (["--generations", good, "--out", tmp / "afile"], ["--out", "not a folder"]),
        "device": (["--generations", good, "--device", "tpu:9", *base], ["--device"]),
    })
    return cases


BAD_NAMES = ["missing field", "empty text", "non-string text", "non-finite reward", "duplicate id", "malformed JSON",
             "wrong suffix", "missing file", "no generations", "single responses", "p above 1", "p nan",
             "batch size", "seed", "rule", "reward folder", "not a toy prompt", "name", "out is a file", "device"]


@pytest.mark.parametrize("case", BAD_NAMES)
def test_bad_input_in_process(case, tmp_path, capsys):
    argv, parts = _bad_cases(tmp_path)[case]
    with pytest.raises(SystemExit) as e:
        ann.main([str(a) for a in argv])
    assert e.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    for part in parts:
        assert str(part) in lines[0], (part, lines[0])
    assert not (tmp_path / "o").exists()


def test_failure_while_scoring_leaves_nothing(tmp_path, capsys, monkeypatch):
    import alignment.core.rewards

    monkeypatch.setattr(alignment.core.rewards, "load_reward",
                        lambda *a, **k: CallableReward(lambda p, r: math.inf, name="broken"))
    with pytest.raises(SystemExit) as e:
        ann.main(["--generations", str(write_gen(tmp_path / "g.jsonl")), "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    assert "non-finite score" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------ TRL

def test_output_is_what_dpo_trainer_reads(tmp_path, capsys):
    """datasets loads preferences.jsonl with TRL's columns, and DPOTrainer's own preparation tokenizes
    prompt + chosen / rejected into the words that were scored (no unknown tokens at the join)."""
    import datasets
    from trl import DPOConfig, DPOTrainer

    from alignment.core.toy import build_model

    path = ann.main(["--generations", str(write_gen(tmp_path / "g.jsonl")), "--out", str(tmp_path / "o")])
    ds = datasets.load_dataset("json", data_files=str(path / "preferences.jsonl"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds.column_names == ROW_KEYS
    assert {k: str(v) for k, v in ds.features.items() if k in ("prompt", "chosen", "rejected")} == \
        {k: "Value('string')" for k in ("prompt", "chosen", "rejected")}
    tok = build_tokenizer()
    config = DPOConfig(output_dir=str(tmp_path / "trl"), report_to="none", use_cpu=True, max_steps=1,
                       per_device_train_batch_size=2, save_strategy="no")
    trainer = DPOTrainer(model=build_model(tok, "tiny"), ref_model=build_model(tok, "tiny"), args=config,
                         train_dataset=ds, processing_class=tok)
    prepared = trainer.train_dataset
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(prepared.column_names)
    for row, src in zip(prepared, ds):
        assert row["prompt_ids"] == tok(src["prompt"])["input_ids"]
        for side in ("chosen", "rejected"):
            words = tok.convert_ids_to_tokens(row[f"{side}_ids"])
            assert "<unk>" not in words
            assert words == src[side].split() + ["<eos>"]


def test_conversational_generations(tiny_rm, tmp_path, capsys):
    """Conversational prompts: the reward model's chat template renders them (an error without one), and
    chosen / rejected are assistant messages, as TRL's conversational format has them."""
    import shutil

    from transformers import AutoTokenizer

    user = lambda row: [{"role": "user", "content": row["prompt"]}]
    gen = write_gen(tmp_path / "conv.jsonl", [dict(GEN[0], prompt=user(GEN[0])), dict(GEN[2], prompt=user(GEN[2]))])
    with pytest.raises(SystemExit):
        ann.main(["--generations", str(gen), "--reward", str(tiny_rm), "--out", str(tmp_path / "o")])
    assert "no chat template" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the toy oracle reads plain toy prompts only
        ann.main(["--generations", str(gen), "--out", str(tmp_path / "o")])
    assert "toy prompts only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

    rm = tmp_path / "rm_chat"
    shutil.copytree(tiny_rm / "model", rm)
    tok = AutoTokenizer.from_pretrained(rm)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    tok.save_pretrained(rm)
    path = ann.main(["--generations", str(gen), "--reward", str(rm), "--out", str(tmp_path / "o")])
    rows = read_jsonl(path / "preferences.jsonl")
    assert [r["id"] for r in rows] == ["a", "c"]
    for r in rows:
        assert r["chosen"] == [{"role": "assistant", "content": r["responses"][r["rewards"].index(r["chosen_reward"])]}]
        assert r["rejected"][0]["role"] == "assistant" and r["chosen_reward"] > r["rejected_reward"]
    assert load_preferences(str(path))[0]["prompt"] == user(GEN[0])


def test_flip_swaps_labels_with_the_given_probability_and_marks_rows():
    from alignment.annotate import annotate

    rows = [{"id": f"p{i}", "prompt": "write about food in 1 sentence :", "responses": ["a", "b", "c"]}
            for i in range(2000)]
    scores = [[1.0, 0.0, -1.0] for _ in rows]
    clean, _ = annotate(rows, scores, "max_min", 0.7, seed=3)
    noisy, counts = annotate(rows, scores, "max_min", 0.7, seed=3, flip=0.2)
    flipped = [r for r in noisy if r["flipped"]]
    assert counts["flipped"] == len(flipped) and abs(len(flipped) / len(rows) - 0.2) < 0.03  # binomial sd 0.009
    for a, b in zip(clean, noisy):
        if b["flipped"]:  # the labels swap; each reward stays with its response
            assert (b["chosen"], b["rejected"]) == (a["rejected"], a["chosen"])
            assert (b["chosen_reward"], b["rejected_reward"]) == (a["rejected_reward"], a["chosen_reward"])
        else:
            assert {k: v for k, v in b.items() if k != "flipped"} == a
    again, _ = annotate(rows, scores, "max_min", 0.7, seed=3, flip=0.2)
    assert again == noisy  # seeded per prompt
    assert "flipped" not in clean[0]
