"""What kind of experiment a run folder holds, and which runs answer the same question (a "task").

Everything comes from `run.json`: the entry point that wrote it (`command[0]`: bandit/examples/tabular.py,
linear.py, offline.py, alignment/pipeline/__main__.py, or alignment/pipeline.py in older logs) gives the kind; the
config gives the task:

- bandit kinds (tabular, linear, offline): runs whose configs agree on every setting that changes the
  numbers (beta, lr, step rule, sizes, flip, ...) form one task; bookkeeping (name, out, seeds, device,
  which samplers were run, which settings) does not split tasks. Where runs of a kind differ, the task
  name spells out the differing values, e.g. "tabular (step=newton)".
- alignment pipeline runs: one task per recipe file (config.config's stem: "toy", "toy_selection").

The method compared within a task is the row's `selector` (bandit offline), `label` (pipeline runs made
with --label, e.g. the selection methods) or `sampler`.
Runs of one task may split seeds between them (pooled); where the same (method, seed) appears in two
runs (within one setting / env), the most recently started run is kept and a note says which was dropped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from analysis.load import RUN_FILE, Loaded, Problem, find_runs, flatten, load_runs, read_json_strict

BANDIT_KINDS = ("tabular", "linear", "offline")
KINDS = BANDIT_KINDS + ("pipeline",)
# config keys that do not change a run's numbers (or are per-row: setting, env), so never split a task
BOOKKEEPING = {"name", "out", "seeds", "seed", "device", "plots", "samplers", "selectors", "setting", "env"}


@dataclass
class RunInfo:
    path: str
    kind: str | None          # one of KINDS, or None for other runs (sft, reward_model, a single stage...)
    config: dict              # run.json's config, flattened to "a.b" keys (scalar leaves)
    started: str = ""

    @property
    def recipe(self) -> str:
        return Path(str(self.config.get("config") or "pipeline")).stem


def read_info(folder: str) -> RunInfo | Problem:
    """Kind, flat config and start time of one run folder, or the Problem that prevents reading them."""
    path = Path(folder) / RUN_FILE
    try:
        meta = read_json_strict(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return Problem(str(path), getattr(e, "lineno", None), f"cannot read run.json: {e}")
    if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
        return Problem(str(path), None, "run.json is not an object with a 'config' object")
    command = meta.get("command") or [""]
    entry = Path(str(command[0]))
    script = entry.parent.name if entry.stem == "__main__" else entry.stem  # python -m PACKAGE: the package
    kind = script if script in KINDS else None
    config = {k.removeprefix("config."): v for k, v in flatten(meta.get("config", {}), "config").items()}
    return RunInfo(str(folder), kind, config, str(meta.get("started", "")))


def _varying(infos: list[RunInfo]) -> list[str]:
    """Config keys (outside BOOKKEEPING and derived `resolved.*`) whose values differ between the runs."""
    keys = sorted({k for i in infos for k in i.config})
    keep = [k for k in keys if k not in BOOKKEEPING and not k.startswith("resolved.")]
    return [k for k in keep if len({repr(i.config.get(k)) for i in infos}) > 1]


def task_names(infos: list[RunInfo]) -> dict[str, str]:
    """run path -> task name, for runs of a known kind (see the module docstring)."""
    names = {}
    for kind in BANDIT_KINDS:
        mine = [i for i in infos if i.kind == kind]
        varying = _varying(mine)
        for i in mine:
            detail = ", ".join(f"{k}={i.config.get(k)}" for k in varying)
            names[i.path] = f"{kind} ({detail})" if detail else kind
    for i in infos:
        if i.kind == "pipeline":
            names[i.path] = i.recipe
    return names


def method_of(row: dict) -> str:
    """The method a row's run compares: its selector (a selection run), else its --label, else its sampler. Names
    are canonical already (load_runs writes aliases back as canonical names)."""
    for key in ("selector", "label", "sampler"):
        if row.get(key) is not None:
            return str(row[key])
    return "?"


@dataclass
class Task:
    """The rows of one task (all its runs, duplicates of (method, seed) resolved), with a `method` column."""
    name: str
    kind: str
    runs: list[RunInfo]
    rows: list[dict]
    notes: list[str] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r["method"] for r in self.rows))


def load_tasks(paths, kinds=KINDS) -> tuple[list[Task], list[Problem]]:
    """Every task of the given kinds under `paths`, with its rows. Malformed lines are Problems (see load)."""
    problems: list[Problem] = []
    infos = []
    for folder in find_runs(paths, problems=problems):
        info = read_info(folder)
        if isinstance(info, Problem):
            problems.append(info)
        elif info.kind in kinds:
            infos.append(info)
    names = task_names(infos)
    tasks: dict[str, Task] = {}
    for info in infos:
        name = names[info.path]
        tasks.setdefault(name, Task(name, info.kind, [], [])).runs.append(info)
    for task in tasks.values():
        _fill(task, problems)
    return list(tasks.values()), problems


def _fill(task: Task, problems: list[Problem]) -> None:
    # newest first, so that for a (method, seed) seen twice the newest run's rows are the ones kept
    task.runs.sort(key=lambda i: i.started, reverse=True)
    owner: dict[tuple, str] = {}
    dropped: dict[tuple[str, str], set] = {}
    for info in task.runs:
        loaded: Loaded = load_runs([info.path])
        problems.extend(loaded.problems)
        for row in loaded.rows:
            row["method"] = method_of(row)
            key = (row.get("setting"), row.get("env"), row["method"], row.get("seed"))
            first = owner.setdefault(key, info.path)
            if first != info.path:
                dropped.setdefault((info.path, first), set()).add(key)
                continue
            task.rows.append(row)
    for (old, new), keys in dropped.items():
        task.notes.append(f"{task.name}: {len(keys)} (method, seed) series of {old} also in the newer {new}; "
                          f"{new}'s kept")
    task.runs.sort(key=lambda i: i.started)
