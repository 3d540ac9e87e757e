"""Prompt, generation and preference sets: loading (toy, local JSON/JSONL/Parquet, Hub), validation, writing.

Every problem found is a ConfigError naming the flag, the file and the row, so a command line stops
with one clear line and exit code 2.
"""
from __future__ import annotations

import math
from pathlib import Path

from runlog import ConfigError, atomic_write_text
from runlog.rundir import dumps

LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _load_rows(spec: str, field: str, split: str) -> list[dict]:
    """Rows of a local file (by suffix) or of a Hub dataset by name (needs a connected machine)."""
    import datasets

    path = Path(spec)
    if path.suffix in LOCAL_FORMATS:
        if not path.is_file():
            raise ConfigError(f"{field}: no such file {spec!r}")
        try:
            ds = datasets.load_dataset(LOCAL_FORMATS[path.suffix], data_files=str(path), split="train")
        except Exception as e:  # malformed JSON, unreadable parquet, ...
            raise ConfigError(f"{field}: cannot read {spec!r} ({str(e).splitlines()[0]})") from None
    elif path.exists():
        raise ConfigError(f"{field}: {spec!r} must be a .json, .jsonl or .parquet file, 'toy[:N]' or a Hub dataset name")
    else:
        try:
            ds = datasets.load_dataset(spec, split=split)
        except Exception as e:
            raise ConfigError(f"{field}: cannot load Hub dataset {spec!r} split {split!r} "
                              f"({str(e).splitlines()[0]})") from None
    return [dict(r) for r in ds]


def _is_messages(x) -> bool:
    return isinstance(x, list) and bool(x) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in x)


def check_text(value, where: str, name: str):
    """A non-empty string, or a non-empty list of {"role", "content"} messages."""
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError(f"{where}: field {name!r} is empty")
        return
    if not _is_messages(value):
        raise ConfigError(f"{where}: field {name!r} must be a non-empty string or a list of "
                          f"{{'role', 'content'}} messages, got {type(value).__name__}")


def validate_prompts(rows: list[dict], source: str, field: str = "--prompts") -> list[dict]:
    """Give each row an id (its index if missing), check texts and id uniqueness."""
    if not rows:
        raise ConfigError(f"{field}: {source} has no rows")
    seen = set()
    out = []
    for i, row in enumerate(rows):
        where = f"{field}: {source} row {i}"
        if "prompt" not in row:
            raise ConfigError(f"{where}: missing field 'prompt'")
        check_text(row["prompt"], where, "prompt")
        rid = str(row.get("id", i))
        if rid in seen:
            raise ConfigError(f"{where}: duplicate id {rid!r}")
        seen.add(rid)
        out.append(dict(row, id=rid))
    return out


def load_prompts(spec: str, field: str = "--prompts", split: str = "train", seed: int = 0) -> list[dict]:
    """"toy" / "toy:N" (N toy prompts of `split`, default 64), a local file, or a Hub dataset name."""
    if spec == "toy" or spec.startswith("toy:"):
        from alignment.toy import ToyTask

        n = spec.split(":", 1)[1] if ":" in spec else "64"
        if not n.isdigit() or int(n) < 1:
            raise ConfigError(f"{field}: 'toy:N' needs a count N >= 1, got {spec!r}")
        return ToyTask(seed).prompts(int(n), split)
    return validate_prompts(_load_rows(spec, field, split), repr(spec), field)


def check_reward(value, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: field {name!r} must be a finite number, got {value!r}")
    return float(value)


def write_jsonl(path, rows) -> None:
    """All rows at once, atomically: a temporary file renamed into place."""
    atomic_write_text(path, "".join(dumps(r) + "\n" for r in rows))
