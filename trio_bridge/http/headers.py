"""Header hygiene between client and upstream (contract section 6). Sans-IO.

Header lists are ASGI style: ``list[tuple[bytes, bytes]]`` with lower-case names.
"""

from __future__ import annotations

from collections.abc import Iterable

from .. import __version__

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
    }
)
# Headers by which proxies and CDNs in front of the bridge describe the client or rewrite
# the target. The bridge is the upstream's client: none of them is the upstream's business
# (they leak internal addresses and names), and an upstream that trusts one could be
# misled by a client forging it. ``Via`` too: it names the internal proxy chain, and the
# bridge originates a new request rather than forwarding the client's.
CLIENT_ADDRESS_HEADERS = frozenset(
    {
        b"forwarded",
        b"x-forwarded",
        b"x-real-ip",
        b"true-client-ip",
        b"x-original-url",
        b"x-rewrite-url",
        b"x-original-forwarded-for",
        b"cf-connecting-ip",
        b"cf-connecting-ipv6",
        b"fastly-client-ip",
        b"x-cluster-client-ip",
        b"x-client-ip",
        b"client-ip",
        b"x-originating-ip",
        b"x-remote-ip",
        b"x-remote-addr",
        b"x-proxyuser-ip",
        b"x-envoy-external-address",
        b"via",
    }
)
_ALWAYS_DROPPED = HOP_BY_HOP | CLIENT_ADDRESS_HEADERS | {b"host", b"content-length", b"cookie"}
_DROPPED_PREFIXES = (b"x-trio-bridge-", b"x-ai-bridge-actor", b"x-forwarded-")
AUTH_HEADERS = (b"authorization", b"x-api-key")
USER_AGENT = f"trio-bridge/{__version__}".encode()


def first(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


def _connection_tokens(headers: Headers) -> set[bytes]:
    tokens: set[bytes] = set()
    for k, v in headers:
        if k == b"connection":
            tokens.update(t.strip().lower() for t in v.split(b","))
    return tokens


def upstream_request_headers(
    client_headers: Headers,
    *,
    keep_auth: frozenset[tuple[bytes, bytes]],
    key_header: tuple[bytes, bytes] | None,
    extra: Iterable[tuple[bytes, bytes]] = (),
    identity_encoding: bool,
    actor: Iterable[tuple[bytes, bytes]] = (),
    forwarded_for: bytes | None = None,
) -> Headers:
    """The headers sent upstream: the client's minus what must not travel, plus ours.

    ``keep_auth`` holds the client auth headers, as (name, value) pairs, to pass unchanged
    (BYOK); every other ``Authorization`` / ``X-Api-Key`` is removed, so a repeated header
    carrying the bridge token never travels. ``key_header`` is the pool key, injected after
    that removal.
    """
    listed = _connection_tokens(client_headers)
    extra = list(extra)
    replaced = {k for k, _ in extra}
    if identity_encoding:
        replaced.add(b"accept-encoding")
    out: Headers = []
    has_agent = False
    for name, value in client_headers:
        if name in _ALWAYS_DROPPED or name in listed or name.startswith(_DROPPED_PREFIXES):
            continue
        if name in AUTH_HEADERS and (name, value) not in keep_auth:
            continue
        if name in replaced:
            continue
        if name == b"user-agent":
            has_agent = True
        out.append((name, value))
    if not has_agent:
        out.append((b"user-agent", USER_AGENT))
    if identity_encoding:
        out.append((b"accept-encoding", b"identity"))
    out.extend(extra)
    if key_header is not None:
        out.append(key_header)
    out.extend(actor)
    if forwarded_for is not None:
        out.append((b"x-forwarded-for", forwarded_for))
    return out


_RESPONSE_DROPPED = HOP_BY_HOP | {b"set-cookie", b"date", b"server"}


def client_response_headers(
    upstream: Iterable[tuple[bytes, bytes]], *, reframed: bool, sse: bool
) -> Headers:
    """Upstream response headers to relay: no hop-by-hop, no Set-Cookie, no Content-Length
    when the bridge re-frames the body. The upstream's X-Request-Id is kept as
    X-Upstream-Request-Id (the bridge's own id takes its place); SSE caching headers are
    the bridge's."""
    out: Headers = []
    for name, value in upstream:
        name = name.lower()
        if name in _RESPONSE_DROPPED or (reframed and name == b"content-length"):
            continue
        if name == b"x-request-id":
            name = b"x-upstream-request-id"
        elif sse and name in (b"cache-control", b"x-accel-buffering"):
            continue
        out.append((name, value))
    return out


def actor_headers(client_id: str, metadata: dict[str, str]) -> Headers:
    out = [(b"x-ai-bridge-actor-id", client_id.encode())]
    for key, value in metadata.items():
        out.append((b"x-ai-bridge-actor-metadata-" + key.lower().encode(), value.encode()))
    return out
