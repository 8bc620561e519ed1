"""The proxy listener's connections: read one CONNECT, check it, then intercept (TLS
terminated with a minted leaf, requests served by the bridge app) or tunnel bytes.

Guarantees: a CONNECT is answered only after its credential was checked against the
snapshot the tunnel pins for its whole life; a client that misbehaves (garbage, an aborted
handshake, a reset) ends its own tunnel only; nothing here logs a credential.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
import trio

from .. import metrics
from ..http.auth import Unauthenticated, authenticate
from ..snapshot import Snapshot
from .connect import Action, ConnectError, decide, parse_target, proxy_credential
from .leaves import LeafCache

log = logging.getLogger("trio_bridge.proxy_mode")

MAX_HEAD = 64 * 1024
HANDSHAKE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
_RECEIVE = 65536

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
# serve(stream, app, scope_extras) serves HTTP/1.1 on an already-open stream until it closes.
ServeHTTP = Callable[[trio.abc.Stream, ASGIApp], Awaitable[None]]


@dataclass
class TunnelLimits:
    header_timeout: float = 10.0
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    connect_timeout: float = CONNECT_TIMEOUT


class PrefixedStream(trio.abc.Stream):
    """A stream that first yields bytes already read from it (what h11 read past the head)."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream, self._prefix = stream, prefix

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            n = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            return data
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


def tunnel_path_prefix(base_url: str, dialect_base_path: str) -> str:
    """The part of a provider's base_url path that the tunnel strips from inner paths
    before routing them as ``/{provider}/...`` (openai keeps its ``/v1``)."""
    path = urlsplit(base_url).path.rstrip("/")
    if dialect_base_path and path.endswith(dialect_base_path):
        path = path[: len(path) - len(dialect_base_path)]
    return path


class TunnelApp:
    """The bridge app as seen from inside one intercepted tunnel: inner paths become
    ``/{provider}`` routes, the CONNECT credential acts as ``X-Trio-Bridge-Token``, and
    every request uses the snapshot the tunnel pinned."""

    def __init__(
        self, app: ASGIApp, provider: str, strip: str, token: str | None, snapshot: Snapshot
    ) -> None:
        self.app, self.snapshot = app, snapshot
        self._prefix = b"/" + provider.encode()
        self._strip = strip.encode()
        self._token = token.encode() if token is not None else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        if self._strip and (raw == self._strip or raw.startswith(self._strip + b"/")):
            raw = raw[len(self._strip) :]
        raw = self._prefix + raw
        headers = [(n, v) for n, v in scope["headers"] if n != b"x-trio-bridge-token"]
        if self._token is not None:
            headers.append((b"x-trio-bridge-token", self._token))
        inner = dict(scope)
        inner.update(
            raw_path=raw,
            path=raw.decode("latin-1"),
            headers=headers,
            scheme="https",
        )
        inner["trio_bridge.snapshot"] = self.snapshot
        await self.app(inner, receive, send)


class ProxyConnections:
    """Serves connections accepted on ``--proxy-listen``."""

    def __init__(
        self,
        current: Callable[[], Snapshot],
        app: ASGIApp,
        serve_http: ServeHTTP,
        limits: TunnelLimits | None = None,
    ) -> None:
        self._current = current
        self._app = app
        self._serve_http = serve_http
        self.limits = limits or TunnelLimits()
        self._cache: LeafCache | None = None
        self.tunnels = 0

    def leaves_for(self, snapshot: Snapshot) -> LeafCache | None:
        """The leaf cache of the snapshot's CA; a new CA drops every cached leaf."""
        view = snapshot.proxy
        if view is None or view.ca is None:
            return None
        if self._cache is None or self._cache.ca.fingerprint != view.ca.fingerprint:
            self._cache = LeafCache(view.ca)
        return self._cache

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one accepted connection; always closes it."""
        outcome = "error"
        try:
            outcome = await self._handle(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            outcome = "client_error"
        except trio.TooSlowError:
            outcome = "timeout"
        except Exception:
            log.exception("proxy connection failed")
        finally:
            metrics.proxy_mode_connections.labels(outcome).inc()
            await trio.aclose_forcefully(stream)

    async def _handle(self, stream: trio.abc.Stream) -> str:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        with trio.fail_after(self.limits.header_timeout):
            request = await _read_head(conn, stream)
        if request is None:
            return "client_error"
        if request.method != b"CONNECT":
            await _respond(conn, stream, 405, b"proxy mode accepts CONNECT only")
            return "rejected"
        snapshot = self._current()  # pinned for the tunnel's whole life
        bridge = snapshot.bridge
        token = proxy_credential(_header(request, b"proxy-authorization"))
        try:
            presented = [(b"x-trio-bridge-token", token.encode())] if token else []
            authenticate(presented, auth=bridge.auth, clients=snapshot.clients)
        except Unauthenticated:
            await _respond(
                conn,
                stream,
                407,
                b"proxy authentication required: send the bridge client token",
                extra=[(b"proxy-authenticate", b'Basic realm="trio-bridge"')],
            )
            return "unauthenticated"
        try:
            host, port = parse_target(request.target)
        except ConnectError as exc:
            await _respond(conn, stream, 400, str(exc).encode())
            return "rejected"
        view = snapshot.proxy
        leaves = self.leaves_for(snapshot)
        if view is None:
            await _respond(conn, stream, 403, b"proxy mode is not configured")
            return "forbidden"
        decision = decide(host, port, view.hosts, view.passthrough)
        if decision.action is Action.FORBIDDEN or (
            decision.action is Action.INTERCEPT and leaves is None
        ):
            await _respond(conn, stream, 403, f"CONNECT to {decision.key} is not allowed".encode())
            return "forbidden"
        if decision.action is Action.PASSTHROUGH:
            return await self._passthrough(conn, stream, host, port)
        assert leaves is not None and decision.provider is not None
        provider = snapshot.providers[decision.provider]
        leaf = await leaves.get(host)
        await _respond(conn, stream, 200, b"")
        inner: trio.abc.Stream = PrefixedStream(stream, conn.trailing_data[0])
        tls = trio.SSLStream(inner, leaf.context, server_side=True)
        with trio.fail_after(self.limits.handshake_timeout):
            await tls.do_handshake()
        base_path = getattr(provider.dialect, "base_path", "") if provider.dialect else ""
        app = TunnelApp(
            self._app,
            provider.name,
            tunnel_path_prefix(provider.base_url or "", base_path or ""),
            token,
            snapshot,
        )
        self.tunnels += 1
        with contextlib.ExitStack() as pins:
            # The pinned snapshot's upstream clients stay open while the tunnel lives, even
            # if a reload retires them (a fallback may use another provider's client).
            for served in snapshot.providers.values():
                upstream = getattr(served, "upstream", None)
                if upstream is not None:
                    pins.enter_context(upstream.pinned())
            await self._serve_http(tls, app)
        return "intercepted"

    async def _passthrough(
        self, conn: h11.Connection, stream: trio.abc.Stream, host: str, port: int
    ) -> str:
        try:
            with trio.fail_after(self.limits.connect_timeout):
                upstream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError):
            await _respond(conn, stream, 502, f"cannot reach {host}:{port}".encode())
            return "upstream_error"
        async with upstream:
            await _respond(conn, stream, 200, b"")
            trailing = conn.trailing_data[0]
            if trailing:
                await upstream.send_all(trailing)
            await splice(stream, upstream)
        return "passthrough"


async def splice(a: trio.abc.Stream, b: trio.abc.Stream) -> None:
    """Copy bytes both ways until either side closes or fails; then both are done."""

    async def pump(src: trio.abc.Stream, dst: trio.abc.Stream, scope: trio.CancelScope) -> None:
        try:
            while data := await src.receive_some(_RECEIVE):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump, a, b, nursery.cancel_scope)
        nursery.start_soon(pump, b, a, nursery.cancel_scope)


async def _read_head(conn: h11.Connection, stream: trio.abc.Stream) -> h11.Request | None:
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            await _respond(conn, stream, status, b"bad request")
            return None
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_RECEIVE)
            if not data:
                return None
            conn.receive_data(bytes(data))
            continue
        if isinstance(event, h11.Request):
            return event
        return None


def _header(request: h11.Request, name: bytes) -> bytes | None:
    for n, v in request.headers:
        if n == name:
            return bytes(v)
    return None


async def _respond(
    conn: h11.Connection,
    stream: trio.abc.Stream,
    status: int,
    body: bytes,
    *,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer the CONNECT; any status but 200 ends the connection after the body."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    if status == 200:
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=[])))
        return
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *(extra or []),
    ]
    try:
        data = conn.send(h11.Response(status_code=status, headers=headers))
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        return
    with trio.move_on_after(1):
        await stream.send_all(data)
