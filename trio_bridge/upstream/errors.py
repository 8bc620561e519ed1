"""What can go wrong talking to an upstream. Messages name the phase and the origin
(scheme://host:port), never a header, a key or proxy credentials."""

from __future__ import annotations


class UpstreamError(Exception):
    """Any failure of an upstream exchange."""


class UpstreamTimeout(UpstreamError):
    """A timer of the exchange ran out."""


class ConnectError(UpstreamError):
    """No connection: refused, DNS failure, TLS handshake or verification failure, or the
    proxy refused the CONNECT."""


class ConnectTimeout(UpstreamTimeout):
    """TCP connect, proxy CONNECT and TLS handshake together took longer than the connect
    timeout."""


class ReadTimeout(UpstreamTimeout):
    """No byte arrived for longer than the read timeout (a gap, not a whole-body limit)."""


class WriteTimeout(UpstreamTimeout):
    """The request could not be written within the read timeout."""


class PoolTimeout(UpstreamTimeout):
    """Every connection slot stayed busy for the whole pool timeout."""


class ReadError(UpstreamError):
    """The connection broke while reading (reset)."""


class WriteError(UpstreamError):
    """The connection broke while sending the request and no answer came."""


class RemoteProtocolError(UpstreamError):
    """The upstream broke HTTP/1.1 or closed the connection before the message was whole."""


class LocalProtocolError(UpstreamError):
    """The request itself cannot be sent as HTTP/1.1 (e.g. a header value with CR/LF)."""


class ClientClosed(UpstreamError):
    """The client was closed (a retired provider client used after its close)."""


class UpstreamConfigError(ValueError):
    """A client cannot be built: a proxy variable or a CA bundle is unusable. The message
    names the setting, never its value."""


class TLSConfigError(UpstreamConfigError):
    """A CA bundle could not be loaded (bad PEM, unreadable SSL_CERT_FILE)."""
