"""The Postgres source: loads rows on demand and pokes the reload channel on changes.

``load`` reads everything in one read-only transaction in a worker thread. ``listen``
keeps a dedicated ``LISTEN ai_providers_changed`` connection, reconnecting with capped
exponential backoff capped at ``BACKOFF_MAX`` (so a database that answers again is
reconnected to within about that long), and asks for a reload after every (re)connect
(notifications sent while disconnected are lost), after losing the connection (so the
snapshot shows it), on every batch of notifications and every ``resync_every``.
``connection`` is the listener's state as ``/-/snapshot`` shows it. All timers are on
trio's clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import trio

from ..masking import redact_dsn
from ..store.connect import LISTENER_APPLICATION_NAME, connect
from ..store.errors import StoreError, describe
from ..store.load import load_contents
from ..store.migrations import NOTIFY_CHANNEL
from .base import ConnectionState, ReloadRequest, SourceContents, SourceError

log = logging.getLogger("trio_bridge.sources.postgres")

SOURCE_NAME = "database"
BACKOFF_INITIAL = 0.5
# A refused connection costs next to nothing: probe often, so recovery is prompt.
BACKOFF_MAX = 2.0
# Wake up at least this often while listening, to notice a connection libpq found dead.
IDLE_WAKEUP = 30.0


class _Handoff:
    """Hands a connection opened in a worker thread to a trio task that may have given up.

    If the trio side was cancelled (and abandoned the thread), whichever side comes second
    closes the connection, so it never leaks.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned = False
        self._conn: psycopg.Connection | None = None

    def deliver(self, conn: psycopg.Connection) -> None:
        """Called in the worker thread with the freshly opened connection."""
        with self._lock:
            if not self._abandoned:
                self._conn = conn
                return
        conn.close()

    def abandon(self) -> None:
        """Called by the trio side when it stops waiting; closes a delivered connection."""
        with self._lock:
            self._abandoned = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def take(self) -> psycopg.Connection:
        with self._lock:
            conn, self._conn = self._conn, None
        assert conn is not None
        return conn


class PostgresSource:
    """Providers, keys and clients from Postgres (contract section 8)."""

    name = SOURCE_NAME

    def __init__(
        self, dsn: str, *, statement_timeout: float = 5.0, connect_timeout: float = 5.0
    ) -> None:
        self._dsn = dsn
        self._statement_timeout = statement_timeout
        self._connect_timeout = connect_timeout
        self.connection: ConnectionState | None = None  # None until the listener's first try

    def _connected(self) -> None:
        last = self.connection.last_error if self.connection else None
        self.connection = ConnectionState("connected", time.time(), last)

    def _failed(self, reason: str) -> bool:
        """Record a failed or lost connection; True when it was connected until now."""
        was = self.connection
        if was is not None and was.state == "reconnecting":
            self.connection = ConnectionState("reconnecting", was.since, reason)
            return False
        self.connection = ConnectionState("reconnecting", time.time(), reason)
        return was is not None

    def __repr__(self) -> str:
        return f"PostgresSource({redact_dsn(self._dsn)!r})"

    async def load(self) -> SourceContents:
        """One consistent read of the database; raises SourceError (password-free) on failure.

        Cancellation returns at once (the worker thread finishes and closes on its own).
        """
        try:
            return await trio.to_thread.run_sync(self._load_sync, abandon_on_cancel=True)
        except StoreError as exc:
            raise SourceError(str(exc)) from None
        except Exception as exc:  # anything unexpected: still never leak the DSN
            raise SourceError(
                f"database load failed: {type(exc).__name__}: {describe(exc, self._dsn)}"
            ) from None

    def _load_sync(self) -> SourceContents:
        stored = load_contents(
            self._dsn,
            statement_timeout=self._statement_timeout,
            connect_timeout=self._connect_timeout,
        )
        return SourceContents(
            providers=stored.providers,
            invalid_providers=stored.invalid_providers,
            clients=stored.clients,
        )

    # -- listening -----------------------------------------------------------------------

    def _open_listener(self, handoff: _Handoff) -> None:
        """Worker thread: open an autocommit connection and LISTEN on it."""
        conn = connect(
            self._dsn,
            autocommit=True,
            connect_timeout=self._connect_timeout,
            application_name=LISTENER_APPLICATION_NAME,
        )
        try:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot listen for changes: {describe(exc, self._dsn)}") from None
        handoff.deliver(conn)

    async def _connect(self) -> psycopg.Connection:
        handoff = _Handoff()
        try:
            await trio.to_thread.run_sync(self._open_listener, handoff, abandon_on_cancel=True)
        except BaseException:
            handoff.abandon()
            raise
        return handoff.take()

    async def listen(
        self,
        send: trio.MemorySendChannel[ReloadRequest],
        *,
        resync_every: Callable[[], float],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run forever, sending ReloadRequest("database") whenever the rows may have changed.

        ``task_status.started()`` is called once the first connection attempt finished,
        whether it succeeded or not: start-up never waits for the database. Cancelling
        closes the listening connection before returning.
        """
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._resync, send, resync_every)
                await self._listen_forever(send, task_status)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("database listener: reload channel closed; stopping")

    async def _resync(
        self, send: trio.MemorySendChannel[ReloadRequest], resync_every: Callable[[], float]
    ) -> None:
        """Send a reload request every ``resync_every()`` seconds (re-read each time)."""
        last = trio.current_time()
        while True:
            every = resync_every()
            now = trio.current_time()
            if every <= 0:  # disabled; look again later
                await trio.sleep(IDLE_WAKEUP)
                continue
            if now - last >= every:
                last = now
                await send.send(ReloadRequest(SOURCE_NAME))
                continue
            await trio.sleep(min(last + every - now, IDLE_WAKEUP))

    async def _listen_forever(
        self, send: trio.MemorySendChannel[ReloadRequest], task_status: trio.TaskStatus[None]
    ) -> None:
        backoff = BACKOFF_INITIAL
        started = False
        failures = 0
        while True:
            conn: psycopg.Connection | None = None
            try:
                conn = await self._connect()
            except Exception as exc:  # StoreError, or a bug: either way, retry later
                failures += 1
                reason = str(exc) if isinstance(exc, StoreError) else self._unexpected(exc)
                self._failed(reason)
                log.warning(
                    "database listener: %s; retrying in %gs (attempt %d)",
                    reason,
                    backoff,
                    failures,
                )
            else:
                self._connected()
                if failures:
                    log.info("database listener: reconnected")
                failures = 0
                backoff = BACKOFF_INITIAL
            if not started:
                started = True
                task_status.started()
            if conn is not None:
                changed = False
                try:
                    await send.send(ReloadRequest(SOURCE_NAME))
                    await self._pump(conn, send)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    raise
                except Exception as exc:
                    failures += 1
                    reason = (
                        describe(exc, self._dsn)
                        if isinstance(exc, psycopg.Error)
                        else self._unexpected(exc)
                    )
                    changed = self._failed(f"connection lost: {reason}")
                    log.warning(
                        "database listener: connection lost: %s; reconnecting in %gs",
                        reason,
                        backoff,
                    )
                finally:
                    conn.close()
                if changed:
                    await send.send(ReloadRequest(SOURCE_NAME))  # the snapshot shows it
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _unexpected(self, exc: BaseException) -> str:
        return f"unexpected {type(exc).__name__}: {describe(exc, self._dsn)}"

    async def _pump(
        self, conn: psycopg.Connection, send: trio.MemorySendChannel[ReloadRequest]
    ) -> None:
        """Relay notifications as reload requests until the connection fails (raises)."""
        fd = conn.fileno()
        while True:
            with trio.move_on_after(IDLE_WAKEUP):
                await trio.lowlevel.wait_readable(fd)
            notifies: list[Any] = list(conn.notifies(timeout=0))
            if conn.closed or conn.broken:
                raise psycopg.OperationalError("the connection is closed")
            if notifies:
                await send.send(ReloadRequest(SOURCE_NAME))
