"""The checks every entry point runs on its numeric flags and its device, each failing with one ConfigError that
names the flag and what is allowed (DESIGN.md section 6)."""
from __future__ import annotations

import math
import os
from pathlib import Path

from runlog.cli import ConfigError


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value) -> str:
    """A number for a message: integers exactly, floats shortly, and a 400-digit value cut to its size."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, int):
        text = str(value)
        return text if len(text) <= 24 else f"{text[:8]}... ({len(text)} digits)"
    return f"{value:g}"


def check_number(flag: str, value, low=None, high=None, low_open: bool = False, integer: bool = False) -> None:
    """A finite number (an integer with integer=True), at least `low` (above it with low_open) and at most `high`.
    `flag` without its dashes: "num-responses" reads --num-responses in the message."""
    # an int is exact however large (math.isfinite would overflow on a 400-digit one); a float must be finite
    bad = not _is_number(value) or (isinstance(value, float) and not math.isfinite(value)) \
        or (integer and value != int(value))
    if not bad and low is not None:
        bad = value <= low if low_open else value < low
    if not bad and high is not None:
        bad = value > high
    if bad:
        lo = "" if low is None else (f"> {_show(low)}" if low_open else f">= {_show(low)}")
        hi = "" if high is None else f"<= {_show(high)}"
        what = " and ".join(x for x in (lo, hi) if x)
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(f"--{flag}: must be {kind}{' ' + what if what else ''}, got {_show(value)}")


def check_positive(flag: str, value, integer: bool = False) -> None:
    """A finite number > 0, or an integer >= 1."""
    check_number(flag, value, low=1 if integer else 0, low_open=not integer, integer=integer)


def is_ratio(value) -> bool:
    """A share of a batch or a data set: a finite number in (0, 1]."""
    return _is_number(value) and math.isfinite(value) and 0 < value <= 1


def check_ratio(flag: str, value) -> None:
    if not is_ratio(value):
        raise ConfigError(f"--{flag}: must be in (0, 1], got {value}")


def resolve_device(name: str, flag: str = "--device", types: tuple[str, ...] | None = None, why: str = "",
                   first_gpu_only: bool = False, auto=None):
    """A --device value as a torch.device: cpu, cuda, cuda:N (or mps).

    "auto" is `auto` when given (e.g. this accelerate process's device), else cuda when there is a GPU, else cpu.
    `types` limits the device types (the bandit needs float64: cpu and cuda; `why` says so in the message);
    first_gpu_only refuses cuda:N for N > 0 (the trainers take the first visible GPU)."""
    import torch

    if name == "auto":
        if auto is not None:
            return auto
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{flag}: {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{flag}: {name!r} requested but no CUDA device is available; use cpu")
    if types is not None and device.type not in types:
        raise ConfigError(f"{flag}: {name!r} is not supported{why}; use {' or '.join(types)}")
    if first_gpu_only and device.type == "cuda" and device.index not in (None, 0):
        raise ConfigError(f"{flag}: {name!r}: the trainer uses the first visible GPU; "
                          f"run with CUDA_VISIBLE_DEVICES={device.index} and --device cuda")
    return device


# numpy's legacy seeding (np.random.seed, which transformers.set_seed and TRL call) takes 0 <= seed < 2**32; torch
# takes more, python's random any integer: the narrowest one bounds every seed we hand on
SEED_MAX = 2**32 - 1


def check_seed(flag: str, value, derived=None, how: str = "") -> int:
    """A seed: an integer in [0, SEED_MAX]. `derived(seed)`, if given, is the largest seed an entry point derives
    from it (the pipeline's seed x 1000 + iteration; `how` says so), which must fit too. Returns the seed.
    `flag` without its dashes, as in check_number."""
    check_number(flag, value, low=0, high=SEED_MAX, integer=True)
    if derived is not None and derived(int(value)) > SEED_MAX:
        low, high = 0, int(value)  # derived grows with the seed: the largest seed that fits, by bisection
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if derived(mid) <= SEED_MAX else (low, mid - 1)
        raise ConfigError(f"--{flag}: {value} is too large: {how or 'the seeds derived from it'} must stay <= "
                          f"{SEED_MAX} (numpy's limit), so at most {low}")
    return int(value)


def available_memory() -> int:
    """Bytes this machine can still give (MemAvailable of /proc/meminfo, else free pages from os.sysconf)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(what: str, nbytes: int, flags: str) -> None:
    """Refuse, with the estimate, a size whose big tensors cannot fit in the available memory, before allocating.
    `nbytes` is an exact int (400-digit sizes never go through float)."""
    free = available_memory()
    if nbytes > free:
        est = f"{nbytes / 2**30:.3g} GiB" if nbytes < 2**1000 else f"about 2**{nbytes.bit_length() - 1} bytes"
        raise ConfigError(f"{flags}: {what} need an estimated {est}, more than the {free / 2**30:.3g} GiB of memory "
                          f"available; lower them")
