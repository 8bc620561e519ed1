"""Upstream HTTP/1.1 clients on trio over h11: one keep-alive pool per provider.

- ``client.py``: ``UpstreamClient.send`` (request out, head back, body streamed), retries a
  stale reused connection once; ``clients.py``: ``UpstreamClients`` (reuse across reloads,
  pins, closing, idle sweep);
- ``pool.py``: slots, idle connections, FIFO waiters; ``connect.py``: TCP, proxy CONNECT,
  TLS; ``tls.py``: SSL contexts; ``proxyenv.py``: HTTPS_PROXY / HTTP_PROXY / NO_PROXY;
- ``response.py``: ``Response`` (httpx-like names); ``errors.py``; ``url.py``.
"""

from .client import UpstreamClient, UpstreamLimits
from .clients import UpstreamClients
from .errors import (
    ClientClosed,
    ConnectError,
    ConnectTimeout,
    LocalProtocolError,
    PoolTimeout,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    TLSConfigError,
    UpstreamConfigError,
    UpstreamError,
    UpstreamTimeout,
    WriteError,
    WriteTimeout,
)
from .proxyenv import Proxy, ProxyConfigError, ProxySettings
from .response import Response, ResponseHeaders
from .url import URL, InvalidURL, Origin, join_url

__all__ = [
    "URL",
    "ClientClosed",
    "ConnectError",
    "ConnectTimeout",
    "InvalidURL",
    "LocalProtocolError",
    "Origin",
    "PoolTimeout",
    "Proxy",
    "ProxyConfigError",
    "ProxySettings",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "Response",
    "ResponseHeaders",
    "TLSConfigError",
    "UpstreamClient",
    "UpstreamClients",
    "UpstreamConfigError",
    "UpstreamError",
    "UpstreamLimits",
    "UpstreamTimeout",
    "WriteError",
    "WriteTimeout",
    "join_url",
]
