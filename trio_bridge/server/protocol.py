"""The serving core's sans-IO decisions: limits, keep-alive, early responses, reasons.

Nothing here touches a socket or a clock; ``connection.py`` is the trio shell that asks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote

import h11

KIB = 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits and timeouts (contract section 5, "Connections")."""

    header_timeout: float = 10.0
    """Seconds for a whole request head, counted from the connection's start or from the
    first byte of a kept-alive connection's next request."""
    keepalive_timeout: float = 75.0
    """Seconds a kept-alive connection may sit idle before its next request starts."""
    max_connections: int = 10_000
    """Open connections per server; beyond it new ones are accepted and closed at once."""
    max_head_bytes: int = 64 * KIB
    """Request line plus headers; beyond it: 431 and close."""
    early_drain_bytes: int = 64 * KIB
    """An unread request body at most this large is read and dropped after an early
    response, so the connection can be kept alive; a larger one closes it."""
    early_drain_timeout: float = 1.0
    """Seconds for that drain, and for the lingering close that lets the peer read the
    response before the socket is shut."""
    receive_size: int = 64 * KIB


_REASONS: dict[int, bytes] = {int(s): s.phrase.encode() for s in HTTPStatus}
_REASONS.setdefault(529, b"Site Overloaded")


def reason(status: int) -> bytes:
    """The reason phrase for ``status`` (empty when unknown: h11 accepts that)."""
    return _REASONS.get(status, b"")


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """``(raw_path, query_string)`` of a request target, exactly as on the wire."""
    path, _, query = target.partition(b"?")
    return path, query


def decoded_path(raw_path: bytes) -> str:
    """ASGI's ``path``: percent-decoded (UTF-8); apps route on ``raw_path``."""
    text = raw_path.decode("latin-1")
    if "%" not in text:
        return text
    return unquote(raw_path.decode("utf-8", "surrogateescape"))


def has_token(headers: h11._headers.Headers | list[tuple[bytes, bytes]], token: bytes) -> bool:
    """Whether any ``Connection`` header lists ``token`` (names are lower-cased by h11)."""
    for name, value in headers:
        if name == b"connection" and token in (part.strip().lower() for part in value.split(b",")):
            return True
    return False


def wants_http10_keep_alive(request: h11.Request) -> bool:
    """An HTTP/1.0 request that asked for keep-alive (``Connection: keep-alive``)."""
    return request.http_version == b"1.0" and has_token(request.headers, b"keep-alive")


def allow_http10_keep_alive(conn: h11.Connection) -> None:
    """Let h11 keep an HTTP/1.0 connection open after this cycle.

    h11 turns keep-alive off for every HTTP/1.0 peer; the contract keeps it for those
    that ask. h11 has no public switch, so this sets the one flag it keys on; everything
    else (framing, close-delimited bodies for 1.0 peers, ``Connection: close`` when the
    body has no length) stays h11's. ``tests/test_server_protocol.py`` pins it."""
    conn._cstate.keep_alive = True


def response_has_length(status: int, method: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a response's end is known without closing (a 1.0 peer cannot read chunks)."""
    if method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
        return True
    return any(name.lower() == b"content-length" for name, _ in headers)


class AfterResponse(enum.Enum):
    """What a connection does once the app has returned."""

    KEEP_ALIVE = "keep-alive"  # start the next cycle
    DRAIN = "drain"  # read and drop the rest of a small request body, then keep alive
    CLOSE = "close"  # close (lingering when the peer may still be sending)


def declared_length(headers: h11._headers.Headers | list[tuple[bytes, bytes]]) -> int | None:
    """The request's Content-Length, None when chunked or absent (h11 checked the syntax)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


def body_fits_drain(remaining: int | None, limits: Limits) -> bool:
    """Whether an unread request body is small enough to read and drop after an early
    response; ``remaining`` None means chunked (unknown: try within the byte limit)."""
    return remaining is None or remaining <= limits.early_drain_bytes


def after_response(
    conn: h11.Connection,
    *,
    complete: bool,
    peer_gone: bool,
    closing: bool,
    remaining: int | None,
    limits: Limits,
) -> AfterResponse:
    """Decide the connection's next step from h11's states and what the app did.

    ``complete``: the app finished its response (an unfinished one closes, so the client
    sees a truncated body, never a whole-looking one). ``remaining``: unread bytes of a
    declared request body (None: chunked or unknown)."""
    if not complete or peer_gone or closing:
        return AfterResponse.CLOSE
    if conn.our_state is not h11.DONE:
        return AfterResponse.CLOSE
    their = conn.their_state
    if their is h11.DONE:
        return AfterResponse.KEEP_ALIVE
    if their is h11.SEND_BODY and body_fits_drain(remaining, limits):
        return AfterResponse.DRAIN
    return AfterResponse.CLOSE


def head_size(request: h11.Request) -> int:
    """The request head's size on the wire (give or take optional whitespace). h11 bounds
    only heads still incomplete, so one that arrived whole in a large read is measured."""
    size = len(request.method) + len(request.target) + 13  # "M T HTTP/1.1\r\n" + "\r\n"
    for name, value in request.headers.raw_items():
        size += len(name) + len(value) + 4
    return size


def head_too_large(request: h11.Request, limits: Limits) -> h11.RemoteProtocolError | None:
    """The 431 error for a head over ``limits.max_head_bytes``, else None."""
    if head_size(request) > limits.max_head_bytes:
        return h11.RemoteProtocolError("request head too large", error_status_hint=431)
    return None


def client_error_status(exc: h11.RemoteProtocolError) -> int:
    """The status to answer a malformed request with: 431 for an oversized head, else
    h11's hint (400, 505...)."""
    hint = exc.error_status_hint
    return hint if 400 <= hint < 600 else 400
