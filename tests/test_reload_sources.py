"""Sources load independently under a deadline; the snapshot shows the database listener;
a provider's build failure is logged with its reason."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import trio

from tests.support import client, start_bridge, write_yaml
from tests.support.relay import Relay
from trio_bridge.config.model import ClientSpec, KeyRef, ProviderSpec
from trio_bridge.reload import LOAD_TIMEOUT, Reloader
from trio_bridge.sources.base import ReloadRequest, SourceContents
from trio_bridge.upstream import UpstreamClients


class FakeFiles:
    """A files source whose contents change when told (one client id per version)."""

    name = "files"

    def __init__(self, providers: tuple[ProviderSpec, ...] = ()) -> None:
        self.version = 1
        self.providers = providers

    async def load(self) -> SourceContents:
        sha = "a" * 64
        return SourceContents(
            providers=self.providers,
            clients=(ClientSpec(id=f"v{self.version}", token_sha256=sha),),
            digest=str(self.version),
        )


class StalledDatabase:
    """A database whose read never answers: the worker thread blocks until released."""

    name = "database"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.loads = 0

    async def load(self) -> SourceContents:
        self.loads += 1
        await trio.to_thread.run_sync(self.release.wait, abandon_on_cancel=True)
        return SourceContents()


async def test_a_stalled_database_read_never_holds_back_a_files_change(autojump_clock) -> None:
    files, database = FakeFiles(), StalledDatabase()
    reloader = Reloader(files, database, UpstreamClients(), secrets_dir=None, environ={})
    await reloader.initial()
    done: list[tuple[str, bool, float]] = []
    reloader.on_reload.append(lambda reason, ok: done.append((reason, ok, trio.current_time())))
    send, receive = trio.open_memory_channel[ReloadRequest](10)
    start = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(reloader.run, receive)
            await send.send(ReloadRequest("database"))  # e.g. a NOTIFY; the read stalls
            await trio.sleep(1)
            assert database.loads == 1 and done == []
            files.version = 2
            await send.send(ReloadRequest("files"))
            await trio.sleep(1)
            assert reloader.current is not None
            assert [c.id for c in reloader.current.clients.values()] == ["v2"]
            assert done == [("files", True, done[0][2])] and done[0][2] - start < 2
            # The stalled read ends at its deadline on trio's clock, reported as an error.
            await trio.sleep(LOAD_TIMEOUT)
            assert ("database", False) in [(reason, ok) for reason, ok, _ in done]
            ended = next(t for reason, _, t in done if reason == "database")
            assert ended - start == LOAD_TIMEOUT + reloader.debounce
            status = {s.name: s for s in reloader.current.sources}["database"]
            assert status.error == f"load timed out after {LOAD_TIMEOUT:g}s"
            # ... and the next change still gets through.
            files.version = 3
            await send.send(ReloadRequest("files"))
            await trio.sleep(1)
            assert [c.id for c in reloader.current.clients.values()] == ["v3"]
            nursery.cancel_scope.cancel()
    finally:
        database.release.set()


async def test_a_provider_build_failure_is_logged_with_its_reason(autojump_clock, caplog) -> None:
    broken = ProviderSpec(
        name="broken", type="openai", base_url="https://a/v1", keys=[KeyRef(env="NOT_SET_HERE")]
    )
    files = FakeFiles(providers=(broken,))
    reloader = Reloader(files, None, UpstreamClients(), secrets_dir=None, environ={})
    with caplog.at_level(logging.WARNING, logger="trio_bridge.reload"):
        await reloader.initial()
        files.version = 2  # a rebuild with the same failure: not logged again
        await reloader.reload({"files"}, full=False, reason="files")
    lines = [r.getMessage() for r in caplog.records if "failed to build" in r.getMessage()]
    assert lines == [
        "provider broken failed to build: environment variable NOT_SET_HERE is not set or empty"
    ]


def through(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) > 1 else host))


async def test_the_snapshot_shows_the_database_listener_state(
    nursery, tmp_path, pg_migrated_dsn
) -> None:
    """An outage shows as ``reconnecting`` with the failed load's error; the reconnect as
    ``connected`` again after a good load, the loss kept as ``last_error``.

    Each wait reads the snapshot's version with its contents and waits for a swap past
    that version, so a swap landing while the response travels is never missed. It waits
    for the state the contract promises, not for the first snapshot naming the new
    connection state: a database load already in flight when the relay closes may
    succeed and build a snapshot showing ``reconnecting`` with no load error yet.
    """
    write_yaml(tmp_path, "00-bridge.yaml", "bridge: {auth: none, reload: {debounce: 20ms}}\n")
    target = urlsplit(pg_migrated_dsn)
    relay = await nursery.start(Relay(target.hostname, target.port or 5432).serve)
    relay.open()
    bridge = await start_bridge(
        nursery, tmp_path, database_url=through(pg_migrated_dsn, relay.port)
    )

    async def database_status(until: Callable[[dict], bool]) -> dict:
        """The ``database`` entry of the first snapshot in service (now or later) that satisfies ``until``."""
        with trio.fail_after(10):
            while True:
                async with client() as c:
                    doc = (await c.get(bridge.admin + "/-/snapshot")).json()
                status = next(s for s in doc["sources"] if s["name"] == "database")
                if until(status):
                    return status
                await bridge.next_swap(after=doc["version"])

    def state(status: dict) -> str | None:
        return (status.get("connection") or {}).get("state")

    await database_status(lambda s: state(s) == "connected")
    relay.close()  # an outage: the listener's connection is cut, new ones are refused
    lost = await database_status(lambda s: state(s) == "reconnecting" and bool(s["error"]))
    # The loss itself, or (on a slow machine) the first refused retry after it.
    assert lost["connection"]["last_error"].startswith(
        ("connection lost", "cannot connect to the database")
    )
    assert lost["connection"]["since"] > 0
    assert "@" not in lost["connection"]["last_error"]
    relay.open()
    back = await database_status(lambda s: state(s) == "connected" and s["error"] is None)
    assert back["connection"]["since"] >= lost["connection"]["since"]
    assert back["connection"]["last_error"]
