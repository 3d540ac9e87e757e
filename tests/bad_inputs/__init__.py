"""Issue 14's table of bad inputs: every entry point, each row one bad input of one class, run in-process.

A row names the entry point's module (its main(argv) is called, SystemExit caught), the argv, and a substring the
one error line must contain (the flag or file it names). `setup(tmp)` may write the row's input files into its
folder first; argv may be a function of that folder. The harness (tests/test_bad_inputs.py) runs each row with the
folder as the working directory and asserts: exit code 2, exactly one line on stderr that contains `match`, and no
file or folder added, removed or changed anywhere under the folder (the inputs are there too: they must be left
as they were).

The rows live in one module per part of the tree (rows_*.py, each a list ROWS), so the parts are extended apart.
Classes (issue 14): 1 output paths, 2 numbers at the edges, 3 files that are not what they claim, 4 validation
after writing, 5 silently accepted, 6 destructive or executable by surprise, 7 signals.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Row:
    id: str                                   # short, unique within its entry point: "out-is-a-file"
    entry: str                                # module whose main(argv) runs: "alignment.sft"
    argv: list | Callable[[Path], list]       # the command line, or a function of the row's folder
    match: str                                # a substring of the single error line (the flag or file named)
    klass: int                                # issue 14's class, 1..7
    setup: Callable[[Path], None] | None = None   # writes the row's input files into its folder
    slow: bool = False                        # loads torch models or runs work before failing: slow lane
    env: dict | None = None                   # environment variables set for the row (the shell scripts' SEEDS, ...)

    def args(self, folder: Path) -> list:
        return [str(a) for a in (self.argv(folder) if callable(self.argv) else self.argv)]


def write(path: Path, text: str | bytes) -> Path:
    """Write a row's input file (parents made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def pairs_file(folder: Path, rows: list[dict], name: str = "pairs.jsonl") -> Path:
    """A preference file of `rows` (each a dict) as JSON lines."""
    import json

    return write(folder / name, "".join(json.dumps(r) + "\n" for r in rows))
