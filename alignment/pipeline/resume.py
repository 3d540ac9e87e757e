"""The one resume rule of every orchestrator (the iterative driver, the offline recipes, the toy comparisons).

A stage writes one run folder (runlog.RunDir: built in a hidden temporary folder beside its place and renamed into
place when it is complete). Once the stage has returned, the orchestrator writes its done marker beside that folder:

    FOLDER/                 the stage's run (run.json, metrics.jsonl, ...)
    FOLDER.done             {"stage": ..., "finished": ...}: written last, atomically

A stage is done when both exist. A rerun skips the done stages and starts again at the first one that is not;
before running a stage it removes the temporary folders a killed attempt left beside FOLDER (RunDir's hidden
".FOLDER.*.tmp" folders, never resumable). Nothing else is deleted: a trainer's scratch folder (".FOLDER.trainer")
is the trainer's own, removed by it when it finishes.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from runlog import atomic_write_json


def marker(folder) -> Path:
    """The done marker of the run folder `folder`: FOLDER.done beside it."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}.done"


def is_done(folder) -> bool:
    """The stage that writes `folder` has finished: its marker and its run.json are both there."""
    folder = Path(folder)
    if not (marker(folder).exists() and (folder / "run.json").exists()):
        return False
    check_readable(folder)
    return True


def _strict(constant: str):
    raise ValueError(f"{constant} is not JSON")


def check_readable(folder: Path) -> None:
    """A finished stage's outputs must read back before a rerun trusts its marker (a disk filled up, a copy cut
    short): run.json parses, metrics.jsonl is strict JSON line by line. Otherwise one error naming the file; nothing
    is deleted on a guess: the user removes the stage's folder (and marker) to redo it."""
    from runlog import ConfigError

    redo = (f"remove {str(folder)!r} and {str(marker(folder))!r} to redo that stage, or rerun with --fresh to start "
            f"the run over")
    try:
        json.loads((folder / "run.json").read_text(), parse_constant=_strict)
    except (OSError, ValueError, UnicodeDecodeError):
        raise ConfigError(f"{str(folder / 'run.json')!r} of a finished stage does not read back as JSON; {redo}") from None
    metrics = folder / "metrics.jsonl"
    if metrics.exists():
        try:
            lines = metrics.read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            lines = ["\ufffd"]
        for i, line in enumerate(lines, 1):
            try:
                json.loads(line, parse_constant=_strict)
            except ValueError:
                raise ConfigError(f"{str(metrics)!r} line {i} of a finished stage is not strict JSON; {redo}") from None


def mark_done(folder, **info) -> None:
    """Write the done marker of `folder` (after the stage returned successfully)."""
    atomic_write_json(marker(folder), {**info, "finished": time.time()})


def forget(folder) -> None:
    """Remove the done marker of `folder` (a --fresh rerun): until the stage finishes again, it is not done."""
    marker(folder).unlink(missing_ok=True)


def clean_partial(folder) -> list[Path]:
    """Remove the temporary folders a killed attempt at the stage writing `folder` left beside it (".NAME.*.tmp",
    what runlog.RunDir builds a run in). Returns the removed paths."""
    folder = Path(folder)
    removed = []
    if folder.parent.is_dir():
        for p in folder.parent.iterdir():
            if p.name.startswith(f".{folder.name}.") and p.name.endswith(".tmp") and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed
