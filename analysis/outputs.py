"""The file-path counterpart of runlog.check_out (which is for folders); belongs in runlog, kept here because
runlog/ is not this part's to edit."""

from __future__ import annotations

from pathlib import Path

from runlog import ConfigError, check_out


def check_out_file(path, flag: str) -> Path:
    """An output file path: not an existing folder, and its parent a folder we can write in (or can create).
    Checked before any work, so a bad path is one line at the start rather than a traceback after the run."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"{flag}: {str(path)!r} is a folder; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{flag}: {str(path)!r} cannot be written: {str(parent)!r} is a file, not a folder")
    check_out(parent, flag)
    return p
