"""The pytest plugin (entry point ``pytest11``) as a user's suite meets it: examples/ run in
a pytest of their own, with the plugin loaded the way an installed package loads it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# Block the entry point (present when the package is installed) and load the module by
# name, so the run is the same with or without an installed trio-bridge.
PLUGIN = ["-p", "no:trio_bridge", "-p", "trio_bridge.testing.plugin"]


async def pytest_in(directory: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(EXAMPLES.parent), env.get("PYTHONPATH")) if p
    )
    with trio.fail_after(180):  # a subprocess on the real clock
        return await trio.run_process(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PLUGIN, *args],
            cwd=directory,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_the_example_suite_passes_with_the_plugins_fixtures() -> None:
    result = await pytest_in(EXAMPLES)
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert " passed" in out and "failed" not in out and "skipped" not in out


async def test_without_pytest_trio_the_fixtures_skip_saying_why(tmp_path: Path) -> None:
    (tmp_path / "test_sync.py").write_text(
        "def test_uses_the_bridge(bridge):\n    raise AssertionError('ran')\n"
        "def test_uses_a_fake(fake_openai):\n    raise AssertionError('ran')\n"
    )
    result = await pytest_in(tmp_path, "-p", "no:trio", "-rs")
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    assert "2 skipped" in out
    assert "need pytest-trio" in out
