"""``trio-bridge usage``: sums of recorded usage from the database (contract sections 2, 8).

``--since 7d`` (``30m``, ``12h``, ``7d``, ``2w``), ``--by client,provider,model,day``
(repeatable or comma-separated; default all four), ``--json`` for a list of objects with
the grouping keys and ``requests``, ``input``, ``output``, ``cache_read``, ``cache_write``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from ..store.connect import connect
from ..store.errors import StoreError, database_errors
from ..store.usage import GROUPS, TOKENS, usage_summary
from .options import Subparsers
from .store import CliError, database_options, database_url

DEFAULT_BY = ("client", "provider", "model", "day")
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> float:
    """``30m``, ``12h``, ``7d``, ``2w`` as seconds."""
    match = _SINCE.match(text)
    if not match:
        raise argparse.ArgumentTypeError("expected a duration such as 30m, 12h, 7d or 2w")
    return float(match.group(1)) * _UNIT[match.group(2)]


def parse_by(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    for key in keys:
        if key not in GROUPS:
            raise argparse.ArgumentTypeError(
                f"unknown grouping {key!r}; expected one of {', '.join(GROUPS)}"
            )
    return keys


def add_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    """Register ``usage``; ``TRIO_BRIDGE_*`` variables come from the CLI's option layer."""
    parser = subparsers.add_parser(
        "usage",
        parents=[database_options()],
        help="sums of recorded usage by client, provider, model and day",
    )
    parser.add_argument(
        "--since",
        type=parse_since,
        default=parse_since("7d"),
        metavar="DURATION",
        help="how far back (30m, 12h, 7d, 2w)",
    )
    parser.add_argument(
        "--by",
        type=parse_by,
        action="append",
        metavar="KEYS",
        help=f"group by {', '.join(GROUPS)} (repeatable or comma-separated; "
        f"all four when not given)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    since = args.since
    by: list[str] = []
    for group in args.by or [list(DEFAULT_BY)]:
        by.extend(k for k in group if k not in by)
    try:
        dsn = database_url(args)
        with connect(dsn, autocommit=True) as conn, database_errors(dsn, "usage query"):
            rows = usage_summary(conn, since_seconds=since, by=by)
    except (StoreError, CliError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(render_table(rows, [*by, "requests", *TOKENS]))
    return 0


def render_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Aligned columns; numbers right-aligned; a missing key shows as ``-``."""
    cells = [[("-" if row[c] is None else str(row[c])) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = {"requests", *TOKENS}

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if c in numeric else v.ljust(w)
            for v, w, c in zip(values, widths, columns, strict=True)
        ).rstrip()

    out = [line(columns)]
    out.extend(line(r) for r in cells)
    if not rows:
        out.append("(no usage recorded in this period)")
    return "\n".join(out)
