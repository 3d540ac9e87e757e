"""python -m alignment.sft: training lowers the held-out loss, the saved model is the trained one and reloads
offline, the run folder and its logs, reproducibility, file data, bad input (one line, exit 2, nothing
written), --help, and one real `python -m` subprocess.

Budgets are tiny (toy:tiny / toy:small, tens of steps); every run writes under tmp_path only.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignment.core import toy
from alignment.core.models import load_causal_lm, load_tokenizer
from alignment.sft import main

pytestmark = pytest.mark.usefixtures("torch_single_thread")

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model", "toy:tiny", "--num-train", "64", "--num-heldout", "16", "--max-steps", "4",
        "--num-samples", "4", "--max-new-tokens", "8", "--eval-every", "0"]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def no_hidden(folder):
    assert not [p for p in Path(folder).rglob(".*")], "hidden leftovers"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small real training run: toy:small, 60 steps of 16 demonstrations."""
    out = tmp_path_factory.mktemp("sft")
    path = main(["--model", "toy:small", "--num-train", "960", "--num-heldout", "64", "--max-steps", "60",
                 "--eval-every", "30", "--num-samples", "16", "--out", str(out), "--name", "small"])
    return Path(path)


def heldout_loss(model, tok, rows) -> float:
    """Mean NLL of the completion tokens (+ EOS) given the prompt, as SFTTrainer trains it."""
    total, count = 0.0, 0
    with torch.no_grad():
        for r in rows:
            ids = tok(r["prompt"] + r["completion"] + tok.eos_token)["input_ids"]
            start = len(tok(r["prompt"])["input_ids"])
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), -1)
            target = torch.tensor(ids[1:])
            nll = -logp.gather(1, target[:, None])[:, 0]
            total += float(nll[start - 1:].sum())
            count += len(ids) - start
    return total / count


# ------------------------------------------------------------------------------ training does its job

@pytest.mark.slow
def test_training_lowers_the_heldout_loss(trained):
    info = json.loads((trained / "run.json").read_text())
    s = info["summary"]
    rows = read_jsonl(trained / "metrics.jsonl")
    evals = [r for r in rows if "heldout_loss" in r]
    assert [r["step"] for r in evals] == [0, 30, 60]
    assert evals[0]["heldout_loss"] == pytest.approx(s["heldout_loss_before"])
    assert evals[-1]["heldout_loss"] == pytest.approx(s["heldout_loss_after"])
    # an untrained model is near-uniform over the 80-token vocabulary; 60 steps learn the sentence pattern
    assert s["heldout_loss_before"] == pytest.approx(math.log(len(toy.VOCAB)), abs=0.3)
    assert s["heldout_loss_after"] < s["heldout_loss_before"] - 1.5
    assert evals[1]["heldout_loss"] < evals[0]["heldout_loss"]
    train = [r for r in rows if "train_loss" in r]
    assert [r["step"] for r in train] == list(range(10, 61, 10))
    assert train[-1]["train_loss"] < train[0]["train_loss"]
    assert s["steps"] == 60
    for r in rows:
        assert r["stage"] == "sft" and r["seed"] == 0
        assert all(not isinstance(v, float) or math.isfinite(v) for v in r.values())


@pytest.mark.slow
def test_run_folder_layout_and_samples(trained):
    assert sorted(p.name for p in trained.iterdir()) == ["metrics.jsonl", "model", "run.json", "samples.jsonl"]
    no_hidden(trained.parent)
    info = json.loads((trained / "run.json").read_text())
    assert info["seeds"] == [0] and info["finished"]
    assert info["config"]["model"] == "toy:small" and info["config"]["resolved"]["num_train"] == 960
    samples = read_jsonl(trained / "samples.jsonl")
    assert len(samples) == 16 == info["summary"]["num_samples"]
    for r in samples:
        assert r["fluent"] == toy.is_fluent(r["response"])
        assert r["reward"] == toy.true_reward(r["prompt"], r["response"])
    s = info["summary"]
    assert s["fluency_rate"] == pytest.approx(sum(r["fluent"] for r in samples) / 16)
    assert s["mean_reward"] == pytest.approx(sum(r["reward"] for r in samples) / 16)


@pytest.mark.slow
def test_saved_model_reloads_offline_is_the_trained_one_and_generates(trained):
    folder = str(trained / "model")
    tok = load_tokenizer(folder)
    model = load_causal_lm(folder)
    assert tok.get_vocab() == toy.build_tokenizer().get_vocab()
    assert sum(p.numel() for p in model.parameters()) == json.loads((trained / "run.json").read_text())["summary"]["num_params"]
    rows = toy.ToyTask(0).demonstrations(64, "heldout")
    summary = json.loads((trained / "run.json").read_text())["summary"]
    # the reloaded weights give the logged held-out loss (not the random init's)
    assert heldout_loss(model, tok, rows) == pytest.approx(summary["heldout_loss_after"], abs=0.05)
    fresh = load_causal_lm("toy:small", seed=0)
    assert heldout_loss(fresh, tok, rows) > summary["heldout_loss_after"] + 1.5
    batch = tok(["write about ocean in 2 sentences :", "write about city in 1 sentence :"], return_tensors="pt",
                padding=True)
    out = model.generate(**batch, do_sample=False, max_new_tokens=6, pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert [t.split()[0] for t in texts] == ["the", "the"]  # every demonstration starts with "the"


# ------------------------------------------------------------------------------------ determinism

def test_same_command_same_numbers(tmp_path):
    a = main(TINY + ["--out", str(tmp_path / "a")])
    b = main(TINY + ["--out", str(tmp_path / "b")])
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    assert (a / "samples.jsonl").read_text() == (b / "samples.jsonl").read_text()
    c = main(TINY + ["--out", str(tmp_path / "c"), "--seed", "1"])
    assert (a / "metrics.jsonl").read_text() != (c / "metrics.jsonl").read_text()


# -------------------------------------------------------------------------------------- file data

def test_prompt_completion_file(tmp_path):
    data = tmp_path / "demos.jsonl"
    rows = toy.ToyTask(3).demonstrations(40)
    data.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["completion"], "extra": 1}) + "\n"
                            for r in rows))
    path = main(["--model", "toy:tiny", "--data", str(data), "--num-heldout", "8", "--max-steps", "3",
                 "--out", str(tmp_path / "out")])
    info = json.loads((path / "run.json").read_text())
    assert info["config"]["resolved"]["num_train"] == 32 and info["config"]["resolved"]["num_heldout"] == 8
    assert "fluency_rate" not in info["summary"]  # no true reward outside the toy data
    assert sorted(p.name for p in path.iterdir()) == ["metrics.jsonl", "model", "run.json"]
    # --model also takes a finished run folder (its model/)
    path2 = main(["--model", str(path), "--data", str(data), "--num-heldout", "8", "--max-steps", "1",
                  "--out", str(tmp_path / "out"), "--name", "again"])
    assert json.loads((path2 / "run.json").read_text())["config"]["resolved"]["model_source"] == str(path / "model")


# -------------------------------------------------------------------------------------- bad input

def _write(tmp_path, name, rows):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


BAD = [
    (["--model", "./no/such/folder"], "--model"),
    (["--model", "toy:huge"], "--model"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--batch-size", "0"], "--batch-size"),
    (["--epochs", "0"], "--epochs"),
    (["--max-steps", "0"], "--max-steps"),
    (["--num-train", "0"], "--num-train"),
    (["--num-heldout", "0"], "--num-heldout"),
    (["--max-length", "1"], "--max-length"),
    (["--seed", "-1"], "--seed"),
    (["--name", "a/b"], "--name"),
    (["--device", "tpu"], "--device"),
    (["--data", "toy:5"], "--data"),
    (["--data", "missing.jsonl"], "--data"),
    (["--lr", "abc"], "--lr"),  # argparse's own error: also one line, exit 2
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
    ([{"prompt": "write about ocean in 1 sentence :", "completion": " the kind wave sings ."},
      {"prompt": "write about city in 1 sentence :"}], "row 1: missing field 'completion'"),
    ([{"completion": " the kind wave sings ."}], "missing field 'prompt'"),
    ([{"prompt": "write :", "completion": ""}], "'completion' is empty"),
    ([{"prompt": "write :", "completion": 3}], "'completion' must be"),
    ([{"prompt": "a", "completion": " b"}, {"messages": [{"role": "user", "content": "a"}]}], "differs"),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}] * 4, "chat template"),
    ([{"prompt": "a", "completion": " b"}] * 2, "need more than --num-heldout"),
])
def test_bad_data_files(rows, needle, tmp_path, capsys):
    data = _write(tmp_path, "d.jsonl", rows)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["--model", "toy:tiny", "--data", data, "--num-heldout", "2", "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--data" in err[0] and needle in err[0], err
    assert not out.exists()


def test_output_path_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit) as e:
        main(TINY + ["--out", str(f)])
    assert e.value.code == 2 and "--out" in capsys.readouterr().err


def test_help_describes_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ["--model", "--data", "--num-train", "--num-heldout", "--epochs", "--max-steps", "--lr",
                 "--batch-size", "--max-length", "--seed", "--device", "--out", "--name", "--num-samples"]:
        assert flag in text
    assert "toy:base" in text and "runs/alignment/sft" in text


# ------------------------------------------------------------------------------------ subprocess

@pytest.mark.slow
def test_python_dash_m_subprocess(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    res = subprocess.run([sys.executable, "-m", "alignment.sft", *TINY], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / "runs/alignment/sft/toy"  # the default --out and --name, under the working folder
    assert (run / "model" / "config.json").is_file() and (run / "samples.jsonl").is_file()
    s = json.loads((run / "run.json").read_text())["summary"]
    evals = [(r["step"], r["heldout_loss"]) for r in read_jsonl(run / "metrics.jsonl") if "heldout_loss" in r]
    assert s["steps"] == 4 and evals == [(0, pytest.approx(s["heldout_loss_before"])),
                                         (4, pytest.approx(s["heldout_loss_after"]))]
    samples = read_jsonl(run / "samples.jsonl")
    assert len(samples) == 4 == s["num_samples"]
    assert s["fluency_rate"] == pytest.approx(sum(r["fluent"] for r in samples) / 4)
    bad = subprocess.run([sys.executable, "-m", "alignment.sft", "--batch-size", "0"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--batch-size" in bad.stderr
