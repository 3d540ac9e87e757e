"""Every entry point over a table of bad inputs (issue 14): exit code 2, one error line naming the flag or file, and
nothing written. The rows: tests/bad_inputs/rows_*.py."""
from __future__ import annotations

import importlib
import os
import pkgutil
from collections import Counter
from pathlib import Path

import pytest

import tests.bad_inputs as table

ROWS = [row for info in sorted(pkgutil.iter_modules(table.__path__), key=lambda m: m.name)
        if info.name.startswith("rows_")
        for row in importlib.import_module(f"tests.bad_inputs.{info.name}").ROWS]


def tree(folder: Path) -> dict:
    """Every file and folder under `folder`, with what changes when it is written."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root, name)
            st = p.lstat()
            out[str(p.relative_to(folder))] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("row", [pytest.param(r, id=f"{r.entry}:{r.id}", marks=[pytest.mark.slow] if r.slow else [])
                                 for r in ROWS])
def test_bad_input_is_one_line_exit_2_and_nothing_written(row, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "work"
    folder.mkdir()
    if row.setup is not None:
        row.setup(folder)
    argv = row.args(folder)
    monkeypatch.chdir(folder)  # default output places (runs/...) land here too
    for key, value in (row.env or {}).items():
        monkeypatch.setenv(key, value)
    before = tree(folder)
    main = importlib.import_module(row.entry).main
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_.value.code == 2, f"exit {exit_.value.code}; stderr:\n{err}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{err}"
    assert row.match in lines[0], f"{row.match!r} not in: {lines[0]}"
    assert tree(folder) == before, "the folder changed"


def test_every_entry_point_has_five_bad_inputs_of_at_least_three_classes():
    """The issue's coverage: each entry point, at least 5 rows, of different classes."""
    entries = {
        "bandit.examples.tabular", "bandit.examples.linear", "bandit.examples.offline", "bandit.examples.alpha_p",
        "alignment.prepare_data", "alignment.sft", "alignment.reward_model", "alignment.generate",
        "alignment.annotate", "alignment.select", "alignment.train_dpo", "alignment.evaluate", "alignment.report",
        "alignment.pipeline.driver", "alignment.pipeline.toy", "alignment.pipeline.offline", "alignment.pipeline.paper",
        "analysis.leaderboard", "paper_figures.make_all", "paper_figures.tabular_exact",
    }
    count = Counter(r.entry for r in ROWS)
    classes = {e: {r.klass for r in ROWS if r.entry == e} for e in entries}
    short = {e: count[e] for e in entries if count[e] < 5}
    few = {e: sorted(c) for e, c in classes.items() if len(c) < 3}
    assert not short, f"fewer than 5 bad inputs: {short}"
    assert not few, f"fewer than 3 classes: {few}"
    ids = Counter((r.entry, r.id) for r in ROWS)
    assert all(n == 1 for n in ids.values()), [k for k, n in ids.items() if n > 1]
