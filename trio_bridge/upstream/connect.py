"""Opening one upstream connection: TCP, then (through a proxy) CONNECT, then TLS.

Everything here runs within the connect timeout; a failure or a cancellation at any point
closes whatever was opened so far."""

from __future__ import annotations

import ssl

import h11
import trio

from .errors import ConnectError, ConnectTimeout
from .proxyenv import Proxy
from .url import Origin

_RECEIVE = 65536


def kill(stream: trio.abc.Stream) -> None:
    """Close a stream at once, without a TLS close_notify and without a checkpoint (safe in
    a ``finally`` under cancellation)."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        stream.socket.close()


async def open_stream(
    origin: Origin,
    proxy: Proxy | None,
    context: ssl.SSLContext | None,
    proxy_context: ssl.SSLContext | None,
    timeout: float,  # noqa: ASYNC109 - bounds one phase inside
) -> trio.abc.Stream:
    """A connected stream to ``origin`` (TLS for https), through ``proxy`` if given.

    Raises ConnectError (refused, DNS, TLS, proxy refused) or ConnectTimeout."""
    try:
        with trio.fail_after(timeout):
            return await _open(origin, proxy, context, proxy_context)
    except trio.TooSlowError:
        via = f" through proxy {proxy.origin}" if proxy is not None else ""
        raise ConnectTimeout(f"connecting to {origin}{via} timed out") from None


async def _open(
    origin: Origin,
    proxy: Proxy | None,
    context: ssl.SSLContext | None,
    proxy_context: ssl.SSLContext | None,
) -> trio.abc.Stream:
    first_hop = proxy.origin if proxy is not None else origin
    try:
        stream: trio.abc.Stream = await trio.open_tcp_stream(first_hop.host, first_hop.port)
    except OSError as exc:
        what = "proxy " if proxy is not None else ""
        raise ConnectError(f"cannot connect to {what}{first_hop}: {_reason(exc)}") from None
    try:
        if proxy is not None and proxy.origin.scheme == "https":
            assert proxy_context is not None
            stream = await _tls(stream, proxy_context, proxy.origin)
        if proxy is not None and origin.scheme == "https":
            await _tunnel(stream, origin, proxy)
        if origin.scheme == "https":
            assert context is not None
            stream = await _tls(stream, context, origin)
    except BaseException:
        kill(stream)
        raise
    return stream


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


async def _tls(
    stream: trio.abc.Stream, context: ssl.SSLContext, origin: Origin
) -> trio.SSLStream[trio.abc.Stream]:
    tls = trio.SSLStream(stream, context, server_hostname=origin.host, https_compatible=True)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = f"certificate verify failed: {cause.verify_message}"
        elif isinstance(cause, ssl.SSLError):
            reason = cause.reason or type(cause).__name__
        else:
            reason = "connection closed during the handshake"
        raise ConnectError(f"TLS handshake with {origin} failed: {reason}") from None
    return tls


async def _tunnel(stream: trio.abc.Stream, origin: Origin, proxy: Proxy) -> None:
    """CONNECT ``origin`` through the proxy; returns once the tunnel is open."""
    conn = h11.Connection(h11.CLIENT)
    headers = [("host", origin.authority)]
    if proxy.authorization is not None:
        headers.append(("proxy-authorization", proxy.authorization.decode("ascii")))
    data = conn.send(h11.Request(method="CONNECT", target=origin.authority, headers=headers))
    data += conn.send(h11.EndOfMessage())
    try:
        await stream.send_all(data)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(_RECEIVE))  # type: ignore[arg-type]  # h11 reads any bytes-like
                continue
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                if 200 <= event.status_code < 300:
                    conn.next_event()  # PAUSED: the tunnel is open
                    leftover, _closed = conn.trailing_data
                    if leftover:
                        raise ConnectError(f"proxy {proxy.origin} sent bytes after CONNECT")
                    return
                raise ConnectError(
                    f"proxy {proxy.origin} refused CONNECT to {origin.authority}: "
                    f"{event.status_code}"
                )
            raise ConnectError(f"proxy {proxy.origin} closed the connection during CONNECT")
    except (trio.BrokenResourceError, h11.ProtocolError, OSError):
        raise ConnectError(
            f"proxy {proxy.origin} broke the CONNECT to {origin.authority}"
        ) from None
