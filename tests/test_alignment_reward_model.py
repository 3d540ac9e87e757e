"""python -m alignment.reward_model: the toy pairs and their Bradley-Terry labels, the trained model's held-out
accuracy (> 0.8), load_reward on the saved run scoring like the trainer and ordering hand-made pairs like the
true reward, file data, bad input (one line, exit 2, nothing written), and one `python -m` subprocess.

The accuracy run is smaller than the default (6400 pairs, one epoch, ~200 steps of toy:small, about 15 s on
one core) and still clears 0.8; the default settings (16000 pairs, two epochs) reach about 0.88.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignment.core import toy
from alignment.reward_model import main
from alignment.training.data import toy_pairs, toy_response
from alignment.core.rewards import load_reward

pytestmark = pytest.mark.usefixtures("torch_single_thread")

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "toy:tiny", "--num-pairs", "64", "--num-heldout", "16", "--max-steps", "3", "--eval-every", "0"]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("rm")
    path = main(["--num-pairs", "6400", "--epochs", "1", "--num-heldout", "256", "--eval-every", "100",
                 "--out", str(out)])
    return Path(path)


# ------------------------------------------------------------------------------------- toy pairs

def test_toy_responses_cover_the_reward_range():
    task, rng = toy.ToyTask(0), __import__("random").Random(0)
    prompts = [r["prompt"] for r in task.prompts(2000)]
    responses = [toy_response(task, p, rng) for p in prompts]
    rewards = [toy.true_reward(p, r) for p, r in zip(prompts, responses)]
    fluent = sum(map(toy.is_fluent, responses)) / len(responses)
    assert 0.6 < fluent < 0.9  # a quarter get a (usually) fluency-breaking edit
    assert min(rewards) < -8 and max(rewards) >= 6
    # optimal responses (reward = 2 per requested sentence) appear
    assert any(r == toy.optimal_reward(p) for p, r in zip(prompts, rewards))


def test_bt_labels_follow_the_bradley_terry_model():
    rows = toy_pairs(0, 4000, "train", "bt")
    assert toy_pairs(0, 4000, "train", "bt") == rows  # seeded
    assert toy_pairs(1, 100, "train", "bt") != rows[:100]
    gaps = [r["chosen_reward"] - r["rejected_reward"] for r in rows]
    for r in rows[:50]:
        assert r["chosen_reward"] == toy.true_reward(r["prompt"], r["chosen"])
        assert r["rejected_reward"] == toy.true_reward(r["prompt"], r["rejected"])
    # P(label follows the true order) = sigmoid(|gap|): compare the count with its expectation (sd ~ 17)
    expected = sum(1 / (1 + math.exp(-abs(g))) for g in gaps if g != 0)
    observed = sum(g > 0 for g in gaps)
    assert abs(observed - expected) < 60
    assert sum(g < 0 for g in gaps) > 100  # some labels go against the true reward
    # ties are kept and labelled by a fair coin
    assert sum(g == 0 for g in gaps) > 50


def test_hard_labels_and_heldout_pairs_follow_the_true_reward():
    for rows in (toy_pairs(0, 1000, "train", "hard"), toy_pairs(0, 1000, "heldout", "bt")):
        assert len(rows) == 1000
        assert all(r["chosen_reward"] > r["rejected_reward"] for r in rows)
    train = {(r["prompt"], r["chosen"], r["rejected"]) for r in toy_pairs(0, 1000, "train", "hard")}
    heldout = {(r["prompt"], r["chosen"], r["rejected"]) for r in toy_pairs(0, 1000, "heldout", "bt")}
    assert len(train & heldout) < 10  # different streams (a few short pairs may coincide)


# ------------------------------------------------------------------------------- the trained model

@pytest.mark.slow
def test_heldout_accuracy_beats_0_8(trained):
    info = json.loads((trained / "run.json").read_text())
    s = info["summary"]
    assert s["heldout_accuracy_after"] > 0.8
    assert s["heldout_accuracy_before"] < 0.65  # an untrained model orders pairs at about chance
    rows = read_jsonl(trained / "metrics.jsonl")
    acc = [r for r in rows if "heldout_accuracy" in r]
    assert [r["step"] for r in acc] == [0, 100, 200]
    assert acc[0]["heldout_accuracy"] == s["heldout_accuracy_before"]
    assert acc[-1]["heldout_accuracy"] == s["heldout_accuracy_after"]
    train = [r for r in rows if "train_loss" in r]
    assert train and train[-1]["train_loss"] < train[0]["train_loss"]
    assert all(r["stage"] == "reward_model" and r["seed"] == 0 for r in rows)
    assert sorted(p.name for p in trained.iterdir()) == ["metrics.jsonl", "model", "run.json"]
    assert not [p for p in trained.parent.rglob(".*")]
    resolved = info["config"]["resolved"]
    assert resolved["num_train"] == 6400 and resolved["num_heldout"] == 256
    assert 0.75 < resolved["train_label_agreement"] < 0.97  # Bradley-Terry labels are noisy


@pytest.mark.slow
def test_load_reward_scores_like_the_trainer(trained):
    """load_reward on the run folder reproduces the logged held-out accuracy: same texts, same tokens."""
    reward = load_reward(str(trained))
    rows = toy_pairs(0, 256, "heldout", "bt")
    chosen = reward.score([r["prompt"] for r in rows], [r["chosen"] for r in rows])
    rejected = reward.score([r["prompt"] for r in rows], [r["rejected"] for r in rows])
    acc = sum(c > r for c, r in zip(chosen, rejected)) / len(rows)
    assert acc == pytest.approx(json.loads((trained / "run.json").read_text())["summary"]["heldout_accuracy_after"])


@pytest.mark.slow
def test_load_reward_orders_hand_made_pairs_like_the_true_reward(trained):
    reward = load_reward(str(trained))
    p2 = "write about ocean in 2 sentences :"
    p3 = "write about forest in 3 sentences :"
    pairs = [  # (prompt, better, worse): true-reward gaps of 6 or more
        (p2, "the bright wave shines . the calm coral rests .", "the cruel oven waits ."),
        (p2, "the kind tide sings . the warm shell waits .", "the dull street moves . the ugly tower rests ."),
        (p2, "the gentle coral moves . the lovely wave rests .", "the the . . cruel"),
        (p3, "the kind oak sings . the warm moss rests . the bright fern grows .", "the harsh snow waits ."),
        (p3, "the calm owl rests . the gentle fern sings . the warm oak moves .",
         "the cruel bread waits . the bitter soup rests . the cold oven sings ."),
    ]
    for p, good, bad in pairs:
        assert toy.true_reward(p, good) >= toy.true_reward(p, bad) + 6
    good = reward.score([p for p, _, _ in pairs], [g for _, g, _ in pairs])
    bad = reward.score([p for p, _, _ in pairs], [b for _, _, b in pairs])
    assert all(g > b for g, b in zip(good, bad)), list(zip(good, bad))


# ------------------------------------------------------------------------------- smaller checks

def test_hard_labels_run_and_reproducibility(tmp_path):
    a = main(TINY + ["--label", "hard", "--out", str(tmp_path / "a")])
    b = main(TINY + ["--label", "hard", "--out", str(tmp_path / "b")])
    info = json.loads((a / "run.json").read_text())
    assert info["config"]["label"] == "hard"
    assert info["config"]["resolved"]["train_label_agreement"] == 1.0
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    c = main(TINY + ["--out", str(tmp_path / "c")])  # bt labels: other training pairs, other numbers
    assert (a / "metrics.jsonl").read_text() != (c / "metrics.jsonl").read_text()


def test_preference_file_and_sft_backbone(tmp_path):
    data = tmp_path / "prefs.jsonl"
    rows = toy_pairs(5, 40, "heldout", "bt")
    data.write_text("".join(json.dumps({"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]})
                            + "\n" for r in rows))
    path = main(["--model", "toy:tiny", "--data", str(data), "--num-heldout", "10", "--max-steps", "3",
                 "--out", str(tmp_path / "out")])
    info = json.loads((path / "run.json").read_text())
    assert info["config"]["resolved"]["num_train"] == 30 and info["config"]["resolved"]["num_heldout"] == 10
    assert len(load_reward(str(path)).score([rows[0]["prompt"]], [rows[0]["chosen"]])) == 1
    # a causal LM folder (what alignment.sft saves) as the backbone: a fresh score head on its weights
    sft = tmp_path / "sft" / "model"
    tok = toy.build_tokenizer()
    toy.build_model(tok, "tiny", seed=3).save_pretrained(sft)
    tok.save_pretrained(sft)
    path = main(["--model", str(sft.parent), "--data", str(data), "--num-heldout", "10", "--max-steps", "1",
                 "--out", str(tmp_path / "out"), "--name", "from-sft"])
    from transformers import AutoModelForSequenceClassification

    rm = AutoModelForSequenceClassification.from_pretrained(path / "model")
    assert type(rm).__name__ == "LlamaForSequenceClassification" and rm.config.num_labels == 1


BAD = [
    (["--model", "./no/such/folder"], "--model"),
    (["--model", "toy:huge"], "--model"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-1e-3"], "--lr"),
    (["--batch-size", "0"], "--batch-size"),
    (["--num-pairs", "0"], "--num-pairs"),
    (["--num-heldout", "0"], "--num-heldout"),
    (["--epochs", "-1"], "--epochs"),
    (["--label", "soft"], "--label"),
    (["--name", ".hidden"], "--name"),
    (["--device", "cuda:1"], "--device"),
    (["--data", "toy:3"], "--data"),
    (["--data", "missing.parquet"], "--data"),
    (["--max-length", "5", "--num-pairs", "10", "--num-heldout", "4"], "--max-length"),
]


@pytest.mark.parametrize("argv,flag", BAD)
def test_bad_input_one_line_exit_2_nothing_written(argv, flag, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(argv + ["--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("rows,needle", [
    ([{"prompt": "a", "chosen": " b", "rejected": " c"}, {"prompt": "a", "chosen": " b"}] * 3,
     "row 1: missing field 'rejected'"),
    ([{"prompt": "a", "rejected": " c"}] * 3, "missing field 'chosen'"),
    ([{"prompt": "a", "chosen": "", "rejected": " c"}] * 3, "'chosen' is empty"),
    ([{"prompt": [{"role": "user", "content": "a"}], "chosen": " b", "rejected": " c"}] * 3, "chat template"),
])
def test_bad_preference_files(rows, needle, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["--model", "toy:tiny", "--data", str(data), "--num-heldout", "1", "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data" in err[0] and needle in err[0], err
    assert not out.exists()


def test_help_describes_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ["--model", "--data", "--num-pairs", "--num-heldout", "--label", "--epochs", "--max-steps", "--lr",
                 "--batch-size", "--max-length", "--seed", "--device", "--out", "--name"]:
        assert flag in text
    assert "runs/alignment/reward_model" in text


@pytest.mark.slow
def test_python_dash_m_subprocess(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    res = subprocess.run([sys.executable, "-m", "alignment.reward_model", *TINY], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / "runs/alignment/reward_model/toy"  # the default --out and --name, under the working folder
    assert (run / "model/config.json").is_file()
    s = json.loads((run / "run.json").read_text())["summary"]
    acc = [(r["step"], r["heldout_accuracy"]) for r in read_jsonl(run / "metrics.jsonl") if "heldout_accuracy" in r]
    assert s["steps"] == 3 and acc == [(0, s["heldout_accuracy_before"]), (3, s["heldout_accuracy_after"])]
    assert 0 <= s["heldout_accuracy_after"] <= 1
