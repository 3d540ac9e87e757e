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
    return marker(folder).exists() and (folder / "run.json").exists()


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
