"""``trio-bridge ca create DIR``: a new CA certificate and key for proxy mode."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import Subparsers


def add_parser(commands: Subparsers) -> None:
    ca = commands.add_parser("ca", help="proxy-mode certificate authority")
    sub = ca.add_subparsers(dest="ca_command", required=True, metavar="COMMAND")
    create = sub.add_parser(
        "create",
        help="write DIR/ca.pem and DIR/ca.key (0600) for proxy_mode; refuses to overwrite",
    )
    create.add_argument("dir", type=Path, metavar="DIR", help="directory to write into")
    create.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..proxymode.ca import CAError, write_new_ca  # cryptography: only for this command

    try:
        cert, key = write_new_ca(args.dir)
    except CAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {cert} (give it to clients as their CA bundle)")
    print(f"wrote {key} (mode 0600; keep it in a Secret: whoever holds it can intercept)")
    return 0
