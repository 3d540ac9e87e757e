"""alignment.core.data: loading and validating prompt, generation and preference sets.

Every problem must be one ConfigError naming the flag, the file and the row; good files in each local
format (and a run folder) load to the same rows; what write_jsonl writes loads back, also through datasets.
"""
import json
import math
from pathlib import Path

import pytest

from alignment.core import data
from alignment.core.data import (as_dataset, check_reward, check_text, load_generations, load_preferences, load_prompts,
                            validate_prompts, write_jsonl)
from runlog import ConfigError

pytestmark = pytest.mark.usefixtures("torch_single_thread")

P1 = "write about ocean in 2 sentences :"
P2 = "write about city in 1 sentence :"
GEN = [
    {"id": "a", "prompt": P1, "responses": ["the calm wave rests .", "the dull rose grows ."],
     "components": ["policy", "policy"], "num_tokens": [5, 5]},
    {"id": "b", "prompt": P2, "responses": ["the tall street waits .", "", "the new tower moves ."]},
]
PREF = [
    {"id": "a", "prompt": P1, "chosen": " the calm wave rests .", "rejected": " the dull rose grows .",
     "chosen_reward": 0.0, "rejected_reward": -3.5, "responses": ["the calm wave rests .", "the dull rose grows ."],
     "rewards": [0.0, -3.5]},
    {"id": "b", "prompt": P2, "chosen": "the tall street waits .", "rejected": ""},
]


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def dump_rows(path: Path, rows) -> Path:
    return write_lines(path, [json.dumps(r) for r in rows])


def expect_error(fn, *parts):
    """fn() raises a one-line ConfigError containing every part."""
    with pytest.raises(ConfigError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


# ------------------------------------------------------------------------------------------------ good input

def test_generations_jsonl_folder_json_parquet_agree(tmp_path):
    f = dump_rows(tmp_path / "g.jsonl", GEN)
    rows = load_generations(str(f))
    assert [r["id"] for r in rows] == ["a", "b"]
    assert rows[1]["responses"] == GEN[1]["responses"]  # an empty response is a response
    run = tmp_path / "run"
    run.mkdir()
    dump_rows(run / "generations.jsonl", GEN)
    assert load_generations(str(run)) == rows
    (tmp_path / "g.json").write_text(json.dumps(GEN, indent=2))
    assert load_generations(str(tmp_path / "g.json")) == rows
    as_dataset(rows).to_parquet(str(tmp_path / "g.parquet"))
    pq = load_generations(str(tmp_path / "g.parquet"))
    assert [(r["id"], r["prompt"], r["responses"]) for r in pq] == [(r["id"], r["prompt"], r["responses"]) for r in rows]


def test_ids_default_to_row_number_and_blank_lines_are_skipped(tmp_path):
    rows = [{k: v for k, v in r.items() if k != "id"} for r in GEN]
    f = write_lines(tmp_path / "g.jsonl", [json.dumps(rows[0]), "", json.dumps(dict(rows[1], id=7))])
    assert [r["id"] for r in load_generations(str(f))] == ["0", "7"]


def test_preferences_plain_conversational_and_folder(tmp_path):
    f = dump_rows(tmp_path / "p.jsonl", PREF)
    rows = load_preferences(str(f))
    assert [r["chosen"] for r in rows] == [PREF[0]["chosen"], PREF[1]["chosen"]]
    run = tmp_path / "run"
    run.mkdir()
    dump_rows(run / "preferences.jsonl", PREF)
    assert load_preferences(str(run)) == rows
    conv = [{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}],
             "rejected": [{"role": "assistant", "content": "go away"}]}]
    assert load_preferences(str(dump_rows(tmp_path / "c.jsonl", conv)))[0]["id"] == "0"


def test_implicit_conversational_prompt_is_extracted(tmp_path):
    user = {"role": "user", "content": "What colour is the sky?"}
    row = {"chosen": [user, {"role": "assistant", "content": "Blue."}],
           "rejected": [user, {"role": "assistant", "content": "Green."}]}
    (out,) = load_preferences(str(dump_rows(tmp_path / "p.jsonl", [row])))
    assert out["prompt"] == [user]
    assert out["chosen"] == [{"role": "assistant", "content": "Blue."}]
    assert out["rejected"] == [{"role": "assistant", "content": "Green."}]


def test_scores_become_rewards_unless_the_row_has_its_own(tmp_path):
    scored = {"prompt": P1, "chosen": "a", "rejected": "b", "score_chosen": 6, "score_rejected": 2.5}
    own = dict(scored, chosen_reward=-1.0, rejected_reward=1.0)
    rows = load_preferences(str(dump_rows(tmp_path / "p.jsonl", [scored, own, PREF[1]])))
    assert (rows[0]["chosen_reward"], rows[0]["rejected_reward"]) == (6.0, 2.5)
    assert isinstance(rows[0]["chosen_reward"], float) and rows[0]["score_chosen"] == 6  # the scores stay too
    assert (rows[1]["chosen_reward"], rows[1]["rejected_reward"]) == (-1.0, 1.0)  # its own rewards win
    assert "chosen_reward" not in rows[2]
    lone = load_preferences(str(dump_rows(tmp_path / "l.jsonl", [dict(PREF[1], score_chosen=9.0)])))
    assert "chosen_reward" not in lone[0] and "rejected_reward" not in lone[0]  # both scores or no rewards


def test_anthropic_hh_text_gets_its_prompt_from_the_shared_transcript(tmp_path):
    # both responses start with " the": the shared text runs past the marker, the prompt stops at it
    row = {"chosen": "\n\nHuman: hi\n\nAssistant: the calm wave rests .",
           "rejected": "\n\nHuman: hi\n\nAssistant: the dull rose grows ."}
    (out,) = load_preferences(str(dump_rows(tmp_path / "hh.jsonl", [row])))
    assert out["prompt"] == "\n\nHuman: hi\n\nAssistant:"
    assert (out["chosen"], out["rejected"]) == (" the calm wave rests .", " the dull rose grows .")
    assert data.split_hh_text("\n\nHuman: a\n\nAssistant: b", "\n\nHuman: c\n\nAssistant: b") is None


def test_identical_pair_is_an_error_unless_allowed(tmp_path):
    f = dump_rows(tmp_path / "p.jsonl", [PREF[0], dict(PREF[1], rejected=PREF[1]["chosen"])])
    expect_error(lambda: load_preferences(str(f)), "--preferences", "p.jsonl", "row 1", "same text")
    assert len(load_preferences(str(f), allow_identical=True)) == 2


def test_prompts_local_file_and_toy(tmp_path):
    f = dump_rows(tmp_path / "p.jsonl", [{"prompt": P1}, {"id": "x", "prompt": P2}])
    assert [r["id"] for r in load_prompts(str(f))] == ["0", "x"]
    assert len(load_prompts("toy:3")) == 3
    expect_error(lambda: load_prompts("toy:0"), "--prompts", "toy:0")


def test_write_jsonl_round_trip_through_datasets(tmp_path):
    import datasets

    f = tmp_path / "out" / "prefs.jsonl"
    write_jsonl(f, PREF[:1])
    assert [p.name for p in f.parent.iterdir()] == ["prefs.jsonl"]  # no temporary left
    assert load_preferences(str(f)) == [PREF[0]]
    ds = datasets.load_dataset("json", data_files=str(f), split="train")
    assert ds[0]["chosen"] == PREF[0]["chosen"] and ds[0]["rewards"] == PREF[0]["rewards"]


def test_shared_checks_keep_their_behaviour():
    check_text("x", "w", "prompt")
    check_text([{"role": "user", "content": "x"}], "w", "prompt")
    expect_error(lambda: check_text("  ", "w", "prompt"), "w: field 'prompt' is empty")
    expect_error(lambda: check_text(3, "w", "prompt"), "w", "'prompt'", "int")
    assert check_reward(2, "w", "r") == 2.0
    for bad in (math.nan, math.inf, True, "1", None):
        expect_error(lambda: check_reward(bad, "w", "r"), "w", "'r'", "finite")
    assert validate_prompts([{"prompt": "x"}], "'f'")[0]["id"] == "0"


# ------------------------------------------------------------------------------------------------ bad rows

def _gen(**change):
    """GEN with row 1 changed (None deletes a field)."""
    row = dict(GEN[1])
    for k, v in change.items():
        if v is None:
            row.pop(k, None)
        else:
            row[k] = v
    return [json.dumps(GEN[0]), json.dumps(row)]


GEN_PROBLEMS = {
    "missing prompt": (_gen(prompt=None), "missing field 'prompt'"),
    "null prompt": ([json.dumps(GEN[0]), json.dumps(dict(GEN[1], prompt=None))], "missing field 'prompt'"),
    "missing responses": (_gen(responses=None), "missing field 'responses'"),
    "empty prompt": (_gen(prompt="  "), "field 'prompt' is empty"),
    "non-string prompt": (_gen(prompt=5), "field 'prompt' must be"),
    "non-string response": (_gen(responses=["ok", 3]), "'responses[1]' must be a string"),
    "responses not a list": (_gen(responses="the x"), "'responses' must be a list"),
    "no responses": (_gen(responses=[]), "'responses' is an empty list"),
    "components length": (_gen(components=["policy"]), "'components' has 1 entries but 'responses' has 3"),
    "bad component": (_gen(components=["policy", "", "ref"]), "'components[1]'"),
    "num_tokens length": (_gen(num_tokens=[1, 2]), "'num_tokens' has 2 entries"),
    "negative num_tokens": (_gen(num_tokens=[1, -2, 3]), "'num_tokens[1]' must be an integer >= 0"),
    "non-finite reward": ([json.dumps(GEN[0]), json.dumps(GEN[1])[:-1] + ', "rewards": [1.0, NaN, 2.0]}'],
                          "(line 2): 'rewards[1]' is NaN, which is not JSON"),  # strict JSON: refused as it is read
    "duplicate id": (_gen(id="a"), "duplicate id 'a'"),
    "bad id": (_gen(id=[1]), "field 'id' must be a string or an integer"),
    "malformed JSON": ([json.dumps(GEN[0]), '{"id": "b", "prompt": '], "not valid JSON"),
    "not an object": ([json.dumps(GEN[0]), "[1, 2]"], "must be a JSON object"),
    "mixed prompt kinds": (_gen(prompt=[{"role": "user", "content": "hi"}]), "all plain text or all conversational"),
}


@pytest.mark.parametrize("problem", list(GEN_PROBLEMS))
def test_generation_problem_names_flag_file_and_row(problem, tmp_path):
    lines, text = GEN_PROBLEMS[problem]
    f = write_lines(tmp_path / "gens.jsonl", lines)
    expect_error(lambda: load_generations(str(f)), "--generations", "gens.jsonl", "row 1 (line 2)", text)


def test_row_and_line_differ_with_blank_lines(tmp_path):
    f = write_lines(tmp_path / "gens.jsonl", ["", json.dumps(GEN[0]), "", "{oops"])
    expect_error(lambda: load_generations(str(f)), "gens.jsonl", "row 1 (line 4)", "not valid JSON")


def test_json_array_problems(tmp_path):
    f = tmp_path / "gens.json"
    f.write_text(json.dumps([GEN[0], dict(GEN[1], responses=[1])], indent=1))
    expect_error(lambda: load_generations(str(f)), "--generations", "gens.json", "row 1", "'responses[0]'")
    f.write_text('[\n {"id": "a",\n  "prompt": }\n]')
    expect_error(lambda: load_generations(str(f)), "gens.json", "line 3", "not valid JSON")


def test_empty_file(tmp_path):
    f = write_lines(tmp_path / "gens.jsonl", [])
    expect_error(lambda: load_generations(str(f)), "--generations", "gens.jsonl", "has no rows")


FILE_PROBLEMS = {
    "missing file": (lambda d: str(d / "nope.jsonl"), "no such file", "nope.jsonl"),
    "missing folder": (lambda d: str(d / "nope"), "no such file or folder", "nope"),
    "wrong suffix": (lambda d: str(write_lines(d / "gens.txt", [json.dumps(GEN[0])])), "must be", "gens.txt"),
    "folder without file": (lambda d: str(d), "has no generations.jsonl", "folder"),
    "garbage parquet": (lambda d: (d / "g.parquet").write_text("nope") and str(d / "g.parquet"), "Parquet", "g.parquet"),
}


@pytest.mark.parametrize("problem", list(FILE_PROBLEMS))
def test_generation_file_problems(problem, tmp_path):
    make, text, name = FILE_PROBLEMS[problem]
    spec = make(tmp_path)
    expect_error(lambda: load_generations(spec), "--generations", text, name)


def _pref(**change):
    row = dict(PREF[0])
    for k, v in change.items():
        if v is None:
            row.pop(k, None)
        else:
            row[k] = v
    return [json.dumps(PREF[1]), json.dumps(row)]


PREF_PROBLEMS = {
    "missing chosen": (_pref(chosen=None), "missing field 'chosen'"),
    "missing rejected": (_pref(rejected=None), "missing field 'rejected'"),
    "missing prompt": (_pref(prompt=None), "missing field 'prompt'"),
    "empty prompt": (_pref(prompt=""), "field 'prompt' is empty"),
    "non-string chosen": (_pref(chosen=1.5), "'chosen' must be a string"),
    "messages in a plain set": (_pref(rejected=[{"role": "assistant", "content": "x"}]), "'rejected' must be a string"),
    "non-finite chosen_reward": ([json.dumps(PREF[1]), json.dumps(PREF[0])[:-1] + ', "chosen_reward": Infinity}'],
                                 "(line 2): 'chosen_reward' is Infinity, which is not JSON"),
    "string reward": (_pref(rejected_reward="3"), "'rejected_reward' must be a finite number"),
    "rewards length": (_pref(rewards=[1.0]), "'rewards' has 1 entries but 'responses' has 2"),
    "non-finite rewards": ([json.dumps(PREF[1]), json.dumps(PREF[0]).replace('"rewards": [0.0', '"rewards": [NaN')],
                           "(line 2): 'rewards[0]' is NaN, which is not JSON"),
    "duplicate id": (_pref(id="b"), "duplicate id 'b'"),
    "malformed JSON": ([json.dumps(PREF[1]), json.dumps(PREF[0])[:-3]], "not valid JSON"),
    "identical": (_pref(rejected=PREF[0]["chosen"]), "same text"),
    "string score": (_pref(chosen_reward=None, rejected_reward=None, score_chosen="7", score_rejected=1.0),
                     "'score_chosen' must be a finite number"),
    "non-finite score": ([json.dumps(PREF[1]), _pref(chosen_reward=None, rejected_reward=None)[1][:-1]
                          + ', "score_chosen": 1, "score_rejected": NaN}'], "(line 2): 'score_rejected' is NaN, which is not JSON"),
}


@pytest.mark.parametrize("problem", list(PREF_PROBLEMS))
def test_preference_problem_names_flag_file_and_row(problem, tmp_path):
    lines, text = PREF_PROBLEMS[problem]
    f = write_lines(tmp_path / "prefs.jsonl", lines)
    expect_error(lambda: load_preferences(str(f)), "--preferences", "prefs.jsonl", "row 1 (line 2)", text)


def test_conversational_preference_needs_message_completions(tmp_path):
    user = [{"role": "user", "content": "hi"}]
    rows = [{"prompt": user, "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}]
    f = dump_rows(tmp_path / "c.jsonl", rows)
    expect_error(lambda: load_preferences(str(f)), "c.jsonl", "row 0", "'rejected' must be a non-empty list")


def test_prompt_problems(tmp_path):
    f = write_lines(tmp_path / "p.jsonl", [json.dumps({"prompt": P1}), json.dumps({"id": 3})])
    expect_error(lambda: load_prompts(str(f)), "--prompts", "p.jsonl", "row 1 (line 2)", "missing field 'prompt'")
    f = write_lines(tmp_path / "p.jsonl", [json.dumps({"id": "1", "prompt": P1}), json.dumps({"prompt": P2})])
    expect_error(lambda: load_prompts(str(f)), "p.jsonl", "row 1", "duplicate id '1'")
    f = dump_rows(tmp_path / "p.json", [{"prompt": P1}, {"prompt": 4}])
    expect_error(lambda: load_prompts(str(f)), "p.json", "row 1", "'prompt'")
    expect_error(lambda: load_prompts(str(tmp_path / "missing.csv")), "--prompts", "no such file", "missing.csv")


def test_hub_name_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    def offline(*a, **k):  # what the Hub client raises with no connection, without touching the network
        raise ConnectionError("Couldn't reach 'nobody/nothing' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    expect_error(lambda: load_preferences("nobody/nothing"), "--preferences", "Hub dataset 'nobody/nothing'",
                 "split 'train'", "Couldn't reach")
    assert data._looks_local("./x") and data._looks_local("a/b/c") and data._looks_local("file.csv")
    assert not data._looks_local("org/tulu-2.5-preference-data") and not data._looks_local("imdb")


def test_hub_flags_and_split_reach_datasets(monkeypatch, tmp_path):
    import datasets

    seen = []
    hub = {"Anthropic/hh-rlhf": [{"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}],
           "org/prompts": [{"prompt": P1}]}

    def fake_load(path, name=None, data_dir=None, split=None):  # what the Hub would return, without the network
        seen.append((path, name, data_dir, split))
        return hub[path]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    rows = load_preferences("Anthropic/hh-rlhf", data_dir="helpful-base", split="test")
    assert rows[0]["prompt"] == "\n\nHuman: a\n\nAssistant:" and rows[0]["chosen"] == " b"
    assert load_prompts("org/prompts", split="train_gen", config="en")[0]["prompt"] == P1
    assert seen == [("Anthropic/hh-rlhf", None, "helpful-base", "test"), ("org/prompts", "en", None, "train_gen")]
    f = dump_rows(tmp_path / "p.jsonl", PREF)
    expect_error(lambda: load_preferences(str(f), data_dir="helpful-base"), "--data-dir", "local file", "p.jsonl")
    expect_error(lambda: load_prompts(str(f), config="default"), "--data-config", "local file")
    assert len(seen) == 2  # a refused flag never reaches datasets


def _one_bad_pair(tmp_path, line: str) -> str:
    good = json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"})
    (tmp_path / "p.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(ConfigError) as e:
        load_preferences(str(tmp_path / "p.jsonl"))
    return str(e.value)


@pytest.mark.parametrize("extra, field", [
    ({"chosen_reward": 10**400, "rejected_reward": 0}, "chosen_reward"),     # float() overflows on it
    ({"chosen_reward": -10**400, "rejected_reward": 0}, "chosen_reward"),
    ({"score_chosen": True, "score_rejected": 1}, "score_chosen"),             # JSON true is not 1
    ({"chosen_reward": 1, "rejected_reward": False}, "rejected_reward"),
])
def test_reward_that_is_no_finite_float_names_file_line_and_field(tmp_path, extra, field):
    msg = _one_bad_pair(tmp_path, json.dumps({"prompt": "a", "chosen": "b", "rejected": "c", **extra}))
    assert "p.jsonl" in msg and "line 2" in msg and repr(field) in msg


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_tokens_are_not_json(tmp_path, token):
    # json.dumps(float("nan"), allow_nan=False) refuses these: strict JSON has no such tokens
    with pytest.raises(ValueError):
        json.dumps(float(token.replace("Infinity", "inf")), allow_nan=False)
    msg = _one_bad_pair(tmp_path, '{"prompt": "a", "chosen": "b", "rejected": "c", "chosen_reward": %s}' % token)
    assert "line 2" in msg and token.lstrip("-") in msg


def test_identical_pairs_error_counts_them(tmp_path):
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"}] + [{"prompt": "a", "chosen": "b", "rejected": "b"}] * 3
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match=r"row 1 \(line 2\).*3 such pairs"):
        load_preferences(str(tmp_path / "p.jsonl"))
