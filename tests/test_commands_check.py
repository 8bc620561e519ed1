"""``trio-bridge check-config``: every error of every file, and output that survives a pipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from trio_bridge.config.model import ProviderSpec

ROOT = Path(__file__).resolve().parent.parent


def check_config(*argv: str, shell_tail: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_BRIDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    command = " ".join([sys.executable, "-m", "trio_bridge", "check-config", *argv])
    return subprocess.run(
        ["bash", "-c", command + shell_tail],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_check_config_json_into_head_ends_quietly(tmp_path: Path) -> None:
    # Enough output to fill the pipe long after `head` has gone: the write must fail.
    # Switch-off entries: cheap to build (no upstream client), ~200 bytes of JSON each.
    providers = "".join(f"  - {{name: provider-{i:04d}, enabled: false}}\n" for i in range(1000))
    (tmp_path / "p.yaml").write_text("bridge: {auth: none}\nproviders:\n" + providers)
    result = check_config("--json", "--config-dir", str(tmp_path), shell_tail=" | head -n 3")
    assert result.stdout.splitlines()[0] == "{"
    assert result.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored"


def test_check_config_prints_every_schema_error_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "10-a.yaml").write_text(
        "providers:\n"
        "  - {name: a, type: openai, base_url: 'ftp://a'}\n"
        "  - {name: b, type: openai, base_url: 'https://b', colour: red}\n"
    )
    (tmp_path / "20-b.yaml").write_text("bridge: {max_inflight: lots}\n")
    result = check_config("--config-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: 10-a.yaml: $.providers[0].base_url: expected a string matching ^https?://",
        "error: 10-a.yaml: $.providers[1]: unknown field (expected only "
        + ", ".join(ProviderSpec.__struct_fields__)
        + ")",
        "error: 20-b.yaml: $.bridge.max_inflight: expected an integer",
    ]
    result = check_config("--json", "--config-dir", str(tmp_path))
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and len(doc["errors"]) == 3
