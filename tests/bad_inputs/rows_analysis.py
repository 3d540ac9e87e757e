"""Bad inputs of the analysis part: analysis.leaderboard, alignment.report, paper_figures.make_all,
paper_figures.tabular_exact, paper_figures.selection_toy (issue 14)."""
from __future__ import annotations

import json
from pathlib import Path

from tests.bad_inputs import Row, write

LB = "analysis.leaderboard"


def _line(seed=0, step=0, value=1.0):
    return json.dumps({"setting": "exact", "sampler": "unif", "seed": seed, "step": step, "param_diff": value,
                       "value_gap": value, "value": -value, "kl": 0.0}) + "\n"


def tabular_run(metrics: str, run_json: str | None = None, name: str = "run"):
    """A setup writing one tabular bandit run folder `name` with the given metrics.jsonl text."""
    def setup(folder: Path) -> None:
        write(folder / name / "run.json", run_json if run_json is not None else json.dumps(
            {"config": {}, "command": ["bandit/examples/tabular.py"], "started": "2026-01-01T00:00:00"}))
        write(folder / name / "metrics.jsonl", metrics)
    return setup


GOOD = _line(0, 0, 1.0) + _line(0, 1, 0.5)

ROWS = [
    # class 5: a malformed log is an error with --strict, naming the file (and line)
    Row("empty-metrics", LB, ["run", "--strict"], "metrics.jsonl", 5, tabular_run("")),
    Row("truncated-last-line", LB, ["run", "--strict"], "metrics.jsonl:2", 5, tabular_run(GOOD[:-1] + GOOD[:25])),
    Row("non-json-line", LB, ["run", "--strict"], "metrics.jsonl:2", 5, tabular_run(_line() + "step 1 done\n")),
    Row("infinity-token", LB, ["run", "--strict"], "metrics.jsonl:2", 5,
        tabular_run(_line() + _line(0, 1).replace("0.5", "Infinity").replace("1.0", "Infinity"))),
    Row("nan-token", LB, ["run", "--strict"], "metrics.jsonl:1", 5,
        tabular_run(_line().replace('"kl": 0.0', '"kl": NaN'))),
    Row("run-json-does-not-parse", LB, ["run", "--strict"], "run.json", 3, tabular_run(GOOD, '{"config": {')),
    # class 3: inputs that are not what they claim
    Row("runs-missing", LB, ["nope"], "nope", 3),
    Row("runs-is-a-file", LB, ["f.txt"], "f.txt", 3, lambda f: write(f / "f.txt", "x")),
    # class 1: output file paths
    Row("markdown-is-a-folder", LB, ["run", "--markdown", "run"], "--markdown", 1, tabular_run(GOOD)),
    Row("csv-parent-is-a-file", LB, ["run", "--csv", "run/run.json/t.csv"], "--csv", 1, tabular_run(GOOD)),
    Row("csv-unwritable", LB, ["run", "--csv", "/proc/x/t.csv"], "--csv", 1, tabular_run(GOOD)),
    # class 2: numbers at the edges
    Row("level-one", LB, ["run", "--level", "1"], "--level", 2, tabular_run(GOOD)),
    Row("alpha-nan", LB, ["run", "--alpha", "nan"], "--alpha", 2, tabular_run(GOOD)),
    Row("metric-is-a-bool", LB, ["run", "--strict"], "where a number is meant", 2,
        tabular_run(_line() + _line(0, 1).replace('"param_diff": 1.0', '"param_diff": true'))),
]

# alignment.report: pipeline runs (metrics.jsonl + pipeline.json)
REPORT = "alignment.report"


def pipeline_run(metrics: str = '{"iteration": 0, "reward": 1.0, "kl": 0.0}\n', recipe: str = "{}"):
    def setup(folder: Path) -> None:
        write(folder / "p" / "metrics.jsonl", metrics)
        write(folder / "p" / "pipeline.json", recipe)
    return setup


ROWS += [
    Row("recipe-does-not-parse", REPORT, ["p"], "pipeline.json", 3, pipeline_run(recipe='{"iterations": ')),
    Row("metrics-non-json-line", REPORT, ["p"], "metrics.jsonl line 1", 3, pipeline_run(metrics="oops\n")),
    Row("metrics-nan-token", REPORT, ["p"], "metrics.jsonl line 1", 5,
        pipeline_run(metrics='{"iteration": 0, "reward": NaN, "kl": 0.0}\n')),
    Row("csv-is-a-folder", REPORT, ["p", "--csv", "p"], "--csv", 1, pipeline_run()),
    Row("markdown-parent-is-a-file", REPORT, ["p", "--markdown", "p/pipeline.json/t.md"], "--markdown", 1,
        pipeline_run()),
    Row("markdown-unwritable", REPORT, ["p", "--markdown", "/proc/x/t.md"], "--markdown", 1, pipeline_run()),
    Row("figure-not-png", REPORT, ["p", "--figure", "f.jpg"], "--figure", 1, pipeline_run()),
]

# the figure scripts share paper_figures.common's command line
FIGURE_ENTRIES = ("paper_figures.make_all", "paper_figures.tabular_exact", "paper_figures.selection_toy")
for _entry in FIGURE_ENTRIES:
    ROWS += [
        Row("runs-missing", _entry, ["--runs", "nope", "--out", "o"], "--runs", 3),
        Row("runs-is-a-file", _entry, ["--runs", "f", "--out", "o"], "--runs", 3, lambda f: write(f / "f", "x")),
        Row("out-is-a-file", _entry, ["--runs", "r", "--out", "r/run/run.json"], "--out", 1, tabular_run(GOOD, name="r/run")),
        Row("out-unwritable", _entry, ["--runs", "r", "--out", "/proc/x"], "--out", 1, tabular_run(GOOD, name="r/run")),
        Row("strict-empty-metrics", _entry, ["--runs", "r", "--out", "o", "--strict"], "metrics.jsonl", 5,
            tabular_run("", name="r/run")),
        Row("strict-infinity-token", _entry, ["--runs", "r", "--out", "o", "--strict"], "metrics.jsonl:1", 5,
            tabular_run(_line().replace("1.0", "Infinity"), name="r/run")),
        Row("strict-run-json-broken", _entry, ["--runs", "r", "--out", "o", "--strict"], "run.json", 3,
            tabular_run(GOOD, "[", name="r/run")),
    ]

ROWS.append(Row("metric-400-digit-int", LB, ["run", "--strict"], "metrics.jsonl:1", 2,
                tabular_run(_line().replace('"kl": 0.0', '"kl": 1' + "0" * 400))))
