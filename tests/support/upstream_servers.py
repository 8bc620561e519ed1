"""Loopback servers for the upstream client tests: raw trio handlers that speak (or break)
HTTP/1.1 byte by byte, optionally behind TLS, and a tiny CONNECT proxy."""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h11
import trio


@dataclass
class Seen:
    """One request as a test server saw it: head as on the wire, body, connection number."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    connection: int


@dataclass
class Server:
    port: int
    connections: int = 0
    seen: list[Seen] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)
    alpn: list[str | None] = field(default_factory=list)


Handler = Callable[[trio.abc.Stream, "Wire"], Awaitable[None]]


class Wire:
    """A server-side h11 connection on one stream, with helpers to answer in raw bytes."""

    def __init__(self, stream: trio.abc.Stream, server: Server, number: int) -> None:
        self.stream = stream
        self.server = server
        self.number = number
        self.conn = h11.Connection(h11.SERVER)

    async def read_request(self) -> Seen | None:
        head: h11.Request | None = None
        body = b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return None
                self.conn.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                seen = Seen(
                    head.method, head.target, list(head.headers.raw_items()), body, self.number
                )
                self.server.seen.append(seen)
                return seen
            else:
                return None

    def next_cycle(self) -> None:
        """After a raw answer, tell h11 the request was answered so it reads the next one."""
        self.conn = h11.Connection(h11.SERVER)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)


def reset(stream: trio.abc.Stream) -> None:
    """Close with RST (SO_LINGER 0), not FIN."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    assert isinstance(stream, trio.SocketStream)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


async def start_server(
    nursery: trio.Nursery,
    handler: Callable[[Wire], Awaitable[None]],
    *,
    tls: ssl.SSLContext | None = None,
) -> Server:
    """Serve ``handler`` (one call per connection) on 127.0.0.1; cancelled with the nursery."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server = Server(port=listeners[0].socket.getsockname()[1])

    async def on_connection(stream: trio.SocketStream) -> None:
        server.connections += 1
        wire_stream: trio.abc.Stream = stream
        try:
            if tls is not None:
                ssl_stream = trio.SSLStream(stream, tls, server_side=True)
                await ssl_stream.do_handshake()
                server.alpn.append(ssl_stream.selected_alpn_protocol())
                wire_stream = ssl_stream
            await handler(Wire(wire_stream, server, server.connections))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            try:
                await trio.aclose_forcefully(wire_stream)
            except OSError:
                pass

    nursery.start_soon(trio.serve_listeners, on_connection, listeners)
    return server


def ok(body: bytes = b"ok", *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n" % len(body) + b"".join(extra)
    return head + b"\r\n" + body


async def keep_alive_ok(wire: Wire) -> None:
    """Answer every request on the connection with 200 ``ok`` (keep-alive)."""
    while await wire.read_request() is not None:
        await wire.send(ok())
        wire.next_cycle()


@dataclass
class ProxyLog:
    port: int
    heads: list[bytes] = field(default_factory=list)


async def start_connect_proxy(
    nursery: trio.Nursery, *, refuse: int | None = None, answer_plain: bytes | None = None
) -> ProxyLog:
    """A CONNECT proxy on 127.0.0.1: tunnels to 127.0.0.1:<port of the target>, logs each
    request head; ``refuse`` answers CONNECT with that status; a plain (absolute-form)
    request gets ``answer_plain``."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    log = ProxyLog(port=listeners[0].socket.getsockname()[1])

    async def splice(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
        try:
            while data := await a.receive_some(65536):
                await b.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(b)

    async def on_connection(stream: trio.SocketStream) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = await stream.receive_some(65536)
            if not data:
                await stream.aclose()
                return
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        log.heads.append(head)
        method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
        if method != b"CONNECT":
            await stream.send_all(answer_plain or ok(b"from proxy"))
            await stream.aclose()
            return
        if refuse is not None:
            await stream.send_all(b"HTTP/1.1 %d Nope\r\ncontent-length: 0\r\n\r\n" % refuse)
            await stream.aclose()
            return
        port = int(target.rsplit(b":", 1)[1])
        upstream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            await upstream.send_all(rest)
        async with trio.open_nursery() as pair:
            pair.start_soon(splice, stream, upstream)
            pair.start_soon(splice, upstream, stream)

    nursery.start_soon(trio.serve_listeners, on_connection, listeners)
    return log


async def start_tls_front(nursery: trio.Nursery, tls: ssl.SSLContext, target_port: int) -> int:
    """A TLS terminator on 127.0.0.1 that splices each connection to 127.0.0.1:target_port."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def pipe(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
        try:
            while data := await a.receive_some(65536):
                await b.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(b)

    async def on_connection(stream: trio.SocketStream) -> None:
        front = trio.SSLStream(stream, tls, server_side=True, https_compatible=True)
        try:
            await front.do_handshake()
        except trio.BrokenResourceError:
            await trio.aclose_forcefully(stream)
            return
        back = await trio.open_tcp_stream("127.0.0.1", target_port)
        async with trio.open_nursery() as pair:
            pair.start_soon(pipe, front, back)
            pair.start_soon(pipe, back, front)

    nursery.start_soon(trio.serve_listeners, on_connection, listeners)
    return listeners[0].socket.getsockname()[1]
