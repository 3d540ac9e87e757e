"""alignment/scripts/toy.sh on a tiny budget: every step runs, the table and figure appear, a rerun redoes nothing."""
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
    run = lambda: subprocess.run(["bash", "alignment/scripts/toy.sh", str(out)], cwd=REPO, env=env,
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
