"""Every provider's upstream client: reused across reloads while its settings are unchanged,
closed only after the last request pinned to it has ended."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from .client import UpstreamClient, UpstreamLimits
from .errors import UpstreamConfigError
from .proxyenv import ProxyConfigError, ProxySettings

log = logging.getLogger("trio_bridge.upstream")


class UpstreamClients:
    """Owns every upstream client: hands them to snapshot builds, closes retired ones, and
    closes idle connections past their expiry.

    ``run`` must be started in a nursery before clients are retired; on exit it closes all.
    Proxy variables and ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` are read from ``environ``.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ: Mapping[str, str] = {} if environ is None else environ
        self._proxies: ProxySettings | None = None
        self._proxy_error: str | None = None
        try:
            self._proxies = ProxySettings.from_environ(self._environ)
        except ProxyConfigError as exc:
            self._proxy_error = str(exc)
        self._live: dict[str, UpstreamClient] = {}

    def client_for(
        self, name: str, limits: UpstreamLimits, *, ca_pem: str | None = None
    ) -> UpstreamClient:
        """The live client for a provider, or a new one when its limits or CA changed (staged
        until ``commit``). Raises UpstreamConfigError (bad proxy variable, bad CA bundle)."""
        client = self._live.get(name)
        if client is not None and client.limits == limits and client.ca_pem == ca_pem:
            return client
        if self._proxies is None:
            raise UpstreamConfigError(self._proxy_error or "proxy settings are unusable")
        return UpstreamClient(
            name, limits, ca_pem=ca_pem, environ=self._environ, proxies=self._proxies
        )

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
        log.debug("closing upstream client of provider %s", client.name)
        client.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            task_status.started()
            # Idle connections expire lazily (checked whenever a connection is taken or
            # returned): no periodic timer, so a MockClock never jumps to one.
            await trio.sleep_forever()
        finally:
            for client in list(self._live.values()):
                client.close()
            self._live.clear()
