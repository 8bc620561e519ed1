"""Upstream HTTP clients: one httpx2 connection pool per provider, reused across reloads while its
limits are unchanged, and closed only after the last request pinned to it has ended."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx2
import trio

log = logging.getLogger("trio_bridge.upstream")


@dataclass(frozen=True)
class UpstreamLimits:
    max_connections: int
    pool_timeout: float = 1.0
    connect_timeout: float = 10.0
    # The read timeout is a per-chunk gap: it carries stream_idle_timeout.
    read_timeout: float = 120.0


class UpstreamClient:
    """An httpx2 connection pool (its public transport) plus a count of the requests using it.

    Requests go straight to the transport: the bridge needs none of ``AsyncClient``'s layers
    (cookies, redirects, auth flows, default headers), and skipping them saves ~5% per request.
    """

    def __init__(self, name: str, limits: UpstreamLimits) -> None:
        self.name = name
        self.limits = limits
        self.transport = httpx2.AsyncHTTPTransport(
            limits=httpx2.Limits(
                max_connections=limits.max_connections,
                max_keepalive_connections=limits.max_connections,
                keepalive_expiry=30.0,
            ),
        )
        self._timeout = httpx2.Timeout(
            connect=limits.connect_timeout,
            read=limits.read_timeout,
            write=limits.read_timeout,
            pool=limits.pool_timeout,
        ).as_dict()
        self._pins = 0
        self._retired = False
        self._closer: UpstreamClients | None = None

    async def send(
        self, method: str, url: httpx2.URL, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> httpx2.Response:
        """Send one request; the response body is not read (stream it, then ``aclose``).

        Exactly these headers go out, plus Host and Content-Length."""
        request = httpx2.Request(
            method, url, headers=headers, content=body, extensions={"timeout": self._timeout}
        )
        return await self.transport.handle_async_request(request)

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


class UpstreamClients:
    """Owns every upstream client: hands them to snapshot builds, closes retired ones.

    ``run`` must be started in a nursery before clients are retired; on exit it closes all.
    """

    def __init__(self) -> None:
        self._live: dict[str, UpstreamClient] = {}
        self._nursery: trio.Nursery | None = None
        self._pending: list[UpstreamClient] = []

    def client_for(self, name: str, limits: UpstreamLimits) -> UpstreamClient:
        """The live client for a provider, or a new one when its limits changed (staged until
        ``commit``)."""
        client = self._live.get(name)
        if client is not None and client.limits == limits:
            return client
        return UpstreamClient(name, limits)

    def commit(self, in_use: dict[str, UpstreamClient]) -> None:
        """Make ``in_use`` the live set after a swap; retire every client no longer in it."""
        keep = {id(c) for c in in_use.values()}
        for client in self._live.values():
            if id(client) not in keep:
                self.retire(client)
        self._live = dict(in_use)

    def discard(self, clients: dict[str, UpstreamClient]) -> None:
        """A build that was not swapped in: retire its clients that are not live."""
        live = {id(c) for c in self._live.values()}
        for client in clients.values():
            if id(client) not in live:
                self.retire(client)

    def retire(self, client: UpstreamClient) -> None:
        client._retired = True
        client._closer = self
        if client.pins == 0:
            self.close_soon(client)

    def close_soon(self, client: UpstreamClient) -> None:
        if self._nursery is None:
            self._pending.append(client)
        else:
            self._nursery.start_soon(self._close, client)

    async def _close(self, client: UpstreamClient) -> None:
        log.debug("closing upstream client of provider %s", client.name)
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await client.transport.aclose()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for client in self._pending:
                    nursery.start_soon(self._close, client)
                self._pending.clear()
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                for client in list(self._live.values()):
                    with trio.move_on_after(2):
                        await client.transport.aclose()
                self._live.clear()
