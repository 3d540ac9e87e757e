"""Bad input gets one clear error line and exit code 2 (DESIGN.md section 6)."""
from __future__ import annotations

import argparse
import functools
import sys


class ConfigError(ValueError):
    """Invalid user input. The message names the field and what is allowed."""


def program_name() -> str:
    """How the user ran us: "python -m alignment.sft" for a module, else the script's file name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name and spec.name.endswith(".__main__"):  # python -m PACKAGE
        return f"python -m {spec.name[:-len('.__main__')]}"
    if spec is not None and spec.name and not spec.name.endswith("__main__"):
        return f"python -m {spec.name}"
    return sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "error"


class ArgParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("prog", program_name())
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse's own errors: unknown flag, bad type, ...
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def check_out(out, flag: str = "--out") -> None:
    """An output folder must be a folder we can write in, or a path we can create: checked before any work, so that a
    bad --out is one line at the start rather than a traceback after the run."""
    import os
    import tempfile
    from pathlib import Path

    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag}: {str(out)!r} exists and is not a folder")
    existing = path if path.exists() else next((p for p in path.absolute().parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"{flag}: {str(out)!r} cannot be created: {str(existing)!r} is a file, not a folder")
    if existing is None:
        return
    # a probe folder, removed at once: permissions alone miss read-only or virtual file systems (/proc), and root
    try:
        before = os.stat(existing)
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".probe-"))
        try:  # the probe leaves the folder as it was, its modification time included
            os.utime(existing, ns=(before.st_atime_ns, before.st_mtime_ns))
        except OSError:  # a folder we may write in but do not own: its time moves, nothing else
            pass
    except OSError as e:
        where = "" if existing == path else f" (its nearest existing folder {str(existing)!r})"
        raise ConfigError(f"{flag}: {str(out)!r}{where} is not writable ({e.strerror})") from None


def check_out_file(path, flag: str):
    """An output file (a table, a figure): not an existing folder, and its parent a folder we can write in or
    create (check_out's probe). Checked before any work. Returns the path."""
    from pathlib import Path

    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"{flag}: {str(path)!r} is a folder; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{flag}: {str(path)!r} cannot be written: {str(parent)!r} is a file, not a folder")
    check_out(parent, flag)
    return p


# a run is built in ".NAME.<8 random>.tmp" beside its place (runlog.RunDir): that name must fit the file system's
# 255-byte limit too
NAME_MAX_BYTES = 255 - len("..12345678.tmp")


def check_name(name: str, flag: str = "--name") -> None:
    """A run name becomes a folder name: no '/', not hidden, not blank, short enough for the file system."""
    if "/" in name or "\0" in name or name.startswith(".") or not name.strip():
        raise ConfigError(f"{flag}: {name!r} must be a plain folder name (no '/', not starting with '.')")
    if len(name.encode()) > NAME_MAX_BYTES:
        raise ConfigError(f"{flag}: {len(name.encode())} bytes long; a run name may have at most {NAME_MAX_BYTES} "
                          f"(the file system's 255 less the temporary folder's prefix and suffix)")


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, schedulers and `kill` send), raised where the work is, as Ctrl-C's KeyboardInterrupt
    is: every `with RunDir(...)` and cleanup handler of the interrupted work runs the same way."""


def terminate_as_interrupt():
    """Context in which SIGTERM raises Terminated in the main thread (the previous handler is restored on exit)."""
    import contextlib
    import signal
    import threading

    @contextlib.contextmanager
    def ctx():
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            raise Terminated()

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    return ctx()


def exit_on_config_error(main):
    """Decorate an entry point's main(): a ConfigError becomes one stderr line and exit code 2; SIGTERM unwinds the
    work as Ctrl-C does (every cleanup runs: no hidden temporary run folder is left) and exits 143 with one line;
    Ctrl-C exits 130 with one line."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            with terminate_as_interrupt():
                return main(*args, **kwargs)
        except ConfigError as e:
            print(f"{program_name()}: error: {e}", file=sys.stderr)
            sys.exit(2)
        except Terminated:
            print(f"{program_name()}: terminated (SIGTERM); what it was writing was removed", file=sys.stderr)
            sys.exit(128 + 15)
        except KeyboardInterrupt:  # Ctrl-C: the same unwinding, one line instead of a traceback, the shell's 130
            print(f"{program_name()}: interrupted (Ctrl-C); what it was writing was removed", file=sys.stderr)
            sys.exit(128 + 2)

    return wrapper


def arg(default, help: str, **meta):
    """A field of an Args dataclass: its default, its --help text, and optional "choices" / "metavar"."""
    import dataclasses

    return dataclasses.field(default=default, metadata={"help": help, **meta})


def parse_dataclass(cls, argv=None, description: str | None = None, defaults: dict | None = None):
    """Build a command line from an `Args`-style dataclass and parse it.

    Each field becomes --field-name with the field's default (or `defaults[name]`, e.g. from a YAML recipe,
    which the command line then overrides); metadata may give "help", "choices" and "metavar". bool fields
    become on/off switches; fields whose type is not str/int/float/bool (e.g. dict) are recipe-only.
    Returns an instance of `cls`.
    """
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    parser = ArgParser(description=description)
    recipe_only = {}
    for f in dataclasses.fields(cls):
        default = (defaults or {}).get(f.name, f.default)
        if f.default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING and f.name not in (defaults or {}):
            default = f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", "")
        if default is not None and not isinstance(default, bool):
            help_ += f" (default: {default})"
        kind = hints[f.name]
        args = typing.get_args(kind)
        base = next((a for a in args if a is not type(None)), kind) if args else kind
        if base not in (str, int, float, bool):
            recipe_only[f.name] = default
            continue
        if base is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_)
            continue
        parser.add_argument(flag, dest=f.name, type=base, default=default, help=help_,
                            choices=f.metadata.get("choices"), metavar=f.metadata.get("metavar"))
    return cls(**vars(parser.parse_args(argv)), **recipe_only)


def close_distributed() -> None:
    """Tear down torch.distributed's process group if this process started one (torchrun / accelerate launch),
    so that a process exits without its gloo threads still running (which aborts it: "terminate called without
    an active exception"). Loads nothing that is not loaded already."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def entry_point(args_cls, run, doc: str | None = None, defaults=None):
    """The `main(argv)` of an entry point whose work is `run(args) -> Path`: parse argv into `args_cls` (an Args
    dataclass; the first paragraph of `doc` is the --help description), call run, print "wrote PATH", and turn a
    ConfigError into one stderr line and exit code 2. Callers that already hold an Args (the pipeline) call
    run(args) directly. `defaults(argv) -> dict`, if given, supplies parser defaults (e.g. from a YAML recipe)."""
    description = doc.split("\n\n")[0] if doc else None

    @exit_on_config_error
    def main(argv=None):
        args = parse_dataclass(args_cls, argv, description=description,
                               defaults=defaults(argv) if defaults is not None else None)
        try:
            path = run(args)
        finally:
            close_distributed()
        if path is not None:
            print(f"wrote {path}")
        return path

    main.__doc__ = f"Command line of {run.__module__}.{run.__name__}: parse, run, print the written path."
    return main
