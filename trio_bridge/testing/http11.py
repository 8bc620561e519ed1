"""A handler-style HTTP/1.1 server for the fakes and benchmarks, on the bridge's own core.

A thin adapter over :mod:`trio_bridge.server`: the same connection handling as
production (keep-alive, pipelining, chunked bodies, ``Expect: 100-continue``, limits,
containment), with a simpler interface than ASGI:

- the request body is read whole before the handler runs (:class:`Request`);
- a response is either whole (:meth:`Responder.respond`, ``Content-Length``) or streamed
  (:meth:`Responder.start`, one chunk per :meth:`Responder.send`, :meth:`Responder.end`),
  or aborted mid-body (:meth:`Responder.abort`: the connection closes);
- a peer that goes away or speaks broken HTTP ends its connection quietly;
- cancelling :func:`serve_listeners` closes every connection at once.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from ..http.asgi import Receive, Scope, Send
from ..server import AbortConnection, App, HTTPServer, Limits, TCPListener, open_tcp_listeners
from ..server import serve_connection as _serve_connection

__all__ = [
    "Handler",
    "Request",
    "Responder",
    "open_listeners",
    "serve_connection",
    "serve_listeners",
]

TextHeaders = Sequence[tuple[str, str]]
# The fakes stand in for upstreams: idle connections stay open until the client closes them
# (a clock jump in a test must not close a pooled connection under the bridge).
_LIMITS = Limits(keepalive_timeout=math.inf)


@dataclass(frozen=True, slots=True)
class Request:
    """One request as received: the target exactly as on the wire, names lower-cased."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    http_version: str = "1.1"


Handler = Callable[[Request, "Responder"], Awaitable[None]]


def _encode(headers: TextHeaders) -> list[tuple[bytes, bytes]]:
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]


class Responder:
    """Writes the answer to one request: :meth:`respond` once, or :meth:`start`,
    :meth:`send`... then :meth:`end` (or :meth:`abort`)."""

    __slots__ = ("_receive", "_send", "_watching", "started", "finished", "must_close")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._watching = False
        self.started = False
        self.finished = False
        # Set when the connection cannot carry another request (abort, peer gone).
        self.must_close = False

    async def respond(self, status: int, headers: TextHeaders, body: bytes = b"") -> None:
        """Send a whole response with a ``Content-Length``."""
        self._begin()
        head = _encode(headers)
        head.append((b"content-length", str(len(body)).encode()))
        self.finished = True
        await self._send({"type": "http.response.start", "status": status, "headers": head})
        await self._send({"type": "http.response.body", "body": body})

    async def start(self, status: int, headers: TextHeaders) -> None:
        """Send the head of a streamed (chunked) response."""
        self._begin()
        await self._send(
            {"type": "http.response.start", "status": status, "headers": _encode(headers)}
        )

    async def send(self, data: bytes) -> None:
        """Send ``data`` as one chunk of a streamed response (nothing for empty data)."""
        if data:
            await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self) -> None:
        """Finish a streamed response normally (the terminating zero-length chunk)."""
        self.finished = True
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    def abort(self) -> None:
        """Give up on this response: the connection is closed without finishing the body."""
        self.finished = True
        self.must_close = True

    async def run_watching_peer(self, fn: Callable[[], Awaitable[object]]) -> bool:
        """Run ``fn``; cancel it if the peer closes the connection meanwhile.

        Returns True when ``fn`` finished, False when the peer went away first (the
        connection is then closed). Nested calls just run ``fn``: the outermost one watches.
        """
        if self._watching:
            await fn()
            return True
        self._watching = True
        peer_gone = False

        async def watch(cancel_scope: trio.CancelScope) -> None:
            nonlocal peer_gone
            while (await self._receive())["type"] != "http.disconnect":
                pass
            peer_gone = True
            cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            await fn()
            nursery.cancel_scope.cancel()
        self._watching = False
        if peer_gone:
            self.must_close = True
        return not peer_gone

    def _begin(self) -> None:
        if self.started:
            raise RuntimeError("response already started")
        self.started = True


def handler_app(handler: Handler) -> App:
    """The ASGI app that reads the body whole and calls ``handler``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise AbortConnection
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        target = scope["raw_path"]
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        request = Request(
            method=scope["method"],
            target=target.decode("latin-1"),
            headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"]],
            body=b"".join(chunks),
            http_version=scope["http_version"],
        )
        responder = Responder(receive, send)
        await handler(request, responder)
        if responder.must_close:
            raise AbortConnection
        if responder.started and not responder.finished:
            raise AbortConnection  # a streamed answer left unfinished: the peer sees the cut
        if not responder.started:
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"12")],
                }
            )
            await send({"type": "http.response.body", "body": b"no response\n"})

    return app


async def serve_connection(stream: trio.abc.Stream, handler: Handler) -> None:
    """Serve requests on one connection until either side closes it; always closes ``stream``."""
    await _serve_connection(stream, handler_app(handler), _LIMITS)


async def open_listeners(host: str, port: int) -> tuple[list[TCPListener], int]:
    """TCP listeners on ``host:port`` (0: any free port) and the port actually bound."""
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    listeners = await open_tcp_listeners(bind)
    return listeners, listeners[0].address[1]


async def serve_listeners(handler: Handler, listeners: list[TCPListener]) -> None:
    """Accept connections forever, one task each; cancel to stop (listeners are closed)."""
    server = HTTPServer(handler_app(handler), _LIMITS, name="fake")
    await server.serve(listeners)
