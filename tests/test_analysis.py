"""analysis/: loading run logs into tidy rows, and the summaries computed from them.

Logs are synthetic run folders written to tmp_path, with values whose summaries are known in
closed form; one test loads a real bandit run from runs/bandit/tabular when present.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from analysis import load
from analysis import (LoadError, aggregate, convergence_order, iterations_to, load_runs, mean_ci, median, select_last,
                      t_interval)

REPO = Path(__file__).resolve().parents[1]


def write_run(folder: Path, config: dict, rows: list, extra_lines: list[str] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps({"config": config, "seeds": [0, 1]}))
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def bandit_rows(sampler, seeds, finals, steps=3):
    """Rows like bandit/examples/common.py metric_lines: value_gap decays to `finals[seed]` at the last step."""
    rows = []
    for seed, final in zip(seeds, finals):
        for t in range(steps):
            rows.append({"setting": "exact", "sampler": sampler, "seed": seed, "step": t,
                         "param_diff": 2.0 ** -t, "value_gap": final + (steps - 1 - t), "kl": 0.0})
    return rows


# ---------------------------------------------------------------- loading

def test_load_attaches_config_and_run(tmp_path):
    run = write_run(tmp_path / "r1", {"beta": 3.0, "samplers": "unif", "resolved": {"iters": 100, "list": [1]}},
                    bandit_rows("unif", [0, 1], [1.0, 2.0]))
    loaded = load_runs(run)
    assert loaded.problems == [] and loaded.runs == [str(run)]
    assert len(loaded.rows) == 6
    row = loaded.rows[0]
    assert row["run"] == str(run) and row["sampler"] == "unif" and row["seed"] == 0 and row["step"] == 0
    assert row["config.beta"] == 3.0 and row["config.samplers"] == "unif"
    assert row["config.resolved.iters"] == 100 and "config.resolved.list" not in row  # scalars only
    frame = loaded.frame()
    assert frame.shape[0] == 6 and frame.groupby("seed")["value_gap"].min().tolist() == [1.0, 2.0]


def test_discovery_parents_globs_hidden_and_nested(tmp_path):
    a = write_run(tmp_path / "exp" / "a", {"x": 1}, [{"step": 0, "v": 1.0}])
    b = write_run(tmp_path / "exp" / "deep" / "b", {"x": 2}, [{"step": 0, "v": 2.0}])
    write_run(tmp_path / "exp" / ".hidden" / "c", {"x": 3}, [{"step": 0, "v": 3.0}])
    stage = write_run(a / "iter_0" / "train", {"x": 4}, [{"step": 0, "v": 4.0}])  # a pipeline stage

    assert load_runs(tmp_path / "exp").runs == [str(a), str(b)]
    assert load_runs(tmp_path / "exp", nested=True).runs == [str(a), str(stage), str(b)]
    assert load_runs(str(tmp_path / "exp" / "*")).runs == [str(a), str(b)]
    assert load_runs([a, a, str(tmp_path / "exp" / "*")]).runs == [str(a), str(b)]  # no duplicates
    assert load_runs(stage).runs == [str(stage)]  # a stage named directly is loaded

    missing = load_runs(tmp_path / "nope")
    assert missing.rows == [] and len(missing.problems) == 1 and missing.problems[0].file.endswith("nope")


def test_discovery_by_other_markers_and_depth(tmp_path):
    """find_runs(markers=..., depth=...): how alignment.report finds pipeline runs (metrics.jsonl + pipeline.json)."""
    def pipeline_run(folder):
        folder.mkdir(parents=True)
        (folder / "metrics.jsonl").write_text('{"iteration": 0}\n')
        (folder / "pipeline.json").write_text("{}")
        return str(folder)

    one, two = pipeline_run(tmp_path / "a"), pipeline_run(tmp_path / "b" / "c")
    pipeline_run(tmp_path / "d" / "e" / "f")                                          # three levels down
    markers = ("metrics.jsonl", "pipeline.json")
    assert load.find_runs(tmp_path) == []                                             # no run.json: not a run
    assert load.find_runs(tmp_path, markers=markers) == [one, two, str(tmp_path / "d" / "e" / "f")]
    assert load.find_runs(tmp_path, markers=markers, depth=2) == [one, two]
    assert load.find_runs(tmp_path, markers=markers, depth=1) == [one]
    assert load.find_runs(one, markers=markers, depth=0) == [one]
    assert load.find_runs(tmp_path, markers=markers, depth=0) == []


def test_read_jsonl_reports_each_bad_line(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"a": 1}\n\n{"a": \n[1]\n{"a": 2}\n')
    problems = []
    assert load.read_jsonl(f, problems.append) == [(1, {"a": 1}), (5, {"a": 2})]
    assert [(p.line, p.kind) for p in problems] == [(3, "json"), (4, "object")]
    assert problems[0].reason.startswith("invalid JSON") and problems[0].detail in problems[0].reason
    assert problems[1].detail == "list" and problems[1].file == str(f)


def test_malformed_lines_reported_with_file_and_line(tmp_path):
    good = bandit_rows("unif", [0], [1.0], steps=2)  # lines 1-2
    run = write_run(tmp_path / "r", {"beta": 1.0}, good, extra_lines=["{not json", "", "[1, 2]", json.dumps(good[0])])
    metrics = str(run / "metrics.jsonl")

    loaded = load_runs(run)
    assert len(loaded.rows) == 3  # the good lines, including the one after the bad ones
    assert [(p.file, p.line) for p in loaded.problems] == [(metrics, 3), (metrics, 5)]  # blank line 4 ignored
    assert "invalid JSON" in loaded.problems[0].reason and "list" in loaded.problems[1].reason

    with pytest.raises(LoadError) as err:
        load_runs(run, strict=True)
    assert err.value.problem.line == 3 and f"{metrics}:3" in str(err.value)


def test_bad_run_json_reported_but_rows_kept(tmp_path):
    run = write_run(tmp_path / "r", {}, [{"step": 0, "v": 1.0}])
    (run / "run.json").write_text('{"config": {\n  "beta": }\n')
    loaded = load_runs(run)
    assert len(loaded.rows) == 1 and loaded.rows[0]["run"] == str(run)
    assert len(loaded.problems) == 1
    assert loaded.problems[0].file == str(run / "run.json") and loaded.problems[0].line == 2
    with pytest.raises(LoadError, match="run.json:2"):
        load_runs(run, strict=True)


# ---------------------------------------------------------------- intervals and aggregation

def test_t_interval_matches_scipy():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 9.0])
    for level in (0.9, 0.95, 0.99):
        m, lo, hi = mean_ci(x, level=level)
        ref_lo, ref_hi = stats.t.interval(level, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
        assert m == pytest.approx(4.0) and lo == pytest.approx(ref_lo) and hi == pytest.approx(ref_hi)
    assert mean_ci([7.0, 7.0, 7.0]) == (7.0, 7.0, 7.0)  # no spread, zero width
    m, lo, hi = mean_ci([3.0])
    assert m == 3.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in mean_ci([]))
    assert median([3.0, 1.0, float("nan"), 2.0]) == 2.0


def test_t_interval_half_width_and_non_finite_values():
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 9.0]   # mean 4, squared deviations 9+4+1+0+1+25 = 40, sd sqrt(8)
    for level in (0.9, 0.95):
        m, half = t_interval(x, level)
        assert m == pytest.approx(4.0)
        assert half == pytest.approx(stats.t.ppf((1 + level) / 2, 5) * math.sqrt(8) / math.sqrt(6), rel=1e-12)
    assert t_interval([7.0, 7.0]) == (7.0, 0.0)
    m, half = t_interval([3.0])
    assert m == 3.0 and math.isnan(half)
    assert all(math.isnan(v) for v in t_interval([]))
    # kept by default: a bad value shows in the result instead of vanishing from it
    assert all(math.isnan(v) for v in t_interval([1.0, float("nan"), 3.0]))
    m, half = t_interval([1.0, float("inf"), 3.0])
    assert m == math.inf and math.isnan(half)
    # dropped on request, as mean_ci does: the interval of the finite values
    m, half = t_interval([1.0, float("nan"), 3.0, float("-inf")], drop_nonfinite=True)
    assert m == pytest.approx(2.0) and half == pytest.approx(stats.t.ppf(0.975, 1) * math.sqrt(2) / math.sqrt(2))
    assert mean_ci([1.0, float("nan"), 3.0])[1] == pytest.approx(2.0 - stats.t.ppf(0.975, 1))


def test_bootstrap_contains_mean_shrinks_and_is_seeded():
    rng = np.random.default_rng(1)
    widths = []
    for n in (10, 100, 1000):
        x = rng.normal(5.0, 2.0, size=n)
        m, lo, hi = mean_ci(x, method="bootstrap", seed=0)
        assert lo < m < hi and m == pytest.approx(x.mean())
        # the percentile interval approximates the normal one, half-width ~ 1.96 s / sqrt(n)
        assert (hi - lo) / 2 == pytest.approx(1.96 * x.std(ddof=1) / math.sqrt(n), rel=0.3)
        widths.append(hi - lo)
        assert mean_ci(x, method="bootstrap", seed=0) == (m, lo, hi)
    assert widths[0] > widths[1] > widths[2]
    with pytest.raises(ValueError):
        mean_ci([1.0, 2.0], method="nope")


def test_aggregate_final_values_from_logs(tmp_path):
    finals = {"unif": [1.0, 2.0, 3.0, 4.0, 5.0], "gshf": [0.5, 0.5, 0.5, 0.5, 0.5]}
    rows = []
    for sampler, f in finals.items():
        rows += bandit_rows(sampler, range(5), f)
    diverged = json.dumps({"setting": "exact", "sampler": "unif", "seed": 9, "step": 1,
                           "event": "diverged", "diverged_at": 1})
    write_run(tmp_path / "r", {"beta": 3.0}, rows, extra_lines=[diverged])

    loaded = load_runs(tmp_path)
    assert loaded.problems == []
    final = select_last(loaded.rows, by=["run", "sampler", "seed"], metric="value_gap")
    assert len(final) == 10 and all(r["step"] == 2 for r in final)

    summary = {s["sampler"]: s for s in aggregate(final, by=["sampler"], metric="value_gap")}
    u = summary["unif"]
    ref_lo, ref_hi = stats.t.interval(0.95, 4, loc=3.0, scale=math.sqrt(2.5) / math.sqrt(5))
    assert (u["n"], u["mean"], u["median"]) == (5, 3.0, 3.0)
    assert u["lo"] == pytest.approx(ref_lo) and u["hi"] == pytest.approx(ref_hi)
    g = summary["gshf"]
    assert (g["n"], g["mean"], g["lo"], g["hi"]) == (5, 0.5, 0.5, 0.5)

    # over all rows, the divergence event has no value_gap: counted as missing, not as a value
    per_step = aggregate(loaded.rows, by=["sampler", "step"], metric="value_gap", method="bootstrap")
    u1 = next(s for s in per_step if s["sampler"] == "unif" and s["step"] == 1)
    assert u1["n"] == 5 and u1["n_missing"] == 1 and u1["mean"] == pytest.approx(4.0)


# ---------------------------------------------------------------- convergence

def test_order_recovers_linear_and_quadratic():
    linear = 0.5 ** np.arange(40)  # e_{t+1} = 0.5 e_t, reaches ~1e-12
    assert convergence_order(linear) == pytest.approx(1.0)
    assert convergence_order(linear, tail=None) == pytest.approx(1.0)
    quad = [0.5]
    while quad[-1] > 1e-30:
        quad.append(quad[-1] ** 2)  # e_{t+1} = e_t^2; the tail drops below the float64 floor
    assert convergence_order(quad) == pytest.approx(2.0)
    assert math.isnan(convergence_order([1.0, 0.99, 0.98, 0.97]))  # spans < 1 decade: no order
    assert math.isnan(convergence_order([1.0]))


def test_iterations_to():
    e = [1.0, 0.1, float("nan"), 1e-3, 1e-6]
    assert iterations_to(e, 1e-2) == 3.0
    assert iterations_to(e, 1.0) == 0.0
    assert iterations_to(e, 1e-9) == math.inf


# ---------------------------------------------------------------- a real run

def test_real_bandit_run():
    runs = sorted((REPO / "runs" / "bandit" / "tabular").glob("*/metrics.jsonl"), key=lambda p: p.stat().st_size)
    if not runs or not (runs[0].parent / "run.json").is_file():
        pytest.skip("no bandit run in runs/bandit/tabular")
    loaded = load_runs(runs[0].parent)
    assert loaded.problems == [] and loaded.rows
    assert all("sampler" in r and "seed" in r and "run" in r for r in loaded.rows)
    assert any("value_gap" in r for r in loaded.rows)
    assert any(k.startswith("config.") for k in loaded.rows[0])
    final = select_last(loaded.rows, by=["setting", "sampler", "seed"], metric="value_gap")
    summary = aggregate(final, by=["setting", "sampler"], metric="value_gap")
    assert summary and all(s["n"] >= 1 and math.isfinite(s["mean"]) for s in summary)
