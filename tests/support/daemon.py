"""``trio-bridge serve`` in a subprocess, as operators run it: ``serve`` waits until it
listens and collects its stderr; ``free_port`` picks a loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import trio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``trio-bridge serve`` in a subprocess; stderr collected."""

    def __init__(self, process: trio.Process, listen: str, admin: str) -> None:
        self.process, self.url, self.admin = process, f"http://{listen}", f"http://{admin}"
        self.stderr = b""

    async def collect(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.stderr += chunk


async def serve(
    nursery: trio.Nursery, config_dir: Path, *extra: str, env: dict | None = None
) -> Served:
    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "trio_bridge",
            "serve",
            "--config-dir",
            str(config_dir),
            "--listen",
            listen,
            "--admin-listen",
            admin,
            *extra,
        ],
        stderr=subprocess.PIPE,
        env=env,
    )
    served = Served(process, listen, admin)
    nursery.start_soon(served.collect)
    with trio.fail_after(20):
        while b"listening on" not in served.stderr:
            if process.poll() is not None:
                raise AssertionError(served.stderr.decode())
            await trio.sleep(0.02)  # a subprocess: nothing to wait on but its output
    return served
