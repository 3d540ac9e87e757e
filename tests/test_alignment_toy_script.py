"""alignment/toy.sh on a tiny budget: every step runs, the table and figure appear, a rerun redoes nothing; the
dry runs, --help and bad flags of toy.sh and toy_selection.sh."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # one shell script, every stage for real (about a minute)

REPO = Path(__file__).resolve().parents[1]

TINY = """
prompts: toy:16
prompts_per_iteration: 8
eval_prompts: toy:12
generate: {num_responses: 2, max_new_tokens: 6, batch_size: 8, device: cpu}
annotate: {rule: max_min}
train: {lr: 0.01, epochs: 1, batch_size: 4, max_length: 64, device: cpu}
evaluate: {max_new_tokens: 6, batch_size: 12, device: cpu, export: none}
"""


def test_toy_script_smoke(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", SAMPLERS="offline mixp",
               SEEDS="0 1", RECIPE=str(tmp_path / "tiny.yaml"), PIPELINE_FLAGS="--iterations 1",
               SFT_FLAGS="--model toy:tiny --max-steps 3 --num-samples 0 --num-train 64 --num-heldout 8",
               RM_FLAGS="--model toy:tiny --max-steps 3 --num-pairs 64 --num-heldout 8")
    out = tmp_path / "toy"
    run = lambda: subprocess.run(["bash", "alignment/toy.sh", "--out", str(out)], cwd=REPO, env=env,
                                 capture_output=True, text=True, timeout=600)
    r = run()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(row["sampler"], row["iteration"]) for row in rows} == {(s, i) for s in ("offline", "mix_p") for i in "01"}
    assert all(row["seeds"] == "2" for row in rows)
    assert (out / "reward_vs_kl.png").stat().st_size > 10_000 and (out / "reward_vs_kl.pdf").exists()
    for s in ("offline", "mix_p"):
        for seed in (0, 1):
            assert (out / "pipeline" / f"{s}-seed{seed}" / "iter_1" / "train" / "model").is_dir()
    # a second run finds everything done: no stage runs again, and every pipeline's log stays as it was
    stamp = (out / "pipeline" / "mix_p-seed1" / "iter_1" / "train.done").read_text()
    logs = {p: p.read_text() for p in (out / "pipeline").glob("*/metrics.jsonl")}
    assert sorted(p.parent.name for p in logs) == [f"{s}-seed{seed}" for s in ("mix_p", "offline") for seed in (0, 1)]
    assert all([json.loads(l)["iteration"] for l in text.splitlines()] == [0, 1] for text in logs.values())
    r = run()
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "pipeline" / "mix_p-seed1" / "iter_1" / "train.done").read_text() == stamp
    assert {p: p.read_text() for p in (out / "pipeline").glob("*/metrics.jsonl")} == logs


def _script(tmp_path, script, *args, **env):
    environ = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", TMPDIR=str(tmp_path),
                   **env)
    return subprocess.run(["bash", f"alignment/{script}.sh", *args], cwd=REPO, env=environ, capture_output=True,
                          text=True, timeout=300)


def _written(tmp_path):
    return [p for p in tmp_path.iterdir() if not p.name.startswith("torchinductor_")]


def test_toy_dry_run_checks_every_command_and_writes_nothing(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    out = tmp_path / "toy"
    r = _script(tmp_path, "toy", "--dry-run", "--out", str(out), SAMPLERS="offline mixp", SEEDS="3",
                RECIPE=str(tmp_path / "tiny.yaml"), PIPELINE_FLAGS="--iterations 1")
    assert r.returncode == 0, r.stderr
    commands = [line.split() for line in r.stdout.splitlines() if not line.startswith("#")]
    modules = [c[c.index("-m") + 1] for c in commands]
    assert modules == ["alignment.sft", "alignment.reward_model", "alignment.pipeline", "alignment.pipeline",
                       "alignment.report"]
    for c, sampler in zip(commands[2:4], ("offline", "mix_p")):  # canonical names
        assert c[c.index("--sampler") + 1] == sampler and c[c.index("--seed") + 1] == "3"
        assert c[c.index("--out") + 1] == str(out / "pipeline" / f"{sampler}-seed3")
        assert c[c.index("--policy") + 1] == str(out / "sft" / "toy" / "model")
        assert c[c.index("--iterations") + 1] == "1"
    assert not out.exists() and _written(tmp_path) == [tmp_path / "tiny.yaml"]


def test_toy_selection_dry_run_orders_reward_gap_after_its_selection_model(tmp_path):
    out = tmp_path / "sel"
    r = _script(tmp_path, "toy_selection", "--dry-run", "--out", str(out), METHODS="reward_gap full", SEEDS="0")
    assert r.returncode == 0, r.stderr
    commands = [line.split() for line in r.stdout.splitlines() if not line.startswith("#")]
    modules = [c[c.index("-m") + 1] for c in commands]
    assert modules == ["alignment.sft", "alignment.generate", "alignment.annotate", "alignment.pipeline",
                       "alignment.pipeline", "alignment.report"]
    labels = [c[c.index("--label") + 1] for c in commands[3:5]]
    assert labels == ["all", "reward_gap"]  # the selection model's run first
    assert str(out / "runs" / "all-seed0" / "iter_1" / "train") in " ".join(commands[4])
    assert not out.exists() and not _written(tmp_path)


def test_toy_scripts_help_and_bad_input(tmp_path):
    for script, variables in (("toy", ("SAMPLERS", "SEEDS", "JOBS", "RECIPE", "PIPELINE_FLAGS")),
                              ("toy_selection", ("METHODS", "FLIP", "RATIO", "NUM_PROMPTS", "DATA_FLAGS"))):
        h = _script(tmp_path, script, "--help")
        assert h.returncode == 0 and h.stdout.startswith(f"usage: alignment/{script}.sh")
        assert all(w in h.stdout for w in ("--out", "--dry-run", *variables))
    cases = [("toy", ["--bogus"], {}, "--bogus"), ("toy", ["--out"], {}, "--out"),
             ("toy", ["--dry-run", "--out", "a", "b"], {}, "twice"),
             ("toy", ["--dry-run"], {"SAMPLERS": "offline dpo"}, "SAMPLERS"),
             ("toy", ["--dry-run"], {"SEEDS": "0 x"}, "SEEDS"), ("toy", ["--dry-run"], {"JOBS": "0"}, "JOBS"),
             ("toy", ["--dry-run"], {"PIPELINE_FLAGS": "--iterationz 1"}, "--iterationz"),
             ("toy_selection", ["--bogus"], {}, "--bogus"),
             ("toy_selection", ["--dry-run"], {"METHODS": "all borda"}, "METHODS"),
             ("toy_selection", ["--dry-run"], {"FLIP": "2"}, "FLIP")]
    for script, args, env, word in cases:
        r = _script(tmp_path, script, *args, **env)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and len(lines) == 1 and word in lines[0], (script, args, env, r.stderr)
        assert lines[0].startswith(f"{script}.sh: error:") and r.stdout == "", (script, args, r.stdout)
    assert not _written(tmp_path)
