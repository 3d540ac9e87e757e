"""Run directory and log writer, shared by every entry point.

A run is built in a hidden temporary folder beside its final place and renamed into place only when
it finishes, so a crash or a Ctrl-C never leaves a half-written run where analysis would read it.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

_VERSIONED = ("numpy", "scipy", "torch", "matplotlib", "seaborn", "transformers", "trl", "datasets",
              "accelerate", "vllm")


def _json_default(x):
    if hasattr(x, "item"):  # numpy / torch scalars
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _clean(x):
    """NaN/inf are not JSON: write them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def json_number(v) -> str:
    """A float as a JSON number for the bulk line writers (RunDir.log_lines): NaN and inf are null, as in dumps."""
    v = float(v)
    return repr(v) if math.isfinite(v) else "null"


def dumps(obj, **kw) -> str:
    return json.dumps(_clean(obj), default=_json_default, allow_nan=False, **kw)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, dumps(obj, indent=2) + "\n")


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def package_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


class RunDir:
    """One run: `with RunDir(root, name, config, seeds) as run: run.log(row); run.path("fig.png")`.

    Files are written into a temporary folder; on a clean exit run.json is completed and the folder
    replaces `root/name` (an older run of the same name is replaced). On an exception nothing is left.
    """

    def __init__(self, root, name: str, config: dict, seeds):
        self.final = Path(root) / name
        self.config = config
        self.seeds = list(seeds)
        self.started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.tmp: Path | None = None
        self._metrics = None

    def __enter__(self):
        if self.final.exists() and not self.final.is_dir():  # finish() would fail on it after all the work
            from runlog.cli import ConfigError

            raise ConfigError(f"--name: {str(self.final)!r} exists and is not a run folder (a file); choose another "
                              f"--name or --out")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.final.parent, prefix=f".{self.final.name}.", suffix=".tmp"))
        try:  # an interrupt here (a SIGTERM as the run starts) must not leave the folder: __exit__ would not run
            os.chmod(self.tmp, 0o777 & ~_umask())
            self._metrics = open(self.tmp / "metrics.jsonl", "w")
            atomic_write_json(self.tmp / "run.json", self._run_info(finished=None))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _run_info(self, finished, extra=None) -> dict:
        info = {"config": self.config, "seeds": self.seeds, "versions": package_versions(),
                "git_commit": git_commit(), "command": sys.argv, "started": self.started,
                "finished": finished}
        info.update(extra or {})
        return info

    def path(self, filename: str) -> Path:
        """Where to write an extra output file (figure, summary) of this run."""
        return self.tmp / filename

    def log(self, row: dict) -> None:
        self._metrics.write(dumps(row) + "\n")

    def log_lines(self, lines) -> None:
        """Write pre-serialised JSON lines (each without its newline); for bulk writers."""
        self._metrics.write("\n".join(lines) + "\n")

    def finish(self, **extra) -> Path:
        """Complete run.json (extra keys are added to it) and move the run into place."""
        self._metrics.close()
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        atomic_write_json(self.tmp / "run.json", self._run_info(finished=now, extra=extra))
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)
        self.tmp = None
        return self.final

    def __exit__(self, exc_type, exc, tb):
        if self._metrics is not None and not self._metrics.closed:
            self._metrics.close()
        if self.tmp is not None:  # not finished: an error or an interrupt; leave nothing behind
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        return False


def read_run(run_dir) -> dict:
    return json.loads((Path(run_dir) / "run.json").read_text())


def read_metrics(run_dir) -> list[dict]:
    """All rows of a run's metrics.jsonl (null values come back as NaN)."""
    rows = []
    with open(Path(run_dir) / "metrics.jsonl") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                rows.append({k: (math.nan if v is None else v) for k, v in row.items()})
    return rows
