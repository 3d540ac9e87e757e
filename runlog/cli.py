"""Bad input gets one clear error line and exit code 2 (DESIGN.md section 6)."""
from __future__ import annotations

import argparse
import functools
import sys


class ConfigError(ValueError):
    """Invalid user input. The message names the field and what is allowed."""


class ArgParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse's own errors: unknown flag, bad type, ...
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def exit_on_config_error(main):
    """Decorate an entry point's main(): a ConfigError becomes one stderr line and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except ConfigError as e:
            prog = sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "error"
            print(f"{prog}: error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
