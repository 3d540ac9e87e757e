"""train_dpo --save-every / --resume: a run killed mid-way (a hard kill: no cleanup runs) continues from its newest
checkpoint and ends with the weights of an uninterrupted run and a log holding every step exactly once; the pipeline
resumes a killed train stage the same way; the refusals (resume without a checkpoint, with other flags, a fresh
start over pending checkpoints) are one ConfigError each."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignment.train_dpo import main
from tests.conftest import interrupted_exit

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
PAIRS = [
    {"prompt": f"write about {topic} in {n} sentences :", "chosen": " the calm ice rests .",
     "rejected": " the ugly star moves . the old moon shines .", "chosen_reward": 1.5, "rejected_reward": -0.5}
    for topic in ("winter", "food", "sea") for n in (1, 2)] + [
    {"prompt": "write about food in 3 sentences :", "chosen": " the good bread shines . the warm soup rests .",
     "rejected": " .", "chosen_reward": 0.25, "rejected_reward": 0.0}]

# a hard kill after optimizer step KILL_AT: os._exit skips every handler, as SIGKILL would
KILLER = """
import os, sys
from alignment.training.trainer import SamplerDPOTrainer
step = SamplerDPOTrainer.training_step
def training_step(self, *a, **k):
    if self.state.global_step >= int(os.environ["KILL_AT"]):
        os._exit(137)
    return step(self, *a, **k)
SamplerDPOTrainer.training_step = training_step
from alignment.train_dpo import main
main(sys.argv[1:])
"""


@contextlib.contextmanager
def _interrupted_after(step: int):
    """Training raises KeyboardInterrupt (an in-process kill: every cleanup runs) once `step` optimizer steps are done."""
    from alignment.training.trainer import SamplerDPOTrainer

    train_step = SamplerDPOTrainer.training_step

    def dies(self, *a, **k):
        if self.state.global_step >= step:
            raise KeyboardInterrupt
        return train_step(self, *a, **k)

    SamplerDPOTrainer.training_step = dies
    try:
        yield
    finally:
        SamplerDPOTrainer.training_step = train_step


def _prefs(tmp_path) -> Path:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    return path


def _argv(tmp_path, out, *extra):
    return ["--preferences", str(_prefs(tmp_path)), "--policy", "toy:tiny", "--max-steps", "6", "--batch-size", "2",
            "--lr", "0.01", "--device", "cpu", "--loss", "rev_kl", "--out", str(out), "--name", "dpo", *extra]


def _weights(run):
    from alignment.core.models import load_causal_lm

    return load_causal_lm(str(run / "model")).state_dict()


def _steps(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_weights_and_log(tmp_path):
    full = main(_argv(tmp_path, tmp_path / "full"))
    out = tmp_path / "killed"
    argv = _argv(tmp_path, out, "--save-every", "2")
    r = subprocess.run([sys.executable, "-c", KILLER, *argv], cwd=REPO, env=dict(ENV, KILL_AT="5"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 137, r.stderr[-2000:]
    scratch = out / ".dpo.trainer"
    assert sorted(p.name for p in scratch.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]  # newest 2
    assert not (out / "dpo").exists()
    with pytest.raises(SystemExit) as e:  # a fresh start would throw the checkpoints away: refused, not guessed
        main(argv)
    assert e.value.code == 2 and scratch.is_dir()
    resumed = main(argv + ["--resume"])
    a, b = _weights(full), _weights(resumed)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
    assert _steps(resumed) == _steps(full) == [1, 2, 3, 4, 5, 6]  # every step once: 1-4 from the checkpoint
    full_rows = (full / "metrics.jsonl").read_text().splitlines()
    res_rows = (resumed / "metrics.jsonl").read_text().splitlines()
    for x, y in zip(full_rows, res_rows):
        x, y = json.loads(x), json.loads(y)
        assert y["train_loss"] == pytest.approx(x["train_loss"], abs=1e-6)
    run = json.loads((resumed / "run.json").read_text())
    assert run["summary"]["resumed_from_step"] == 4 and run["summary"]["steps"] == 6
    assert not scratch.exists()  # the checkpoints go once the run is complete


def test_resume_refusals(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:  # nothing to resume
        main(_argv(tmp_path, out, "--save-every", "2", "--resume"))
    assert e.value.code == 2 and "--resume: no complete checkpoint" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(SystemExit) as e:
        main(_argv(tmp_path, out, "--save-every", "-1"))
    assert e.value.code == 2 and "--save-every" in capsys.readouterr().err


def test_checkpoint_of_other_flags_is_not_resumed(tmp_path, capsys):
    """Interrupt after step 2 (an exception: the in-process kill), then --resume with another --lr: refused."""
    out = tmp_path / "out"
    argv = _argv(tmp_path, out, "--save-every", "2")
    with _interrupted_after(2), interrupted_exit():
        main(argv)
    assert "rerun with --resume" in capsys.readouterr().err
    assert (out / ".dpo.trainer" / "checkpoint-2" / "metrics.jsonl").is_file()
    assert [p.name for p in out.iterdir()] == [".dpo.trainer"]  # no half-written run folder
    with pytest.raises(SystemExit) as e:
        main(_argv(tmp_path, out, "--save-every", "2", "--lr", "0.02", "--resume"))
    assert e.value.code == 2 and "differs in: lr" in capsys.readouterr().err


def test_interrupted_run_without_checkpoints_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with _interrupted_after(0), interrupted_exit():
        main(_argv(tmp_path, out))
    assert list(out.iterdir()) == []


def test_pipeline_resumes_a_killed_train_stage_from_its_checkpoint(tmp_path):
    """A pipeline whose train stage dies after step 2 (save_every 1): the rerun continues that stage from
    checkpoint-2, and its log has every step once."""
    from alignment.pipeline.driver import main as pipeline
    from tests.conftest import tiny_pipeline_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(tiny_pipeline_recipe(1).replace("train: {", "train: {save_every: 1, "))
    argv = ["--config", str(recipe), "--sampler", "on_policy", "--iterations", "1", "--out", str(tmp_path / "run")]
    with _interrupted_after(2), interrupted_exit():
        pipeline(argv)
    d = tmp_path / "run" / "iter_1"
    assert (d / ".train.trainer" / "checkpoint-2").is_dir() and not (d / "train").exists()
    pipeline(argv)
    summary = json.loads((d / "train" / "run.json").read_text())["summary"]
    assert summary["resumed_from_step"] == 2
    assert _steps(d / "train") == list(range(1, summary["steps"] + 1)) and summary["steps"] > 2
