"""``trio-bridge demo``: what it prints runs as printed (pasted into a shell)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import trio

from trio_bridge.commands.demo import INSTALL

ROOT = Path(__file__).resolve().parent.parent
END = "# Stop the demo with Ctrl-C."


async def test_the_printed_examples_run_exactly_as_printed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_BRIDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    argv = [sys.executable, "-m", "trio_bridge", "demo", "--listen", "127.0.0.1:0"]
    argv += ["--admin-listen", "127.0.0.1:0", "--fake-openai-port", "0"]
    argv += ["--fake-anthropic-port", "0"]
    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    assert process.stdout is not None
    printed = ""
    try:
        with trio.fail_after(30):
            async for chunk in process.stdout:
                printed += chunk.decode()
                if END in printed:
                    break
        assert END in printed, printed
        # A paste: every line as printed, except the install (the venv has the SDKs and
        # this test has no network).
        lines = printed.splitlines()
        assert lines.count(INSTALL) == 1
        script = "\n".join(line for line in lines if line != INSTALL) + "\n"
        imported = set(re.findall(r"^from (\w+) import", script, re.MULTILINE))
        assert imported == {"openai", "anthropic"} and imported <= set(INSTALL.split())
        assert not re.search(r"^[ \t]+(PY|python|curl)\b", script, re.MULTILINE)  # not indented
        shell_env = {**env, "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"}
        done = await trio.run_process(
            ["bash", "-e", "-c", script],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=shell_env,
        )
        out, err = done.stdout.decode(), done.stderr.decode()
        assert done.returncode == 0, err
        assert "Traceback" not in err
        assert out.count("chat.completion") >= 1  # the curl to OpenAI
        assert "event: message_start" in out  # the streamed Anthropic curl
        assert '"providers"' in out and "trio_bridge_" in out  # snapshot, metrics
        assert len([line for line in out.splitlines() if line.strip()]) > 4
    finally:
        process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            code = await process.wait()
    assert code == 0
