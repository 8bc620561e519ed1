"""Start-up cost (issue 8: start to /readyz): a bridge without a database or proxy mode never
loads psycopg, cryptography, botocore or OpenTelemetry (together ~0.3 s of imports here)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("psycopg", "cryptography", "botocore", "opentelemetry")


def test_building_the_cli_and_the_daemon_loads_no_optional_heavy_library() -> None:
    code = (
        "import sys, trio_bridge.cli as cli, trio_bridge.daemon, trio_bridge.commands.serve\n"
        "cli.build_parser()\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
