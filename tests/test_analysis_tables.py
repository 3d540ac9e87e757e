"""analysis.runs / curves / iterations / leaderboard on synthetic run folders whose summaries are known in closed
form (t quantiles are the textbook values, written out), plus the leaderboard's command line."""

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.curves import convergence_table, curves, pairs_used_curves
from analysis.iterations import final_rows, frontier, iteration_table
from analysis.leaderboard import holm, leaderboard, main as leaderboard_main
from analysis.runs import load_tasks

REPO = Path(__file__).resolve().parents[1]
T_975_2 = 4.302652729911275   # t_{0.975, 2}: 3 seeds
T_975_1 = 12.706204736174707  # t_{0.975, 1}: 2 seeds


def write_run(folder: Path, script: str, config: dict, rows: list, started: str = "2026-01-01T00:00:00",
              extra_lines=()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps({"config": config, "command": [script], "started": started}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(extra_lines))
    return folder


def tabular_rows(sampler, setting, series_by_seed):
    return [{"setting": setting, "sampler": sampler, "seed": seed, "step": t, "param_diff": e, "value_gap": e,
             "value": -e, "kl": 0.0} for seed, errs in series_by_seed.items() for t, e in enumerate(errs)]


def pipeline_rows(sampler, seed, rewards, kls, label=None):
    rows = []
    for t, (r, k) in enumerate(zip(rewards, kls)):
        rows.append({"iteration": t, "sampler": sampler, "seed": seed, "step": t, "reward_mean": r, "reward_ci": 0.5,
                     "win_rate": 0.5 + 0.1 * t, "win_rate_ci": 0.05, "kl": k, "kl_ci": 0.1}
                    | ({"label": label} if label else {}))
    return rows


# ------------------------------------------------------------------------------------------------ runs / tasks

def test_kinds_tasks_and_newest_duplicate(tmp_path):
    base = {"beta": 3.0, "step": "fixed", "seeds": 2, "name": "a", "out": "x", "setting": "both"}
    write_run(tmp_path / "a", "bandit/examples/tabular.py", base, tabular_rows("unif", "exact", {0: [1.0, 0.5]}),
              started="2026-01-01T00:00:00")
    # same config, newer, same series (unif seed 0 exact) plus a new seed: its unif/0 replaces a's
    write_run(tmp_path / "b", "bandit/examples/tabular.py", base | {"name": "b", "setting": "exact"},
              tabular_rows("unif", "exact", {0: [2.0, 1.0], 1: [3.0, 1.5]}), started="2026-01-02T00:00:00")
    write_run(tmp_path / "c", "bandit/examples/tabular.py", base | {"step": "newton"},
              tabular_rows("unif", "exact", {0: [1.0, 0.1]}))
    write_run(tmp_path / "p", "/x/alignment/pipeline.py", {"config": "alignment/configs/toy.yaml"},
              pipeline_rows("online", 0, [0.0, 1.0], [0.0, 1.0]))
    write_run(tmp_path / "s", "alignment/sft.py", {}, [{"step": 0, "loss": 1.0}])  # not a compared kind
    tasks, problems = load_tasks([tmp_path])
    assert problems == []
    by = {t.name: t for t in tasks}
    assert set(by) == {"tabular (step=fixed)", "tabular (step=newton)", "toy"}  # name/out/seeds/setting ignored
    fixed = by["tabular (step=fixed)"]
    assert sorted((r["seed"], r["param_diff"]) for r in fixed.rows) == [(0, 1.0), (0, 2.0), (1, 1.5), (1, 3.0)]
    assert len(fixed.notes) == 1 and str(tmp_path / "b") in fixed.notes[0]
    assert by["toy"].kind == "pipeline" and by["toy"].methods == ["on_policy"]  # an older log's alias, mapped


def test_pipeline_runs_of_python_m_alignment_pipeline_and_of_older_logs_are_one_kind(tmp_path):
    """`python -m alignment.pipeline` records alignment/pipeline/__main__.py as command[0]; older logs recorded
    alignment/pipeline.py: both are pipeline runs, of one task per recipe."""
    write_run(tmp_path / "new", "/x/alignment/pipeline/__main__.py", {"config": "alignment/configs/toy.yaml"},
              pipeline_rows("mix_p", 0, [0.0, 1.0], [0.0, 1.0]))
    write_run(tmp_path / "old", "/x/alignment/pipeline.py", {"config": "alignment/configs/toy.yaml"},
              pipeline_rows("offline", 0, [0.0, 0.5], [0.0, 1.0]))
    write_run(tmp_path / "other", "/x/alignment/other/__main__.py", {}, [{"step": 0, "loss": 1.0}])
    tasks, problems = load_tasks([tmp_path])
    assert problems == [] and [(t.name, t.kind) for t in tasks] == [("toy", "pipeline")]
    assert sorted(tasks[0].methods) == ["mix_p", "offline"]


def test_unreadable_run_json_is_a_problem_and_the_rest_loads(tmp_path):
    write_run(tmp_path / "good", "bandit/examples/tabular.py", {}, tabular_rows("unif", "exact", {0: [1.0]}))
    bad = write_run(tmp_path / "bad", "bandit/examples/tabular.py", {}, tabular_rows("unif", "exact", {1: [1.0]}))
    (bad / "run.json").write_text('{"config": {},\n  "command": [oops]}')
    tasks, problems = load_tasks([tmp_path])
    assert [t.name for t in tasks] == ["tabular"] and [r["seed"] for r in tasks[0].rows] == [0]
    assert len(problems) == 1 and problems[0].file == str(bad / "run.json") and problems[0].line == 2


# ------------------------------------------------------------------------------------------------ curves

def test_curve_geometric_mean_and_t_band_on_log_axes(tmp_path):
    # step 0: errors 1e-2 and 1e-4 -> geometric mean 1e-3; log10 values -2, -4: sd = sqrt(2), half-width in logs
    # = t_{0.975,1} * sqrt(2) / sqrt(2) * ln(10)
    rows = tabular_rows("mix_p", "exact", {0: [1e-2, 1.0], 1: [1e-4, 1.0]})
    for r in rows:
        r["method"] = r["sampler"]
    c = curves(rows, "param_diff", log=True)["mix_p"]
    assert c.n == 2 and c.diverged == 0 and list(c.x) == [0, 1]
    assert c.mean[0] == pytest.approx(1e-3, rel=1e-12)
    assert math.log(c.hi[0] / c.mean[0]) == pytest.approx(T_975_1 * math.log(10), rel=1e-9)
    assert c.mean[1] == pytest.approx(1.0) and c.lo[1] == pytest.approx(1.0)  # no spread


def test_diverged_seed_left_out_and_counted():
    rows = tabular_rows("gshf", "exact", {0: [1.0, 2.0, 3.0], 1: [5.0]})
    rows.append({"setting": "exact", "sampler": "gshf", "seed": 1, "step": 1, "event": "diverged", "diverged_at": 1})
    for r in rows:
        r["method"] = r["sampler"]
    c = curves(rows, "param_diff")["gshf"]
    assert c.n == 1 and c.diverged == 1 and list(c.mean) == [1.0, 2.0, 3.0]


def test_pairs_used_curve_x_is_the_mean_over_seeds():
    rows = []
    for seed, per_step in ((0, 10), (1, 30)):
        rows += [{"method": "us", "seed": seed, "step": t, "pairs_used": per_step * t, "value_gap": 1.0 + seed}
                 for t in range(3)]
    c = pairs_used_curves(rows, log=False)["us"]
    assert list(c.x) == [0, 20, 40] and list(c.mean) == [1.5, 1.5, 1.5]
    assert c.hi[0] - c.mean[0] == pytest.approx(T_975_1 * math.sqrt(0.5) / math.sqrt(2))


def test_convergence_table_orders_and_iterations():
    linear = [0.5 ** t for t in range(40)]                    # order 1, <= 1e-8 first at t = 27
    quadratic = [0.5 ** (2 ** t) for t in range(6)]          # e_{t+1} = e_t^2: order 2, 0.5^32 <= 1e-8 at t = 5
    rows = tabular_rows("unif", "exact", {0: linear, 1: linear}) + tabular_rows("mix_p", "exact", {0: quadratic})
    for r in rows:
        r["method"] = r["sampler"]
    table = {r["method"]: r for r in convergence_table(rows)}
    assert table["unif"]["order_median"] == pytest.approx(1.0, abs=1e-9) and table["unif"]["quadratic_fraction"] == 0
    assert table["unif"]["iters_to_tol_median"] == 27 and table["unif"]["reached_tol"] == 2
    assert table["mix_p"]["order_median"] == pytest.approx(2.0, abs=1e-9) and table["mix_p"]["quadratic_fraction"] == 1
    assert table["mix_p"]["iters_to_tol_median"] == 5


# ------------------------------------------------------------------------------------------------ alignment tables

def test_iteration_table_over_seeds_and_single_seed_fallback():
    rows = (pipeline_rows("online", 0, [0.0, 1.0], [0.0, 1.0]) + pipeline_rows("online", 1, [0.0, 2.0], [0.0, 2.0])
            + pipeline_rows("online", 2, [0.0, 3.0], [0.0, 3.0]) + pipeline_rows("offline", 0, [0.0, 0.5], [0.0, 4.0]))
    for r in rows:
        r["method"] = r["sampler"]
    table = {(r["method"], r["iteration"]): r for r in iteration_table(rows)}
    on = table[("online", 1)]
    # seeds 1, 2, 3: mean 2, sd 1 -> half-width t_{0.975,2} / sqrt(3)
    assert on["seeds"] == 3 and on["ci_source"] == "seeds" and on["reward_mean"] == pytest.approx(2.0)
    assert on["reward_mean_hi"] - 2.0 == pytest.approx(T_975_2 / math.sqrt(3))
    off = table[("offline", 1)]
    assert off["ci_source"] == "eval" and (off["reward_mean_lo"], off["reward_mean_hi"]) == (0.0, 1.0)  # 0.5 +- 0.5
    assert [r["seed"] for r in final_rows(rows) if r["method"] == "online"] == [0, 1, 2]
    # frontier: the two iteration-0 cells (kl 0, reward 0: equal, neither beats the other) and online's (2, 2);
    # offline's (4, 0.5) is beaten by online's
    assert {(r["method"], r["iteration"]) for r in frontier(iteration_table(rows))} == {
        ("online", 0), ("offline", 0), ("online", 1)}


def test_frontier_hand_case():
    table = [{"kl": 0.0, "reward_mean": 0.0}, {"kl": 1.0, "reward_mean": 1.0}, {"kl": 2.0, "reward_mean": 0.5},
             {"kl": 3.0, "reward_mean": 2.0}, {"kl": 1.0, "reward_mean": 0.9}]
    assert [(r["kl"], r["reward_mean"]) for r in frontier(table)] == [(0.0, 0.0), (1.0, 1.0), (3.0, 2.0)]


# ------------------------------------------------------------------------------------------------ leaderboard

def test_holm_hand_case():
    assert holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan], nan_ok=True)


def _bandit_task(tmp_path):
    # empirical setting, final value_gap per seed: good = 1, 2, 3 ; bad = 11, 12, 14 (paired differences 10, 10, 11)
    good = {s: [9.0, v] for s, v in enumerate([1.0, 2.0, 3.0])}
    bad = {s: [9.0, v] for s, v in enumerate([11.0, 12.0, 14.0])}
    close = {s: [9.0, v] for s, v in enumerate([1.5, 1.0, 3.6])}
    rows = (tabular_rows("mix_p", "empirical", good) + tabular_rows("unif", "empirical", bad)
            + tabular_rows("gshf", "empirical", close))
    return write_run(tmp_path / "run", "bandit/examples/tabular.py", {"beta": 3.0}, rows)


def test_leaderboard_ranks_with_closed_form_ci_and_marks_significance(tmp_path):
    from scipy import stats

    _bandit_task(tmp_path)
    tasks, _ = load_tasks([tmp_path])
    rows = [r for r in leaderboard(tasks) if r["metric"] == "value_gap"]
    assert [r["method"] for r in rows] == ["mix_p", "gshf", "unif"] and [r["rank"] for r in rows] == [1, 2, 3]
    best = rows[0]
    assert best["mean"] == pytest.approx(2.0) and best["hi"] - 2.0 == pytest.approx(T_975_2 / math.sqrt(3))
    p_bad = stats.ttest_rel([1, 2, 3], [11, 12, 14]).pvalue
    p_close = stats.ttest_rel([1, 2, 3], [1.5, 1.0, 3.6]).pvalue
    assert rows[2]["test"] == "paired" and rows[2]["p"] == pytest.approx(p_bad)
    assert rows[2]["p_holm"] == pytest.approx(min(1, 2 * min(p_bad, p_close)))  # the smaller p times 2 comparisons
    assert rows[2]["significant"] and not rows[1]["significant"]
    assert rows[0]["task"] == "tabular / empirical"


def test_leaderboard_higher_is_better_and_welch_without_shared_seeds(tmp_path):
    from scipy import stats

    rows = []
    for seed, r in enumerate([1.0, 2.0, 3.0]):
        rows += pipeline_rows("mixp", seed, [0.0, r], [0.0, 1.0])
    for seed, r in zip([10, 11, 12], [0.0, 0.5, 0.4]):
        rows += pipeline_rows("offline", seed, [0.0, r], [0.0, 1.0])
    write_run(tmp_path / "p", "alignment/pipeline.py", {"config": "toy.yaml"}, rows)
    tasks, _ = load_tasks([tmp_path])
    board = [r for r in leaderboard(tasks, metrics=["reward_mean"])]
    assert [r["method"] for r in board] == ["mix_p", "offline"]  # mixp: an older name, logged as mix_p now
    assert board[1]["test"] == "welch"
    assert board[1]["p"] == pytest.approx(stats.ttest_ind([1, 2, 3], [0, 0.5, 0.4], equal_var=False).pvalue)
    assert board[0]["at"] == "final iteration 1"


def test_iters_to_tol_metric_censors_seeds_that_never_converge(tmp_path):
    rows = tabular_rows("mix_p", "exact", {0: [1.0, 1e-9], 1: [1.0, 1e-3, 1e-9]})
    rows += tabular_rows("unif", "exact", {0: [1.0, 0.5, 0.25], 1: [1.0, 0.5, 0.25]})
    write_run(tmp_path / "r", "bandit/examples/tabular.py", {}, rows)
    tasks, _ = load_tasks([tmp_path])
    board = {r["method"]: r for r in leaderboard(tasks, metrics=["iters_to_tol"])}
    assert board["mix_p"]["mean"] == pytest.approx(1.5) and board["mix_p"]["rank"] == 1
    assert board["unif"]["mean"] == pytest.approx(3.0)  # never: last step 2 + 1


def test_cli_markdown_csv_and_malformed_line(tmp_path, capsys):
    run = _bandit_task(tmp_path)
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write("{not json\n")
    leaderboard_main([str(tmp_path), "--csv", str(tmp_path / "out" / "board.csv"),
                      "--markdown", str(tmp_path / "out" / "board.md")])
    out, err = capsys.readouterr()
    n = sum(1 for _ in (run / "metrics.jsonl").open())
    assert f"metrics.jsonl:{n}: invalid JSON" in err   # located, and the rest still ranked
    assert "| 1 | mix_p |" in out and " *" in out and out == (tmp_path / "out" / "board.md").read_text()
    table = list(csv.DictReader(io.StringIO((tmp_path / "out" / "board.csv").read_text())))
    assert {r["method"] for r in table} == {"mix_p", "gshf", "unif"} and table[0]["rank"] == "1"


@pytest.mark.parametrize("args, words", [
    (["--metric", "loss"], ["--metric", "'loss'", "NAME:min"]),
    (["--metric", "loss:min"], ["--metric", "no run logs loss"]),
    (["--level", "1.5"], ["--level"]),
    (["--strict"], ["malformed", ":4:"]),
    (["--ci", "normal"], ["--ci", "bootstrap"]),
])
@pytest.mark.slow
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, words):
    run = _bandit_task(tmp_path)
    if "--strict" in args:
        lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
        (run / "metrics.jsonl").write_text("".join(lines[:3]) + "[1, 2]\n" + "".join(lines[3:]))
    out = tmp_path / "board.csv"
    proc = subprocess.run([sys.executable, "-m", "analysis.leaderboard", str(run), "--csv", str(out), *args],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert all(w in proc.stderr for w in words), proc.stderr
    assert not out.exists()


@pytest.mark.slow
def test_cli_missing_runs_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "analysis.leaderboard", str(tmp_path / "nope")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "no run folder" in proc.stderr and "nope" in proc.stderr


def test_leaderboard_without_strict_warns_once_per_bad_log_and_the_table_counts_them(tmp_path, capsys):
    # issue 14 class 5: runs with an empty / non-strict-JSON log are never dropped silently
    from analysis import leaderboard as lb

    write_run(tmp_path / "good", "bandit/examples/tabular.py", {}, tabular_rows("unif", "exact", {0: [1.0, 0.5]}))
    write_run(tmp_path / "empty", "bandit/examples/tabular.py", {}, [])
    write_run(tmp_path / "inf", "bandit/examples/tabular.py", {}, tabular_rows("unif", "exact", {1: [1.0]}),
              extra_lines=['{"setting": "exact", "sampler": "unif", "seed": 1, "step": 1, "value_gap": Infinity}\n'])
    out = tmp_path / "t.md"
    lb.main([str(tmp_path), "--markdown", str(out)])
    warnings = [l for l in capsys.readouterr().err.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 2
    assert any("empty" in w and "metrics.jsonl" in w for w in warnings)
    assert any("metrics.jsonl:2" in w and "Infinity" in w for w in warnings)
    assert "2 malformed or empty log(s) left out" in out.read_text()


def test_null_metric_value_is_missing_not_zero(tmp_path):
    # runlog.json_number writes null for inf/NaN: a reader takes it as missing (the row keeps None, no crash)
    from analysis.load import load_runs

    rows = tabular_rows("unif", "exact", {0: [1.0, 0.5]})
    rows[1]["value_gap"] = None
    write_run(tmp_path / "a", "bandit/examples/tabular.py", {}, rows)
    loaded = load_runs([tmp_path / "a"], strict=True)
    assert [r["value_gap"] for r in loaded.rows] == [1.0, None]
    from analysis import leaderboard as lb
    lb.main([str(tmp_path / "a"), "--format", "csv"])  # does not raise on the null
