"""One HTTP/1.1 connection: a thin trio shell over h11, serving an ASGI-3 app.

Guarantees:

- requests on a connection are answered one after another, in order (pipelined requests
  wait in h11's buffer); keep-alive for HTTP/1.1 and for HTTP/1.0 peers that ask;
- the head (request line + headers, at most ``Limits.max_head_bytes``, else 431) must
  arrive within ``Limits.header_timeout``; a kept-alive connection idle for
  ``Limits.keepalive_timeout`` is closed;
- request bodies (Content-Length or chunked) reach the app through ``receive()`` as they
  arrive; ``Expect: 100-continue`` is answered when the app first asks for the body;
- an early response (before the body was read) drops a small remaining body and keeps the
  connection, or says ``Connection: close`` and closes it (lingering, so the peer reads
  the answer);
- a response the app leaves unfinished closes the connection, so the client sees the
  truncation; after the peer is gone ``send()`` does nothing and ``receive()`` reports
  ``http.disconnect``;
- every exception inside the connection stops at its edge: logged once (debug for client
  faults, error with a traceback for ours) and only this connection closes;
- the stream is always closed on return.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import h11
import trio

from .protocol import (
    AfterResponse,
    Limits,
    after_response,
    allow_http10_keep_alive,
    client_error_status,
    declared_length,
    decoded_path,
    head_too_large,
    reason,
    response_has_length,
    split_target,
    wants_http10_keep_alive,
)

__all__ = [
    "App",
    "AbortConnection",
    "ConnectionGroup",
    "DEFAULT_LIMITS",
    "serve_connection",
]

log = logging.getLogger("trio_bridge.server")

Scope = dict[str, Any]
Message = dict[str, Any]
App = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

DEFAULT_LIMITS = Limits()

# The peer went away or broke the protocol: its own fault, logged at debug.
_CLIENT_FAULTS: tuple[type[BaseException], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    h11.RemoteProtocolError,
    ConnectionError,
)
_CLOSE = (b"connection", b"close")
_KEEP_ALIVE = (b"connection", b"keep-alive")


class AbortConnection(Exception):
    """Raised by an app to close its connection at once, without (finishing) a response.
    Logged at debug; nothing else is sent."""


class ConnectionGroup:
    """What a server tells its connections. ``draining``: every response from now on says
    ``Connection: close``. ``close_idle()``: kept-alive connections waiting for their next
    request close now, and later ones close instead of waiting."""

    __slots__ = ("draining", "closing", "_idle")

    def __init__(self) -> None:
        self.draining = False
        self.closing = False
        self._idle: set[trio.CancelScope] = set()

    def close_idle(self) -> None:
        self.draining = True
        self.closing = True
        for scope in list(self._idle):
            scope.cancel()


def is_client_fault(exc: BaseException) -> bool:
    """Whether ``exc`` (or every leaf of a group) is the peer's doing."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_client_fault(e) for e in exc.exceptions)
    return isinstance(exc, _CLIENT_FAULTS)


async def serve_connection(
    stream: trio.abc.Stream,
    app: App,
    limits: Limits = DEFAULT_LIMITS,
    *,
    group: ConnectionGroup | None = None,
    client: tuple[str, int] | None = None,
    server: tuple[str, int] | None = None,
    scheme: str = "http",
    scope_extras: Mapping[str, Any] | None = None,
) -> None:
    """Serve HTTP/1.1 requests on ``stream`` (any ``trio.abc.Stream``: TCP, ``SSLStream``...)
    until either side closes it; never raises an exception of the connection's own; always
    closes ``stream``.

    ``client`` / ``server`` become the scope's (taken from the socket when omitted and
    ``stream`` is a ``trio.SocketStream``). ``scope_extras`` is merged into every request's
    scope (e.g. a tunnel's credential or a pinned snapshot). ``group`` links the connection
    to its server's drain."""
    if client is None and server is None and isinstance(stream, trio.SocketStream):
        client, server = socket_addresses(stream)
    connection = _Connection(
        stream, app, limits, group or ConnectionGroup(), client, server, scheme, scope_extras
    )
    try:
        await connection.serve()
    except Exception as exc:
        if is_client_fault(exc):
            log.debug("connection from %s ended: %r", _peer(client), exc)
        else:
            log.error("connection from %s failed", _peer(client), exc_info=exc)
    finally:
        await trio.aclose_forcefully(stream)


def socket_addresses(
    stream: trio.SocketStream,
) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """``(client, server)`` of a TCP stream, None where the socket no longer knows."""
    try:
        peer = stream.socket.getpeername()
        local = stream.socket.getsockname()
    except OSError:
        return None, None
    return (peer[0], peer[1]), (local[0], local[1])


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


class _Connection:
    __slots__ = (
        "stream",
        "app",
        "limits",
        "group",
        "conn",
        "scope_base",
        "peer_gone",
        "started_at",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        app: App,
        limits: Limits,
        group: ConnectionGroup,
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
        scheme: str,
        scope_extras: Mapping[str, Any] | None,
    ) -> None:
        self.stream = stream
        self.app = app
        self.limits = limits
        self.group = group
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_bytes)
        base: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "scheme": scheme,
            "root_path": "",
            "client": client,
            "server": server,
        }
        if scope_extras:
            base.update(scope_extras)
        self.scope_base = base
        self.peer_gone = False
        self.started_at = trio.current_time()

    # --- the request loop -----------------------------------------------------------------

    async def serve(self) -> None:
        first = True
        while True:
            try:
                request = await self._read_head(first)
            except h11.RemoteProtocolError as exc:
                log.debug("bad request from %s: %s", _peer(self.scope_base["client"]), exc)
                await self._send_error(client_error_status(exc))
                return
            if request is None:
                return
            first = False
            exchange = _Exchange(self, request)
            try:
                await self.app(self._scope(request), exchange.receive, exchange.send)
            except AbortConnection:
                log.debug("app closed the connection to %s", _peer(self.scope_base["client"]))
                return
            except Exception as exc:
                log.error(
                    "app failed on %s %s",
                    request.method.decode("ascii", "replace"),
                    request.target.decode("latin-1")[:200],
                    exc_info=exc,
                )
                if not exchange.started:
                    await self._send_error(500)
                return
            if not exchange.started:
                log.error(
                    "app sent no response to %s %s",
                    request.method.decode("ascii", "replace"),
                    request.target.decode("latin-1")[:200],
                )
                await self._send_error(500)
                return
            if exchange.pending_head is not None:  # started, then returned without a body
                await self.send_all(exchange.pending_head, exchange)
                exchange.pending_head = None
            step = after_response(
                self.conn,
                complete=exchange.complete,
                peer_gone=self.peer_gone,
                closing=self.group.closing,
                remaining=exchange.remaining(),
                limits=self.limits,
            )
            if step is AfterResponse.DRAIN:
                if not await self._drain_body():
                    await self._linger()
                    return
            elif step is AfterResponse.CLOSE:
                if self.conn.their_state is h11.SEND_BODY and not self.peer_gone:
                    await self._linger()
                return
            if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                return
            self.conn.start_next_cycle()

    def _scope(self, request: h11.Request) -> Scope:
        raw_path, query = split_target(request.target)
        scope = self.scope_base.copy()
        scope["http_version"] = request.http_version.decode("ascii")
        scope["method"] = request.method.decode("ascii")
        scope["path"] = decoded_path(raw_path)
        scope["raw_path"] = raw_path
        scope["query_string"] = query
        scope["headers"] = list(request.headers)
        return scope

    async def _read_head(self, first: bool) -> h11.Request | None:
        """The next request head, or None when the connection should close (peer closed,
        idle or header timeout, server closing)."""
        conn = self.conn
        limits = self.limits
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if first:
                deadline = self.started_at + limits.header_timeout
            else:
                if not conn.trailing_data[0] and not await self._wait_idle():
                    return None
                deadline = trio.current_time() + limits.header_timeout
            fed = 0
            with trio.move_on_at(deadline) as timer:
                if not first:
                    event = conn.next_event()  # the bytes _wait_idle received
                while event is h11.NEED_DATA:
                    data = await self.stream.receive_some(limits.receive_size)
                    fed += len(data)
                    conn.receive_data(data)  # type: ignore[arg-type]  # h11 reads any bytes-like
                    event = conn.next_event()
            if timer.cancelled_caught:
                log.debug("header timeout from %s", _peer(self.scope_base["client"]))
                return None
            if fed > limits.max_head_bytes and type(event) is h11.Request:
                if (error := head_too_large(event, limits)) is not None:
                    raise error
        elif type(event) is h11.Request and (error := head_too_large(event, limits)) is not None:
            raise error  # a pipelined head, already buffered
        if type(event) is h11.Request:
            if wants_http10_keep_alive(event) and not self.group.draining:
                allow_http10_keep_alive(conn)
            return event
        return None  # ConnectionClosed

    async def _wait_idle(self) -> bool:
        """Wait for the first byte of the next request on a kept-alive connection; False
        when the connection should close instead (idle timeout, peer closed, server
        closing)."""
        group = self.group
        if group.closing:
            return False
        with trio.move_on_after(self.limits.keepalive_timeout) as idle:
            group._idle.add(idle)
            try:
                data = await self.stream.receive_some(self.limits.receive_size)
            finally:
                group._idle.discard(idle)
        if idle.cancel_called:
            return False
        self.conn.receive_data(data)  # type: ignore[arg-type]  # h11 reads any bytes-like
        return bool(data)

    # --- body reading (called from the app's tasks through ``receive``) -------------------

    async def next_body(self, exchange: _Exchange) -> tuple[bytes, bool]:
        """The next piece of the request body and whether it was the last."""
        conn = self.conn
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if chunks:
                    return b"".join(chunks) if len(chunks) > 1 else chunks[0], False
                if conn.they_are_waiting_for_100_continue and not exchange.started:
                    await self.send_all(
                        conn.send(h11.InformationalResponse(status_code=100, headers=[])),
                        exchange,
                    )
                conn.receive_data(await self.stream.receive_some(self.limits.receive_size))  # type: ignore[arg-type]  # h11 reads any bytes-like
            elif type(event) is h11.Data:
                chunks.append(event.data)
            elif type(event) is h11.EndOfMessage:
                return b"".join(chunks), True
            else:  # ConnectionClosed mid-body is raised by h11; anything else is not a body
                raise h11.RemoteProtocolError(f"unexpected {type(event).__name__} in a body")

    async def wait_for_disconnect(self, exchange: _Exchange) -> None:
        """Return once the peer has closed (or reset) the connection. Bytes it sends
        meanwhile (a pipelined request) are kept for the next cycle, up to a bound."""
        fed = 0
        bound = self.limits.max_head_bytes + self.limits.receive_size
        with trio.CancelScope() as scope:
            exchange.disconnect_scope = scope
            try:
                while True:
                    if fed > bound:
                        await trio.sleep_forever()  # enough buffered: stop reading
                    data = await self.stream.receive_some(self.limits.receive_size)
                    if not data:
                        break
                    fed += len(data)
                    self.conn.receive_data(data)  # type: ignore[arg-type]  # h11 reads any bytes-like
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                exchange.disconnect_scope = None
        self.peer_gone = True

    async def send_all(self, data: bytes, exchange: _Exchange | None = None) -> None:
        """Send ``data``; a vanished peer makes this (and every later send) a no-op."""
        if self.peer_gone:
            return
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.peer_gone = True
            if exchange is not None and exchange.disconnect_scope is not None:
                exchange.disconnect_scope.cancel()

    # --- endings ----------------------------------------------------------------------------

    async def _drain_body(self) -> bool:
        """Read and drop the rest of a small request body after an early response; False
        when it does not end within the limits (the connection then closes)."""
        conn = self.conn
        limits = self.limits
        dropped = 0
        with trio.move_on_after(limits.early_drain_timeout):
            try:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await self.stream.receive_some(limits.receive_size))  # type: ignore[arg-type]  # h11 reads any bytes-like
                    elif type(event) is h11.Data:
                        dropped += len(event.data)
                        if dropped > limits.early_drain_bytes:
                            return False
                    else:
                        return type(event) is h11.EndOfMessage
            except _CLIENT_FAULTS:
                self.peer_gone = True
                return False
        return False

    async def _linger(self) -> None:
        """Before closing on a peer that may still be sending: stop writing, then read and
        drop for a moment, so the peer reads our answer instead of a reset."""
        stream = self.stream
        with trio.move_on_after(self.limits.early_drain_timeout):
            try:
                if isinstance(stream, trio.abc.HalfCloseableStream):
                    await stream.send_eof()
                while await stream.receive_some(self.limits.receive_size):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                pass

    async def _send_error(self, status: int) -> None:
        """A plain error answer (400/431 for a bad request, 500 for our failure) with
        ``Connection: close``, when the response has not started; then a lingering close."""
        conn = self.conn
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE) or self.peer_gone:
            return
        body = b"%d %s\n" % (status, reason(status))
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            _CLOSE,
        ]
        try:
            data = conn.send(
                h11.Response(status_code=status, headers=headers, reason=reason(status))
            )
            data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        with trio.move_on_after(self.limits.early_drain_timeout):
            await self.send_all(data)
        if conn.their_state is not h11.DONE:
            await self._linger()


class _Exchange:
    """One request/response cycle: the app's ``receive`` and ``send``."""

    __slots__ = (
        "c",
        "is_head",
        "declared",
        "received",
        "body_done",
        "started",
        "complete",
        "pending_head",
        "keep_alive_10",
        "disconnect_scope",
    )

    def __init__(self, connection: _Connection, request: h11.Request) -> None:
        self.c = connection
        self.is_head = request.method == b"HEAD"
        self.declared = declared_length(request.headers)
        self.keep_alive_10 = request.http_version == b"1.0" and wants_http10_keep_alive(request)
        self.received = 0
        self.body_done = connection.conn.their_state is h11.DONE
        self.started = False
        self.complete = False
        self.pending_head: bytes | None = None
        self.disconnect_scope: trio.CancelScope | None = None

    def remaining(self) -> int | None:
        """Unread bytes of a declared body (None: chunked)."""
        if self.body_done:
            return 0
        return None if self.declared is None else self.declared - self.received

    async def receive(self) -> Message:
        c = self.c
        if not self.body_done and not c.peer_gone:
            try:
                body, last = await c.next_body(self)
            except _CLIENT_FAULTS:
                c.peer_gone = True
            else:
                self.received += len(body)
                self.body_done = last
                return {"type": "http.request", "body": body, "more_body": not last}
        if not c.peer_gone:
            await c.wait_for_disconnect(self)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        c = self.c
        if kind == "http.response.body":
            if not self.started or self.complete:
                raise RuntimeError("http.response.body outside a response")
            conn = c.conn
            body = message.get("body", b"")
            out = self.pending_head or b""
            self.pending_head = None
            if body and not self.is_head:
                out += conn.send(h11.Data(data=body))
            if not message.get("more_body", False):
                out += conn.send(h11.EndOfMessage())
                self.complete = True
            if out:
                await c.send_all(out, self)
        elif kind == "http.response.start":
            if self.started:
                raise RuntimeError("response already started")
            self.started = True
            status: int = message["status"]
            headers = list(message.get("headers", ()))
            if c.group.draining:
                headers.append(_CLOSE)
            elif (
                not self.body_done
                and self.declared is not None
                and self.declared - self.received > c.limits.early_drain_bytes
            ):
                headers.append(_CLOSE)  # an early answer; too much body left to drop
            elif self.keep_alive_10 and response_has_length(status, b"GET", headers):
                headers.append(_KEEP_ALIVE)
            data = c.conn.send(
                h11.Response(status_code=status, headers=headers, reason=reason(status))
            )
            if response_has_length(status, b"HEAD" if self.is_head else b"GET", headers):
                self.pending_head = data  # sent with the first body message: one send_all
            else:
                await c.send_all(data, self)
        else:
            raise ValueError(f"unexpected ASGI message {kind!r}")
