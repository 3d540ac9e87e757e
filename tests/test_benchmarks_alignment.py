"""benchmarks/bench_alignment.py --what dpo and --what select: run end to end on a tiny budget and print their
tables; the toy pairs, the hand-written TRL config and the peak-memory child process. No timing assertions: speed is
the benchmark's business, not the tests'."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test starts a process (the scripts, or the peak-memory child)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_alignment.py"
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
TINY = ["--dpo-size", "tiny", "--dpo-pairs", "8", "--dpo-steps", "3", "--dpo-batch-size", "2", "--dpo-repeats", "1",
        "--threads", "1"]


def _bench():
    from benchmarks import bench_alignment

    return bench_alignment


def test_dpo_mode_runs_and_prints_its_table(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--what", "dpo", *TINY, "--no-memory"], cwd=tmp_path, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "TRL's hand-written config equals dpo_config's" in text
    for name in ("TRL DPOTrainer", "ours, sigmoid", "ours, rev_kl"):
        assert any(line.startswith(name) for line in text.splitlines()), text
    assert "ours, sigmoid / TRL pairs per second:" in text and "ours, rev_kl / TRL pairs per second:" in text
    assert "reach the same final loss: yes, bit for bit" in text  # our sigmoid path is TRL's computation
    assert list(tmp_path.iterdir()) == []  # scratch folders are temporary


def test_help_describes_the_modes():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], env=ENV, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "--what {decode,dpo,select,sams,all}" in out.stdout
    assert "--dpo-steps" in out.stdout and "TRL DPOTrainer" in out.stdout
    assert "--select-pairs" in out.stdout and "reward_gap scoring" in out.stdout


def test_select_mode_runs_and_prints_its_table(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--what", "select", "--select-model", "toy:tiny",
                          "--select-pairs", "8", "--select-batch-size", "4", "--select-repeats", "1", "--threads", "1"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    for name in ("plain forward", "ours, reward_gap", "full log-softmax", "ours, pair batches"):
        assert any(line.startswith(name) for line in lines), out.stdout
    assert "ours / plain forward tokens per second:" in out.stdout
    diff = next(line for line in lines if line.startswith("max |ours - full log-softmax| gap difference:"))
    assert float(diff.rsplit(":", 1)[1]) < 1e-4  # the two ways compute the same gaps
    assert list(tmp_path.iterdir()) == []


def test_pairs_config_and_peak_memory_child():
    import torch

    bench = _bench()
    rows = bench.dpo_pairs(16)
    assert len(rows) == 16 and all(r["chosen_reward"] >= r["rejected_reward"] for r in rows)
    assert rows == bench.dpo_pairs(16)  # seeded
    a = argparse.Namespace(device="cpu", threads=1, dpo_size="tiny", dpo_pairs=8, dpo_steps=2, dpo_batch_size=2)
    assert bench.config_differences(a, torch.device("cpu"), Path("unused")) == []
    peak = bench.run_isolated(bench._dpo_peak, "rev_kl", a)["peak_mib"]
    assert 0 < peak < bench.peak_rss_mib() + 4096


def test_bench_toy_step_counts_the_dpo_steps_flops_and_prints_the_matmul_ratio(tmp_path):
    """bench_toy --what step: one DPO step is pi forward + backward (about 3 forwards) and pi_ref's forward, so the
    FLOPs torch counts are about 4 x one forward's 2 x (matmul weights) x tokens; and the table prints both
    matmul rates next to the step's."""
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_toy.py"), "--what", "step", "--steps", "2"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "the DPO step (achieved)" in text and "(LM head)" in text and "matmul 1024x1024x1024" in text
    import re

    from alignment.core.toy import build_model, build_tokenizer

    model = build_model(build_tokenizer(), "base")
    weights = sum(m.weight.numel() for m in model.modules() if m.__class__.__name__ == "Linear")
    tokens = int(re.search(r"(\d+) padded tokens per model", text).group(1))
    gflop = float(re.search(r"FLOPs counted ([\d.]+) GFLOP", text).group(1))
    forward = 2 * weights * tokens / 1e9   # the linear layers; attention's scores add a little on top
    assert 3.98 * forward <= gflop <= 5 * forward, (gflop, forward)   # 3.98: the printed value is rounded
    assert list(tmp_path.iterdir()) == []


def test_bench_toy_refuses_an_unknown_part(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_toy.py"), "--what", "bogus"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1 and "--what" in out.stderr
