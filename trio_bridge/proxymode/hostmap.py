"""The host -> provider map of proxy mode, derived from a snapshot's served providers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_PORTS = {"https": 443, "http": 80}


def host_key(host: str, port: int) -> str:
    """``host:port`` as the map keys it: lower-case, IPv6 literals in brackets."""
    host = host.lower().strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def base_url_key(base_url: str) -> str | None:
    """The map key of a provider's ``base_url`` (port 443/80 when omitted), or None."""
    try:
        parts = urlsplit(base_url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return host_key(parts.hostname, port)


@dataclass(frozen=True)
class HostMap:
    """Which provider a CONNECT target is intercepted for. ``shared`` lists hosts that two or
    more served providers share: proxy mode serves neither of them (reported instead)."""

    hosts: Mapping[str, str] = field(default_factory=dict)
    shared: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def provider_for(self, key: str) -> str | None:
        return self.hosts.get(key)


def build_host_map(served: Iterable[tuple[str, str]]) -> HostMap:
    """From ``(provider name, base_url)`` pairs of the providers a snapshot serves."""
    owners: dict[str, list[str]] = {}
    for name, base_url in served:
        key = base_url_key(base_url)
        if key is not None:
            owners.setdefault(key, []).append(name)
    hosts = {k: names[0] for k, names in sorted(owners.items()) if len(names) == 1}
    shared = {k: tuple(sorted(names)) for k, names in sorted(owners.items()) if len(names) > 1}
    return HostMap(hosts, shared)
