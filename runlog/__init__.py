"""Shared run directory, log writer and command-line error handling (DESIGN.md section 5).

Every entry point of the project writes a run the same way:

    runs/<package>/<entry>/<name>/run.json       resolved config, seeds, versions, git commit, start time
    runs/<package>/<entry>/<name>/metrics.jsonl  one JSON object per step (sampler, seed, step, metrics)

and analysis/ reads only these files.
"""
from runlog.cli import (ConfigError, ArgParser, arg, check_name, check_out, check_out_file, entry_point, exit_on_config_error,
                        parse_dataclass)
from runlog.checks import SEED_MAX, available_memory, check_memory, check_number, check_positive, check_seed, check_ratio, is_ratio, resolve_device
from runlog.rundir import RunDir, atomic_write_json, atomic_write_text, json_number, read_metrics, read_run

__all__ = [
    "ConfigError", "ArgParser", "arg", "check_name", "check_out", "check_out_file", "entry_point", "exit_on_config_error", "parse_dataclass",
    "SEED_MAX", "available_memory", "check_memory", "check_number", "check_positive", "check_seed", "check_ratio", "is_ratio", "resolve_device",
    "RunDir", "atomic_write_json", "atomic_write_text", "json_number", "read_metrics", "read_run",
]
