"""YAML recipes: a file of defaults that the command line overrides.

A pipeline recipe (alignment/configs/toy.yaml) has one section per stage:

    policy: runs/alignment/sft/toy/model     # pipeline keys (alignment.pipeline's flags)
    generate: {num_responses: 4, ...}        # alignment.generate's flags
    annotate: {rule: max_min, ...}           # alignment.annotate's flags
    train: {loss: sigmoid, beta: 0.1, dpo: {warmup_ratio: 0.1}}   # alignment.train_dpo's flags (+ DPOConfig extras)
    evaluate: {temperature: 0.7, ...}        # alignment.evaluate's flags

`python -m alignment.train_dpo --config RECIPE` reads the `train:` section of such a file, or the whole file
when it has no sections. Keys are the flags' names with '_' (or '-'); an unknown key or a value of the wrong
type is one error naming the file, the key and what is allowed.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from runlog import ConfigError

STAGES = ("generate", "annotate", "train", "evaluate")


def load_yaml(path: str, field: str = "--config") -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{field}: no such file {path!r}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{field}: {path!r} is not UTF-8 text (byte {e.start}); save the recipe as UTF-8") from None
    except RecursionError:
        raise ConfigError(f"{field}: {path!r} is nested too deeply to be a recipe") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{field}: {path!r}{where} is not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{field}: {path!r} must hold a mapping of keys to values, not a {type(data).__name__}")
    return data


def _type_ok(value, kind) -> bool:
    args = typing.get_args(kind)
    if args:  # X | None
        return any(_type_ok(value, a) for a in args)
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is dict:
        return isinstance(value, dict)
    return isinstance(value, kind)


def _type_name(kind) -> str:
    args = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a mapping"}
    out = " or ".join(names.get(a, a.__name__) for a in args)
    return out + (" or null" if type(None) in typing.get_args(kind) else "")


def check_section(cls, mapping: dict, where: str, skip: tuple = ()) -> dict:
    """A recipe mapping checked against an Args dataclass: {field name: value}."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - set(skip)
    out = {}
    for key, value in mapping.items():
        name = str(key).replace("-", "_")
        if name in skip:
            raise ConfigError(f"{where}: key {key!r} is set by the caller itself (e.g. the pipeline); remove it")
        if name not in names:
            raise ConfigError(f"{where}: unknown key {key!r}; known: {', '.join(sorted(names))}")
        if isinstance(value, str) and _type_ok(1.0, hints[name]) and not _type_ok(value, hints[name]):
            try:  # YAML 1.1 reads 1e-6 (no dot) as a string; it means the number
                value = float(value)
            except ValueError:
                pass
        if not _type_ok(value, hints[name]):
            raise ConfigError(f"{where}: key {key!r} must be {_type_name(hints[name])}, got {value!r}")
        choices = next((f.metadata.get("choices") for f in dataclasses.fields(cls) if f.name == name), None)
        if choices and value not in choices:
            raise ConfigError(f"{where}: key {key!r} must be one of {', '.join(map(str, choices))}, got {value!r}")
        out[name] = float(value) if hints[name] in (float, float | None) and isinstance(value, int) else value
    return out


def config_path(argv) -> str | None:
    """The value of --config in an argument list (before the full parse, which needs the recipe's defaults)."""
    argv = list(argv)
    for i, a in enumerate(argv):
        if a == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config: expected a YAML file after --config")
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def stage_defaults(cls, argv, stage: str, skip: tuple = ()) -> dict:
    """Defaults for an entry point from `--config RECIPE` in argv: the recipe's `stage:` section (or the whole
    file when it has no stage sections), checked against the entry point's Args."""
    import sys

    path = config_path(sys.argv[1:] if argv is None else argv)
    if path is None:
        return {}
    data = load_yaml(path)
    if any(s in data for s in STAGES):
        section = data.get(stage) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"--config: {path!r} section {stage!r} must be a mapping")
        where = f"--config: {path!r} section {stage!r}"
    else:
        section, where = data, f"--config: {path!r}"
    return check_section(cls, section, where, skip=skip) | {"config": path}
