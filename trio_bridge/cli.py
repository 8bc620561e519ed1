"""The ``trio-bridge`` command line (console script ``trio_bridge.cli:main``).

Builds the parser from the command modules in :mod:`trio_bridge.commands`, gives every
option its ``TRIO_BRIDGE_*`` variable (a flag beats the variable), and runs the chosen
command. A bad flag or variable is one line on stderr and exit 2; a closed stdout (e.g.
``| head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from . import __version__
from .commands import add_all
from .commands.options import UsageError, command_parser, resolve_environment, with_environment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-bridge",
        description="An LLM API gateway on trio. Every option also reads TRIO_BRIDGE_<OPTION> "
        "(e.g. --drain-delay: TRIO_BRIDGE_DRAIN_DELAY); a flag beats the variable.",
    )
    parser.add_argument("--version", action="version", version=f"trio-bridge {__version__}")
    add_all(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return with_environment(parser)


def parse(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> argparse.Namespace:
    """Parsed arguments with every option resolved (flag, variable, default)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return resolve_environment(parser, args, environ)
    except UsageError as exc:
        parser.exit(2, f"{command_parser(parser, args).prog}: error: {exc}\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop writing; the output it wanted was delivered.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
