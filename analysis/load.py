"""Load run logs into tidy rows.

A run folder holds `run.json` (resolved config and provenance) and `metrics.jsonl` (one JSON object
per step or iteration). `load_runs` turns any number of them into one flat list of dicts -- one per
metrics line -- each carrying the run's config as `config.*` columns (nested dicts flattened with
dots, only scalar leaves) and `run` (the folder path), so rows from different runs can be grouped
and compared without going back to the files.

Malformed input is never silently dropped and never aborts the whole load: every bad line (invalid
JSON, or JSON that is not an object) and every unreadable `run.json` becomes a `Problem` naming the
file and line. With `strict=True` the first problem is raised instead, as a `LoadError`.
Blank lines are ignored (they carry nothing, and a trailing newline is normal).

Method names: the `sampler`, `selector` and `label` of every row are written back as their canonical names
(bandit/vocabulary.py), so logs written with older names (online, mixp, none, full, the bandit's `unif`
selector) compare with new ones.

Folder discovery: a path that is a run folder is loaded as is; any other folder is searched
recursively for run folders, skipping hidden folders (names starting with "."). The search stops at
a run folder: the stage runs nested inside a pipeline run (iter_*/generate, ...) are its parts, not
separate runs, unless `nested=True` or they are named directly. Paths containing glob characters
are expanded (`**` allowed). `find_runs` can also look for other marker files and only so many levels
down (alignment.report: pipeline runs, metrics.jsonl + pipeline.json, one or two levels down).

`read_jsonl` is the one JSON-lines reader: load_runs reads metrics.jsonl with it, and alignment.report
reads metrics.jsonl and evaluations.jsonl with it (strictly: its first Problem is an error there).
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from bandit.vocabulary import PAIR_SAMPLER, SELECTOR, normalise

RUN_FILE = "run.json"
METHOD_KEYS = (("sampler", PAIR_SAMPLER), ("selector", SELECTOR), ("label", None))  # columns that name a method
METRICS_FILE = "metrics.jsonl"
RUN_MARKERS = (RUN_FILE, METRICS_FILE)  # the files that make a folder a run folder
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Problem:
    """One malformed piece of input: `line` is 1-based, None when the problem is not about a line.

    A bad line of read_jsonl also says what is wrong in `kind` ("json": not valid JSON, "object": JSON
    but not an object) and `detail` (the decoder's message, or the type found), for callers that word
    their own errors."""
    file: str
    line: int | None
    reason: str
    kind: str = ""
    detail: str = ""

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.reason}"


class LoadError(ValueError):
    """Raised by `load_runs(strict=True)` on the first problem; `.problem` holds it."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


@dataclass
class Loaded:
    """Result of `load_runs`: the tidy rows, the run folders they came from, and the problems met."""
    rows: list[dict] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def frame(self):
        """The rows as a pandas DataFrame (one column per key; NaN where a row lacks it)."""
        import pandas as pd

        return pd.DataFrame.from_records(self.rows)


def is_run_folder(path: str | os.PathLike, markers=RUN_MARKERS) -> bool:
    """Whether `path` holds every file of `markers` (run.json and metrics.jsonl by default)."""
    p = Path(path)
    return all((p / m).is_file() for m in markers)


def _search(folder: Path, nested: bool, out: list[Path], markers, depth: int | None) -> None:
    if is_run_folder(folder, markers):
        out.append(folder)
        if not nested:
            return
    if depth == 0:
        return
    try:
        children = sorted(c for c in folder.iterdir() if c.is_dir() and not c.name.startswith("."))
    except OSError:
        return
    for child in children:
        _search(child, nested, out, markers, None if depth is None else depth - 1)


def find_runs(paths, nested: bool = False, problems: list[Problem] | None = None, markers=RUN_MARKERS,
              depth: int | None = None) -> list[str]:
    """Run folders under `paths` (a path or a list of them; folders, parents or globs), in order,
    without duplicates. Paths that match nothing are reported in `problems` when given.

    A run folder holds every file of `markers`; `depth` limits the search to that many levels below each
    path (0: the path itself only; None: no limit)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for raw in paths:
        raw = os.fspath(raw)
        if _GLOB_CHARS & set(raw):
            matches = [Path(m) for m in sorted(glob.glob(raw, recursive=True))]
        else:
            matches = [Path(raw)] if Path(raw).exists() else []
        before = len(found)
        for m in matches:
            if m.is_dir():
                _search(m, nested, found, markers, depth)
        if len(found) == before and problems is not None:
            problems.append(Problem(raw, None, "no run folder (run.json + metrics.jsonl) found"))
    seen, runs = set(), []
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            runs.append(str(f))
    return runs


def flatten(d: dict, prefix: str) -> dict:
    """Scalar leaves of a nested dict as {prefix.a.b: value}; lists and other containers are left out."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key))
        elif v is None or isinstance(v, (bool, int, float, str)):
            out[key] = v
    return out


def _config_columns(run_file: Path, report) -> dict:
    try:
        text = run_file.read_text()
    except OSError as e:
        report(Problem(str(run_file), None, f"cannot read: {e}"))
        return {}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        report(Problem(str(run_file), e.lineno, f"invalid JSON: {e.msg}"))
        return {}
    if not isinstance(meta, dict):
        report(Problem(str(run_file), None, f"expected a JSON object, got {type(meta).__name__}"))
        return {}
    config = meta.get("config", {})
    if not isinstance(config, dict):
        report(Problem(str(run_file), None, "'config' is not an object"))
        return {}
    return flatten(config, "config")


def _not_strict_json(token: str):
    # Python's json accepts Infinity/NaN, strict JSON (DESIGN section 5) does not: runlog.json_number writes null
    raise json.JSONDecodeError(f"{token} is not strict JSON (a missing value is null)", token, 0)


def read_json_strict(path: str | os.PathLike):
    """One strict JSON document (run.json): NaN and Infinity are refused as JSONDecodeError, as in the logs."""
    return json.loads(Path(path).read_text(), parse_constant=_not_strict_json)


def read_jsonl(path: str | os.PathLike, report) -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line of a JSON-lines file. A line that is not valid JSON or
    not a JSON object is passed to `report` as a Problem and left out (a `report` that raises stops there).
    An unreadable file raises OSError / UnicodeDecodeError."""
    out = []
    with Path(path).open() as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line, parse_constant=_not_strict_json)
            except json.JSONDecodeError as e:
                report(Problem(str(path), lineno, f"invalid JSON: {e.msg}", "json", e.msg))
                continue
            if not isinstance(obj, dict):
                got = type(obj).__name__
                report(Problem(str(path), lineno, f"expected a JSON object, got {got}", "object", got))
                continue
            out.append((lineno, obj))
    return out


# the numeric columns of the project's logs (bandit.metrics.METRICS, the pipeline's evaluation metrics and their
# intervals, the step counters); listed here rather than imported so that analysis loads no torch
METRIC_NAMES = {"param_diff", "value", "value_gap", "kl", "reward_mean", "win_rate", "step", "iteration", "seed",
                "loss", "pairs_used", "iters_to_tol"}
METRIC_SUFFIXES = ("_mean", "_ci", "_lo", "_hi", "_std", "_rate")


def is_metric_name(key: str) -> bool:
    return key in METRIC_NAMES or key.endswith(METRIC_SUFFIXES)


def _fits_float(v: int) -> bool:
    try:
        float(v)
    except OverflowError:
        return False
    return True


def _metric_rows(metrics_file: Path, base: dict, report) -> list[dict]:
    rows = []
    for lineno, obj in read_jsonl(metrics_file, report):
        huge = [k for k, v in obj.items() if isinstance(v, int) and not isinstance(v, bool) and not _fits_float(v)]
        if huge:  # exact in JSON, but no float holds it: every statistic on it would overflow or be silently inf
            report(Problem(str(metrics_file), lineno, f"{huge[0]!r}: integer too large for a number (beyond a float's range)"))
            continue
        flags = [k for k, v in obj.items() if isinstance(v, bool) and is_metric_name(k)]
        if flags:  # JSON true is not the number 1: a metric that is a bool is a broken line, not a value
            report(Problem(str(metrics_file), lineno, f"{flags[0]!r}: {obj[flags[0]]!r} where a number is meant"))
            continue
        for key, family in METHOD_KEYS:
            if key in obj:
                obj[key] = normalise(obj[key], family)
        rows.append({**base, **obj, "run": base["run"]})
    return rows


def load_runs(paths, strict: bool = False, nested: bool = False) -> Loaded:
    """Tidy rows of every run under `paths` (see the module docstring for discovery and problems).

    Each row is a metrics line plus `config.*` columns and `run`. With strict=False problems are
    collected in `Loaded.problems`; with strict=True the first one raises `LoadError`.
    """
    loaded = Loaded()

    def report(p: Problem) -> None:
        if strict:
            raise LoadError(p)
        loaded.problems.append(p)

    found_problems: list[Problem] = []
    loaded.runs = find_runs(paths, nested=nested, problems=found_problems)
    for p in found_problems:
        report(p)
    for run in loaded.runs:
        folder = Path(run)
        base = {**_config_columns(folder / RUN_FILE, report), "run": run}
        rows = _metric_rows(folder / METRICS_FILE, base, report)
        if not rows:  # an empty log is a dropped run: said, never silent
            report(Problem(str(folder / METRICS_FILE), None, "no metrics lines (empty file); run left out"))
        loaded.rows.extend(rows)
    return loaded
