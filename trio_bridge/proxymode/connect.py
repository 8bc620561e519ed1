"""Sans-IO decisions for one CONNECT: its target, its credential, and what to do with it."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass
from enum import Enum

from .hostmap import HostMap, host_key


class ConnectError(ValueError):
    """A CONNECT target that is not ``host:port``."""


def parse_target(target: bytes) -> tuple[str, int]:
    """``host`` and ``port`` of an authority-form target (``host:port``, ``[v6]:port``)."""
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        raise ConnectError("CONNECT target is not ASCII") from None
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ConnectError("CONNECT target must be host:port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ConnectError("CONNECT port out of range")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ConnectError("CONNECT target must be host:port")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ConnectError("CONNECT target has an invalid IPv6 address") from None
        host = host[1:-1]
    elif any(c in host for c in "/@[]:\\ ") or len(host) > 253:
        raise ConnectError("CONNECT target must be host:port")
    return host.lower(), port


def proxy_credential(value: bytes | None) -> str | None:
    """The bridge token from ``Proxy-Authorization``: ``Bearer <token>``, or Basic with the
    token as the password (or as the user name when the password is empty)."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(b" ")
    rest = rest.strip()
    if scheme.lower() == b"bearer" and rest:
        return rest.decode("latin-1")
    if scheme.lower() == b"basic" and rest:
        try:
            decoded = base64.b64decode(rest, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        return password or user or None
    return None


class Action(Enum):
    INTERCEPT = "intercept"
    PASSTHROUGH = "passthrough"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True)
class Decision:
    action: Action
    key: str
    provider: str | None = None


def decide(host: str, port: int, hosts: HostMap, passthrough: frozenset[str]) -> Decision:
    """Intercept a mapped host, tunnel a passthrough host, refuse anything else."""
    key = host_key(host, port)
    provider = hosts.provider_for(key)
    if provider is not None:
        return Decision(Action.INTERCEPT, key, provider)
    if key in passthrough:
        return Decision(Action.PASSTHROUGH, key)
    return Decision(Action.FORBIDDEN, key)
