"""The key-pool rig: one bridge in front of one fake upstream, seen through one provider.

``open_rigs(nursery, tmp_path, http, clock)`` yields ``make(keys=[...], dialect=...)``; each
call starts a fake upstream and a bridge in front of it. The clock must be a
``MockClock(autojump_threshold=0.05)`` the test itself requested.
"""

from __future__ import annotations

import itertools
import math
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import trio
import trio.testing

from tests.support.bridge import RunningBridge, start_bridge, write_yaml
from trio_bridge.testing import FakeUpstream

K0 = "k0-aaaaaaaaaaaaaaaa"
K1 = "k1-bbbbbbbbbbbbbbbb"
K2 = "k2-cccccccccccccccc"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}
MESSAGES = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hi there"}],
}
BYOK = {"X-Trio-Bridge-Token": "x", "Authorization": "Bearer client-own-key"}

_names = itertools.count()


def unique(prefix: str) -> str:
    """A provider name no other test used: metrics are process-global counters."""
    return f"{prefix}-{next(_names)}"


def provider_yaml(
    name: str,
    base_url: str,
    keys: list[str],
    *,
    type: str = "openai",
    headers: dict[str, str] | None = None,
) -> str:
    text = f"  - name: {name}\n    type: {type}\n    base_url: {base_url}\n"
    text += "    keys: [" + ", ".join(f"{{value: {k}}}" for k in keys) + "]\n"
    if headers:
        text += "    headers: {" + ", ".join(f"{k}: '{v}'" for k, v in headers.items()) + "}\n"
    return text


def config_yaml(*providers: str, bridge: str = "auth: none") -> str:
    return f"bridge: {{{bridge}}}\nproviders:\n" + "".join(providers)


def closed_port_url() -> str:
    """A loopback URL nobody listens on: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def within_real_seconds(seconds: float, fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``fn`` with a real-time guard (virtual deadlines would be jumped to at once)."""
    done = threading.Event()
    result: list[Any] = []

    async def guard() -> None:
        if not await trio.to_thread.run_sync(done.wait, seconds, abandon_on_cancel=True):
            raise AssertionError(f"not done after {seconds} s of real time")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(guard)
        try:
            result.append(await fn())
        finally:
            done.set()
    return result[0]


@dataclass
class Rig:
    """One bridge in front of one fake upstream, seen through one provider ``name``."""

    bridge: RunningBridge
    http: httpx2.AsyncClient
    clock: trio.testing.MockClock
    fake: FakeUpstream
    name: str
    settings: str  # the ``bridge:`` mapping's body, kept across rewrites

    def url(self, tail: str) -> str:
        return f"{self.bridge.url}/{self.name}{tail}"

    async def chat(
        self,
        *,
        stream: bool = False,
        headers: dict[str, str] | None = None,
        model: str = "gpt-4o-mini",
    ) -> httpx2.Response:
        if self.fake.dialect == "anthropic":
            return await self.http.post(
                self.url("/v1/messages"),
                headers=headers,
                json={**MESSAGES, "model": model, "stream": stream},
            )
        return await self.http.post(
            self.url("/v1/chat/completions"),
            headers=headers,
            json={**CHAT, "model": model, "stream": stream},
        )

    async def keys_used_by(
        self, send: Callable[[], Awaitable[httpx2.Response]], status: int = 200
    ) -> list[str | None]:
        """Send one request; the pool keys the fake saw for it, in order."""
        before = len(self.fake.requests)
        response = await send()
        assert response.status_code == status, response.text
        return [r.key for r in self.fake.requests[before:]]

    async def keys(self) -> list[dict[str, Any]]:
        """This provider's keys as ``/-/snapshot`` shows them."""
        doc = (await self.http.get(self.bridge.admin + "/-/snapshot")).json()
        (provider,) = [p for p in doc["providers"] if p["name"] == self.name]
        return provider["keys"]

    async def metrics(self) -> str:
        # Rendering runs in a worker thread; keep the virtual clock still while it does.
        threshold, self.clock.autojump_threshold = self.clock.autojump_threshold, math.inf
        try:
            response = await self.http.get(self.bridge.admin + "/metrics")
        finally:
            self.clock.autojump_threshold = threshold
        assert response.status_code == 200
        return response.text

    async def reload(
        self, *, keys: list[str], base_url: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """Rewrite the provider's YAML and wait until the new snapshot is in service.

        While the watcher thread notices, the virtual clock may jump to pending deadlines
        (idle keep-alive timeouts, ~75 s): tests around a reload use long cooldowns."""
        version = self.bridge.snapshot.version
        write_yaml(
            self.bridge.config_dir,
            "bridge.yaml",
            config_yaml(
                provider_yaml(
                    self.name,
                    base_url or self.fake.base_url,
                    keys,
                    type=self.fake.dialect,
                    headers=headers,
                ),
                bridge=self.settings,
            ),
        )
        await within_real_seconds(10, lambda: self.bridge.next_swap(version))

    def cooling_until(self, index: int, model: str = "gpt-4o-mini") -> float:
        """When key ``index`` is usable again for ``model``, on trio's clock (in-process)."""
        provider = self.bridge.snapshot.providers[self.name]
        assert provider.pool is not None
        return provider.pool.keys[index].state.until(model)


@asynccontextmanager
async def open_rigs(
    nursery: trio.Nursery, tmp_path: Path, http: httpx2.AsyncClient, clock: trio.testing.MockClock
) -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    """``await make(keys=[...], dialect=..., base_url=..., bridge=...)``: a fake upstream and a
    bridge in front of it, running in ``nursery`` (a fixture's own).

    On exit each config dir is touched just before the nursery is cancelled, so the config
    watcher's thread returns at once instead of after its 500 ms poll (it cannot be
    interrupted): ~0.5 s less per test."""
    made: list[Rig] = []

    async def make(
        *,
        keys: list[str],
        dialect: str = "openai",
        prefix: str = "fo",
        base_url: str | None = None,
        bridge: str = "auth: none",
    ) -> Rig:
        # pytest-trio installs a clock only when the test itself names the fixture.
        assert trio.lowlevel.current_clock() is clock, "the test must request `clock`"
        fake = await nursery.start(FakeUpstream(dialect).serve)
        name = unique(prefix)
        config_dir = tmp_path / name
        config_dir.mkdir()
        write_yaml(
            config_dir,
            "bridge.yaml",
            config_yaml(
                provider_yaml(name, base_url or fake.base_url, keys, type=dialect), bridge=bridge
            ),
        )
        rig = Rig(await start_bridge(nursery, config_dir), http, clock, fake, name, bridge)
        made.append(rig)
        return rig

    try:
        yield make
    finally:
        for rig in made:
            (rig.bridge.config_dir / ".teardown").write_text("")
