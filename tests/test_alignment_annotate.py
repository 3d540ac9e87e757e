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
def test_mixed_rule_takes_max_min_within_the_second_half_with_probability_p(p):
    """Without components, mixed_max_min is max_min within the second half (probability p) or the first half of
    the K = 4 responses: rewards [0, 2, 1, -1] give (2, 3) or (1, 0), never a pair across the halves."""
    n = 4000
    rows = [{"id": f"q{i}", "prompt": P1, "responses": [f"r{j}" for j in range(4)]} for i in range(n)]
    scores = [[0.0, 2.0, 1.0, -1.0]] * n
    prefs, counts = annotate(rows, scores, "mixed_max_min", p, seed=5)
    share = counts["picks"]["second_half"] / n
    assert counts["picks"]["second_half"] + counts["picks"]["first_half"] == n
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / n), share
    pairs = [(r["chosen"], r["rejected"]) for r in prefs]
    assert set(pairs) == {(" r2", " r3"), (" r1", " r0")}
    assert pairs.count((" r2", " r3")) == counts["picks"]["second_half"]
    again, _ = annotate(rows, scores, "mixed_max_min", p, seed=5)
    assert again == prefs  # seeded
    other, _ = annotate(rows, scores, "mixed_max_min", p, seed=6)
    assert other != prefs


def test_mixed_rule_extremes():
    rewards = [0.0, 2.0, 1.0, -1.0]
    assert all(pick_pair(rewards, "mixed_max_min", random.Random(s), p=1.0) == Pick(2, 3, "second_half")
               for s in range(50))
    assert all(pick_pair(rewards, "mixed_max_min", random.Random(s), p=0.0) == Pick(1, 0, "first_half")
               for s in range(50))


def test_mixed_rule_halves_against_the_old_rule_and_the_papers_indexing():
    """K = 4, rewards [5, 0, 3, 4]. The old rule (max_min over all with probability p, else a random pair) could
    return (0, 1) and pairs across the halves such as (0, 2); the halves rule picks (0, 1) in the first half and
    (3, 2) in the second. The paper's code (run_dpo.py) in its second branch takes argmax / argmin of the second
    half's rewards [3, 4] (positions 1 and 0 there) as positions of the whole list: responses 1 and 0 of the first
    half, which the intended rule never pairs in that branch."""
    rewards = [5.0, 0.0, 3.0, 4.0]
    n, p = 4000, 0.7
    picks = [pick_pair(rewards, "mixed_max_min", random.Random(s), p) for s in range(n)]
    halves = ({0, 1}, {2, 3})
    assert all({q.chosen, q.rejected} in halves for q in picks)  # every pick within one half
    assert {(q.chosen, q.rejected, q.how) for q in picks} == {(0, 1, "first_half"), (3, 2, "second_half")}
    first = sum(q.how == "first_half" for q in picks) / n
    assert abs(first - (1 - p)) < 4 * math.sqrt(p * (1 - p) / n), first  # the paper's random() <= 0.3 branch
    # the paper's second-branch indexing, written out: positions inside the second half used on the whole list
    second = rewards[2:]
    buggy = {second.index(max(second)), second.index(min(second))}
    assert buggy == {1, 0} and not any({q.chosen, q.rejected} == buggy and q.how == "second_half" for q in picks)


def test_mixed_rule_odd_k_is_an_error_and_k2_is_its_one_pair():
    with pytest.raises(ConfigError, match="--rule.*--num-responses"):
        pick_pair([1.0, 2.0, 3.0], "mixed_max_min", random.Random(0))
    rows = [{"id": "odd", "prompt": P1, "responses": ["a", "b", "c"]}]
    with pytest.raises(ConfigError, match="'odd'"):
        annotate(rows, [[1.0, 2.0, 3.0]], "mixed_max_min", 0.7, seed=0)
    assert all(pick_pair([1.0, 7.0], "mixed_max_min", random.Random(s)) == Pick(1, 0, "max_min") for s in range(20))
    # with fused and on-policy components the groups decide, whatever K
    assert pick_pair([1.0, 2.0, 3.0], "mixed_max_min", random.Random(0), 0.0, ["mix+", "policy", "policy"]) == \
        Pick(2, 1, "policy")


def test_max_random_hand_computed():
    """max_random: the best response (position 1) against a uniform draw of the other three."""
    rewards = [0.0, 2.0, 1.0, -1.0]
    n = 3000
    seen = {}
    for s in range(n):
        q = pick_pair(rewards, "max_random", random.Random(s))
        assert q.chosen == 1 and q.how == "max_random"
        seen[q.rejected] = seen.get(q.rejected, 0) + 1
    assert set(seen) == {0, 2, 3}
    se = math.sqrt((1 / 3) * (2 / 3) / n)
    assert all(abs(c / n - 1 / 3) < 5 * se for c in seen.values()), seen
    assert pick_pair([3.0, 3.0, 1.0], "max_random", random.Random(0)).chosen == 0  # equal best: the first in order


def test_max_max_hand_computed():
    assert pick_pair([0.0, 2.0, 1.0, -1.0], "max_max", random.Random(0)) == Pick(1, 2, "max_max")
    assert pick_pair([4.0, -1.0, 9.0, 8.9], "max_max", random.Random(0)) == Pick(2, 3, "max_max")
    assert pick_pair([1.0, 5.0], "max_max", random.Random(0)) == Pick(1, 0, "max_max")


def test_max_min_length_penalty_hand_computed():
    """max_min_p: argmax / argmin of r - c len; chosen / rejected ordered by the plain rewards."""
    rewards = [3.0, 2.0, 0.0, 1.0]
    lengths = [10, 1, 2, 30]
    c = 0.1  # penalised: [2.0, 1.9, -0.2, -2.0] -> max 0, min 3
    assert pick_pair(rewards, "max_min", random.Random(0), lengths=lengths, length_penalty=c) == Pick(0, 3, "max_min")
    c = 0.2  # penalised: [1.0, 1.8, -0.4, -5.0] -> max 1, min 3 (plain rewards 2 > 1: 1 is chosen)
    assert pick_pair(rewards, "max_min", random.Random(0), lengths=lengths, length_penalty=c) == Pick(1, 3, "max_min")
    # the penalised max can have the lower plain reward: then it is the rejected side
    assert pick_pair([1.0, 2.0], "max_min", random.Random(0), lengths=[1, 50], length_penalty=0.1) == \
        Pick(1, 0, "max_min")
    assert pick_pair(rewards, "max_min", random.Random(0)) == Pick(0, 2, "max_min")  # off: plain max_min
    rows = [{"id": "a", "prompt": P1, "responses": ["x" * 10, "y", "zz", "w" * 30]}]
    prefs, _ = annotate(rows, [rewards], "max_min", 0.7, seed=0, length_penalty=0.2)  # lengths = characters
    assert (prefs[0]["chosen"], prefs[0]["rejected"]) == (" y", " " + "w" * 30)


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


def test_mixp_without_both_kinds_is_the_halves_rule():
    rewards = [1.0, 5.0, -3.0, 2.0]
    for components in (["mix+", "mix+", "mix-", "mix-"], ["ref", "ref", "policy", "policy"], None):
        picks = {pick_pair(rewards, "mixed_max_min", random.Random(s), 0.5, components) for s in range(40)}
        assert picks == {Pick(1, 0, "first_half"), Pick(3, 2, "second_half")}
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
    for rule in ("max_min", "random", "max_random", "max_max"):  # mixed_max_min: odd K is an error (above)
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
    argv = ["--generations", gen, "--out", tmp_path / "o", "--rule", "max_random", "--seed", "3"]
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
    for flag in ("--generations", "--reward", "--rule", "--p", "--length-penalty", "--seed", "--batch-size", "--device",
                 "--out", "--name", *ann.RULES):
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
        "length penalty rule": (["--generations", good, "--rule", "random", "--length-penalty", "0.1", *base],
                                ["--length-penalty", "max_min"]),
        "length penalty negative": (["--generations", good, "--length-penalty", "-1", *base], ["--length-penalty"]),
        "odd K halves": (["--generations", good, "--rule", "mixed_max_min", *base], ["--rule", "--num-responses"]),
        "reward folder": (["--generations", good, "--reward", tmp / "no_rm", *base], ["--reward", "no_rm"]),
        "not a toy prompt": (["--generations", not_toy, *base], ["--reward", "toy-oracle", "row 0", "tell me a story"]),
        "name": (["--generations", good, "--name", "a/b", *base], ["--name"]),
        "out is a file": (["--generations", good, "--out", tmp / "afile"], ["--out", "not a folder"]),
        "device": (["--generations", good, "--device", "tpu:9", *base], ["--device"]),
    })
    return cases


BAD_NAMES = ["missing field", "empty text", "non-string text", "non-finite reward", "duplicate id", "malformed JSON",
             "wrong suffix", "missing file", "no generations", "single responses", "p above 1", "p nan",
             "batch size", "seed", "rule", "length penalty rule", "length penalty negative", "odd K halves",
             "reward folder", "not a toy prompt", "name", "out is a file", "device"]


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


def test_no_pair_at_all_is_one_error_and_writes_nothing(tmp_path, capsys):
    """Only ties and single responses (GEN's rows b and d): an empty preference set is refused, not written with
    exit code 0."""
    gen = write_gen(tmp_path / "g.jsonl", [GEN[1], GEN[3]])
    with pytest.raises(SystemExit) as e:
        ann.main(["--generations", str(gen), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert "no preference pair" in err and "1 had only tied rewards" in err and "1 too few responses" in err
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []
