"""Running a real bridge in-process on loopback for tests: `start_bridge`, `RunningBridge`."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import trio

from trio_bridge.daemon import Addresses, Daemon, ServeOptions
from trio_bridge.snapshot import Snapshot


@dataclass
class RunningBridge:
    daemon: Daemon
    addresses: Addresses
    config_dir: Path
    _swaps: list[trio.Event] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.addresses.listen

    @property
    def admin(self) -> str:
        return self.addresses.admin

    @property
    def snapshot(self) -> Snapshot:
        assert self.daemon.state is not None
        return self.daemon.state.current

    async def next_swap(self, after: int | None = None) -> Snapshot:
        """Wait until a snapshot newer than ``after`` (default: the current one) is in service."""
        version = self.snapshot.version if after is None else after
        while self.snapshot.version <= version:
            event = trio.Event()
            self._swaps.append(event)
            await event.wait()
        return self.snapshot

    async def reload_after(self, trigger: Callable[[], Awaitable[object]]) -> tuple[str, bool]:
        """Run ``trigger`` and wait for the reload it causes to finish (swap or not)."""
        done: list[tuple[str, bool]] = []
        event = trio.Event()

        def hook(reason: str, ok: bool) -> None:
            done.append((reason, ok))
            event.set()

        self.daemon.reloader.on_reload.append(hook)
        try:
            await trigger()
            await event.wait()
        finally:
            self.daemon.reloader.on_reload.remove(hook)
        return done[0]

    def _on_swap(self, _snapshot: Snapshot) -> None:
        events, self._swaps = self._swaps, []
        for event in events:
            event.set()


def write_yaml(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    tmp = directory / f".{name}.tmp"
    tmp.write_text(textwrap.dedent(text))
    os.replace(tmp, path)
    return path


async def start_bridge(
    nursery: trio.Nursery,
    config_dir: Path,
    *,
    secrets_dir: Path | None = None,
    environ: dict[str, str] | None = None,
    database_url: str | None = None,
    drain_delay: float = 0.0,
    shutdown_grace: float = 10.0,
    admin_token: str | None = None,
) -> RunningBridge:
    options = ServeOptions(
        config_dir=config_dir,
        secrets_dir=secrets_dir,
        database_url=database_url,
        listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        admin_token=admin_token,
        drain_delay=drain_delay,
        shutdown_grace=shutdown_grace,
        environ=environ if environ is not None else {},
    )
    daemon = Daemon(options)
    addresses = await nursery.start(daemon.run)
    bridge = RunningBridge(daemon, addresses, config_dir)
    daemon.reloader.on_swap.append(bridge._on_swap)
    return bridge


def client(**kwargs) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(timeout=30, **kwargs)
