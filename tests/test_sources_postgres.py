"""PostgresSource: load through a thread, LISTEN with reconnects, resync, cancellation."""

from __future__ import annotations

import array
import fcntl
import logging
import os
import socket
import termios
import time
from collections.abc import Callable, Iterator
from functools import partial

import psycopg
import pytest
import trio
import trio.testing

from trio_bridge.sources.base import ReloadRequest, SourceError
from trio_bridge.sources.postgres import BACKOFF_MAX, PostgresSource
from trio_bridge.store.migrations import NOTIFY_CHANNEL

RELOAD = ReloadRequest("database")
BAD_DSN = "postgresql://postgres:hunter2@127.0.0.1:1/test"
NEVER: Callable[[], float] = lambda: 1e9  # noqa: E731


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time that only jumps after 50 ms of real idleness (safe with sockets)."""
    return trio.testing.MockClock(autojump_threshold=0.05)


def _sql(dsn: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _listener_pids(dsn: str) -> list[int]:
    rows = _sql(
        dsn,
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'trio-bridge-listener'"
        " AND datname = current_database()",
    )
    return [int(r[0]) for r in rows]  # type: ignore[call-overload]


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109 - bounds one phase inside
    """Poll the server (no event exists for backend exit) until ``predicate`` holds."""
    with trio.fail_after(timeout):
        while not await trio.to_thread.run_sync(predicate):
            await trio.sleep(0.05)


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A TCP port that accepts connections and never answers (a hung database)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()
    finally:
        sock.close()


async def test_load(pg_migrated_dsn: str) -> None:
    await trio.to_thread.run_sync(
        _sql,
        pg_migrated_dsn,
        "INSERT INTO ai_providers (name, type, base_url) VALUES ('p', 'openai', 'https://x')",
    )
    contents = await PostgresSource(pg_migrated_dsn).load()
    assert [p.name for p in contents.providers] == ["p"]


async def test_load_errors_are_source_errors_without_password(pg_dsn: str) -> None:
    with pytest.raises(SourceError) as info:
        await PostgresSource(BAD_DSN).load()
    assert "hunter2" not in str(info.value) and "Connection refused" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(SourceError, match="db migrate"):
        await PostgresSource(pg_dsn).load()  # no schema yet
    assert "hunter2" not in repr(PostgresSource(BAD_DSN))


async def test_load_is_cancellable_while_the_database_hangs(
    silent_server: tuple[str, int],
) -> None:
    host, port = silent_server
    source = PostgresSource(f"postgresql://postgres:hunter2@{host}:{port}/test", connect_timeout=5)
    start = time.monotonic()
    with trio.move_on_after(0.3):
        await source.load()
    assert time.monotonic() - start < 1.0


async def test_listener_reloads_on_connect_change_and_reconnect(pg_migrated_dsn: str) -> None:
    send, recv = trio.open_memory_channel[ReloadRequest](10)
    source = PostgresSource(pg_migrated_dsn)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(source.listen, send, resync_every=NEVER))
        # (a) a reload right after connecting
        with trio.fail_after(5):
            assert await recv.receive() == RELOAD
        (pid,) = await trio.to_thread.run_sync(_listener_pids, pg_migrated_dsn)

        # (b) a committed change -> a reload within 1 s
        await trio.to_thread.run_sync(
            _sql,
            pg_migrated_dsn,
            "INSERT INTO ai_bridge_clients (id, token_sha256) VALUES ('a', repeat('a', 64))",
        )
        with trio.fail_after(1):
            assert await recv.receive() == RELOAD

        # (c) the backend is killed -> a reload (the snapshot shows the outage), then
        # reconnect and a reload again
        await trio.to_thread.run_sync(
            _sql, pg_migrated_dsn, "SELECT pg_terminate_backend(%s)", (pid,)
        )
        with trio.fail_after(5):
            assert await recv.receive() == RELOAD
            assert source.connection is not None
            assert source.connection.state == "reconnecting"
            assert "connection lost" in (source.connection.last_error or "")
            assert await recv.receive() == RELOAD
        assert source.connection.state == "connected"
        pids = await trio.to_thread.run_sync(_listener_pids, pg_migrated_dsn)
        assert len(pids) == 1 and pids[0] != pid
        # ... and it listens again.
        await trio.to_thread.run_sync(_sql, pg_migrated_dsn, "DELETE FROM ai_bridge_clients")
        with trio.fail_after(1):
            assert await recv.receive() == RELOAD
        with pytest.raises(trio.WouldBlock):
            recv.receive_nowait()

        # (e) cancellation closes the connection promptly
        start = time.monotonic()
        nursery.cancel_scope.cancel()
    assert time.monotonic() - start < 0.5
    await _until(lambda: not _listener_pids(pg_migrated_dsn))


def _listener_socket_fd(dsn: str) -> int:
    """This process's end of the listener's connection (found by its client port)."""
    ((port,),) = _sql(
        dsn,
        "SELECT client_port FROM pg_stat_activity WHERE application_name = 'trio-bridge-listener'"
        " AND datname = current_database()",
    )
    for name in os.listdir("/proc/self/fd"):
        try:
            with socket.socket(fileno=os.dup(int(name))) as sock:
                if sock.family in (socket.AF_INET, socket.AF_INET6) and (
                    sock.getsockname()[1] == port
                ):
                    return int(name)
        except OSError:
            continue  # not a socket
    raise AssertionError(f"no socket of this process on port {port}")


def _wait_buffered(fd: int, size: int, timeout: float = 5.0) -> None:
    """Block (the whole trio loop, on purpose) until ``size`` bytes wait unread on ``fd``."""
    deadline = time.monotonic() + timeout
    buffered = array.array("i", [0])
    while True:
        fcntl.ioctl(fd, termios.FIONREAD, buffered)
        if buffered[0] >= size:
            return
        assert time.monotonic() < deadline, f"{buffered[0]} of {size} bytes arrived"
        time.sleep(0.001)  # the kernel's receive queue has no event to wait on


async def test_one_reload_per_batch_of_notifications(pg_migrated_dsn: str) -> None:
    send, recv = trio.open_memory_channel[ReloadRequest](100)
    source = PostgresSource(pg_migrated_dsn)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(source.listen, send, resync_every=NEVER))
        with trio.fail_after(5):
            assert await recv.receive() == RELOAD
        fd = await trio.to_thread.run_sync(_listener_socket_fd, pg_migrated_dsn)
        # Five transactions' notifications, all in the listener's socket before it drains
        # them: this code blocks the trio loop until they have arrived.
        with psycopg.connect(pg_migrated_dsn, autocommit=True) as conn:
            for i in range(5):
                conn.execute(
                    "INSERT INTO ai_bridge_clients (id, token_sha256) VALUES (%s, %s)",
                    (f"c{i}", str(i) * 64),
                )
        # A NotificationResponse: 'A', int32 length, int32 pid, channel and payload ('') + NULs.
        _wait_buffered(fd, 5 * (1 + 4 + 4 + len(NOTIFY_CHANNEL) + 1 + 1))
        with trio.fail_after(1):
            assert await recv.receive() == RELOAD
        await trio.testing.wait_all_tasks_blocked()  # the listener waits on its socket again
        with pytest.raises(trio.WouldBlock):
            recv.receive_nowait()  # exactly one reload for the batch
        nursery.cancel_scope.cancel()


async def test_resync_on_trio_clock(pg_migrated_dsn: str, clock: trio.testing.MockClock) -> None:
    send, recv = trio.open_memory_channel[ReloadRequest](10)
    source = PostgresSource(pg_migrated_dsn)
    every = [60.0]
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(partial(source.listen, send, resync_every=lambda: every[0]))
        assert await recv.receive() == RELOAD  # on connect
        times = []
        for _ in range(3):
            assert await recv.receive() == RELOAD
            times.append(trio.current_time() - start)
        assert times == pytest.approx([60, 120, 180], abs=1)
        every[0] = 10.0  # re-read at least every 30 s
        assert await recv.receive() == RELOAD
        fourth = trio.current_time() - start
        assert fourth == pytest.approx(190, abs=1) or fourth == pytest.approx(210, abs=1)
        assert await recv.receive() == RELOAD
        assert trio.current_time() - start == pytest.approx(fourth + 10, abs=1)
        nursery.cancel_scope.cancel()


async def test_database_down_at_start_backs_off_and_recovers(
    pg_migrated_dsn: str,
    clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    send, recv = trio.open_memory_channel[ReloadRequest](10)
    source = PostgresSource(BAD_DSN)
    attempts: list[float] = []
    attempted = trio.Event()
    real_connect = source._connect

    async def counting_connect() -> psycopg.Connection:
        nonlocal attempted
        attempts.append(trio.current_time())
        attempted.set()
        attempted = trio.Event()
        return await real_connect()

    monkeypatch.setattr(source, "_connect", counting_connect)
    caplog.set_level(logging.INFO, logger="trio_bridge.sources.postgres")
    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):
            await nursery.start(partial(source.listen, send, resync_every=NEVER))
        # (d) started although the database is unreachable; nothing sent.
        assert len(attempts) == 1
        with pytest.raises(trio.WouldBlock):
            recv.receive_nowait()
        while len(attempts) < 10:
            await attempted.wait()
        gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
        assert gaps == pytest.approx([0.5, 1, 2, 2, 2, 2, 2, 2, 2], abs=0.3)  # BACKOFF_MAX
        with pytest.raises(trio.WouldBlock):
            recv.receive_nowait()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) >= 9
        assert all("hunter2" not in r.getMessage() for r in caplog.records)
        assert "Connection refused" in warnings[0].getMessage()

        # The database comes back: connect within BACKOFF_MAX, reload, backoff reset.
        source._dsn = pg_migrated_dsn
        back = trio.current_time()
        assert await recv.receive() == RELOAD
        assert trio.current_time() - back <= BACKOFF_MAX + 0.3
        assert any("reconnected" in r.getMessage() for r in caplog.records)
        (pid,) = await trio.to_thread.run_sync(_listener_pids, pg_migrated_dsn)
        before = trio.current_time()
        await trio.to_thread.run_sync(
            _sql, pg_migrated_dsn, "SELECT pg_terminate_backend(%s)", (pid,)
        )
        assert await recv.receive() == RELOAD  # the loss, for the snapshot
        assert await recv.receive() == RELOAD  # reconnected
        assert trio.current_time() - before == pytest.approx(0.5, abs=0.3)
        nursery.cancel_scope.cancel()


async def test_cancel_while_connecting_is_prompt(silent_server: tuple[str, int]) -> None:
    host, port = silent_server
    send, recv = trio.open_memory_channel[ReloadRequest](10)
    source = PostgresSource(f"postgresql://postgres@{host}:{port}/test", connect_timeout=5)
    start = time.monotonic()
    with trio.move_on_after(0.3):
        await source.listen(send, resync_every=NEVER)
    assert time.monotonic() - start < 1.0
    # Also when the caller gives up on nursery.start() during the first attempt.
    start = time.monotonic()
    async with trio.open_nursery() as nursery:
        with trio.move_on_after(0.3):
            await nursery.start(partial(source.listen, send, resync_every=NEVER))
    assert time.monotonic() - start < 1.0


async def test_closed_channel_stops_the_listener(pg_migrated_dsn: str) -> None:
    send, recv = trio.open_memory_channel[ReloadRequest](0)
    await recv.aclose()
    source = PostgresSource(pg_migrated_dsn)
    with trio.fail_after(5):
        await source.listen(send, resync_every=NEVER)  # returns instead of raising
    await _until(lambda: not _listener_pids(pg_migrated_dsn))


def test_handoff_closes_a_connection_nobody_waits_for() -> None:
    from trio_bridge.sources.postgres import _Handoff

    class Conn:
        closed = False

        def close(self) -> None:
            self.closed = True

    late = Conn()
    handoff = _Handoff()
    handoff.abandon()
    handoff.deliver(late)  # type: ignore[arg-type]
    assert late.closed  # the thread finished after the trio side gave up

    early = Conn()
    handoff = _Handoff()
    handoff.deliver(early)  # type: ignore[arg-type]
    handoff.abandon()
    assert early.closed  # delivered, but the trio side was cancelled before taking it

    taken = Conn()
    handoff = _Handoff()
    handoff.deliver(taken)  # type: ignore[arg-type]
    assert handoff.take() is taken and not taken.closed
