"""alignment.evaluate's exports for external judges, checked against what the judges read.

AlpacaEval (alpaca_eval's utils.load_or_convert_to_dataframe / get_generator_name, and its head-to-head merge on
"instruction" with the eval set) and FastChat's MT-Bench (fastchat/llm_judge: load_questions, load_model_answers,
check_data, make_match_single, play_a_match_single, whose multi-turn judge reads answer["choices"][0]["turns"][1]):
their own code where it is installed (`pip install alpaca-eval fschat anthropic`; CI installs neither, so those
tests skip), and always against the file schemas their documentation gives, written out here:
    AlpacaEval model outputs   a JSON list of {"instruction", "output", "generator"} (plus "dataset" as in its
                               alpaca_eval.json); one generator per model: it names the model's leaderboard row,
                               and a name already there is skipped ("already in the leaderboard").
    MT-Bench question.jsonl    {"question_id": int, "category", "turns": [turn 1, turn 2]}
    MT-Bench answers           data/mt_bench/model_answer/<model_id>.jsonl, one line per question:
                               {"question_id", "answer_id", "model_id", "choices": [{"index": 0, "turns": [...]}],
                               "tstamp"}, one answer turn per question turn.
Turn 2 must be answered from the conversation that holds the model's own turn-1 answer: checked on the token ids
the generator was given (toy tokenizer: the plain texts in order; a chat template: the rendered conversation).
Toy models (toy:tiny, toy:small) and toy texts throughout, so the toy oracle scores turn 1.
"""
import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from alignment import evaluate
from alignment.core import toy
from alignment.evaluate import EvalConfig, answer_turns, chat_prompts, conversation_ids, load_eval_prompts, main
from alignment.generation.backend import encode_prompts
from runlog import ConfigError

pytestmark = pytest.mark.usefixtures("torch_single_thread")

TOK = toy.build_tokenizer()
QUESTIONS = [  # MT-Bench's question.jsonl layout; toy texts so that the toy oracle can score turn 1
    {"question_id": 81, "category": "writing", "turns": ["write about ocean in 2 sentences :",
                                                         "write about space in 1 sentence :"]},
    {"question_id": 82, "category": "roleplay", "turns": ["write about city in 3 sentences :",
                                                          "write about music in 2 sentences :"]},
    {"question_id": 101, "category": "reasoning", "turns": ["write about forest in 1 sentence :",
                                                            "write about winter in 4 sentences :"]},
]
EVAL_SET = [  # AlpacaEval's alpaca_eval.json layout: the reference model's outputs with their instructions
    {"instruction": "write about garden in 2 sentences :", "output": "the kind rose grows .",
     "generator": "gpt4_turbo", "dataset": "helpful_base"},
    {"instruction": "write about kitchen in 1 sentence :", "output": "the warm bread rests .",
     "generator": "gpt4_turbo", "dataset": "koala"},
    {"instruction": "write about ocean in 3 sentences :", "output": "the calm wave moves .",
     "generator": "gpt4_turbo", "dataset": "oasst"},
]
MODELS = {"mix_p-seed0-iter1": "toy:tiny", "mix_p-seed0-iter2": "toy:small"}  # two models, as two iterations
ANSWER_KEYS = {"question_id", "answer_id", "model_id", "choices", "tstamp"}


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both models evaluated on the MT-Bench questions and on the AlpacaEval set, every draw's prompt ids and
    sampled tokens recorded; each run's folder, and the folders laid out as the judges read them."""
    root = tmp_path_factory.mktemp("exports")
    (root / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    (root / "alpaca_eval.json").write_text(json.dumps(EVAL_SET, indent=2))
    draws = []
    real_draw = evaluate.draw

    def recording_draw(model, tokenizer, prompt_ids, cfg, seed, temperature, top_p):
        out = real_draw(model, tokenizer, prompt_ids, cfg, seed, temperature, top_p)
        draws.extend(zip(prompt_ids, out))
        return out

    base = ["--max-new-tokens", "6", "--batch-size", "2", "--out", str(root / "out")]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate, "draw", recording_draw)
        for name, policy in MODELS.items():
            main(["--policy", policy, "--prompts", str(root / "question.jsonl"), "--name", f"mt-{name}",
                  "--generator-name", name] + base)
            main(["--policy", policy, "--prompts", str(root / "alpaca_eval.json"), "--name", name] + base)
    # the judges' layouts: data/mt_bench/{question.jsonl, model_answer/}, and a folder of model-output files
    judge = root / "data" / "mt_bench"
    (judge / "model_answer").mkdir(parents=True)
    shutil.copy(root / "question.jsonl", judge / "question.jsonl")
    outputs = root / "alpaca_outputs"
    outputs.mkdir()
    for name in MODELS:
        shutil.copy(root / "out" / f"mt-{name}" / "model_answer" / f"{name}.jsonl", judge / "model_answer")
        shutil.copy(root / "out" / name / "alpaca_eval.json", outputs / f"{name}.json")
    return {"root": root, "out": root / "out", "draws": draws, "judge": judge, "outputs": outputs, "base": base}


# ------------------------------------------------------------------------------- reading the benchmarks' files

def test_reads_mt_bench_question_file(runs):
    path = str(runs["root"] / "question.jsonl")
    rows = load_eval_prompts(path, "test")
    assert [r["prompt"] for r in rows] == [q["turns"][0] for q in QUESTIONS]
    assert [r["turns"] for r in rows] == [q["turns"] for q in QUESTIONS]
    assert [r["question_id"] for r in rows] == [81, 82, 101] and all(type(r["question_id"]) is int for r in rows)
    assert [r["id"] for r in rows] == ["81", "82", "101"]
    assert load_eval_prompts(path, "test", "turns") == rows  # named, or found from the fields: the same rows


def test_reads_alpaca_eval_set(runs):
    path = str(runs["root"] / "alpaca_eval.json")
    rows = load_eval_prompts(path, "test")
    assert [r["prompt"] for r in rows] == [e["instruction"] for e in EVAL_SET]
    assert [r["dataset"] for r in rows] == [e["dataset"] for e in EVAL_SET]
    assert all("output" not in r and "generator" not in r for r in rows)  # the reference's answer is not a prompt
    assert load_eval_prompts(path, "test", "instruction") == rows


def test_unknown_layout_is_one_error_naming_file_and_fields(tmp_path, capsys):
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"question": "write about ocean in 2 sentences :", "answer_key": 3}) + "\n")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["--policy", "toy:tiny", "--prompts", str(path), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert str(path) in err and "'question'" in err and "'answer_key'" in err and "--prompt-field" in err
    assert not out.exists()
    # a field named: that field is the prompt
    assert [r["prompt"] for r in load_eval_prompts(str(path), "test", "question")] == ["write about ocean in 2 sentences :"]
    with pytest.raises(ConfigError, match="no field 'instruction'.*'answer_key', 'question'"):
        load_eval_prompts(str(path), "test", "instruction")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question_id": 1, "turns": ["a", ""]}) + "\n")
    with pytest.raises(ConfigError, match="row 0.*'turns'"):
        load_eval_prompts(str(bad), "test")


# ------------------------------------------------------------------------------- MT-Bench

def test_mt_bench_answers_have_every_turn_and_turn_2_sees_turn_1s_answer(runs):
    for name in MODELS:
        folder = runs["out"] / f"mt-{name}"
        assert sorted(p.name for p in (folder / "model_answer").iterdir()) == [f"{name}.jsonl"]  # <model_id>.jsonl
        answers = read_jsonl(folder / "model_answer" / f"{name}.jsonl")
        evals = read_jsonl(folder / "evaluations.jsonl")
        assert [a["question_id"] for a in answers] == [q["question_id"] for q in QUESTIONS]  # ints, as given
        for a, q, ev in zip(answers, QUESTIONS, evals):
            assert set(a) == ANSWER_KEYS and a["model_id"] == name and isinstance(a["answer_id"], str)
            [choice] = a["choices"]
            assert choice["index"] == 0 and len(choice["turns"]) == len(q["turns"]) == 2
            assert choice["turns"][0] == ev["response"]  # turn 1 is the evaluated response
            # the generator's prompt for turn 2: turn 1, the model's answer to it, turn 2 (BOS first)
            want = words(f"{q['turns'][0]} {choice['turns'][0]} {q['turns'][1]}")
            seen = [(ids, out) for ids, out in runs["draws"]
                    if words(TOK.decode(ids, skip_special_tokens=True)) == want and ids[0] == TOK.bos_token_id]
            assert seen, (name, want)
            # and the answer file's turn 2 is what was sampled from that prompt
            assert choice["turns"][1] in {words(TOK.decode(out, skip_special_tokens=True)) for _, out in seen}
    # two models' answers differ (distinct models), and their answer ids too
    a, b = (read_jsonl(runs["judge"] / "model_answer" / f"{n}.jsonl") for n in MODELS)
    assert {x["answer_id"] for x in a}.isdisjoint(x["answer_id"] for x in b)


def test_mt_bench_answers_are_reproducible(runs, tmp_path):
    name, policy = next(iter(MODELS.items()))
    argv = ["--policy", policy, "--prompts", str(runs["root"] / "question.jsonl"), "--generator-name", name,
            "--export", "mt_bench"] + runs["base"][:-2]
    main(argv + ["--out", str(tmp_path / "a")])
    again = (tmp_path / "a" / "eval" / "model_answer" / f"{name}.jsonl").read_bytes()
    assert again == (runs["out"] / f"mt-{name}" / "model_answer" / f"{name}.jsonl").read_bytes()
    main(argv + ["--out", str(tmp_path / "b"), "--seed", "5"])
    other = read_jsonl(tmp_path / "b" / "eval" / "model_answer" / f"{name}.jsonl")
    assert [a["choices"][0]["turns"][1] for a in other] != \
           [a["choices"][0]["turns"][1] for a in read_jsonl(runs["judge"] / "model_answer" / f"{name}.jsonl")]


def test_turn_2_through_a_chat_template():
    """With a chat template, turn 2's prompt is the rendered conversation user t1, assistant answer, user t2."""
    tok = toy.build_tokenizer()
    # a template in the toy vocabulary: a user turn ends with ':' already, an assistant turn with '.'
    tok.chat_template = ("{% for m in messages %}{{ m['content'] }}{{ ' . ' if m['role'] == 'assistant' else ' ' }}"
                         "{% endfor %}")
    prompts = chat_prompts(load_rows_as_prompts(), tok)
    assert prompts[0]["prompt"] == [{"role": "user", "content": QUESTIONS[0]["turns"][0]}]
    prompt_ids = encode_prompts(tok, prompts)
    rows = [{"response": "the calm wave shines"}, {"response": ""}, {"response": "the old oak rests"}]
    seen = []

    def fake_draw(model, tokenizer, ids, cfg, seed, temperature, top_p):
        seen.extend(ids)
        return [tokenizer("the new star waits", add_special_tokens=False)["input_ids"] for _ in ids]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate, "draw", fake_draw)
        answers = answer_turns(None, tok, prompts, prompt_ids, rows, EvalConfig(batch_size=2))
    assert answers == [[r["response"], "the new star waits"] for r in rows]
    for ids, q, r in zip(seen, QUESTIONS, rows):
        messages = [{"role": "user", "content": q["turns"][0]}, {"role": "assistant", "content": r["response"]},
                    {"role": "user", "content": q["turns"][1]}]
        assert tok.decode(ids) == words(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        text = tok.decode(ids)
        assert text.index(q["turns"][0]) < text.index(q["turns"][1]) and r["response"] in text
    assert conversation_ids(tok, prompts[0], prompt_ids[0], [rows[0]["response"]]) == seen[0]


def load_rows_as_prompts():
    return [{"id": str(q["question_id"]), "prompt": q["turns"][0], "turns": q["turns"],
             "question_id": q["question_id"]} for q in QUESTIONS]


def test_mt_bench_schema(runs):
    """The answer files against FastChat's documented layout, and the question file they answer."""
    questions = read_jsonl(runs["judge"] / "question.jsonl")
    files = sorted((runs["judge"] / "model_answer").glob("*.jsonl"))
    assert [f.stem for f in files] == sorted(MODELS)
    for f in files:
        by_id = {}
        for a in read_jsonl(f):
            assert set(a) == ANSWER_KEYS and a["model_id"] == f.stem and isinstance(a["tstamp"], float)
            assert isinstance(a["answer_id"], str) and a["answer_id"]
            assert all(isinstance(t, str) for t in a["choices"][0]["turns"])
            by_id[a["question_id"]] = a
        for q in questions:  # the judge's lookup: answers[model][question_id], then turns[0] and turns[1]
            assert len(by_id[q["question_id"]]["choices"][0]["turns"]) == len(q["turns"])


def test_fastchat_loads_and_judges_both_turns(runs, monkeypatch):
    common = pytest.importorskip("fastchat.llm_judge.common",
                                 reason="FastChat not installed (pip install fschat anthropic); CI skips this")
    gen_judgment = pytest.importorskip("fastchat.llm_judge.gen_judgment", reason="FastChat not installed")
    judge_dir = runs["judge"]
    questions = common.load_questions(str(judge_dir / "question.jsonl"), None, None)
    answers = common.load_model_answers(str(judge_dir / "model_answer"))
    assert sorted(answers) == sorted(MODELS)  # model ids from the file names
    models = sorted(MODELS)
    gen_judgment.check_data(questions, answers, None, models, {})  # every model answers every question
    template = {"name": "single-v1-multi-turn", "type": "single", "system_prompt": "rate", "output_format": "[[rating]]",
                "prompt_template": "Q1 {question_1} A1 {answer_1} Q2 {question_2} A2 {answer_2}"}
    judge = common.Judge("gpt-4", template, multi_turn=True)
    matches = gen_judgment.make_match_single(questions, models, answers, judge, multi_turn=True)
    assert len(matches) == len(questions) * len(models)  # no question skipped for lack of a second turn
    prompts = []
    monkeypatch.setattr(common, "chat_completion_openai",
                        lambda model, conv, **kw: prompts.append(conv.messages[0][1]) or "Rating: [[7]]")
    for m in matches:
        result = common.play_a_match_single(m, output_file=None)
        assert result["score"] == 7 and result["turn"] == 2
        turns = m.answer["choices"][0]["turns"]
        assert prompts[-1] == template["prompt_template"].format(question_1=m.question["turns"][0], answer_1=turns[0],
                                                                 question_2=m.question["turns"][1], answer_2=turns[1])


# ------------------------------------------------------------------------------- AlpacaEval

def test_alpaca_eval_schema(runs):
    """Each model's file: a JSON list of the eval set's instructions, verbatim, with the model's outputs and one
    generator name per model, distinct between the models of one folder."""
    generators = {}
    for f in sorted(runs["outputs"].glob("*.json")):
        rows = json.loads(f.read_text())
        assert isinstance(rows, list) and len(rows) == len(EVAL_SET)
        assert all(set(r) == {"instruction", "output", "generator", "dataset"} for r in rows)
        assert all(isinstance(r["output"], str) for r in rows)
        assert [(r["instruction"], r["dataset"]) for r in rows] == [(e["instruction"], e["dataset"]) for e in EVAL_SET]
        generators[f.stem] = {r["generator"] for r in rows}
    assert generators == {name: {name} for name in MODELS}


@pytest.fixture
def alpaca_eval_utils(monkeypatch):
    import importlib.util

    if importlib.util.find_spec("alpaca_eval") is None:
        pytest.skip("AlpacaEval not installed (pip install alpaca-eval); CI skips this")
    if importlib.util.find_spec("pkg_resources") is None:
        # alpaca_eval 0.6.6 imports pkg_resources (gone from setuptools >= 81) for two version helpers only;
        # give it those two, so its own loading code runs
        from importlib import metadata

        from packaging.version import parse

        shim = types.ModuleType("pkg_resources")
        shim.parse_version = parse
        shim.get_distribution = lambda name: types.SimpleNamespace(version=metadata.version(name))
        monkeypatch.setitem(sys.modules, "pkg_resources", shim)
    return pytest.importorskip("alpaca_eval.utils", reason="AlpacaEval's modules do not import here")


def test_alpaca_eval_loads_two_models_as_two_generators(runs, alpaca_eval_utils):
    utils = alpaca_eval_utils
    both = utils.load_or_convert_to_dataframe(str(runs["outputs"] / "*.json"))  # the folder, as a glob
    assert sorted(both["generator"].unique()) == sorted(MODELS) and len(both) == 2 * len(EVAL_SET)
    reference = utils.load_or_convert_to_dataframe(str(runs["root"] / "alpaca_eval.json"))
    for name in MODELS:
        outputs = utils.load_or_convert_to_dataframe(str(runs["outputs"] / f"{name}.json"))
        assert utils.get_generator_name(None, outputs) == name  # its leaderboard row: one per model
        # the head-to-head pairs model and reference outputs by instruction: every question finds its reference
        merged = reference.merge(outputs, on="instruction", suffixes=("_1", "_2"))
        assert len(merged) == len(EVAL_SET) and (merged["dataset_1"] == merged["dataset_2"]).all()


# ------------------------------------------------------------------------------- the pipeline's names

def test_pipeline_names_each_iteration_in_the_exports(tmp_path, capsys):
    from alignment.pipeline.driver import main as pipeline
    from conftest import tiny_pipeline_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(tiny_pipeline_recipe(1, ""))
    for extra, label in ([], "mix_p"), (["--label", "my-run"], "my-run"):
        pipeline(["--config", str(recipe), "--sampler", "mix_p", "--iterations", "2", "--seed", "4",
                  "--out", str(tmp_path / "dry"), "--dry-run"] + extra)
        lines = [l.split() for l in capsys.readouterr().out.splitlines()
                 if not l.startswith("#") and "alignment.evaluate" in l]
        names = [w[w.index("--generator-name") + 1] for w in lines]
        assert names == [f"{label}-seed4-iter{t}" for t in range(3)]
    recipe.write_text(tiny_pipeline_recipe(1, "evaluate: {generator_name: same}\n"))
    with pytest.raises(SystemExit) as e:  # a recipe cannot give every iteration one name
        pipeline(["--config", str(recipe), "--out", str(tmp_path / "dry"), "--dry-run"])
    assert e.value.code == 2 and "generator_name" in capsys.readouterr().err


def test_turn_2_too_long_fails_before_generating(runs, tmp_path, capsys):
    """Turn 1 fits the toy's 128 positions with 60 new tokens, but turn 1 + its answer + turn 2 + 60 more does not:
    one error line before any generation, nothing written; without the MT-Bench export turn 2 is not needed."""
    argv = ["--policy", "toy:tiny", "--prompts", str(runs["root"] / "question.jsonl"), "--max-new-tokens", "60",
            "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--max-new-tokens" in err and "turn" in err, err
    assert not (tmp_path / "out").exists()
    with pytest.MonkeyPatch.context() as mp:  # the check is all that is tested here: no real sampling
        mp.setattr(evaluate, "draw", lambda model, tokenizer, ids, *a: [[TOK.eos_token_id] for _ in ids])
        assert main(argv + ["--export", "alpaca_eval"]) == tmp_path / "out" / "eval"


def test_pipeline_evaluates_mt_bench_questions_with_both_turns(tmp_path):
    """--eval-prompts MT-Bench's question.jsonl: eval_prompts.jsonl keeps the turns and question ids, so each
    iteration's answer file (named by the iteration) has both turns for every question."""
    from alignment.pipeline.driver import main as pipeline
    from conftest import tiny_pipeline_recipe

    (tmp_path / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(tiny_pipeline_recipe(1).replace("eval_prompts: toy:16", f"eval_prompts: {tmp_path / 'question.jsonl'}")
                      .replace("export: none", "export: mt_bench"))
    out = tmp_path / "run"
    pipeline(["--config", str(recipe), "--sampler", "on_policy", "--iterations", "1", "--seed", "2", "--out", str(out)])
    kept = read_jsonl(out / "eval_prompts.jsonl")
    assert [r["turns"] for r in kept] == [q["turns"] for q in QUESTIONS]
    for t in (0, 1):
        answers = read_jsonl(out / f"iter_{t}" / "evaluate" / "model_answer" / f"on_policy-seed2-iter{t}.jsonl")
        assert [a["question_id"] for a in answers] == [81, 82, 101]
        assert all(len(a["choices"][0]["turns"]) == 2 for a in answers)
