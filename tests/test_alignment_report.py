"""alignment.report: finding pipeline runs, the pooled table, its text/Markdown/CSV forms, the figure, bad input.

The fixture runs are synthetic: per-prompt values chosen here, so every expected number is computed in this
file (by hand or with numpy/scipy), never by the code under test.
"""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from alignment import report
from runlog import ConfigError
from analysis import style

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ("on_policy", "mix_p")        # alphabetical order would put mix_p first; the report's order is on_policy, mix_p
SEEDS = (0, 1)
ITERATIONS = (0, 1, 2)
GAIN = {"on_policy": 0.8, "mix_p": 1.3, "online": 0.8, "mixp": 1.3, "offline": 0.2, "gshf": 1.0, "mix_p_seq": 1.1, "zeta": 0.5, "alpha": 0.6}


def values(sampler: str, seed: int, t: int) -> dict:
    """Per-prompt reward, win, kl of one evaluation (4 prompts). Iteration 0 is the same for every sampler."""
    if (sampler, t) == ("on_policy", 1):
        reward = [1.0, 2.0, 3.0, 4.0] if seed == 0 else [2.0, 3.0, 4.0, 5.0]
    else:
        reward = [round(-2 + GAIN[sampler] * t + 0.25 * seed + d, 6) for d in (0.0, 1.5, -1.0, 0.75)]
    win = [((i + seed + t) % 3) / 2 for i in range(4)]
    kl = [0.0] * 4 if t == 0 else [round(GAIN[sampler] * t * f + 0.1 * seed, 6) for f in (0.5, 1.0, 1.5, 0.7)]
    return {"reward": reward, "win": win, "kl": kl}


def t_interval(x) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    return float(x.mean()), float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))


def write_run(folder: Path, sampler: str, seed: int, iterations=ITERATIONS) -> Path:
    folder.mkdir(parents=True)
    (folder / "pipeline.json").write_text(json.dumps({"sampler": sampler, "seed": seed, "iterations": max(iterations),
                                                      "eval_prompts": "toy:4"}))
    lines = []
    for t in iterations:
        v = values(sampler, seed, t)
        row = {"iteration": t, "sampler": sampler, "seed": seed, "step": t, "num_prompts": 4,
               "num_pairs": 0 if t == 0 else 3, "ties_dropped": 0}
        for key, ci_key, field in (("reward_mean", "reward_ci", "reward"), ("win_rate", "win_rate_ci", "win"),
                                   ("kl", "kl_ci", "kl")):
            row[key], row[ci_key] = t_interval(v[field])
        lines.append(json.dumps(row))
        ev = folder / f"iter_{t}" / "evaluate"
        ev.mkdir(parents=True)
        (ev / "metrics.jsonl").write_text(json.dumps({"stage": "evaluate", "seed": seed, "step": 0}) + "\n")
        (ev / "evaluations.jsonl").write_text("".join(
            json.dumps({"id": f"p{i}", "prompt": "x", "response": "y", "reward": v["reward"][i], "ref_response": "z",
                        "ref_reward": 0.0, "win": v["win"][i], "kl": v["kl"][i], "kl_logratio": v["kl"][i]}) + "\n"
            for i in range(4)))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def runs(tmp_path) -> Path:
    """root/on_policy/seedS (two levels down) and root/mix_p-seedS (one level down)."""
    root = tmp_path / "runs"
    for seed in SEEDS:
        write_run(root / "on_policy" / f"seed{seed}", "on_policy", seed)
        write_run(root / f"mix_p-seed{seed}", "mix_p", seed)
    return root


def row_of(rows, sampler, t):
    (row,) = [r for r in rows if r["sampler"] == sampler and r["iteration"] == t]
    return row


# ------------------------------------------------------------------------------------------------ finding runs

def test_find_runs_one_and_two_levels_down_deduplicated(runs, tmp_path):
    (runs / "notes").mkdir()
    (runs / "notes" / "metrics.jsonl").write_text("{}\n")          # no pipeline.json: not a run
    write_run(runs / "deep" / "a" / "b", "gshf", 0)                 # three levels down: not searched
    write_run(runs / ".tmp-half-written", "gshf", 1)                # hidden: skipped
    expected = {runs / "on_policy" / "seed0", runs / "on_policy" / "seed1", runs / "mix_p-seed0", runs / "mix_p-seed1"}
    assert set(report.find_runs([runs])) == expected
    assert len(report.find_runs([runs / "mix_p-seed0", runs, runs / "on_policy"])) == 4   # each run once
    assert report.find_runs([runs / "on_policy"]) == [runs / "on_policy" / "seed0", runs / "on_policy" / "seed1"]
    assert report.find_runs([runs / "mix_p-seed1"]) == [runs / "mix_p-seed1"]
    # the iter_T/evaluate folders inside a run hold a metrics.jsonl, but a run is not searched inside
    assert report.find_runs([runs / "mix_p-seed1" / "metrics.jsonl"]) == [runs / "mix_p-seed1"]


def test_find_runs_takes_names_literally(tmp_path):
    # a folder name with glob characters is that folder, not a pattern (a[1] would match a1)
    write_run(tmp_path / "a[1]" / "seed0", "mix_p", 0)
    write_run(tmp_path / "a1" / "seed0", "gshf", 0)
    assert report.find_runs([tmp_path / "a[1]"]) == [tmp_path / "a[1]" / "seed0"]
    assert report.find_runs([str(tmp_path / "a[1]" / "seed0" / "pipeline.json")]) == [tmp_path / "a[1]" / "seed0"]


def test_find_runs_errors_name_the_argument(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(report.ConfigError, match="nope.*does not exist"):
        report.find_runs([tmp_path / "nope"])
    with pytest.raises(report.ConfigError, match="empty.*holds no pipeline run"):
        report.find_runs([tmp_path / "empty"])


# ------------------------------------------------------------------------------------------------ the table

def test_pooled_mean_and_t_interval_by_hand(runs):
    rows = report.load_table(report.find_runs([runs]))
    row = row_of(rows, "on_policy", 1)
    # rewards: seed 0 [1, 2, 3, 4], seed 1 [2, 3, 4, 5]; pooled n = 8, mean 3, squared deviations sum to 12
    assert row["seeds"] == 2 and row["n"] == 8 and row["seed_list"] == [0, 1]
    assert row["ci_method"] == "pooled"
    assert row["reward"] == pytest.approx(3.0)
    assert row["reward_ci"] == pytest.approx(2.364624 * math.sqrt(12 / 7) / math.sqrt(8), rel=1e-6)  # t_{.975,7}
    assert (row["reward_seed_min"], row["reward_seed_max"]) == pytest.approx((2.5, 3.5))


def test_every_cell_matches_scipy(runs):
    rows = report.load_table(report.find_runs([runs]))
    assert [(r["sampler"], r["iteration"]) for r in rows] == [(s, t) for s in SAMPLERS for t in ITERATIONS]
    for sampler in SAMPLERS:
        for t in ITERATIONS:
            row = row_of(rows, sampler, t)
            for name, field in (("reward", "reward"), ("win_rate", "win"), ("kl", "kl")):
                per_seed = [values(sampler, s, t)[field] for s in SEEDS]
                mean, ci = t_interval(per_seed[0] + per_seed[1])
                assert row[name] == pytest.approx(mean, abs=1e-12), (sampler, t, name)
                assert row[name + "_ci"] == pytest.approx(ci, abs=1e-12), (sampler, t, name)
                seed_means = [np.mean(v) for v in per_seed]
                assert row[name + "_seed_min"] == pytest.approx(min(seed_means), abs=1e-12)
                assert row[name + "_seed_max"] == pytest.approx(max(seed_means), abs=1e-12)
    assert row_of(rows, "mix_p", 0)["kl"] == 0.0 and row_of(rows, "mix_p", 0)["kl_ci"] == 0.0


def test_pooled_interval_is_not_the_combined_seed_cis(runs):
    """With evaluations present the per-prompt values decide, not metrics.jsonl's *_ci."""
    for seed in SEEDS:
        path = runs / f"mix_p-seed{seed}" / "metrics.jsonl"
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        path.write_text("".join(json.dumps(dict(x, reward_ci=50.0)) + "\n" for x in lines))
    row = row_of(report.load_table(report.find_runs([runs])), "mix_p", 2)
    assert row["reward_ci"] == pytest.approx(t_interval(values("mix_p", 0, 2)["reward"]
                                                        + values("mix_p", 1, 2)["reward"])[1])


def test_fallback_without_evaluations_combines_reported_cis(runs):
    (runs / "mix_p-seed1" / "iter_2" / "evaluate" / "evaluations.jsonl").unlink()
    metrics = [json.loads(x) for x in (runs / "mix_p-seed0" / "metrics.jsonl").read_text().splitlines()]
    metrics[2].update(reward_mean=1.0, reward_ci=0.3)
    (runs / "mix_p-seed0" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    metrics = [json.loads(x) for x in (runs / "mix_p-seed1" / "metrics.jsonl").read_text().splitlines()]
    metrics[2].update(reward_mean=2.0, reward_ci=0.4)
    (runs / "mix_p-seed1" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    rows = report.load_table(report.find_runs([runs]))
    row = row_of(rows, "mix_p", 2)
    assert row["ci_method"] == "seed_ci"
    assert row["reward"] == pytest.approx(1.5)
    assert row["reward_ci"] == pytest.approx(0.25)          # sqrt(0.3^2 + 0.4^2) / 2
    assert (row["reward_seed_min"], row["reward_seed_max"]) == pytest.approx((1.0, 2.0))
    assert row["n"] == 8                                    # the seeds' num_prompts
    assert row_of(rows, "mix_p", 1)["ci_method"] == "pooled"
    text = report.format_table(rows)
    mix_p_2 = [x for x in text.splitlines() if x.startswith("mix_p ") and x.split()[1] == "2"]
    assert len(mix_p_2) == 1 and "8*" in mix_p_2[0] and "1.500 +- 0.250" in mix_p_2[0]
    assert "sqrt(sum ci^2) / k" in text


def test_seeds_count_follows_each_iteration(runs):
    path = runs / "on_policy" / "seed1" / "metrics.jsonl"
    path.write_text("".join(x + "\n" for x in path.read_text().splitlines()[:2]))   # seed 1 stopped after iter 1
    rows = report.load_table(report.find_runs([runs]))
    row = row_of(rows, "on_policy", 2)
    assert row["seeds"] == 1 and row["seed_list"] == [0] and row["n"] == 4
    assert row["reward"] == pytest.approx(np.mean(values("on_policy", 0, 2)["reward"]))
    assert row_of(rows, "on_policy", 1)["seeds"] == 2


def test_sampler_order(tmp_path):
    for sampler in ("zeta", "mix_p_seq", "alpha", "offline", "gshf", "mix_p", "on_policy"):
        write_run(tmp_path / sampler, sampler, 0, iterations=(0, 1))
    rows = report.load_table(report.find_runs([tmp_path]))
    order = list(dict.fromkeys(r["sampler"] for r in rows))
    assert order == ["offline", "on_policy", "gshf", "mix_p", "mix_p_seq", "alpha", "zeta"]


def test_plain_table_is_aligned_and_states_the_method(runs):
    rows = report.load_table(report.find_runs([runs]))
    text = report.format_table(rows)
    lines = text.splitlines()
    data = [x for x in lines if x.split() and x.split()[0] in SAMPLERS]
    assert len(data) == len(SAMPLERS) * len(ITERATIONS)
    positions = {tuple(i for i in range(len(x)) if x.startswith("+-", i)) for x in data}
    assert len(positions) == 1 and len(next(iter(positions))) == 3       # "+-" in the same columns on every line
    mean, ci = t_interval(values("on_policy", 0, 2)["kl"] + values("on_policy", 1, 2)["kl"])
    on_policy_2 = [x for x in data if x.split()[:2] == ["on_policy", "2"]][0]
    assert f"{mean:.3f} +- {ci:.3f}" in on_policy_2
    assert "2.500..3.500" in [x for x in data if x.split()[:2] == ["on_policy", "1"]][0]   # the seed range
    assert lines[0].split()[:4] == ["sampler", "iter", "seeds", "n"]
    assert "t_{0.975,n-1}" in text and "seeds x prompts" in text and "min..max" in text
    assert "sqrt(sum ci^2)" not in text                                 # no fallback row here


# ------------------------------------------------------------------------------------------------ command line

def test_cli_writes_table_markdown_csv_and_figure(runs, tmp_path, capsys):
    out = tmp_path / "out"
    report.main([str(runs), "--figure", str(out / "fig.png"), "--csv", str(out / "t.csv"),
                 "--markdown", str(out / "t.md")])
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:4] == ["sampler", "iter", "seeds", "n"]

    md = (out / "t.md").read_text().splitlines()
    table = []
    for x in md:  # the first table (the over-seeds sections follow it)
        if not x.startswith("|") and table:
            break
        if x.startswith("|"):
            table.append(x)
    assert set(table[1].replace("|", "").replace("-", "").replace(":", "")) <= {" ", ""}   # the separator row
    body = [[c.strip() for c in x.strip("|").split("|")] for x in table[2:]]
    assert [(b[0], int(b[1])) for b in body] == [(s, t) for s in SAMPLERS for t in ITERATIONS]
    assert "| on_policy | 1 | 2 | 8 | 3.000 ± 1.095 | 2.500..3.500 |" in "\n".join(table)
    assert any("t_{0.975,n-1}" in x for x in md)

    with open(out / "t.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(SAMPLERS) * len(ITERATIONS)
    for r in rows:
        per_seed = [values(r["sampler"], s, int(r["iteration"]))["win"] for s in SEEDS]
        mean, ci = t_interval(per_seed[0] + per_seed[1])
        assert float(r["win_rate"]) == pytest.approx(mean, abs=1e-12)
        assert float(r["win_rate_ci"]) == pytest.approx(ci, abs=1e-12)
        assert r["seeds"] == "2" and r["seed_list"] == "0;1" and r["n"] == "8" and r["ci_method"] == "pooled"

    png, pdf = (out / "fig.png").read_bytes(), (out / "fig.pdf").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    assert pdf.startswith(b"%PDF") and len(pdf) > 5_000
    assert sorted(p.name for p in out.iterdir()) == ["fig.pdf", "fig.png", "t.csv", "t.md"]   # no temporaries


def test_figure_draws_each_sampler_in_its_colour(runs, tmp_path):
    import matplotlib.image as mpimg
    from matplotlib.colors import to_rgb

    rows = report.load_table(report.find_runs([runs]))
    paths = report.plot_reward_vs_kl(rows, tmp_path / "f.png")
    assert paths == [tmp_path / "f.png", tmp_path / "f.pdf"] and all(p.stat().st_size > 5_000 for p in paths)
    image = mpimg.imread(tmp_path / "f.png")[..., :3]
    for sampler in SAMPLERS:
        close = np.abs(image - np.array(to_rgb(style.SAMPLER_COLORS[sampler]))).max(-1) < 0.02
        assert close.sum() > 200, sampler
    unused = np.abs(image - np.array(to_rgb(style.SAMPLER_COLORS["gshf"]))).max(-1) < 0.02
    assert unused.sum() == 0


def test_sampler_colors():
    names = ("offline", "on_policy", "gshf", "mix_p", "mix_p_seq", "unif", "on_policy", "mix_r", "mix_p", "mix_p_star")
    assert set(names) <= set(style.SAMPLER_COLORS)
    pipeline = [style.SAMPLER_COLORS[s] for s in ("offline", "on_policy", "gshf", "mix_p", "mix_p_seq")]
    bandit = [style.SAMPLER_COLORS[s] for s in ("unif", "on_policy", "gshf", "mix_r", "mix_p", "mix_p_star")]
    assert len(set(pipeline)) == 5 and len(set(bandit)) == 6
    colors = style.sampler_colors(["on_policy", "zeta", "alpha"])
    assert colors["on_policy"] == style.SAMPLER_COLORS["on_policy"]
    assert len(set(colors.values())) == 3 and not {colors["zeta"], colors["alpha"]} & set(pipeline)


def test_sampler_colors_are_seaborns_colorblind_palette():
    import seaborn

    palette = seaborn.color_palette("colorblind").as_hex()
    # the colours every figure has used so far (written out here, so a palette change would show)
    assert style.SAMPLER_COLORS == {
        "offline": "#949494", "unif": "#949494", "on_policy": "#0173b2", "gshf": "#029e73", "mix_p": "#d55e00",
        "mix_p_seq": "#de8f05", "mix_r": "#cc78bc", "mix_p_star": "#ca9161", "borda": "#56b4e9", "all": "#949494",
        "random_subset": "#000000", "sams": "#cc78bc", "us": "#0173b2", "ae": "#029e73", "reward_gap": "#d55e00",
        "reward_gap_step": "#de8f05"}
    assert set(style.SAMPLER_COLORS.values()) - {"#000000"} <= set(palette)
    assert style.OTHER_COLORS == ("#fbafe4", "#ece133") and set(style.OTHER_COLORS) == (
        set(palette) - set(style.SAMPLER_COLORS.values()))
    code = "import sys, analysis.style; print('seaborn' in sys.modules, 'matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=ROOT).stdout.split() == ["False", "False"]


def _metrics_path(runs: Path) -> Path:
    return runs / "mix_p-seed1" / "metrics.jsonl"


def _corrupt_metrics(runs: Path, line: str) -> None:
    lines = _metrics_path(runs).read_text().splitlines()
    _metrics_path(runs).write_text(lines[0] + "\n" + line + "\n" + lines[2] + "\n")


BAD = {
    "missing path": (lambda runs, tmp: [str(tmp / "nope")], ["nope", "does not exist"]),
    "no runs": (lambda runs, tmp: [str(runs), str((tmp / "empty").mkdir() or tmp / "empty")],
                ["empty", "holds no pipeline run"]),
    "malformed metrics line": (lambda runs, tmp: _corrupt_metrics(runs, '{"iteration": 1, "reward_mean": ') or [str(runs)],
                               ["mix_p-seed1/metrics.jsonl line 2", "not valid JSON"]),
    "metrics line not an object": (lambda runs, tmp: _corrupt_metrics(runs, '[1, 2]') or [str(runs)],
                                   ["mix_p-seed1/metrics.jsonl line 2", "expected a JSON object, got list"]),
    "metrics line without iteration": (lambda runs, tmp: _corrupt_metrics(runs, '{"reward_mean": 1}') or [str(runs)],
                                       ["mix_p-seed1/metrics.jsonl line 2", "'iteration'"]),
    "metrics value not a number": (
        lambda runs, tmp: _corrupt_metrics(runs, '{"iteration": 1, "reward_mean": "high", "win_rate": 0.5, "kl": 0}')
        or [str(runs)], ["mix_p-seed1/metrics.jsonl line 2", "'reward_mean'"]),
    "malformed evaluations line": (
        lambda runs, tmp: (runs / "on_policy/seed0/iter_2/evaluate/evaluations.jsonl").write_text(
            '{"reward": 1, "win": 1, "kl": 0}\n{"reward": null, "win": 1, "kl": 0}\n') and [str(runs)],
        ["on_policy/seed0/iter_2/evaluate/evaluations.jsonl line 2", "'reward'"]),
    "same sampler and seed twice": (
        lambda runs, tmp: [str(runs), str(write_run(tmp / "copy", "on_policy", 1))], ["'on_policy' seed 1"]),
    "figure not a png": (lambda runs, tmp: [str(runs), "--figure", str(tmp / "out" / "fig.jpg")], ["--figure", ".png"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2_nothing_written(case, runs, tmp_path, capsys):
    make, parts = BAD[case]
    argv = make(runs, tmp_path)
    outputs = ["--csv", str(tmp_path / "out" / "t.csv"), "--markdown", str(tmp_path / "out" / "t.md")]
    if "--figure" not in argv:
        outputs += ["--figure", str(tmp_path / "out" / "fig.png")]
    with pytest.raises(SystemExit) as e:
        report.main(argv + outputs)
    assert e.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    for part in parts:
        assert part in lines[0], (part, lines[0])
    assert captured.out == ""
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_subprocess_help_and_exit_2(tmp_path):
    env_cmd = [sys.executable, "-m", "alignment.report"]
    res = subprocess.run(env_cmd + ["--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    for text in ("--figure", "--csv", "--markdown", "t_{0.975, n-1}", "seeds x", "sqrt(sum ci^2) / k"):
        assert text in res.stdout, text
    res = subprocess.run(env_cmd + [str(tmp_path / "nope"), "--csv", str(tmp_path / "t.csv")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [f"python -m alignment.report: error: RUNS: {str(tmp_path / 'nope')!r} "
                                       f"does not exist"]
    assert not (tmp_path / "t.csv").exists()


def test_older_runs_names_are_read_as_canonical(tmp_path):
    # runs written before the vocabulary (bandit/vocabulary.py) named on_policy "online" and mix_p "mixp"
    write_run(tmp_path / "a", "online", 0, iterations=(0, 1))
    write_run(tmp_path / "b", "mixp", 0, iterations=(0, 1))
    rows = report.load_table(report.find_runs([tmp_path]))
    assert list(dict.fromkeys(r["sampler"] for r in rows)) == ["on_policy", "mix_p"]
    write_run(tmp_path / "c", "on_policy", 0, iterations=(0, 1))  # the same sampler and seed under its new name
    with pytest.raises(ConfigError, match="both sampler 'on_policy' seed 0"):
        report.load_table(report.find_runs([tmp_path]))


# ------------------------------------------------------------------------------------------------ over seeds

def seed_mean(sampler, seed, t, field="reward"):
    return float(np.mean(values(sampler, seed, t)[field]))


def test_intervals_over_seeds_and_paired_differences_by_hand(runs):
    """Over seeds: the mean of the seeds' own means +- t over seeds; the pair's difference per seed, its paired
    t-test (scipy's ttest_rel) and, with one pair, Holm's adjustment is the p itself."""
    rows = report.load_table(report.find_runs([runs]))
    c = report.compare_seeds(rows)
    on2 = [seed_mean("on_policy", s, 2) for s in SEEDS]
    mix2 = [seed_mean("mix_p", s, 2) for s in SEEDS]
    row = row_of(rows, "mix_p", 2)
    assert row["reward_over_seeds"] == pytest.approx(np.mean(mix2))
    assert row["reward_over_seeds_ci"] == pytest.approx(t_interval(mix2)[1])
    assert c["final"] == 2
    (pair,) = c["paired"]
    assert (pair["a"], pair["b"], pair["seeds"]) == ("on_policy", "mix_p", 2)
    d = np.subtract(on2, mix2)   # mix_p's gain 1.3 > 0.8: -1.0 each seed, a constant difference
    assert pair["diff"] == pytest.approx(d.mean())
    # a constant per-seed difference has sd 0: the paired test is degenerate (scipy gives NaN), so we give a
    # noisy fixture below for p; here the MDD of a zero-spread difference is 0
    assert pair["mdd"] == pytest.approx(0.0, abs=1e-12)


def test_paired_test_holm_and_verdict_on_noisy_seeds():
    from analysis.seed_comparison import paired_differences, verdict

    a = {0: 1.0, 1: 2.0, 2: 1.5, 3: 2.5}
    b = {0: 0.1, 1: 1.4, 2: 0.2, 3: 1.9}
    c = {0: 1.1, 1: 1.9, 2: 1.7, 3: 2.2}
    rows = paired_differences({"a": a, "b": b, "c": c}, order=["a", "b", "c"])
    assert [(r["a"], r["b"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    ps = [stats.ttest_rel([x[s] for s in range(4)], [y[s] for s in range(4)]).pvalue for x, y in ((a, b), (a, c), (b, c))]
    for r, p in zip(rows, ps):
        assert r["p"] == pytest.approx(p)
    order = np.argsort(ps)   # Holm by hand: the k-th smallest times (3 - k), running maximum
    holm = [0.0] * 3
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (3 - k) * ps[i]))
        holm[i] = running
    assert [r["p_holm"] for r in rows] == pytest.approx(holm)
    # by hand: a - b = 0.9, 0.6, 1.3, 0.6 (p 0.0144, x3 = 0.043 < 0.05); a - c and b - c are not significant
    assert [r["significant"] for r in rows] == [True, False, False]
    assert [verdict(r) for r in rows] == ["a > b", "no detectable difference at this power",
                                          "no detectable difference at this power"]
    for r in rows:
        assert r["mdd_holm"] > r["mdd"] > 0   # the strictest Holm level needs a larger difference than 5%


def test_matched_kl_section_reads_each_seeds_path(runs):
    """The matched-KL reward of a seed at budget B is the interpolation of its own (KL, reward) path, by hand."""
    rows = report.load_table(report.find_runs([runs]))
    c = report.compare_seeds(rows, budgets=[0.5])
    (mix,) = [r for r in c["matched_kl"] if r["method"] == "mix_p"]
    for s in SEEDS:
        kl = [seed_mean("mix_p", s, t, "kl") for t in ITERATIONS]
        rw = [seed_mean("mix_p", s, t) for t in ITERATIONS]
        # the budget falls in the first segment: kl[0] = 0 < 0.5 < kl[1]
        assert kl[0] < 0.5 < kl[1]
        assert mix["values"][s] == pytest.approx(rw[0] + (0.5 - kl[0]) / (kl[1] - kl[0]) * (rw[1] - rw[0]))


def test_default_kl_budgets_are_reached_by_every_sampler():
    from analysis.seed_comparison import kl_budgets

    assert kl_budgets({"a": 0.978, "b": 1.4}) == [0.24, 0.48, 0.73, 0.97]   # 0.25 x 0.978 = 0.2445 -> 0.24 ...
    assert kl_budgets({"a": float("nan")}) == []


def test_report_prints_the_seed_sections_and_refuses_bad_budgets(runs, capsys):
    report.main([str(runs), "--kl-budgets", "0.5,1"])
    out = capsys.readouterr().out
    assert "Over seeds" in out and "Paired by seed" in out and "matched KL" in out
    assert "minimum detectable paired difference" in out
    with pytest.raises(SystemExit) as e:
        report.main([str(runs), "--kl-budgets", "0.5,-1"])
    assert e.value.code == 2
    assert "--kl-budgets" in capsys.readouterr().err


def test_the_figure_names_only_the_differences_significant_after_holm():
    from analysis.seed_comparison import paired_differences

    a = {0: 1.0, 1: 2.0, 2: 1.5, 3: 2.5}
    b = {0: 0.1, 1: 1.4, 2: 0.2, 3: 1.9}   # a - b: p 0.0144, significant after Holm over 1 pair
    c = {"final": 3, "paired": paired_differences({"a": a, "b": b}, order=["a", "b"]), "budgets": [0.5],
         "matched_paired": {0.5: paired_differences({"a": a, "b": dict(a)}, order=["a", "b"])}}
    assert report.significant_lines(c) == ["iteration 3: a > b"]
