"""What the recipe scripts (alignment/*.sh) share: their command line, reading a recipe's values, and a recipe as a
list of commands that are checked, printed and run in order with the one resume rule (alignment/pipeline/resume.py).

A script's command line: its own flags, then optionally `--` and flags passed on to one of its stages. A bad flag is
one line `NAME.sh: error: ...` on stderr and exit code 2, before anything is read, loaded or written.

A recipe is a list of Command(label, folder, words): `words` is the command line (PYTHON -m alignment.MODULE ... or
LAUNCHER ... -m alignment.MODULE ...) and `folder` the run folder it writes.
    check_commands  every command through its own module's parser and checks (alignment.pipeline.dryrun), in this
                    process, loading nothing; --dry-run prints each one after a comment line naming it
    run_commands    the same check first (a bad flag stops the recipe before its first GPU hour), then the commands
                    in order, each skipped when its folder is done (FOLDER and FOLDER.done), else run and marked done
"""
from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from alignment.pipeline import resume
from runlog import SEED_MAX, ArgParser, ConfigError

PYTHON = sys.executable  # the commands run with the interpreter that runs the script (its wrapper's $PYTHON)
SCRIPTS = "alignment"  # where the wrappers live (the repository root is the working directory)


def script_path(name: str) -> str:
    """The wrapper script of a recipe, as users type it: alignment/NAME.sh."""
    return f"{SCRIPTS}/{name}.sh"


class StageFailed(Exception):
    """A command of the recipe exited with a non-zero code: the script stops with that code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------------------------ command line

def script_parser(script: str) -> ArgParser:
    """An argparse parser for the script `script` ("sams.sh"): its errors are one line `sams.sh: error: ...` and
    exit code 2; no abbreviations; --help is the script's own usage text (see parse_script)."""
    return ArgParser(prog=script, add_help=False, allow_abbrev=False)


def parse_script(parser: ArgParser, argv, usage: str, passthrough: bool = True, positional: tuple = ()):
    """(args, the words after `--`). -h / --help (before `--`) prints `usage` and exits 0. Without passthrough a
    `--` is refused like any unknown argument. Empty values of value flags are refused ("--out needs a value"), so
    a flag's dest must be its name and a value flag's default None or a non-empty text; `positional` names the
    dests of positional arguments (their empty value is the one-line error "DEST: empty")."""
    argv = list(argv)
    cut = argv.index("--") if passthrough and "--" in argv else len(argv)
    own, extra = argv[:cut], argv[cut + 1:]
    if any(a in ("-h", "--help") for a in own):
        print(usage.rstrip("\n"))
        sys.exit(0)
    args = parser.parse_args(own)
    for name, value in vars(args).items():  # (value flags default to None, never to "")
        if isinstance(value, str) and not value.strip():
            parser.error(f"{name}: empty" if name in positional else f"--{name.replace('_', '-')} needs a value")
    return args, extra


def check_uint(flag: str, value: str, low: int = 0, high: int | None = None) -> int:
    """An integer flag given as text: at least `low` (and at most `high`), else one error naming the flag."""
    if not re.fullmatch(r"[0-9]+", str(value)) or int(value) < low or (high is not None and int(value) > high):
        shown = str(value) if len(str(value)) <= 24 else f"{str(value)[:8]}... ({len(str(value))} characters)"
        raise ConfigError(f"{flag}: must be an integer >= {low}{'' if high is None else f' and <= {high}'}, "
                          f"got {shown!r}")
    return int(value)


def check_seed_text(flag: str, value: str) -> int:
    """A seed given as text (a script's --seed, toy.sh's SEEDS): an integer in [0, SEED_MAX]."""
    return check_uint(flag, value, high=SEED_MAX)


def dispatch(module: str, doc: str, bodies: dict, what: str, argv=None) -> None:
    """`python -m MODULE NAME FLAGS...`: run bodies[NAME] as the script NAME.sh (run_script); --help prints doc;
    a missing or unknown NAME is one error line and exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(doc)
        return
    if not argv or argv[0] not in bodies:
        print(f"python -m {module}: error: the first argument must name {what}: {', '.join(bodies)}; "
              f"got {argv[0] if argv else 'nothing'!r}", file=sys.stderr)
        sys.exit(2)
    run_script(f"{argv[0]}.sh", bodies[argv[0]], argv[1:])


def run_script(script: str, body, argv=None) -> None:
    """Run body(argv) as the script `script`: a ConfigError is one line and exit code 2, a failed command stops the
    script with its exit code, and a Python without this project's packages is told so."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        body(argv)
    except ConfigError as e:
        sys.stdout.flush()
        print(f"{script}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except StageFailed as e:
        sys.stdout.flush()
        print(f"{script}: error: {e}", file=sys.stderr)
        sys.exit(e.code)
    except ImportError as e:  # noqa: BLE001  (no torch / yaml / transformers in this python)
        print(f"{script}: error: cannot import {e.name or e} ({e}); set PYTHON to the project's environment",
              file=sys.stderr)
        sys.exit(2)


# ------------------------------------------------------------------------------------------------ recipe values

class Recipe:
    """A recipe file's values, read the way the scripts need them; every error names the file and the key."""

    def __init__(self, path: str):
        from alignment.pipeline.recipes import load_yaml

        self.path = path
        self.data = load_yaml(path)

    def lookup(self, key: str, default=KeyError):
        node = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                if default is not KeyError:
                    return default
                raise ConfigError(f"--config: {self.path!r} has no key {key!r}")
            node = node[part]
        return node

    def choose(self, key: str, flag: str, value: str) -> dict:
        """The entry `value` of the mapping at `key` (e.g. models.llama3), which the script's `flag` names."""
        options = self.lookup(key)
        if not isinstance(options, dict) or not options:
            raise ConfigError(f"--config: {self.path!r} key {key!r} must be a mapping of names")
        if value not in options:
            raise ConfigError(f"{flag}: unknown value {value!r}; known: {', '.join(map(str, options))} "
                              f"(from {self.path})")
        return options[value]

    def value(self, key: str, default=KeyError) -> str:
        """The scalar at `key` (a.b.c for nested keys) as a command-line word; required without a default."""
        v = self.lookup(key, default)
        if isinstance(v, (dict, list)) or v is None:
            raise ConfigError(f"--config: {self.path!r} key {key!r} must be a single value, got {v!r}")
        return word(v)

    def words(self, key: str) -> list[str]:
        """The words of the string at `key` (e.g. launch: accelerate launch --config_file ...). A launch: key must
        name a known launcher (driver.LAUNCHERS): a recipe must not run any command by surprise."""
        if key.rsplit(".", 1)[-1] == "launch":
            from alignment.pipeline.driver import check_launcher

            return check_launcher(self.value(key), f"--config: {self.path!r} key {key!r}")
        try:
            return shlex.split(self.value(key))
        except ValueError as e:
            raise ConfigError(f"--config: {self.path!r} key {key!r}: cannot split it into words ({e})") from None

    def flags(self, section: str, module_name: str, skip: tuple = ()) -> list[str]:
        """The mapping `section` as flags of `module_name`, each key checked against the module's Args as its own
        recipe would be (unknown key or wrong type: one error naming it); keys in `skip` are the script's own."""
        import importlib

        from alignment.pipeline.recipes import check_section

        mapping = self.data.get(section) or {}
        if not isinstance(mapping, dict):
            raise ConfigError(f"--config: {self.path!r} section {section!r} must be a mapping")
        module = importlib.import_module(module_name)
        checked = check_section(module.Args, mapping, f"--config: {self.path!r} section {section!r}", skip=skip)
        return as_flags(checked)


def word(v) -> str:
    """A recipe value as one command-line word (true/false for booleans, floats exactly)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def as_flags(values: dict) -> list[str]:
    """{name: value} as flags: --name value; booleans as --name / --no-name; None left out."""
    flags = []
    for name, v in values.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(v, bool):
            flags.append(flag if v else "--no-" + name.replace("_", "-"))
        elif v is not None:
            flags += [flag, word(v)]
    return flags


def slug(text: str) -> str:
    """A folder name for a dataset name and split: characters other than [A-Za-z0-9._-] become _."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


# ------------------------------------------------------------------------------------------------ commands

@dataclass
class Command:
    label: str          # what it does, for the printed comment line
    folder: Path        # the run folder it writes (done: FOLDER and FOLDER.done)
    words: list         # its command line

    @property
    def module(self) -> str:
        from alignment.pipeline.dryrun import split_command

        return split_command(self.words)[0]


def check_commands(commands: list[Command], dry_run: bool, show: bool) -> None:
    """Every command through its own module's parser and checks, loading nothing; the first bad one raises its
    ConfigError. show: print `# [i/n] LABEL -> FOLDER`, then the command once it passed. Under --dry-run, a
    --device cuda flag (alignment.sft and alignment.reward_model have no "auto" device) is checked as --device cpu
    on a machine without CUDA, where the module's own check would refuse it; the command printed is the real one."""
    from alignment.pipeline.dryrun import check_command, split_command

    swap = False
    if dry_run:
        import torch

        swap = not torch.cuda.is_available()
    for i, c in enumerate(commands):
        module, flags = split_command(list(c.words))
        swapped = False
        if swap:
            for j in range(len(flags) - 1):
                if flags[j] == "--device" and flags[j + 1].startswith("cuda"):
                    flags[j + 1], swapped = "cpu", True
        if show:
            print(f"# [{i + 1}/{len(commands)}] {c.label} -> {c.folder}", flush=True)
        with contextlib.redirect_stdout(io.StringIO()):  # a module's resolve may print notes
            check_command(module, flags)
        if show:
            print(shlex.join(c.words))
            if swapped:
                print("# (--device cuda checked as --device cpu: no CUDA device here)")
            sys.stdout.flush()


def run_commands(commands: list[Command], dry_run: bool, fresh: bool) -> None:
    """--dry-run: check and print every command. Otherwise check them all, then run each one that is not done (all
    of them with fresh), in order, marking each done when it exits 0; a failure stops the recipe (StageFailed)."""
    n = len(commands)
    if dry_run:
        check_commands(commands, dry_run=True, show=True)
        return
    print(f"# checking the {n} commands (alignment.pipeline.dryrun)", flush=True)
    check_commands(commands, dry_run=False, show=False)
    for i, c in enumerate(commands):
        if not fresh and resume.is_done(c.folder):
            print(f"# [{i + 1}/{n}] done: {c.label} ({c.folder} is finished; --fresh reruns it)", flush=True)
            continue
        resume.forget(c.folder)
        resume.clean_partial(c.folder)
        print(f"# [{i + 1}/{n}] {c.label} -> {c.folder}")
        print(f"# {shlex.join(c.words)}", flush=True)
        code = subprocess.call(list(c.words))
        if code:
            raise StageFailed(f"[{i + 1}/{n}] {c.label} failed (exit code {code}): {shlex.join(c.words)}", code)
        if not (c.folder / "run.json").is_file():
            raise StageFailed(f"[{i + 1}/{n}] {c.label} exited 0 but wrote no {c.folder / 'run.json'}", 1)
        resume.mark_done(c.folder, stage=c.label, command=list(c.words))
