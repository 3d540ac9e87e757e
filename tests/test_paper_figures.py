"""paper_figures/: every figure and table from a small set of REAL logs made by the entry points on tiny budgets
(bandit/examples/tabular.py, linear.py, alpha_p.py, offline.py twice, alignment.pipeline for two samplers and, in its offline
regime, two selection labels), the skipped list for missing logs, one script run alone, and bad input.
"""
import csv
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_pipeline_recipe
from paper_figures import FIGURES, common, make_all

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
BANDIT_SAMPLERS = ("unif", "on_policy", "gshf", "mix_r", "mix_p", "mix_p_star")
SELECTORS = ("unif", "random_subset", "reward_gap", "reward_gap_step", "us", "ae", "sams", "borda")
PIPELINE_SAMPLERS = ("offline", "on_policy")
LABELS = ("all", "random_subset")
# which methods each figure draws, from the logs below
DRAWN = {"tabular_exact": BANDIT_SAMPLERS, "tabular_empirical": BANDIT_SAMPLERS, "linear_bandit": BANDIT_SAMPLERS,
         "offline_selection": SELECTORS, "alignment_reward_vs_kl": PIPELINE_SAMPLERS,
         "alignment_reward_per_iteration": PIPELINE_SAMPLERS, "selection_toy": LABELS,
         "alpha_p": ("mix_p", "on_policy")}   # the paper's mix_p row and alpha = 0 (on-policy pairs)
COMMANDS = {"alignment_reward_vs_kl": "bash alignment/toy.sh",
            "alignment_reward_per_iteration": "bash alignment/toy.sh",
            "selection_toy": "bash alignment/toy_selection.sh"}

TINY_BANDIT = ["--seeds", "2", "--iters", "5", "--num-samples", "64", "--no-plots"]
TINY_OFFLINE = ["--seeds", "2", "--steps", "6", "--dataset", "96", "--batch", "8", "--no-plots"]


def _pipeline(argv, monkeypatch):
    """alignment.pipeline's main in-process, with the command line it would have (run.json's command names it)."""
    from alignment.pipeline.driver import main

    monkeypatch.setattr(sys, "argv", [str(REPO / "alignment" / "pipeline" / "__main__.py"), *argv])
    main(argv)


@pytest.fixture(scope="module")
def logs(tmp_path_factory, torch_single_thread):
    """root/runs: the real logs of every figure; root/extra: a second tabular task (step=newton). The in-process
    pipelines run with one torch thread (the subprocesses get OMP_NUM_THREADS=1): on tiny tensors a second thread
    only adds overhead, and it stalls badly when the cores are busy with the bandit subprocesses."""
    root = tmp_path_factory.mktemp("paper_figures")
    runs = root / "runs"
    ex = REPO / "bandit" / "examples"
    commands = [
        [ex / "tabular.py", "--setting", "both", *TINY_BANDIT, "--out", runs / "bandit" / "tabular", "--name", "tiny"],
        [ex / "linear.py", "--setting", "both", *TINY_BANDIT, "--dim", "3", "--contexts", "2", "--actions", "4",
         "--out", runs / "bandit" / "linear", "--name", "tiny"],
        [ex / "offline.py", *TINY_OFFLINE, "--out", runs / "bandit" / "offline", "--name", "flip0"],
        [ex / "offline.py", *TINY_OFFLINE, "--flip", "0.2", "--out", runs / "bandit" / "offline", "--name", "flip0.2"],
        [ex / "tabular.py", "--setting", "exact", "--step", "newton", *TINY_BANDIT, "--out", root / "extra",
         "--name", "newton"],
        [ex / "alpha_p.py", "--seeds", "2", "--iters", "8", "--alphas", "0,0.5", "--ps", "0.7,1",
         "--temperatures", "1,0.7", "--bases", "pi", "--out", runs / "bandit" / "alpha_p", "--name", "tiny"],
    ]
    procs = [subprocess.Popen([sys.executable, *map(str, c)], cwd=root, env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for c in commands]
    try:
        recipes = root / "recipes"
        recipes.mkdir()
        for name in ("toy", "toy_selection"):   # the task of a pipeline run is its recipe's file name
            (recipes / f"{name}.yaml").write_text(tiny_pipeline_recipe())
        prefs = root / "prefs.jsonl"
        prefs.write_text("".join(json.dumps(
            {"id": f"q{i}", "prompt": f"write about food in {i % 3 + 1} sentences :",
             "chosen": " the warm bread shines .", "rejected": " the sad .", "chosen_reward": 1.0,
             "rejected_reward": -1.0}) + "\n" for i in range(12)))
        with pytest.MonkeyPatch.context() as mp:
            for env_key in ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM"):
                mp.setenv(env_key, ENV[env_key])
            for sampler in PIPELINE_SAMPLERS:
                for seed in (0, 1):
                    _pipeline(["--config", str(recipes / "toy.yaml"), "--sampler", sampler, "--seed", str(seed),
                               "--iterations", "2", "--out", str(runs / "alignment" / "toy" / f"{sampler}-seed{seed}")],
                              mp)
            for label in LABELS:
                override = "" if label == "all" else f"train.selector={label} train.select_ratio=0.5"
                for seed in (0, 1):
                    _pipeline(["--config", str(recipes / "toy_selection.yaml"), "--preferences", str(prefs),
                               "--label", label, "--seed", str(seed), "--iterations", "1", "--override", override,
                               "--out", str(runs / "alignment" / "toy_selection" / f"{label}-seed{seed}")], mp)
    finally:
        for p, c in zip(procs, commands):
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, f"{c}: {err[-2000:]}"
    return root


@pytest.fixture(scope="module")
def made(logs, tmp_path_factory):
    """make_all on every log: (out folder, its printed report)."""
    out = tmp_path_factory.mktemp("made") / "out"
    # in this process (test_bad_input_subprocess_exits_2_with_one_line runs make_all.py itself): its imports once
    rc, stdout, stderr = _make_all_in_process(["--runs", str(logs / "runs"), "--out", str(out)], cwd=logs)
    assert rc == 0, stderr[-3000:]
    return out, stdout


def _make_all_in_process(argv, cwd):
    """(exit code, stdout, stderr) of `python paper_figures/make_all.py ARGV` run in this process from cwd."""
    import contextlib
    import io

    stdout, stderr, rc = io.StringIO(), io.StringIO(), 0
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        mp.chdir(cwd)
        try:
            make_all.main(list(argv))
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return rc, stdout.getvalue(), stderr.getvalue()


def _image(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    return mpimg.imread(path)[..., :3]


def _pixels(image: np.ndarray, color: str) -> int:
    from matplotlib.colors import to_rgb

    return int((np.abs(image - np.array(to_rgb(color))).max(-1) < 0.02).sum())


def _skipped(stdout: str) -> dict[str, str]:
    lines = stdout.split("skipped (", 1)[1].split("\n")[1:]
    out = {}
    for line in lines:
        if not line.startswith("  "):
            break
        name, _, reason = line.strip().partition(": ")
        out[name] = reason
    return out


# ------------------------------------------------------------------------------------------ make_all, all logs

@pytest.mark.slow
def test_make_all_makes_every_figure_and_table(made):
    out, stdout = made
    assert "skipped (0): nothing" in stdout and "layout:" not in stdout and "failed" not in stdout
    for name in FIGURES:
        png, pdf = out / f"{name}.png", out / f"{name}.pdf"
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 20_000, name
        assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 5_000, name
        image = _image(png)
        assert image.shape[0] > 300 and image.shape[1] > 600 and image.std() > 0.05, name  # drawn, not blank
        assert f"  {png}" in stdout and f"  {pdf}" in stdout
    tables = out / "tables"
    expected = {"convergence.md", "convergence.csv", "alignment_iterations.md", "alignment_iterations.csv",
                "leaderboard.md", "leaderboard.csv"}
    board = (tables / "leaderboard.md").read_text()
    assert "### toy: reward_mean" in board and "### offline (flip=0.2) / linear: value_gap" in board
    assert {p.name for p in tables.iterdir()} == expected    # no temporary files left either
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}.{s}" for n in FIGURES for s in ("png", "pdf")] + ["tables"])


@pytest.mark.slow
def test_tables_hold_every_task_and_mark_the_frontier(made, logs):
    from analysis.iterations import frontier, iteration_table
    from analysis.runs import load_tasks

    out, _ = made
    conv = list(csv.DictReader((out / "tables" / "convergence.csv").open()))
    assert {(r["task"], r["setting"], r["method"]) for r in conv} == {
        (task, setting, m) for task in ("tabular", "linear") for setting in ("exact", "empirical")
        for m in BANDIT_SAMPLERS}
    assert all(r["seeds"] == "2" for r in conv)
    its = list(csv.DictReader((out / "tables" / "alignment_iterations.csv").open()))
    assert sorted((r["task"], r["method"], r["iteration"]) for r in its) == sorted(
        [("toy", m, str(t)) for m in PIPELINE_SAMPLERS for t in (0, 1, 2)]
        + [("toy_selection", m, str(t)) for m in LABELS for t in (0, 1)])
    tasks, _ = load_tasks([logs / "runs" / "alignment"])
    for task in tasks:
        front = {(r["method"], r["iteration"]) for r in frontier(iteration_table(task.rows))}
        marked = {(r["method"], int(r["iteration"])) for r in its if r["task"] == task.name and r["frontier"] == "True"}
        assert marked == front and front
    md = (out / "tables" / "alignment_iterations.md").read_text()
    assert md.count("**yes**") == sum(r["frontier"] == "True" for r in its)
    assert "### tabular" in (out / "tables" / "convergence.md").read_text()


@pytest.mark.parametrize("figure", FIGURES)
@pytest.mark.slow
def test_each_method_is_drawn_in_its_fixed_colour(made, figure):
    from analysis.style import SAMPLER_COLORS

    image = _image(made[0] / f"{figure}.png")
    for method in DRAWN[figure]:
        assert _pixels(image, SAMPLER_COLORS[method]) > 40, (figure, method)
    if figure.startswith("alignment"):   # colours follow the sampler, not the palette's order: gshf, mix_p absent
        for absent in ("gshf", "mix_p"):
            assert _pixels(image, SAMPLER_COLORS[absent]) == 0, (figure, absent)
    if figure == "selection_toy":        # us (blue), sams (pink) are not in these logs
        for absent in ("us", "sams"):
            assert _pixels(image, SAMPLER_COLORS[absent]) == 0, (figure, absent)


# ------------------------------------------------------------------------------------------ missing logs

@pytest.mark.slow
def test_missing_logs_are_skipped_with_their_command(logs, tmp_path):
    out = tmp_path / "out"
    rc, stdout, stderr = _make_all_in_process(["--runs", str(logs / "runs" / "bandit"), "--out", str(out)],
                                              cwd=tmp_path)
    assert rc == 0, stderr[-3000:]
    skipped = _skipped(stdout)
    assert set(skipped) == set(COMMANDS) | {"tables/alignment_iterations"}
    for name, command in COMMANDS.items():
        assert skipped[name].endswith(f"produce the logs with: {command}"), skipped[name]
        assert not (out / f"{name}.png").exists() and not (out / f"{name}.pdf").exists()
    for name in ("tabular_exact", "tabular_empirical", "linear_bandit", "offline_selection"):
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").stat().st_size > 0
    assert (out / "tables" / "convergence.csv").exists() and not (out / "tables" / "alignment_iterations.csv").exists()


@pytest.mark.slow
def test_one_noise_level_makes_the_figure_and_names_the_other_command(logs, tmp_path):
    report = make_all.main(["--runs", str(logs / "runs" / "bandit" / "offline" / "flip0"), "--out", str(tmp_path),
                            "--only", "offline_selection"])
    assert report.made == [tmp_path / "offline_selection.png", tmp_path / "offline_selection.pdf"]
    assert not report.skipped
    (note,) = report.notes
    assert "only no label noise logged" in note and "python bandit/examples/offline.py --flip 0.2" in note


@pytest.mark.slow
def test_several_tasks_get_one_file_each(logs, tmp_path):
    from analysis.runs import load_tasks
    from paper_figures import tabular_exact, tabular_empirical

    tasks, _ = load_tasks([logs / "runs" / "bandit" / "tabular", logs / "extra"])
    assert sorted(t.name for t in tasks) == ["tabular (step=fixed)", "tabular (step=newton)"]
    paths = tabular_exact.make(tasks, tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"tabular_exact__tabular-step-{s}.{e}" for s in ("fixed", "newton")
                                                   for e in ("png", "pdf"))
    assert [p.name for p in tabular_empirical.make(tasks, tmp_path)] == ["tabular_empirical.png",
                                                                         "tabular_empirical.pdf"]
    with pytest.raises(common.MissingLogs, match="python bandit/examples/linear.py"):
        importlib.import_module("paper_figures.linear_bandit").make(tasks, tmp_path)


# ------------------------------------------------------------------------------------------ scripts alone

@pytest.mark.slow
def test_one_script_alone_writes_its_files(logs, tmp_path):
    out = tmp_path / "x"
    proc = subprocess.run([sys.executable, str(REPO / "paper_figures" / "tabular_exact.py"), "--runs",
                           str(logs / "runs"), "--out", str(out)], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["tabular_exact.pdf", "tabular_exact.png"]
    assert proc.stdout.splitlines() == [f"wrote {out / 'tabular_exact.png'}", f"wrote {out / 'tabular_exact.pdf'}"]


@pytest.mark.slow
def test_one_script_without_its_logs_names_the_command(logs, tmp_path):
    out = tmp_path / "x"
    proc = subprocess.run([sys.executable, str(REPO / "paper_figures" / "selection_toy.py"), "--runs",
                           str(logs / "runs" / "bandit"), "--out", str(out)], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "selection_toy" in line and line.endswith("produce the logs with: bash alignment/toy_selection.sh")
    assert not out.exists()


@pytest.mark.slow
def test_bad_input_subprocess_exits_2_with_one_line(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "paper_figures" / "make_all.py"), "--runs",
                           str(tmp_path / "nope"), "--out", str(out)], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "--runs" in line and "does not exist" in line
    assert not out.exists()


@pytest.mark.parametrize("argv, expected", [
    (["--runs", "{tmp}/nope"], "does not exist"),
    (["--only", "tabular_exact,fancy_plot"], "known: " + ", ".join(FIGURES) + ", tables"),
    (["--only", ""], "--only"),
    (["--bogus"], "unrecognized arguments"),
    (["--out", "{tmp}/file.txt"], "is not a folder"),
])
@pytest.mark.slow
def test_bad_input_in_process(argv, expected, logs, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    full = ["--runs", str(logs / "runs" / "bandit" / "tabular"), "--out", str(tmp_path / "out")] + argv
    with pytest.raises(SystemExit) as e:
        make_all.main(full)
    assert e.value.code == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert expected in line and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]    # nothing written


# ------------------------------------------------------------------------------------------ shared pieces

def test_layout_check_finds_a_legend_over_the_axes():
    with common.house_style():
        fig, axes = common.new_figure(1, 1, 6, 4)
        axes[0][0].plot([0, 1], [0, 1], label="a line")
        axes[0][0].legend(loc="center")
        assert any("overlaps the axes" in p for p in common.layout_problems(fig))
        axes[0][0].get_legend().remove()
        common.legend_outside(axes[0][0], title="sampler")
        assert common.layout_problems(fig) == []


def test_robust_limits_leave_an_outlier_and_a_huge_interval_outside():
    centres = [0.0, 0.5, 1.0, 1.2, 1.5, 20.0]
    lows = [0.0, 0.3, 0.8, -60.0, 1.2, -60.0]
    highs = [0.0, 0.7, 1.2, 80.0, 1.8, 100.0]
    lo, hi = common.robust_limits(centres, lows, highs, floor=0.0)
    assert -0.2 < lo < 0.0 and 1.8 < hi < 5.0      # the bulk and its ordinary intervals, not 20 or +-60
    cells = [{"kl": c, "kl_lo": l, "kl_hi": h, "name": i} for i, (c, l, h) in enumerate(zip(centres, lows, highs))]
    assert common.cut_intervals(cells, "kl", (lo, hi), lambda c: c["name"]) == ["3 [-60, 80]", "5 [-60, 100]"]
    with common.house_style():
        fig, axes = common.new_figure(1, 1, 6, 4)
        notes = common.mark_outside(axes[0][0], [(c, 0.0, "#000000", f"p{i}") for i, c in enumerate(centres)],
                                    (lo, hi), (-1.0, 1.0))
    assert notes == ["p5 at (20, 0)"]


def test_output_names():
    assert common.stems("fig", ["tabular (step=newton)"]) == {"tabular (step=newton)": "fig"}
    assert common.stems("fig", ["offline (flip=0.2)", "offline (flip=0.0, lr=0.1)"]) == {
        "offline (flip=0.2)": "fig__offline-flip-0.2", "offline (flip=0.0, lr=0.1)": "fig__offline-flip-0.0-lr-0.1"}


def test_bandit_legend_names_seeds_and_diverged_ones():
    """Diverged seeds (an "event": "diverged" row) are left out of the curve and named in the legend."""
    from analysis.runs import RunInfo, Task

    rows = []
    for sampler, diverged in (("unif", ()), ("mix_p", (1,)), ("gshf", (0, 1))):
        for seed in (0, 1):
            if seed in diverged:
                rows.append({"setting": "exact", "sampler": sampler, "seed": seed, "step": 2, "event": "diverged"})
                continue
            rows += [{"setting": "exact", "sampler": sampler, "seed": seed, "step": t, "param_diff": 2.0 ** -t,
                      "value_gap": 4.0 ** -t} for t in range(4)]
    for r in rows:
        r["method"] = r["sampler"]
    task = Task("tabular", "tabular", [RunInfo("x", "tabular", {"actions": 3, "contexts": 1, "beta": 1.0})], rows)
    with common.house_style():
        fig = common.bandit_figure(task, ["exact"], "Tabular bandit")
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels == ["unif (2 seeds)", "gshf (all 2 seeds diverged)", "mix_p (1 seed; 1 diverged, left out)"]
    assert common.layout_problems(fig) == []
