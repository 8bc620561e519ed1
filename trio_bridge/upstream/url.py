"""Upstream URLs: an origin (scheme, host, port) plus a raw target sent exactly as given."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a connection goes; connections are pooled per origin."""

    scheme: str  # "http" or "https"
    host: str  # lower-case; an IPv6 address without brackets
    port: int

    @property
    def host_header(self) -> bytes:
        """The Host header value: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != DEFAULT_PORTS[self.scheme]:
            host = f"{host}:{self.port}"
        return host.encode("ascii")

    @property
    def authority(self) -> str:
        """host:port, as a CONNECT target."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}"


@dataclass(frozen=True, slots=True)
class URL:
    """An origin and the raw path + query. The path is never normalised (``..`` stays)."""

    origin: Origin
    raw_path: bytes

    @property
    def scheme(self) -> str:
        return self.origin.scheme

    @property
    def host(self) -> str:
        return self.origin.host

    @property
    def port(self) -> int:
        return self.origin.port

    def __str__(self) -> str:
        return f"{self.origin}{self.raw_path.decode('latin-1')}"


class InvalidURL(ValueError):
    pass


@functools.lru_cache(maxsize=256)
def parse_origin(url: str) -> tuple[Origin, str]:
    """The origin of an ``http(s)://`` URL and its path (query dropped); userinfo ignored."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidURL("invalid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise InvalidURL("expected an http:// or https:// URL with a host")
    return Origin(scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]), parts.path


@functools.lru_cache(maxsize=4096)
def join_url(base_url: str, raw_tail: bytes) -> URL:
    """``base_url``'s path (without its trailing slash) followed by the raw tail, as is."""
    origin, path = parse_origin(base_url)
    return URL(origin, path.rstrip("/").encode("latin-1") + raw_tail or b"/")
