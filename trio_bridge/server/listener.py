"""Listening sockets, the accept loop and the graceful drain of one server.

Guarantees:

- one nursery, owned by :meth:`HTTPServer.serve`, holds every connection task;
- beyond ``Limits.max_connections`` open connections a new one is accepted and closed at
  once; running out of file descriptors (EMFILE...) backs off and retries, never ends the
  listener; no connection's failure reaches the accept loop;
- :meth:`HTTPServer.drain` (``Connection: close`` on every response) then
  :meth:`HTTPServer.stop`: stop accepting (connections already queued in the kernel are
  still served, so none is reset by the close), close idle kept-alive connections, let
  in-flight requests finish within the grace, cancel what is left, and return as soon as
  the last connection ends.
"""

from __future__ import annotations

import errno
import logging
import socket as stdlib_socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio

from .connection import App, ConnectionGroup, serve_connection, socket_addresses
from .protocol import Limits

__all__ = ["HTTPServer", "TCPListener", "format_address", "open_tcp_listeners", "parse_bind"]

log = logging.getLogger("trio_bridge.server")

BACKLOG = 1024
# accept() failures that mean "out of resources": wait and retry (trio.serve_listeners does
# the same); anything else unexpected is logged and retried too, never fatal.
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class TCPListener:
    """A listening TCP socket that can also hand over, without waiting, the connections
    the kernel has already queued (so a closing listener resets none of them)."""

    def __init__(self, sock: stdlib_socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self.socket = trio.socket.from_stdlib_socket(sock)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return host, port

    async def accept(self) -> trio.SocketStream:
        sock, _ = await self.socket.accept()
        return _stream(sock)

    def accept_queued(self) -> list[trio.SocketStream]:
        """Every connection already waiting in the kernel's queue, without blocking."""
        streams: list[trio.SocketStream] = []
        while True:
            try:
                sock, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return streams
            except OSError:
                return streams
            sock.setblocking(False)
            streams.append(_stream(trio.socket.from_stdlib_socket(sock)))

    async def aclose(self) -> None:
        self.socket.close()
        await trio.lowlevel.checkpoint()


def _stream(sock: trio.socket.SocketType) -> trio.SocketStream:
    return trio.SocketStream(sock)  # sets TCP_NODELAY


def parse_bind(bind: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) into its parts; ValueError when the port is missing."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{bind!r} is not host:port")
    return host.strip("[]"), int(port)


def format_address(address: tuple[str, int], scheme: str = "http") -> str:
    host, port = address
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def open_tcp_listeners(bind: str, *, backlog: int = BACKLOG) -> list[TCPListener]:
    """Listening sockets for every address ``bind`` resolves to (port 0: one free port, the
    same for all). Raises OSError (or ValueError for a malformed ``bind``)."""
    host, port = parse_bind(bind)
    infos = await trio.socket.getaddrinfo(
        host, port, type=stdlib_socket.SOCK_STREAM, flags=stdlib_socket.AI_PASSIVE
    )
    listeners: list[TCPListener] = []
    try:
        seen = set()
        for family, kind, proto, _, sockaddr in infos:
            if (family, sockaddr) in seen:
                continue
            seen.add((family, sockaddr))
            sock = stdlib_socket.socket(family, kind, proto)
            try:
                sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
                if family == stdlib_socket.AF_INET6:
                    sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
                if port == 0 and listeners:
                    sockaddr = (sockaddr[0], listeners[0].address[1], *sockaddr[2:])
                sock.bind(sockaddr)
                sock.listen(backlog)
            except BaseException:
                sock.close()
                raise
            listeners.append(TCPListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


class HTTPServer:
    """Serves ``app`` on a set of listeners. ``serve`` runs until :meth:`stop` (or
    cancellation); every connection lives in the nursery it owns."""

    def __init__(
        self,
        app: App,
        limits: Limits | None = None,
        *,
        name: str = "http",
        scheme: str = "http",
        scope_extras: Mapping[str, Any] | None = None,
        handler: Callable[[trio.SocketStream], Awaitable[None]] | None = None,
    ) -> None:
        """``handler`` serves an accepted connection in place of HTTP on it (proxy mode's
        CONNECT handling); limits, drain and the connection count apply the same."""
        self.app = app
        self.handler = handler
        self.limits = limits or Limits()
        self.name = name
        self.scheme = scheme
        self.scope_extras = scope_extras
        self.group = ConnectionGroup()
        self.connections = 0
        self.refused = 0  # accepted and closed at once (max_connections)
        self._stop = trio.Event()
        self._grace = 0.0
        self._none_left = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._last_warning = -1e9

    # --- control --------------------------------------------------------------------------

    def drain(self) -> None:
        """From now on every response says ``Connection: close`` (still accepting)."""
        self.group.draining = True

    def stop(self, grace: float) -> None:
        """Stop accepting, close idle connections, give the rest ``grace`` seconds."""
        self.group.draining = True
        self._grace = grace
        self._stop.set()

    # --- serving --------------------------------------------------------------------------

    async def serve(
        self,
        listeners: Sequence[TCPListener],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on ``listeners`` until :meth:`stop`, then drain and return once every
        connection has ended (or the grace ran out). Closes the listeners."""
        try:
            async with trio.open_nursery() as connections:
                self._nursery = connections
                async with trio.open_nursery() as accepting:
                    for listener in listeners:
                        accepting.start_soon(self._accept_loop, listener)
                    task_status.started()
                    await self._stop.wait()
                    accepting.cancel_scope.cancel()
                for listener in listeners:
                    for stream in listener.accept_queued():
                        self._start(stream)
                    await listener.aclose()
                self.group.close_idle()
                log.info(
                    "%s: stopped accepting; %d connection(s) open", self.name, self.connections
                )
                if self.connections:
                    with trio.move_on_after(self._grace):
                        await self._none_left.wait()
                    if self.connections:
                        log.warning(
                            "%s: shutdown grace over; cancelling %d connection(s)",
                            self.name,
                            self.connections,
                        )
                connections.cancel_scope.cancel()
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)  # type: ignore[arg-type]

    async def _accept_loop(self, listener: TCPListener) -> None:
        backoff = 0.01
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:
                    self._warn(f"{self.name}: accept failed ({exc.strerror}); retrying")
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                else:
                    log.error("%s: accept failed: %r", self.name, exc)
                    await trio.sleep(0.1)
                continue
            backoff = 0.01
            self._start(stream)

    def _start(self, stream: trio.SocketStream) -> None:
        assert self._nursery is not None
        if self.connections >= self.limits.max_connections:
            self.refused += 1
            self._warn(f"{self.name}: {self.connections} connections open; refusing new ones")
            stream.socket.close()
            return
        self.connections += 1
        self._nursery.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            if self.handler is not None:
                await self.handler(stream)
                return
            client, server = socket_addresses(stream)
            await serve_connection(
                stream,
                self.app,
                self.limits,
                group=self.group,
                client=client,
                server=server,
                scheme=self.scheme,
                scope_extras=self.scope_extras,
            )
        finally:
            self.connections -= 1
            if not self.connections and self._stop.is_set():
                self._none_left.set()

    def _warn(self, message: str) -> None:
        now = trio.current_time()
        if now - self._last_warning >= 10.0:
            self._last_warning = now
            log.warning(message)
