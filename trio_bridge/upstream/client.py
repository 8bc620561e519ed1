"""One provider's upstream HTTP/1.1 client: a keep-alive pool, TLS, proxies, timeouts."""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import h11
import trio

from .connect import kill, open_stream
from .errors import (
    LocalProtocolError,
    ReadError,
    RemoteProtocolError,
    WriteError,
    WriteTimeout,
)
from .pool import Connection, Pool
from .proxyenv import ProxySettings
from .response import Response, receive
from .tls import client_context
from .url import DEFAULT_PORTS, URL, Origin

if TYPE_CHECKING:
    from .clients import UpstreamClients

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class UpstreamLimits:
    max_connections: int
    pool_timeout: float = 1.0
    connect_timeout: float = 10.0
    # The read timeout is a per-chunk gap: it carries stream_idle_timeout.
    read_timeout: float = 120.0
    keepalive_expiry: float = 30.0


class _URLLike(Protocol):
    scheme: str
    host: str
    port: int | None
    raw_path: bytes


class _Stale(Exception):
    """A reused connection gave no byte of an answer: the server had closed it."""


class UpstreamClient:
    """Sends requests on pooled connections; counts the requests pinned to it.

    ``send`` returns once the response head has arrived; stream the body with
    ``aiter_raw`` and always ``aclose`` the response. The caller owns the whole-request
    deadline (cancel ``send`` or the body iteration); a cancelled request's connection is
    closed, never reused.
    """

    def __init__(
        self,
        name: str,
        limits: UpstreamLimits,
        *,
        ca_pem: str | None = None,
        environ: Mapping[str, str] | None = None,
        proxies: ProxySettings | None = None,
    ) -> None:
        environ = {} if environ is None else environ
        self.name = name
        self.limits = limits
        self.ca_pem = ca_pem
        self._environ = environ
        self._proxies = proxies if proxies is not None else ProxySettings.from_environ(environ)
        self._context = client_context(ca_pem, environ)  # raises TLSConfigError
        self._proxy_context: ssl.SSLContext | None = None
        self.pool = Pool(limits.max_connections, limits.pool_timeout, limits.keepalive_expiry)
        self._pins = 0
        self._retired = False
        self._closer: UpstreamClients | None = None

    async def send(
        self, method: str, url: URL | _URLLike, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Response:
        """Send one request; the response body is not read yet.

        Exactly these headers go out, plus Host and Content-Length (when there is a body, or
        for POST/PUT/PATCH). The raw path is sent as is, never normalised."""
        if isinstance(url, URL):
            origin, raw_path = url.origin, url.raw_path
        else:
            scheme = url.scheme.lower()
            origin = Origin(scheme, url.host.lower(), url.port or DEFAULT_PORTS[scheme])
            raw_path = url.raw_path or b"/"
        proxy = self._proxies.proxy_for(origin)
        head: list[tuple[bytes, bytes]] = [(b"host", origin.host_header), *headers]
        if body or method in _BODY_METHODS:
            head.append((b"content-length", str(len(body)).encode("ascii")))
        target = raw_path
        if proxy is not None and origin.scheme == "http":
            target = str(origin).encode("ascii") + raw_path  # absolute-form
            if proxy.authorization is not None:
                head.append((b"proxy-authorization", proxy.authorization))
        try:
            request = h11.Request(method=method, target=target, headers=head)
        except h11.LocalProtocolError:
            raise LocalProtocolError("the request cannot be sent as HTTP/1.1") from None

        pool = self.pool
        conn = await pool.acquire(origin)
        while True:
            try:
                if conn is None:
                    if proxy is not None and proxy.origin.scheme == "https":
                        self._proxy_context = self._proxy_context or client_context(
                            None, self._environ
                        )
                    stream = await open_stream(
                        origin,
                        proxy,
                        self._context,
                        self._proxy_context,
                        self.limits.connect_timeout,
                    )
                    conn = Connection(stream, origin)
                return await self._exchange(conn, request, body)
            except _Stale:
                # Keep the slot, drop the connection, try once more on a fresh one (a fresh
                # connection never raises _Stale).
                assert conn is not None
                kill(conn.stream)
                conn = None
            except BaseException:
                if conn is None:
                    pool.release_slot()
                else:
                    pool.discard(conn)
                raise

    async def _exchange(self, conn: Connection, request: h11.Request, body: bytes) -> Response:
        h = conn.h11
        data = h.send(request)
        if body:
            data += h.send(h11.Data(data=body))
        data += h.send(h11.EndOfMessage())
        reused = conn.served > 0
        timeout = self.limits.read_timeout
        write_failed = False
        try:
            with trio.fail_after(timeout):
                await conn.stream.send_all(data)
        except trio.TooSlowError:
            raise WriteTimeout(f"sending the request to {conn.origin} timed out") from None
        except (trio.BrokenResourceError, OSError):
            # The server may have answered (an early error) before closing: read on.
            write_failed = True
        got_bytes = False
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError:
                raise RemoteProtocolError(f"{conn.origin} sent an invalid response head") from None
            if event is h11.NEED_DATA:
                try:
                    chunk = await receive(conn, timeout)
                except ReadError:
                    if reused and not got_bytes:
                        raise _Stale from None
                    if write_failed and not got_bytes:
                        raise WriteError(
                            f"connection to {conn.origin} broke while sending"
                        ) from None
                    raise
                if not chunk and not got_bytes:
                    if reused:
                        raise _Stale
                    if write_failed:
                        raise WriteError(f"connection to {conn.origin} broke while sending")
                    raise RemoteProtocolError(
                        f"{conn.origin} closed the connection without answering"
                    )
                got_bytes = True
                h.receive_data(chunk)
            elif type(event) is h11.Response:
                return Response(event, conn, self.pool, timeout)
            elif type(event) is h11.InformationalResponse:
                continue
            else:
                raise RemoteProtocolError(f"{conn.origin} closed the connection without answering")

    def sweep(self) -> int:
        """Close idle connections past their keep-alive expiry."""
        return self.pool.sweep()

    def close(self) -> None:
        """Close idle connections; busy ones are closed as their requests end."""
        self.pool.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    @contextmanager
    def pinned(self) -> Iterator[UpstreamClient]:
        """Use the client for one request; it stays open until every pin is released."""
        self._pins += 1
        try:
            yield self
        finally:
            self._pins -= 1
            if self._retired and self._pins == 0 and self._closer is not None:
                self._closer.close_soon(self)

    @property
    def pins(self) -> int:
        return self._pins
