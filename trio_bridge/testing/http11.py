"""A minimal HTTP/1.1 server: a thin trio shell over h11.

Guarantees:

- one task per connection; requests on a connection are answered one after
  another (keep-alive), a pipelined request waits for the previous answer;
- the request body (Content-Length or chunked) is read whole before the
  handler runs; ``Expect: 100-continue`` is honoured;
- a response is either whole (``Content-Length``) or streamed (chunked, one
  chunk per :meth:`Responder.send`), or aborted mid-body;
- a peer that goes away or speaks broken HTTP ends its connection quietly;
  the server never crashes because of a client;
- cancelling :func:`serve_listeners` closes every connection at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus

import h11
import trio

__all__ = [
    "Handler",
    "Request",
    "Responder",
    "open_listeners",
    "serve_connection",
    "serve_listeners",
]

logger = logging.getLogger("trio_bridge.testing.http11")

_RECEIVE_SIZE = 65536
_REASONS = {int(s): s.phrase.encode() for s in HTTPStatus}
_REASONS.setdefault(529, b"Site Overloaded")
# Errors that mean "the peer is gone or broke the protocol": end the connection quietly.
_PEER_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError)

Headers = Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Request:
    """One request as received: the target exactly as on the wire, names lower-cased."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    http_version: str = "1.1"


Handler = Callable[[Request, "Responder"], Awaitable[None]]


class Responder:
    """Writes the answer to one request: :meth:`respond` once, or :meth:`start`,
    :meth:`send`... then :meth:`end` (or :meth:`abort`)."""

    __slots__ = ("_conn", "_stream", "_head", "_watching", "started", "finished", "must_close")

    def __init__(self, conn: h11.Connection, stream: trio.abc.Stream, method: str) -> None:
        self._conn = conn
        self._stream = stream
        self._head = method == "HEAD"
        self._watching = False
        self.started = False
        self.finished = False
        # Set when the connection cannot carry another request (abort, peer gone).
        self.must_close = False

    async def respond(self, status: int, headers: Headers, body: bytes = b"") -> None:
        """Send a whole response with a ``Content-Length``."""
        self._begin()
        conn = self._conn
        head = [*headers, ("content-length", str(len(body)))]
        data = conn.send(h11.Response(status_code=status, headers=head, reason=_reason(status)))
        if body and not self._head:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        self.finished = True
        await self._stream.send_all(data)

    async def start(self, status: int, headers: Headers) -> None:
        """Send the head of a streamed (chunked) response."""
        self._begin()
        data = self._conn.send(
            h11.Response(status_code=status, headers=list(headers), reason=_reason(status))
        )
        await self._stream.send_all(data)

    async def send(self, data: bytes) -> None:
        """Send ``data`` as one chunk of a streamed response (nothing for empty data)."""
        if not data or self._head:
            return
        await self._stream.send_all(self._conn.send(h11.Data(data=data)))

    async def end(self) -> None:
        """Finish a streamed response normally (the terminating zero-length chunk)."""
        self.finished = True
        await self._stream.send_all(self._conn.send(h11.EndOfMessage()))

    def abort(self) -> None:
        """Give up on this response: the connection is closed without finishing the body."""
        self.finished = True
        self.must_close = True

    async def run_watching_peer(self, fn: Callable[[], Awaitable[object]]) -> bool:
        """Run ``fn``; cancel it if the peer closes the connection meanwhile.

        Returns True when ``fn`` finished, False when the peer went away first (the
        connection is then closed). A send to a vanished peer counts as going away.
        Nested calls just run ``fn``: the outermost one watches.
        """
        if self._watching:
            await fn()
            return True
        self._watching = True
        peer_gone = False

        async def watch(cancel_scope: trio.CancelScope) -> None:
            nonlocal peer_gone
            try:
                while data := await self._stream.receive_some(_RECEIVE_SIZE):
                    self._conn.receive_data(data)  # a pipelined request, kept for later
            except _PEER_ERRORS:
                pass
            peer_gone = True
            cancel_scope.cancel()

        # Everything is caught inside the nursery: trio wraps what escapes it in a group.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            try:
                await fn()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                peer_gone = True
            nursery.cancel_scope.cancel()
        self._watching = False
        if peer_gone:
            self.must_close = True
        return not peer_gone

    def _begin(self) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True


def _reason(status: int) -> bytes:
    return _REASONS.get(status, b"")


async def _read_request(conn: h11.Connection, stream: trio.abc.Stream) -> Request | None:
    """The next whole request on the connection, or None when the peer closed it cleanly."""
    head: h11.Request | None = None
    body: list[bytes] = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            if conn.they_are_waiting_for_100_continue:
                await stream.send_all(
                    conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                )
            conn.receive_data(await stream.receive_some(_RECEIVE_SIZE))
        elif type(event) is h11.Request:
            head = event
        elif type(event) is h11.Data:
            body.append(event.data)
        elif type(event) is h11.EndOfMessage:
            assert head is not None
            return Request(
                method=head.method.decode("ascii"),
                target=head.target.decode("latin-1"),
                headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in head.headers],
                body=b"".join(body),
                http_version=head.http_version.decode("ascii"),
            )
        else:  # ConnectionClosed or PAUSED
            return None


async def _send_bad_request(conn: h11.Connection, stream: trio.abc.Stream) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = b"bad request\n"
    headers = [("content-type", "text/plain"), ("content-length", str(len(body)))]
    with trio.move_on_after(1):
        data = conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request"))
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        await stream.send_all(data)


async def serve_connection(stream: trio.abc.Stream, handler: Handler) -> None:
    """Serve requests on one connection until either side closes it; always closes ``stream``."""
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            try:
                request = await _read_request(conn, stream)
            except h11.RemoteProtocolError:
                await _send_bad_request(conn, stream)
                return
            if request is None:
                return
            responder = Responder(conn, stream, request.method)
            try:
                await handler(request, responder)
            except _PEER_ERRORS:
                return
            except Exception:
                logger.exception("handler failed for %s %s", request.method, request.target)
                if not responder.started:
                    await responder.respond(
                        500, [("content-type", "text/plain")], b"handler failed\n"
                    )
                return
            if not responder.finished:
                if responder.started:
                    return
                await responder.respond(500, [("content-type", "text/plain")], b"no response\n")
            if responder.must_close or conn.our_state is not h11.DONE:
                return
            if conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except _PEER_ERRORS:
        pass
    finally:
        await trio.aclose_forcefully(stream)


async def open_listeners(host: str, port: int) -> tuple[list[trio.SocketListener], int]:
    """TCP listeners on ``host:port`` (0: any free port) and the port actually bound."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    return listeners, bound


async def serve_listeners(handler: Handler, listeners: list[trio.SocketListener]) -> None:
    """Accept connections forever, one task each; cancel to stop (listeners are closed)."""

    async def on_connection(stream: trio.SocketStream) -> None:
        await serve_connection(stream, handler)

    try:
        await trio.serve_listeners(on_connection, listeners)
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
