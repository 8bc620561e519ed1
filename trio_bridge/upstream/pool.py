"""Connection slots and idle keep-alive connections of one upstream client.

A slot is one open (or opening) connection, idle or busy; there are at most
``max_connections``. ``acquire`` hands out an idle connection to the same origin (most
recently used first) or reserves a slot for a new one, waiting up to ``pool_timeout`` in
FIFO order when every slot is busy. Every operation that gives a slot back is synchronous,
so a ``finally`` under cancellation can never leak one.
"""

from __future__ import annotations

import select
from collections import deque

import h11
import trio

from .connect import kill
from .errors import ClientClosed, PoolTimeout
from .url import Origin


class Connection:
    """One HTTP/1.1 connection: its stream, its h11 state, how often it served."""

    __slots__ = ("stream", "h11", "origin", "served", "expires_at")

    def __init__(self, stream: trio.abc.Stream, origin: Origin) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.origin = origin
        self.served = 0  # completed exchanges; > 0 means "reused"
        self.expires_at = 0.0

    def looks_dead(self) -> bool:
        """An idle connection with something to read has been closed (or spoken on) by the
        server: it cannot carry a request."""
        stream = self.stream
        while isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        if not isinstance(stream, trio.SocketStream):
            return False
        try:
            fd = stream.socket.fileno()
            if fd < 0:
                return True
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True


class _Waiter:
    __slots__ = ("origin", "reuse", "event", "granted", "conn", "error")

    def __init__(self, origin: Origin, reuse: bool) -> None:
        self.origin = origin
        self.reuse = reuse
        self.event = trio.Event()
        self.granted = False
        self.conn: Connection | None = None
        self.error: Exception | None = None


class Pool:
    def __init__(self, max_connections: int, pool_timeout: float, keepalive_expiry: float) -> None:
        self.max_connections = max_connections
        self.pool_timeout = pool_timeout
        self.keepalive_expiry = keepalive_expiry
        self._open = 0
        self._idle: dict[Origin, list[Connection]] = {}  # oldest first
        self._idle_count = 0
        self._waiters: deque[_Waiter] = deque()
        self.closed = False

    # -- introspection (tests, metrics) --
    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return self._idle_count

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    # -- taking --
    async def acquire(self, origin: Origin) -> Connection | None:
        """An idle connection to ``origin``, or None: a slot is reserved for a new one (give it
        back with ``release_slot`` or turn it into a connection)."""
        if self.closed:
            raise ClientClosed("the upstream client is closed")
        if self._idle_count:
            self.sweep()
        conn = self._pop_idle(origin)
        if conn is not None:
            return conn
        if self._take_slot():
            return None
        waiter = _Waiter(origin, True)
        self._waiters.append(waiter)
        try:
            with trio.fail_after(self.pool_timeout):
                await waiter.event.wait()
        except BaseException as exc:
            if waiter.granted:
                self._give_back(waiter)
            else:
                self._waiters.remove(waiter)
            if isinstance(exc, trio.TooSlowError):
                raise PoolTimeout(
                    f"no free connection to {origin} within {self.pool_timeout:g}s "
                    f"({self.max_connections} in use)"
                ) from None
            raise
        if waiter.error is not None:
            raise waiter.error
        return waiter.conn

    def _take_slot(self) -> bool:
        if self._open < self.max_connections:
            self._open += 1
            return True
        return self._evict_idle()

    def _evict_idle(self) -> bool:
        """Close the least recently used idle connection; its slot passes to the caller."""
        oldest: Connection | None = None
        for conns in self._idle.values():
            if conns and (oldest is None or conns[0].expires_at < oldest.expires_at):
                oldest = conns[0]
        if oldest is None:
            return False
        self._remove_idle(oldest)
        kill(oldest.stream)
        return True

    def _pop_idle(self, origin: Origin) -> Connection | None:
        conns = self._idle.get(origin)
        if not conns:
            return None
        now = trio.current_time()
        found: Connection | None = None
        freed = 0
        while conns:
            conn = conns.pop()
            self._idle_count -= 1
            if conn.expires_at > now and not conn.looks_dead():
                found = conn
                break
            kill(conn.stream)
            self._open -= 1
            freed += 1
        if not conns:
            del self._idle[origin]
        if freed:
            self._dispatch()
        return found

    def _remove_idle(self, conn: Connection) -> None:
        conns = self._idle[conn.origin]
        conns.remove(conn)
        self._idle_count -= 1
        if not conns:
            del self._idle[conn.origin]

    # -- giving back (all synchronous) --
    def release_slot(self) -> None:
        """A reserved slot that did not become a connection (connect failed, cancelled)."""
        self._open -= 1
        self._dispatch()

    def discard(self, conn: Connection) -> None:
        """Close a busy connection that cannot be reused; its slot is freed."""
        kill(conn.stream)
        self.release_slot()

    def put_idle(self, conn: Connection) -> None:
        """A connection whose exchange completed and that may carry another request."""
        if self.closed:
            self.discard(conn)
            return
        for waiter in self._waiters:
            if waiter.reuse and waiter.origin == conn.origin:
                self._waiters.remove(waiter)
                self._grant(waiter, conn)
                return
        if self._idle_count:
            self.sweep()
        conn.expires_at = trio.current_time() + self.keepalive_expiry
        self._idle.setdefault(conn.origin, []).append(conn)
        self._idle_count += 1
        self._dispatch()

    def _give_back(self, waiter: _Waiter) -> None:
        if waiter.error is not None:
            return
        if waiter.conn is not None:
            self.put_idle(waiter.conn)
        else:
            self.release_slot()

    def _grant(self, waiter: _Waiter, conn: Connection | None) -> None:
        waiter.granted = True
        waiter.conn = conn
        waiter.event.set()

    def _dispatch(self) -> None:
        """Hand free slots (or idle connections) to waiters, first come first served."""
        while self._waiters:
            waiter = self._waiters[0]
            conns = self._idle.get(waiter.origin)
            if conns:
                conn = conns.pop()
                self._idle_count -= 1
                if not conns:
                    del self._idle[waiter.origin]
                self._waiters.popleft()
                self._grant(waiter, conn)
            elif self._take_slot():
                self._waiters.popleft()
                self._grant(waiter, None)
            else:
                return

    # -- upkeep --
    def sweep(self) -> int:
        """Close idle connections past their expiry; returns how many."""
        now = trio.current_time()
        closed = 0
        for origin in list(self._idle):
            conns = self._idle[origin]
            while conns and conns[0].expires_at <= now:
                kill(conns.pop(0).stream)
                self._idle_count -= 1
                self._open -= 1
                closed += 1
            if not conns:
                del self._idle[origin]
        if closed:
            self._dispatch()
        return closed

    def close(self) -> None:
        """Close idle connections now; busy ones close when their exchange ends."""
        self.closed = True
        for conns in self._idle.values():
            for conn in conns:
                kill(conn.stream)
                self._open -= 1
        self._idle.clear()
        self._idle_count = 0
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.error = ClientClosed("the upstream client is closed")
            waiter.granted = True
            waiter.event.set()
