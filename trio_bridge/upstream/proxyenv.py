"""The standard proxy variables, read as httpx reads them. Sans-IO.

- ``HTTPS_PROXY`` for https upstreams, ``HTTP_PROXY`` for http ones, ``ALL_PROXY`` for
  either when the specific one is unset; the lower-case spelling wins over the upper-case
  one, and an empty value means "no proxy". A value without a scheme means ``http://``.
- ``NO_PROXY``: comma-separated; ``*`` bypasses every host; ``example.com`` matches that
  host and its subdomains, ``.example.com`` / ``*.example.com`` only subdomains; an entry
  may carry ``:port``; IP addresses match exactly, CIDR blocks (``10.0.0.0/8``) by range;
  an entry with ``://`` is a URL pattern (scheme, host rule, optional port).
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .errors import UpstreamConfigError
from .url import DEFAULT_PORTS, Origin


class ProxyConfigError(UpstreamConfigError):
    """A proxy variable cannot be used; the message names the variable, never its value."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy to go through: its origin and the Proxy-Authorization its userinfo gives."""

    origin: Origin
    authorization: bytes | None = None

    def __repr__(self) -> str:  # never show credentials
        return f"Proxy({self.origin}, auth={'yes' if self.authorization else 'no'})"


@dataclass(frozen=True, slots=True)
class _Rule:
    scheme: str | None  # None: any
    host: str  # "*" any; "*.x" subdomains only; "*x" x and subdomains; else exact
    port: int | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    def matches(self, origin: Origin) -> bool:
        if self.scheme is not None and self.scheme != origin.scheme:
            return False
        if self.port is not None and self.port != origin.port:
            return False
        if self.network is not None:
            try:
                return ipaddress.ip_address(origin.host) in self.network
            except ValueError:
                return False
        host = origin.host
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        if self.host.startswith("*"):
            domain = self.host[1:]
            return host == domain or host.endswith("." + domain)
        return host == self.host


def _lookup(environ: Mapping[str, str], name: str) -> tuple[str, str | None]:
    """(variable name used, value); the lower-case spelling first."""
    for spelled in (name.lower(), name.upper()):
        if spelled in environ:
            return spelled, environ[spelled].strip() or None
    return name.upper(), None


def parse_proxy_url(value: str, variable: str) -> Proxy:
    if "://" not in value:
        value = "http://" + value
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ProxyConfigError(f"{variable}: not a valid proxy URL") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ProxyConfigError(f"{variable}: only http:// and https:// proxies are supported")
    if not parts.hostname:
        raise ProxyConfigError(f"{variable}: the proxy URL has no host")
    authorization = None
    if parts.username is not None:
        userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = b"Basic " + base64.b64encode(userinfo.encode("utf-8"))
    origin = Origin(scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme])
    return Proxy(origin, authorization)


def _parse_rule(entry: str) -> _Rule | None:
    entry = entry.strip().lower()
    if not entry:
        return None
    if entry == "*":
        return _Rule(None, "*", None)
    scheme: str | None = None
    if "://" in entry:
        scheme, entry = entry.split("://", 1)
        scheme = None if scheme == "all" else scheme
    try:
        return _Rule(scheme, "", None, ipaddress.ip_network(entry.strip("[]"), strict=False))
    except ValueError:
        pass
    host, port = entry, None
    if entry.startswith("["):  # [v6]:port
        host, _, rest = entry[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
        try:
            return _Rule(scheme, "", port, ipaddress.ip_network(host))
        except ValueError:
            return None
    if entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
        if not port_text.isdigit():
            return None
        port = int(port_text)
    if "/" in host:
        return None
    if host.startswith("*."):
        return _Rule(scheme, host, port)
    if host.startswith("."):
        return _Rule(scheme, "*" + host, port)
    if host.startswith("*"):
        return _Rule(scheme, host, port)
    return _Rule(scheme, "*" + host, port)


@dataclass(frozen=True)
class ProxySettings:
    """Which proxy (if any) each origin goes through."""

    http: Proxy | None = None
    https: Proxy | None = None
    bypass: tuple[_Rule, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxySettings:
        """Read the variables; raises ProxyConfigError for an unusable proxy URL."""
        found: dict[str, Proxy | None] = {}
        _, all_proxy = _lookup(environ, "all_proxy")
        for scheme in ("http", "https"):
            variable, value = _lookup(environ, f"{scheme}_proxy")
            if value is None and f"{scheme}_proxy" not in environ:
                if f"{scheme.upper()}_PROXY" not in environ:
                    variable, value = "ALL_PROXY", all_proxy
            found[scheme] = parse_proxy_url(value, variable) if value else None
        _, no_proxy = _lookup(environ, "no_proxy")
        rules = tuple(r for r in (_parse_rule(e) for e in (no_proxy or "").split(",")) if r)
        return cls(found["http"], found["https"], rules)

    def proxy_for(self, origin: Origin) -> Proxy | None:
        proxy = self.https if origin.scheme == "https" else self.http
        if proxy is None:
            return None
        if any(rule.matches(origin) for rule in self.bypass):
            return None
        return proxy
