"""python -m alignment.prepare_data: HH text dialogues and implicit-prompt conversations become checked preference
rows, identical pairs are dropped and counted, the seeded SFT split takes whole prompts, the files are what
alignment.sft, alignment.train_dpo, alignment.select and alignment.reward_model read, and bad input is one error
line with nothing written."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from alignment import prepare_data as pd
from runlog import ConfigError, parse_dataclass

REPO = Path(__file__).resolve().parents[1]


def hh(q: str, a: str, turns: str = "") -> str:
    return f"{turns}\n\nHuman: {q}\n\nAssistant: {a}"


def conv(q: str, a: str) -> list[dict]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def args(**kw) -> pd.Args:
    return pd.Args(**({"data": "unused"} | kw))


# ------------------------------------------------------------------------------------------------ rows

def test_hh_text_rows_split_at_the_last_assistant_turn():
    earlier = "\n\nHuman: hi\n\nAssistant: hello"
    rows = [{"chosen": hh("why?", "because", earlier), "rejected": hh("why?", "no idea", earlier)},
            {"chosen": hh("q", "same"), "rejected": hh("q", "same")},        # no preference: dropped
            {"chosen": "plain text", "rejected": "other text"},               # no dialogue: dropped
            {"chosen": hh("a", "x"), "rejected": hh("b", "y")},               # prompts differ: dropped
            {"chosen": hh("ok?", "yes"), "rejected": hh("ok?", "")}]          # an empty response is a response
    pairs, counts = pd.clean_pairs(rows, "test")
    assert [p["id"] for p in pairs] == ["0", "4"]  # the source row numbers
    assert pairs[0]["prompt"] == earlier + "\n\nHuman: why?\n\nAssistant:"
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == (" because", " no idea")  # as the DPO reference code
    assert (pairs[1]["chosen"], pairs[1]["rejected"]) == (" yes", " ")
    assert counts == {"rows": 5, "hh_text_rows": 5, "dropped_unsplit": 2, "dropped_identical": 1, "pairs": 2}


def test_conversations_get_their_shared_messages_as_prompt_and_keep_scalar_fields():
    rows = [{"chosen": conv("2+2?", "4"), "rejected": conv("2+2?", "5"), "source": "math", "scores": [1, 2]},
            {"chosen": conv("hi", "hello"), "rejected": conv("hi", "hello"), "source": "chat"},
            {"chosen": conv("hi", "hello"), "rejected": conv("hey", "hello")},              # no shared prompt
            {"chosen": conv("hi", "hello"), "rejected": conv("hi", "hello") + conv("and?", "bye")}]  # no response
    pairs, counts = pd.clean_pairs(rows, "test")
    assert pairs == [{"id": "0", "prompt": [{"role": "user", "content": "2+2?"}],
                      "chosen": [{"role": "assistant", "content": "4"}],
                      "rejected": [{"role": "assistant", "content": "5"}], "source": "math"}]
    assert (counts["dropped_identical"], counts["dropped_unsplit"]) == (1, 2)
    # UltraFeedback-binarized style: a text prompt column beside whole conversations
    uf = [{"prompt": "2+2?", "chosen": conv("2+2?", "4"), "rejected": conv("2+2?", "5"), "score_chosen": 9.0,
           "messages": conv("2+2?", "4")}]
    (p,), _ = pd.clean_pairs(uf, "test")
    assert p["prompt"] == [{"role": "user", "content": "2+2?"}] and p["score_chosen"] == 9.0 and "messages" not in p


def test_malformed_rows_are_one_error():
    with pytest.raises(ConfigError, match="row 1.*'prompt'"):  # text and conversational prompts mixed
        pd.clean_pairs([{"prompt": "q", "chosen": "a", "rejected": "b"},
                        {"chosen": conv("q", "a"), "rejected": conv("q", "b")}], "test")
    with pytest.raises(ConfigError, match="could be split"):
        pd.clean_pairs([{"chosen": "a", "rejected": "b"}], "test")
    with pytest.raises(ConfigError, match="same chosen and rejected"):
        pd.clean_pairs([{"prompt": "q", "chosen": "a", "rejected": "a"}], "test")
    with pytest.raises(ConfigError, match="no rows"):
        pd.clean_pairs([], "test")


# ------------------------------------------------------------------------------------------------ the SFT split

def _groups_rows(n_prompts=40, per_prompt=(1, 2, 3)):
    rows = []
    for i in range(n_prompts):
        for j in range(per_prompt[i % len(per_prompt)]):
            rows.append({"prompt": f"q{i}", "chosen": f"good {i}.{j}", "rejected": f"bad {i}.{j}"})
    return rows


def test_sft_split_takes_whole_prompts_seeded():
    rows = _groups_rows()
    prefs, sft, counts = pd.prepare(args(sft_fraction=0.3, seed=1), rows, "test")
    n = len(rows)
    assert counts["pairs"] == n and counts["preference_pairs"] + counts["sft_pairs"] == n
    assert round(0.3 * n) <= counts["sft_pairs"] < round(0.3 * n) + 3  # whole groups: overshoot < a group
    sft_prompts = {r["prompt"] for r in sft}
    assert not sft_prompts & {p["prompt"] for p in prefs}  # no prompt on both sides
    assert len(sft) == len(sft_prompts) == counts["sft_rows"]  # one SFT row per prompt
    by_prompt = {}
    for i, r in enumerate(rows):
        by_prompt[r["prompt"]] = (str(i), r["chosen"])
    assert all((r["id"], r["completion"]) == by_prompt[r["prompt"]] for r in sft)  # the prompt's last chosen
    assert [int(p["id"]) for p in prefs] == sorted(int(p["id"]) for p in prefs)  # file order kept
    again, sft_again, _ = pd.prepare(args(sft_fraction=0.3, seed=1), rows, "test")
    assert (again, sft_again) == (prefs, sft)
    _, other, _ = pd.prepare(args(sft_fraction=0.3, seed=2), rows, "test")
    assert {r["prompt"] for r in other} != sft_prompts
    none_prefs, none_sft, c0 = pd.prepare(args(), rows, "test")
    assert none_sft == [] and len(none_prefs) == n and c0["sft_pairs"] == 0


def test_sft_split_errors_and_blank_responses():
    one_prompt = [{"prompt": "q", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(4)]
    with pytest.raises(ConfigError, match="--sft-fraction.*leaves no preference pairs"):
        pd.prepare(args(sft_fraction=0.5), one_prompt, "test")
    rows = [{"prompt": f"q{i}", "chosen": " " if i < 5 else f"a{i}", "rejected": f"b{i}"} for i in range(10)]
    _, sft, counts = pd.prepare(args(sft_fraction=0.5, seed=0), rows, "test")
    assert counts["sft_blank_dropped"] + counts["sft_rows"] == counts["sft_pairs"]
    assert all(r["completion"].strip() for r in sft)


# ------------------------------------------------------------------------------------------------ the command

def test_main_writes_what_every_stage_reads(tmp_path):
    from alignment.core.data import load_preferences
    from alignment.training.data import load_file_pairs, load_sft_data, training_rows

    rows = [{"chosen": conv(f"question {i % 30}?", f"good {i}"), "rejected": conv(f"question {i % 30}?", f"bad {i}"),
             "source": "s"} for i in range(60)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "out"
    path = pd.main(["--data", str(data), "--sft-fraction", "0.3", "--out", str(out), "--name", "d"])
    assert path == out / "d" and sorted(p.name for p in path.iterdir()) == \
        ["metrics.jsonl", "preferences.jsonl", "run.json", "sft.jsonl"]
    run = json.loads((path / "run.json").read_text())
    assert run["finished"] and run["config"]["resolved"]["format"] == "conversational"
    (m,) = read_jsonl(path / "metrics.jsonl")
    assert (m["stage"], m["pairs"], m["preference_pairs"] + m["sft_pairs"]) == ("prepare_data", 60, 60)
    # train_dpo / select read the folder
    prefs = load_preferences(str(path))
    assert len(prefs) == m["preference_pairs"] and len(training_rows(prefs, "sigmoid", 1.0)) == len(prefs)
    # sft reads sft.jsonl (prompt + completion messages)
    sft_args = SimpleNamespace(data=str(path / "sft.jsonl"), num_train=1000, num_heldout=2, seed=0)
    train, held, fmt = load_sft_data(sft_args)
    assert fmt == "prompt-completion (conversational)" and len(train) + len(held) == m["sft_rows"]
    # reward_model reads the preferences file (its --data takes a file, not the run folder)
    rm_args = SimpleNamespace(data=str(path / "preferences.jsonl"), num_pairs=1000, num_heldout=2, seed=0)
    pairs, held = load_file_pairs(rm_args)
    assert len(pairs) + len(held) == len(prefs) and isinstance(pairs[0]["prompt"], list)
    with pytest.raises(ConfigError, match="--data"):
        load_file_pairs(SimpleNamespace(data=str(path), num_pairs=10, num_heldout=2, seed=0))


@pytest.mark.parametrize("flags,word", [(["--sft-fraction", "1"], "--sft-fraction"),
                                        (["--sft-fraction", "nan"], "--sft-fraction"),
                                        (["--split", ""], "--split"), (["--name", "a/b"], "--name"),
                                        (["--seed", "-1"], "--seed")])
def test_bad_flags(tmp_path, flags, word):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(ConfigError, match=word):
        pd.resolve(parse_dataclass(pd.Args, ["--data", str(data), "--out", str(tmp_path / "o"), *flags]))
    with pytest.raises(ConfigError, match="no such file"):
        pd.resolve(args(data=str(tmp_path / "missing.jsonl")))
    with pytest.raises(ConfigError, match="--data: required"):
        pd.resolve(pd.Args())


@pytest.mark.slow
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "a"}])
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "alignment.prepare_data", "--data", str(data), "--out", str(out)],
                       cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("python -m alignment.prepare_data: error: --data:") and "same chosen" in lines[0]
    assert not out.exists()
