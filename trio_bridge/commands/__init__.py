"""The ``trio-bridge`` commands, one module each.

A command module exposes ``add_parser(subparsers)``: it adds its (sub)parsers with plain
argparse and sets ``func`` on each leaf, ``parser.set_defaults(func=run)``, where
``run(args: argparse.Namespace) -> int`` returns the exit code. Options need nothing
more: ``cli.py`` gives each of them its ``TRIO_BRIDGE_*`` variable and help suffix
(:mod:`.options`). Registering a command is one line in :data:`COMMANDS`; modules are
imported only when the parser is built, so a module's heavy imports belong in ``run``.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Protocol

from .options import Subparsers

# The order is the order of `trio-bridge --help`.
COMMANDS: tuple[str, ...] = (
    "serve",
    "demo",
    "check",  # check-config
    "store",  # db, providers, keys, clients
    "usage",
    "ca",  # ca create
)


class Command(Protocol):
    """What a module listed in :data:`COMMANDS` provides."""

    def add_parser(self, subparsers: Subparsers) -> None: ...


def add_all(subparsers: Subparsers) -> None:
    for name in COMMANDS:
        module: Command = importlib.import_module(f"{__name__}.{name}")
        module.add_parser(subparsers)


__all__ = ["COMMANDS", "Command", "add_all", "argparse"]
