"""The shared command-line layer (runlog): a bad output place is one error line before any work, and SIGTERM (what
`timeout`, schedulers and `kill` send) unwinds the work as Ctrl-C does, leaving no hidden temporary run folder."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runlog import ConfigError, RunDir, check_name, check_out

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")


def test_output_places_that_cannot_be_written_are_refused(tmp_path):
    (tmp_path / "file").write_text("thesis")
    for out, words in ((tmp_path / "file", "is not a folder"), (tmp_path / "file" / "run", "is a file"),
                       ("/proc/nope/run", "not writable")):
        with pytest.raises(ConfigError, match=words):
            check_out(out)
    check_out(tmp_path / "new" / "deeper")  # creatable: fine, and nothing created by the check
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    assert (tmp_path / "file").read_text() == "thesis"


def test_run_names_too_long_for_the_file_system_are_refused(tmp_path):
    check_name("a" * 241)
    with RunDir(tmp_path, "a" * 241, {}, [0]) as run:  # the longest allowed name fits with its temporary folder
        run.finish()
    with pytest.raises(ConfigError, match="at most 241"):
        check_name("a" * 242)
    with pytest.raises(ConfigError, match="at most 241"):
        check_name("é" * 121)  # bytes, not characters


def test_a_run_name_taken_by_a_file_is_refused_before_the_work(tmp_path, capsys):
    from bandit.examples.tabular import main

    (tmp_path / "both-fixed").write_text("not a run")
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path), "--seeds", "1"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "is not a run folder" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["both-fixed"]


def _terminate_when(proc, ready, timeout=120):
    t0 = time.time()
    while not ready():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() - t0 < timeout, "the run never started writing"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=120)


def _hidden(out: Path):
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".")) if out.exists() else []


def test_sigterm_mid_run_leaves_no_temporary_run_folder(tmp_path):
    """A bandit run killed by SIGTERM while its run folder is being written: exit 143, one line, nothing left."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "bandit/examples/tabular.py", "--seeds", "400", "--out", str(out)],
                            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = _terminate_when(proc, lambda: any(p.name.endswith(".tmp") for p in out.glob(".*")))
    assert proc.returncode == 143, err[-2000:]
    last = [l for l in err.strip().splitlines() if "terminated" in l]
    assert last and "SIGTERM" in last[-1]
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.slow
def test_sigterm_during_dpo_training_removes_the_run_and_trainer_folders(tmp_path):
    import json

    prefs = tmp_path / "p.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": f"write about sea in {i} sentences :", "chosen": " the calm sea .",
                                         "rejected": " ."}) + "\n" for i in range(1, 9)))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "alignment.train_dpo", "--preferences", str(prefs), "--policy",
                             "toy:tiny", "--max-steps", "100000", "--batch-size", "2", "--device", "cpu", "--out",
                             str(out)], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = _terminate_when(proc, lambda: (out / ".dpo.trainer").is_dir() and any(out.glob(".dpo.*.tmp")))
    assert proc.returncode == 143, err[-2000:]
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("module, flags", [
    ("alignment.sft", ["--num-train", "64", "--num-heldout", "8", "--num-samples", "0"]),
    ("alignment.reward_model", ["--num-pairs", "64", "--num-heldout", "8"]),
])
def test_sigterm_during_sft_or_reward_model_training_leaves_nothing(tmp_path, module, flags):
    """Their trainer folder lives inside the run being written (RunDir's hidden folder), so SIGTERM mid-training
    removes both: no stray trainer folder, no hidden run folder."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", module, "--model", "toy:tiny", "--max-steps", "100000", *flags,
                             "--out", str(out)], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _, err = _terminate_when(proc, lambda: any(out.glob(".toy.*.tmp/trainer")))
    assert proc.returncode == 143, err[-2000:]
    assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())


def test_ctrl_c_is_one_line_exit_130_and_removes_the_run_being_written(tmp_path, capsys):
    """KeyboardInterrupt inside an entry point's run folder: the folder's cleanup runs, then one line, exit 130."""
    from runlog import exit_on_config_error

    @exit_on_config_error
    def main():
        with RunDir(tmp_path, "x", {"a": 1}, [0]) as run:
            run.log({"step": 0})
            raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 130 and len(err) == 1 and "interrupted (Ctrl-C)" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_seeds_beyond_numpy_are_refused_with_the_largest_allowed():
    """numpy's np.random.seed (what transformers.set_seed calls) takes 0 <= seed < 2**32: the check says so, and for
    a derived seed (the pipeline's seed x 1000 + t) it names the largest seed that fits, found by bisection."""
    import numpy as np

    from runlog import SEED_MAX, check_seed

    np.random.seed(SEED_MAX)  # the bound is numpy's own: its largest seed is accepted, one more is not
    with pytest.raises(ValueError):
        np.random.seed(SEED_MAX + 1)
    assert check_seed("seed", SEED_MAX) == SEED_MAX
    for bad in (-1, SEED_MAX + 1, 10**400, True, 2.5):
        with pytest.raises(ConfigError, match="--seed: must be an integer"):
            check_seed("seed", bad)
    # (2**32 - 1 - 7) // 1000 = 4294967 by hand: 4294967 * 1000 + 7 = 4294967007 fits, 4294968 * 1000 + 7 does not
    assert check_seed("seed", 4294967, derived=lambda s: s * 1000 + 7) == 4294967
    with pytest.raises(ConfigError, match="so at most 4294967$"):
        check_seed("seed", 4294968, derived=lambda s: s * 1000 + 7)


def test_bulk_metric_lines_stay_strict_json_with_infinite_values():
    """Huge finite rewards overflow param_diff to inf: the log line still parses as strict JSON (null), so analysis
    can read its own log (DESIGN section 5)."""
    import json
    from types import SimpleNamespace

    import numpy as np

    from bandit.examples.common import METRICS, metric_lines

    m = np.zeros((2, len(METRICS), 1))
    m[1, 0, 0], m[1, 1, 0] = np.inf, np.nan
    traj = SimpleNamespace(metrics=m, valid_steps=lambda b: 2, diverged_at=np.array([-1]))
    rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
            for line in metric_lines("exact", "mix_p", [0], traj)]
    assert rows[1][METRICS[0]] is None and rows[1][METRICS[1]] is None and rows[0][METRICS[0]] == 0.0


def test_files_that_are_not_what_they_claim_are_one_error(tmp_path):
    """Deeply nested JSON (json's parser recurses), a recipe that is not UTF-8, a mistyped toy split: one
    ConfigError each, naming the flag and the file."""
    from alignment.core.data import load_preferences, load_prompts
    from alignment.pipeline.recipes import load_yaml

    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100000 + "]" * 100000 + "\n")
    with pytest.raises(ConfigError, match="--preferences: .*nested too deeply"):
        load_preferences(str(deep))
    (tmp_path / "deep.json").write_text("[" + "[" * 100000 + "]" * 100000 + "]")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_preferences(str(tmp_path / "deep.json"))
    (tmp_path / "r.yaml").write_bytes("train: {lr: 1.0e-4}  # caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="--config: .*r.yaml.* is not UTF-8"):
        load_yaml(str(tmp_path / "r.yaml"))
    with pytest.raises(ConfigError, match="--split: the toy task's prompt splits are train, heldout, not 'heldot'"):
        load_prompts("toy:4", split="heldot")
    assert [r["id"] for r in load_prompts("toy:2", split="heldout")] == ["toy-heldout-0", "toy-heldout-1"]


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch ran-code",))


def test_an_unsafe_pickle_checkpoint_never_runs_and_is_one_error(tmp_path, monkeypatch):
    """A model folder whose pytorch_model.bin is a pickle that would run a command: transformers' weights-only
    torch.load refuses it; the loaders turn that into one ConfigError, and the command never ran."""
    import pickle

    from alignment.core.models import load_causal_lm

    monkeypatch.chdir(tmp_path)
    load_causal_lm("toy:tiny").config.save_pretrained(tmp_path / "model")
    with open(tmp_path / "model" / "pytorch_model.bin", "wb") as f:
        pickle.dump({"model.embed_tokens.weight": _RunsCode()}, f)
    with pytest.raises(ConfigError, match="--policy: cannot load a causal LM .*could run code"):
        load_causal_lm(str(tmp_path / "model"), "--policy")
    assert not (tmp_path / "ran-code").exists()


@pytest.mark.parametrize("entry", ["bandit.examples.tabular", "bandit.examples.offline", "bandit.examples.alpha_p",
                                   "alignment.generate"])
def test_a_blank_name_is_an_error_not_the_default(entry, tmp_path, capsys):
    import importlib

    main = importlib.import_module(entry).main
    with pytest.raises(SystemExit) as e:
        main(["--name", "", "--out", str(tmp_path / "out")])  # "" used to fall back to the default name
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--name" in err, err
    assert not (tmp_path / "out").exists()


def test_memory_estimates_are_exact_ints_and_refuse_only_beyond_what_is_free(monkeypatch):
    """check_memory compares exact ints (a 400-digit size never goes through float) and refuses only above the free
    bytes; generation_bytes by hand: ids 3 x 5 x 8 = 120, one model's cache and logits 3 x (5 x 2 x 2 x 4 + 2 x 10)
    x 4 = 1200, a model named twice (--ref the same as --policy) counted once."""
    import types

    import runlog.checks as checks
    from alignment.generation.backend import generation_bytes

    monkeypatch.setattr(checks, "available_memory", lambda: 1000)
    checks.check_memory("x", 1000, "--size")
    with pytest.raises(ConfigError, match="--size: x need an estimated"):
        checks.check_memory("x", 1001, "--size")
    with pytest.raises(ConfigError, match=r"about 2\*\*1328 bytes"):  # 10**400 has 1329 bits
        checks.check_memory("x", 10 ** 400, "--size")

    model = types.SimpleNamespace(config=types.SimpleNamespace(num_hidden_layers=2, hidden_size=4, vocab_size=10))
    assert generation_bytes({}, 3, 5) == 120
    assert generation_bytes({"policy": model}, 3, 5) == 120 + 1200
    assert generation_bytes({"policy": model, "ref": model}, 3, 5) == 120 + 1200
    other = types.SimpleNamespace(config=model.config)
    assert generation_bytes({"policy": model, "ref": other}, 3, 5) == 120 + 2400


def test_the_output_check_leaves_an_existing_folder_as_it_was(tmp_path):
    """check_out probes with a folder it removes at once; the folder's modification time comes back too (the bad
    input table compares mtimes: a refused command changes nothing)."""
    folder = tmp_path / "out"
    folder.mkdir()
    os.utime(folder, ns=(1_000_000_000, 1_000_000_000))
    check_out(folder)
    check_out(folder / "new" / "deeper")   # the nearest existing folder is probed: still unchanged
    assert folder.stat().st_mtime_ns == 1_000_000_000 and list(folder.iterdir()) == []


def test_analysis_refuses_a_run_json_that_is_not_strict_json(tmp_path):
    from analysis.load import Problem
    from analysis.runs import read_info

    (tmp_path / "run.json").write_text('{"config": {"lr": NaN}, "command": ["bandit/examples/tabular.py"]}')
    problem = read_info(str(tmp_path))
    assert isinstance(problem, Problem) and "NaN is not strict JSON" in problem.reason
