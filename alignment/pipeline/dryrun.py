"""Check a command of this package without running it: parse its flags with the module's own parser and run the
module's own checks (its `resolve`), loading no model and no dataset; print the command.

    python -m alignment.pipeline.dryrun python -m alignment.train_dpo --config alignment/configs/sams.yaml --preferences D
    python -m alignment.pipeline.dryrun accelerate launch --config_file alignment/configs/zero3.yaml -m alignment.sft ...

The recipe scripts (alignment/*.sh) check every command this way, so a recipe is validated on a laptop before it
reaches a GPU node; the iterative driver builds each stage's Args with the same parser (parse_command). Exit 2 with
one error line when a flag is bad.
"""
from __future__ import annotations

import importlib
import shlex
import sys

from runlog import ConfigError, exit_on_config_error, parse_dataclass

# modules that read defaults from a YAML recipe (--config): the recipe section they read
CONFIG_SECTIONS = {"alignment.train_dpo": "train"}
# packages run as python -m PACKAGE: the module holding their Args
PACKAGE_MAIN = {"alignment.pipeline": "alignment.pipeline.driver"}


def parse_command(module_name: str, argv: list[str]):
    """(module, Args): `argv` parsed by module_name's own parser, with the recipe defaults it reads itself (--config
    of alignment.train_dpo: the recipe's train: section; a module's own recipe_defaults(argv), as the pipeline's).
    Imports the module, loads no model; a bad flag raises ConfigError."""
    from alignment.pipeline.recipes import stage_defaults

    if not module_name.startswith("alignment."):
        raise ConfigError(f"{module_name}: only alignment.* modules can be checked")
    try:
        module = importlib.import_module(PACKAGE_MAIN.get(module_name, module_name))
    except ModuleNotFoundError:
        raise ConfigError(f"{module_name}: no such module") from None
    if not hasattr(module, "Args") or not hasattr(module, "resolve"):
        raise ConfigError(f"{module_name}: has no Args / resolve to check")
    section = getattr(module, "CONFIG_SECTION", CONFIG_SECTIONS.get(module_name))
    if hasattr(module, "recipe_defaults"):
        defaults = module.recipe_defaults(argv)
    else:
        defaults = stage_defaults(module.Args, argv, section) if section else None
    import contextlib
    import io

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):  # argparse's own message becomes part of our one line
            args = parse_dataclass(module.Args, list(argv), defaults=defaults)
    except SystemExit:
        why = err.getvalue().strip().split("error: ", 1)[-1]
        raise ConfigError(f"{module_name} rejects the flags: {why}") from None
    return module, args


def check_command(module_name: str, argv: list[str]) -> None:
    """Parse `argv` with module_name's Args and run its resolve(); a bad flag raises ConfigError."""
    module, args = parse_command(module_name, argv)
    module.resolve(args)


def split_command(words: list[str]) -> tuple[str, list[str]]:
    """(module, its flags) of a command `... -m MODULE FLAGS...`."""
    if "-m" not in words or words.index("-m") + 1 >= len(words):
        raise ConfigError(f"command {shlex.join(words)!r}: expected '... -m alignment.MODULE FLAGS'")
    i = words.index("-m")
    return words[i + 1], words[i + 2:]


@exit_on_config_error
def main(argv=None):
    words = sys.argv[1:] if argv is None else list(argv)
    if not words or words[0] in ("-h", "--help"):
        print(__doc__)
        return
    module, flags = split_command(words)
    check_command(module, flags)
    print(shlex.join(words))


if __name__ == "__main__":
    main()
