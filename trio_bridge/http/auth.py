"""Client authentication and BYOK detection (contract section 6). Sans-IO."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from ..config.model import ClientSpec
from .headers import AUTH_HEADERS, Headers, first

ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling and with which credentials. ``keep_auth`` are the client's own auth
    headers, as (name, value) pairs, that go upstream unchanged (BYOK); a header equal to
    the bridge token is never among them, even when the client repeats the header."""

    actor: str
    metadata: Mapping[str, str]
    byok: bool
    keep_auth: frozenset[tuple[bytes, bytes]]


class Unauthenticated(Exception):
    pass


def _bearer(value: bytes | None) -> bytes | None:
    if value is None:
        return None
    scheme, _, token = value.partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return token.strip()
    return None


def _byok_headers(headers: Headers, bridge_token: bytes) -> frozenset[tuple[bytes, bytes]]:
    """Every ``Authorization`` / ``X-Api-Key`` value that is not the bridge token (bare or as
    ``Bearer``): the client's own upstream key. Each occurrence is judged on its own."""
    own: set[tuple[bytes, bytes]] = set()
    for name, value in headers:
        if name in AUTH_HEADERS and value != bridge_token and _bearer(value) != bridge_token:
            own.add((name, value))
    return frozenset(own)


def authenticate(headers: Headers, *, auth: str, clients: Mapping[str, ClientSpec]) -> Caller:
    """Identify the caller, or raise Unauthenticated. Token lookup is by sha256 and the final
    comparison is constant-time."""
    bridge_token = first(headers, b"x-trio-bridge-token")
    if auth == "none":
        keep = _byok_headers(headers, bridge_token) if bridge_token is not None else frozenset()
        return Caller(ANONYMOUS, {}, bool(keep), keep)
    token = bridge_token
    if token is None:
        token = _bearer(first(headers, b"authorization"))
    if token is None:
        token = first(headers, b"x-api-key")
    if not token:
        raise Unauthenticated("missing client token")
    digest = hashlib.sha256(token).hexdigest()
    client = clients.get(digest)
    if client is None or not hmac.compare_digest(client.token_sha256, digest):
        raise Unauthenticated("unknown client token")
    keep = _byok_headers(headers, bridge_token) if bridge_token is not None else frozenset()
    return Caller(client.id, client.metadata, bool(keep), keep)
