"""Admission: whether the bridge takes a request, in the order of the contract's error table
(section 5). Sans-IO: the app reads the body between the two steps and sends what they say.

- :func:`admit_head` (rows 1-6, before the body is read): body size by Content-Length,
  ``max_inflight``, the client token, BYOK while ``allow_byok: false``, provider and route,
  the provider's status.
- :func:`admit_body` (rows 7-8, once the body is in): the body of a bridged route, copilot's
  own credential, a provider with no key for a pool request.

Each returns what goes ahead or a :class:`Refusal` that says what the client gets. Neither
touches a socket, the clock or a log.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ..providers.base import BodyError, Dialect, Peek, Route, peek_body
from ..snapshot import ServedProvider, Snapshot
from .auth import Caller, Unauthenticated, authenticate
from .headers import Headers, first
from .paths import is_safe_path, is_safe_query, split_provider

__all__ = [
    "Admitted",
    "Prepared",
    "Refusal",
    "RequestHead",
    "admit_body",
    "admit_head",
    "copilot_caller",
]


@dataclass(frozen=True)
class RequestHead:
    """What admission looks at before the body: the raw path (latin-1), the raw query."""

    method: str
    path: str
    query: bytes
    headers: Headers


@dataclass(frozen=True)
class Refusal:
    """The client's answer: the bridge's error ``status`` / ``message`` in the provider's
    shape (``dialect``), or, with ``unavailable`` set, the 503 of a disabled or misconfigured
    provider. ``caller``, ``provider`` and ``model`` (the label) are what was known when the
    request was refused (for the access log)."""

    status: int
    message: str
    dialect: Dialect | None = None
    retry_after: int | None = None
    unavailable: Literal["disabled", "misconfigured"] | None = None
    caller: Caller | None = None
    provider: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class Admitted:
    """A request that passed rows 1-6: a servable provider, a route of it, a caller.
    ``rest`` is the path after ``/{provider}``."""

    snapshot: Snapshot
    provider: ServedProvider
    route: Route
    caller: Caller
    rest: str


@dataclass(frozen=True)
class Prepared:
    """A request that passed rows 7-8: the body to send upstream and what it asked."""

    body: bytes
    peek: Peek | None
    wants_usage: bool
    model_label: str
    caller: Caller


def admit_head(head: RequestHead, snapshot: Snapshot, inflight: int) -> Admitted | Refusal:
    """Rows 1-6 of the error table, in order. ``inflight`` counts this request."""
    bridge = snapshot.bridge
    length = first(head.headers, b"content-length")
    if length is not None and length.isdigit() and int(length) > bridge.max_body_bytes:
        return Refusal(413, "request body too large")
    if inflight > bridge.max_inflight:
        return Refusal(503, "too many requests in flight", retry_after=1)
    try:
        caller = authenticate(head.headers, auth=bridge.auth, clients=snapshot.clients)
    except Unauthenticated as exc:
        return Refusal(401, f"{exc}: send a bridge client token")

    name, rest = split_provider(head.path)
    safe = is_safe_path(head.path) and is_safe_query(head.query)
    provider = snapshot.providers.get(name) if safe else None
    if caller.byok and not bridge.allow_byok and (provider is None or provider.type != "copilot"):
        return Refusal(
            403, "this bridge does not accept client-supplied upstream keys", caller=caller
        )
    dialect = provider.dialect if provider is not None else None
    route = dialect.match(head.method, rest) if dialect is not None else None
    if provider is None or (route is None and provider.type is not None):
        not_found = f"route not supported: {head.method} {head.path}"
        return Refusal(404, not_found, dialect, caller=caller)
    if not isinstance(provider, ServedProvider) or route is None:
        reason: Literal["disabled", "misconfigured"] = (
            "disabled" if provider.status == "disabled" else "misconfigured"
        )
        return Refusal(
            503,
            f'provider "{provider.name}" is {reason}',
            dialect,
            unavailable=reason,
            caller=caller,
            provider=provider.name,
        )
    return Admitted(snapshot, provider, route, caller, rest)


def admit_body(admitted: Admitted, body: bytes, headers: Headers) -> Prepared | Refusal:
    """Rows 7-8 (the body's own size limit is the reader's: 413 while read)."""
    provider, route, caller = admitted.provider, admitted.route, admitted.caller
    dialect = provider.dialect

    def refuse(status: int, message: str, model: str | None = None) -> Refusal:
        return Refusal(
            status, message, dialect, caller=admitted.caller, provider=provider.name, model=model
        )

    peek: Peek | None = None
    wants_usage = True
    model_label = provider.labeler.label(None)
    logged_model: str | None = None
    if route.bridged:
        try:
            peek = peek_body(body)
        except BodyError as exc:
            return refuse(400, str(exc))
        model_label = logged_model = provider.labeler.label(peek.model)
        body, wants_usage = dialect.prepare_body(route, body, peek)
    if provider.type == "copilot":
        # HOOK(copilot): the caller's own Authorization is the only upstream credential.
        caller = copilot_caller(caller, headers, admitted.snapshot.bridge.auth)
        if not caller.byok:
            return refuse(
                401, "copilot needs your own Authorization header (a Copilot token)", logged_model
            )
    if not caller.byok and not provider.has_keys:
        return refuse(401, "this provider has no configured key; send your own", logged_model)
    return Prepared(body, peek, wants_usage, model_label, caller)


def copilot_caller(caller: Caller, headers: Headers, auth: str) -> Caller:
    """Copilot takes only the caller's ``Authorization``: under ``auth: tokens`` when it is
    not the bridge token (BYOK as usual), under ``auth: none`` whenever it is present."""
    if auth == "none":
        keep = frozenset((n, v) for n, v in headers if n == b"authorization")
    else:
        keep = frozenset(pair for pair in caller.keep_auth if pair[0] == b"authorization")
    return replace(caller, byok=bool(keep), keep_auth=keep)
