"""Real preference sets without glue: tiny offline copies with the exact column layout (and repository layout)
of HuggingFaceH4/ultrafeedback_binarized, Anthropic/hh-rlhf and Skywork/Skywork-Reward-Preference-80K-v0.2,
read through datasets.load_dataset with a named split, a data_dir and a config name as the Hub copies are.

Layouts (the Hub dataset cards):
    ultrafeedback_binarized  prompt (str), prompt_id (str), chosen / rejected / messages (lists of {content,
        role}: the user turn then the assistant's), score_chosen / score_rejected (float64); splits train_prefs,
        train_sft, test_prefs, test_sft, train_gen, test_gen as data/{split}-00000-of-00001.parquet
    hh-rlhf  chosen / rejected: whole "\\n\\nHuman: ...\\n\\nAssistant: ..." transcripts, no prompt; one folder per
        tranche (helpful-base, harmless-base, ...) holding train.jsonl.gz and test.jsonl.gz
    Skywork-Reward-Preference-80K-v0.2  chosen / rejected (lists of {content, role}, whole conversations),
        source (str); config default, split train as data/train-00000-of-00001.parquet
Expected rows are written out by hand from each layout's rule (the assistant turn is the response; HH's prompt
runs through the last "\\n\\nAssistant:"), never taken from the loader.
"""
import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from alignment.core.data import load_preferences
from runlog import ConfigError

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets.config

    # datasets' arrow cache of these folders goes to the test's folder, not the user's (read at each load)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def msg(role, content):
    return {"content": content, "role": role}  # the Hub parquet's struct order: content, role


def write_parquet(path: Path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_jsonl_gz(path: Path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def expect_error(fn, *parts):
    with pytest.raises(ConfigError) as e:
        fn()
    text = str(e.value)
    assert "\n" not in text
    for part in parts:
        assert part in text, f"{part!r} not in {text!r}"
    return text


# ------------------------------------------------------------------------------------------------ UltraFeedback

def uf_row(prompt, good, bad, s_good, s_bad):
    return {"prompt": prompt, "prompt_id": f"{abs(hash(prompt)):x}",
            "chosen": [msg("user", prompt), msg("assistant", good)],
            "rejected": [msg("user", prompt), msg("assistant", bad)],
            "messages": [msg("user", prompt), msg("assistant", good)], "score_chosen": s_good, "score_rejected": s_bad}


UF_TRAIN = [uf_row("write about ocean in 2 sentences", "the calm wave rests . the blue sea shines .",
                   "the ugly star moves .", 8.5, 3.0),
            uf_row("write about city in 1 sentence", "the tall street waits .", "the dull rose grows .", 7.0, 7.25)]
UF_TEST = [uf_row("write about food in 1 sentence", "the good bread shines .", "the old moon shines .", 9.0, 1.0)]
UF_README = """---
configs:
- config_name: default
  data_files:
  - split: train_prefs
    path: data/train_prefs-*
  - split: train_sft
    path: data/train_sft-*
  - split: test_prefs
    path: data/test_prefs-*
---
"""


def ultrafeedback_folder(root: Path) -> Path:
    """A copy of the Hub repository's layout: README configs and data/{split}-00000-of-00001.parquet."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text(UF_README)
    for split, rows in (("train_prefs", UF_TRAIN), ("train_sft", UF_TRAIN), ("test_prefs", UF_TEST)):
        write_parquet(root / "data" / f"{split}-00000-of-00001.parquet", rows)
    return root


def test_ultrafeedback_split_messages_and_scores_as_rewards(tmp_path):
    folder = ultrafeedback_folder(tmp_path / "ultrafeedback_binarized")
    rows = load_preferences(str(folder), split="train_prefs")
    assert [r["prompt"] for r in rows] == [[msg("user", "write about ocean in 2 sentences")],
                                           [msg("user", "write about city in 1 sentence")]]
    assert rows[0]["chosen"] == [msg("assistant", "the calm wave rests . the blue sea shines .")]
    assert rows[0]["rejected"] == [msg("assistant", "the ugly star moves .")]
    assert rows[1]["chosen"] == [msg("assistant", "the tall street waits .")]
    # the scores are the rewards rev_kl reads, even where they disagree with the label (row 1: 7.0 < 7.25)
    assert [(r["chosen_reward"], r["rejected_reward"]) for r in rows] == [(8.5, 3.0), (7.0, 7.25)]
    assert [r["id"] for r in rows] == ["0", "1"]
    test = load_preferences(str(folder), split="test_prefs")
    assert test[0]["chosen"] == [msg("assistant", "the good bread shines .")] and test[0]["chosen_reward"] == 9.0
    # the same rows from one of its files read as a local parquet file
    one_file = load_preferences(str(folder / "data" / "train_prefs-00000-of-00001.parquet"))
    assert [(r["prompt"], r["chosen"], r["rejected"], r["chosen_reward"]) for r in one_file] == \
        [(r["prompt"], r["chosen"], r["rejected"], r["chosen_reward"]) for r in rows]


def test_missing_split_lists_the_splits_the_dataset_has(tmp_path):
    folder = ultrafeedback_folder(tmp_path / "uf")
    text = expect_error(lambda: load_preferences(str(folder)), "--split", "'train'")
    assert all(s in text for s in ("train_prefs", "train_sft", "test_prefs"))
    expect_error(lambda: load_preferences(str(folder), split="test"), "--split", "'test'", "test_prefs")
    assert len(load_preferences(str(folder), split="train_prefs[:1]")) == 1  # datasets' slicing of a split


@pytest.mark.slow  # ~3-6 s: one DPO step of a tiny model
def test_train_dpo_trains_rev_kl_on_the_ultrafeedback_layout(tmp_path):
    """Scores in, soft targets out: one rev_kl step on the train_prefs split of the UltraFeedback folder."""
    from alignment.core import toy
    from alignment.train_dpo import main

    policy = tmp_path / "policy"
    tok = toy.build_tokenizer()
    tok.chat_template = ("{% for m in messages %}{{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}:{% endif %}")
    toy.build_model(tok, "tiny", seed=0).save_pretrained(policy)
    tok.save_pretrained(policy)
    folder = ultrafeedback_folder(tmp_path / "uf")
    path = main(["--preferences", str(folder), "--split", "train_prefs", "--policy", str(policy), "--loss", "rev_kl",
                 "--margin-scale", "2", "--max-steps", "1", "--batch-size", "2", "--device", "cpu",
                 "--out", str(tmp_path / "out")])
    run = json.loads((path / "run.json").read_text())
    assert run["config"]["split"] == "train_prefs" and run["config"]["resolved"]["num_pairs"] == 2
    (row,) = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if '"step": 1' in line]
    import math

    q = [1 / (1 + math.exp(-2 * (c - r))) for c, r in ((8.5, 3.0), (7.0, 7.25))]  # sigmoid(k (score gap))
    assert row["train_soft_target"] == pytest.approx(sum(q) / 2, rel=1e-5)


# ------------------------------------------------------------------------------------------------ Anthropic HH

HH_ONE_TURN = {"chosen": "\n\nHuman: what is the calm wave ?\n\nAssistant: the calm wave rests .",
               "rejected": "\n\nHuman: what is the calm wave ?\n\nAssistant: the ugly star moves ."}
HH_TWO_TURNS = {  # the responses share their first words, and the chosen one quotes a turn marker
    "chosen": "\n\nHuman: hi\n\nAssistant: hello .\n\nHuman: a city ?\n\nAssistant: the tall street waits . "
              "you said:\n\nAssistant: no",
    "rejected": "\n\nHuman: hi\n\nAssistant: hello .\n\nHuman: a city ?\n\nAssistant: the dull rose grows ."}
HH_HARMLESS = {"chosen": "\n\nHuman: harm ?\n\nAssistant: no .", "rejected": "\n\nHuman: harm ?\n\nAssistant: yes ."}


def hh_folder(root: Path) -> Path:
    """The Hub repository's layout: one folder per tranche with train.jsonl.gz and test.jsonl.gz."""
    write_jsonl_gz(root / "helpful-base" / "train.jsonl.gz", [HH_ONE_TURN, HH_TWO_TURNS])
    write_jsonl_gz(root / "helpful-base" / "test.jsonl.gz", [HH_ONE_TURN])
    write_jsonl_gz(root / "harmless-base" / "train.jsonl.gz", [HH_HARMLESS])
    write_jsonl_gz(root / "harmless-base" / "test.jsonl.gz", [HH_HARMLESS])
    return root


def test_hh_helpful_base_splits_prompt_at_the_last_assistant_turn(tmp_path):
    folder = hh_folder(tmp_path / "hh-rlhf")
    rows = load_preferences(str(folder), data_dir="helpful-base", split="train")
    assert len(rows) == 2  # helpful-base only, not harmless-base
    assert rows[0]["prompt"] == "\n\nHuman: what is the calm wave ?\n\nAssistant:"
    assert (rows[0]["chosen"], rows[0]["rejected"]) == (" the calm wave rests .", " the ugly star moves .")
    assert rows[1]["prompt"] == "\n\nHuman: hi\n\nAssistant: hello .\n\nHuman: a city ?\n\nAssistant:"
    assert rows[1]["chosen"] == " the tall street waits . you said:\n\nAssistant: no"
    assert rows[1]["rejected"] == " the dull rose grows ."
    for row, raw in zip(rows, (HH_ONE_TURN, HH_TWO_TURNS)):  # prompt + response is the transcript as written
        assert row["prompt"] + row["chosen"] == raw["chosen"] and row["prompt"] + row["rejected"] == raw["rejected"]
        assert "chosen_reward" not in row
    assert load_preferences(str(folder), data_dir="harmless-base", split="test")[0]["chosen"] == " no ."
    expect_error(lambda: load_preferences(str(folder), data_dir="helpful-base", split="validation"),
                 "--split", "'validation'", "train, test")


def test_hh_row_without_a_shared_assistant_turn_is_one_error(tmp_path):
    f = tmp_path / "hh.jsonl"
    f.write_text(json.dumps(HH_ONE_TURN) + "\n" + json.dumps(
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"}) + "\n")
    expect_error(lambda: load_preferences(str(f)), "--preferences", "row 1 (line 2)", "missing field 'prompt'",
                 "Assistant")


# ------------------------------------------------------------------------------------------------ Skywork

SKYWORK = [
    {"chosen": [msg("user", "a city ?"), msg("assistant", "the tall street waits .")],
     "rejected": [msg("user", "a city ?"), msg("assistant", "the dull rose grows .")], "source": "helpsteer2"},
    {"chosen": [msg("user", "hi"), msg("assistant", "hello ."), msg("user", "food ?"),
                msg("assistant", "the good bread shines .")],
     "rejected": [msg("user", "hi"), msg("assistant", "hello ."), msg("user", "food ?"),
                  msg("assistant", "the old moon shines .")], "source": "magpie_ultra"},
]
SKYWORK_README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---
"""


def test_skywork_config_and_conversations_with_an_implicit_prompt(tmp_path):
    root = tmp_path / "Skywork-Reward-Preference-80K-v0.2"
    root.mkdir()
    (root / "README.md").write_text(SKYWORK_README)
    write_parquet(root / "data" / "train-00000-of-00001.parquet", SKYWORK)
    rows = load_preferences(str(root), config="default")
    assert rows[0]["prompt"] == [msg("user", "a city ?")]
    assert rows[1]["prompt"] == [msg("user", "hi"), msg("assistant", "hello ."), msg("user", "food ?")]
    assert rows[1]["chosen"] == [msg("assistant", "the good bread shines .")]
    assert rows[1]["rejected"] == [msg("assistant", "the old moon shines .")]
    assert [r["source"] for r in rows] == ["helpsteer2", "magpie_ultra"]
    expect_error(lambda: load_preferences(str(root), config="nope"), "--preferences", "config 'nope'", "default")


# ------------------------------------------------------------------------------------------------ flags

def test_reward_model_reads_the_split_and_scores_whole_conversations(tmp_path):
    from alignment.training.data import load_file_pairs

    folder = ultrafeedback_folder(tmp_path / "uf")
    args = SimpleNamespace(data=str(folder), split="train_prefs", data_config=None, data_dir=None, num_pairs=1,
                           num_heldout=1, seed=0)
    train, heldout = load_file_pairs(args)
    # the text prompt column is a copy of the user turn: the conversations are scored whole
    assert sorted(str(p["chosen"]) for p in train + heldout) == sorted(str(r["chosen"]) for r in UF_TRAIN)
    assert all(p["prompt"] is None for p in train + heldout)
    hh = SimpleNamespace(**vars(args) | {"data": str(hh_folder(tmp_path / "hh")), "split": "train",
                                          "data_dir": "helpful-base"})
    train, heldout = load_file_pairs(hh)
    assert sorted(p["chosen"] for p in train + heldout) == sorted([HH_ONE_TURN["chosen"], HH_TWO_TURNS["chosen"]])


@pytest.mark.parametrize("entry, flag, extra", [
    ("train_dpo", "--data-dir", ["--policy", "toy:tiny", "--device", "cpu"]),
    ("train_dpo", "--data-config", ["--policy", "toy:tiny", "--device", "cpu"]),
    ("select", "--data-dir", ["--method", "us", "--policy", "toy:tiny", "--device", "cpu"]),
    ("reward_model", "--data-config", ["--model", "toy:tiny"]),
])
def test_hub_flags_on_a_local_file_exit_2_naming_the_flag(tmp_path, capsys, entry, flag, extra):
    import importlib

    f = tmp_path / "prefs.jsonl"
    f.write_text(json.dumps({"prompt": "p :", "chosen": " a", "rejected": " b"}) + "\n")
    data_flag = "--preferences" if entry == "train_dpo" else "--data"
    main = importlib.import_module(f"alignment.{entry}").main
    with pytest.raises(SystemExit) as e:
        main([data_flag, str(f), flag, "helpful-base", "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and flag in err and "local file" in err, err
    assert not (tmp_path / "out").exists()


def test_hub_flags_on_a_run_folder_or_toy_are_refused(tmp_path):
    run = tmp_path / "annotate"
    run.mkdir()
    (run / "preferences.jsonl").write_text(json.dumps({"prompt": "p :", "chosen": " a", "rejected": " b"}) + "\n")
    (run / "run.json").write_text("{}")
    expect_error(lambda: load_preferences(str(run), data_dir="helpful-base"), "--data-dir", "run folder")
    assert load_preferences(str(run))[0]["chosen"] == " a"
    empty_run = tmp_path / "failed"  # a run folder without its file is not read as a dataset folder
    empty_run.mkdir()
    (empty_run / "run.json").write_text("{}")
    expect_error(lambda: load_preferences(str(empty_run)), "--preferences", "has no preferences.jsonl")
    from alignment.core.data import load_prompts

    expect_error(lambda: load_prompts("toy:4", config="x"), "--data-config", "toy")


def test_pipeline_recipes_refuse_the_data_flags_of_the_stages_it_feeds():
    """The pipeline feeds train and select its own run folders: a recipe's split / data_dir there is refused."""
    from alignment import select, train_dpo
    from alignment.pipeline.driver import OWNED
    from alignment.pipeline.recipes import check_section

    for stage, cls in (("train", train_dpo.Args), ("select", select.Args)):
        for key in ("split", "data_config", "data_dir"):
            expect_error(lambda: check_section(cls, {key: "x"}, "recipe", skip=OWNED[stage]), f"'{key}'", "caller")
    assert check_section(train_dpo.Args, {"data_dir": "helpful-base"}, "recipe") == {"data_dir": "helpful-base"}


def test_select_reads_hh_helpful_base_through_data_dir(tmp_path):
    from alignment.select import main

    folder = hh_folder(tmp_path / "hh-rlhf")
    path = main(["--method", "us", "--policy", "toy:tiny", "--data", str(folder), "--data-dir", "helpful-base",
                 "--split", "train", "--ratio", "1", "--passes", "2", "--device", "cpu", "--out", str(tmp_path / "out")])
    kept = [json.loads(line) for line in (path / "preferences.jsonl").read_text().splitlines()]
    assert [r["prompt"] + r["chosen"] for r in kept] == [HH_ONE_TURN["chosen"], HH_TWO_TURNS["chosen"]]
    assert json.loads((path / "run.json").read_text())["config"]["data_dir"] == "helpful-base"


def test_generate_and_evaluate_read_prompts_through_data_dir(tmp_path, capsys):
    """A prompt dataset in a sub-folder (HH-style data_dir) reaches generate's and evaluate's --prompts; the same
    flag on toy prompts is one error naming --data-dir."""
    from alignment.evaluate import load_eval_prompts
    from alignment.generate import main as generate

    folder = tmp_path / "prompts"
    (folder / "helpful-base").mkdir(parents=True)
    rows = [{"id": f"p{i}", "prompt": f"write about sea in {i + 1} sentences :"} for i in range(3)]
    (folder / "helpful-base" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = load_eval_prompts(str(folder), "test", "auto", None, "helpful-base")
    assert [r["prompt"] for r in got] == [r["prompt"] for r in rows]
    path = generate(["--policy", "toy:tiny", "--prompts", str(folder), "--data-dir", "helpful-base", "--split", "test",
                     "--num-responses", "2", "--max-new-tokens", "3", "--device", "cpu", "--out", str(tmp_path / "gen")])
    gens = [json.loads(l) for l in (path / "generations.jsonl").read_text().splitlines()]
    assert [g["id"] for g in gens] == ["p0", "p1", "p2"]
    with pytest.raises(SystemExit) as e:
        generate(["--policy", "toy:tiny", "--prompts", "toy:4", "--data-dir", "x", "--out", str(tmp_path / "bad")])
    assert e.value.code == 2 and "--data-dir" in capsys.readouterr().err and not (tmp_path / "bad").exists()
