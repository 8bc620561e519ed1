"""The main listener's ASGI app: health, readiness, and the bridge routes with the error
table's checks in the contract's order (section 5)."""

from __future__ import annotations

import logging
from dataclasses import replace

import trio

from .. import metrics
from ..dumps import DumpCapture
from ..providers.base import BodyError, Dialect, peek_body
from ..recording.tap import new_tap
from ..snapshot import Snapshot
from ..state import BridgeState
from .access import RequestLog, request_id_from
from .asgi import BodyTooLarge, ClientGone, Receive, Scope, Send, lifespan, read_body, send_response
from .auth import Caller, Unauthenticated, authenticate
from .errors import Unavailable, send_error, send_unavailable
from .headers import first
from .health import HEALTH_PATHS, health_answer
from .paths import is_safe_path, is_safe_query, split_provider
from .proxy import Exchange, run_exchange

log = logging.getLogger("trio_bridge.http")

CLIENT_CLOSED = 499


class BridgeApp:
    """ASGI app for ``--listen``. Reads ``state.current`` once per request and keeps it."""

    def __init__(self, state: BridgeState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1")
        if path in HEALTH_PATHS:
            return await send_response(send, *health_answer(self.state, path))
        # A proxy-mode tunnel pins the snapshot it started on; everything else reads the newest.
        snapshot = scope.get("trio_bridge.snapshot") or self.state.current
        headers = scope["headers"]
        log_entry = RequestLog(
            request_id_from(first(headers, b"x-request-id")),
            scope["method"],
            path,
            trio.current_time(),
        )
        self.state.inflight += 1
        try:
            await self._bridge(scope, receive, send, snapshot, headers, path, log_entry)
        finally:
            self.state.inflight -= 1
            log_entry.emit()

    async def _bridge(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        snapshot: Snapshot,
        headers: list[tuple[bytes, bytes]],
        path: str,
        entry: RequestLog,
    ) -> None:
        bridge = snapshot.bridge
        rid = entry.request_id

        async def fail(
            status: int,
            message: str,
            dialect: Dialect | None = None,
            retry_after: int | None = None,
        ) -> None:
            entry.status = status
            entry.error = message
            await send_error(
                send, status, message, dialect=dialect, request_id=rid, retry_after=retry_after
            )

        length = first(headers, b"content-length")
        if length is not None and length.isdigit() and int(length) > bridge.max_body_bytes:
            return await fail(413, "request body too large")
        if self.state.inflight > bridge.max_inflight:
            return await fail(503, "too many requests in flight", retry_after=1)
        try:
            caller = authenticate(headers, auth=bridge.auth, clients=snapshot.clients)
        except Unauthenticated as exc:
            return await fail(401, f"{exc}: send a bridge client token")
        entry.actor = caller.actor
        entry.credential = "byok" if caller.byok else "pool"

        name, rest = split_provider(path)
        safe = is_safe_path(path) and is_safe_query(scope.get("query_string") or b"")
        provider = snapshot.providers.get(name) if safe else None
        if (
            caller.byok
            and not bridge.allow_byok
            and (provider is None or provider.type != "copilot")
        ):
            return await fail(403, "this bridge does not accept client-supplied upstream keys")
        dialect = provider.dialect if provider is not None else None
        route = dialect.match(scope["method"], rest) if dialect is not None else None
        not_found = f"route not supported: {scope['method']} {path}"
        if provider is None or (route is None and provider.type is not None):
            return await fail(404, not_found, dialect)
        entry.provider = provider.name
        if provider.status != "ok" or route is None:
            reason: Unavailable = "disabled" if provider.status == "disabled" else "misconfigured"
            entry.status, entry.error = 503, f'provider "{provider.name}" is {reason}'
            return await send_unavailable(
                send, provider.name, reason, dialect=dialect, request_id=rid
            )
        entry.route = route.template
        assert dialect is not None  # a route comes from the provider's dialect

        try:
            body = await read_body(receive, bridge.max_body_bytes)
        except BodyTooLarge:
            return await fail(413, "request body too large", dialect)
        except ClientGone:
            entry.status = CLIENT_CLOSED
            return
        peek = None
        wants_usage = True
        model_label = provider.labeler.label(None)
        if route.bridged:
            try:
                peek = peek_body(body)
            except BodyError as exc:
                return await fail(400, str(exc), dialect)
            model_label = provider.labeler.label(peek.model)
            entry.model = model_label
            body, wants_usage = dialect.prepare_body(route, body, peek)
        if provider.type == "copilot":
            # HOOK(copilot): the caller's own Authorization is the only upstream credential.
            caller = copilot_caller(caller, headers, bridge.auth)
            if not caller.byok:
                return await fail(
                    401, "copilot needs your own Authorization header (a Copilot token)", dialect
                )
            entry.credential = "byok"
        if not caller.byok and not provider.has_keys:
            return await fail(401, "this provider has no configured key; send your own", dialect)

        query = scope.get("query_string") or b""
        upstream_path = dialect.upstream_path(rest).encode("latin-1")
        if query:
            upstream_path += b"?" + query
        client = scope.get("client")
        exchange = Exchange(
            snapshot=snapshot,
            provider=provider,
            route=route,
            method=scope["method"],
            upstream_raw_path=upstream_path,
            body=body,
            peek=peek,
            wants_usage=wants_usage,
            caller=caller,
            client_headers=headers,
            client_ip=client[0].encode() if client else None,
            model_label=model_label,
            log=entry,
        )
        exchange.tap = new_tap(self.state, exchange)  # recording hook: records and spans
        if bridge.api_dump_dir and self.state.dumps is not None:
            exchange.dump = DumpCapture(
                request_id=entry.request_id,
                provider=provider.name,
                method=scope["method"],
                path=path + ("?" + query.decode("latin-1") if query else ""),
                request_headers=list(headers),
                request_body=body,
                provider_headers=frozenset(name for name, _ in provider.headers),
            )
        inflight = metrics.inflight_child(provider.name, route.template)
        inflight.inc()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope, exchange)
                await run_exchange(exchange, send)
                nursery.cancel_scope.cancel()
        finally:
            inflight.dec()
            _observe(exchange)
            if exchange.tap is not None:  # recording hook: the final record, spans end
                exchange.tap.finish()
            dumps, dump_dir = self.state.dumps, bridge.api_dump_dir
            if exchange.dump is not None and dumps is not None and dump_dir:
                exchange.dump.status = entry.status or CLIENT_CLOSED
                exchange.dump.error = entry.error
                dumps.submit(dump_dir, exchange.dump)


def copilot_caller(caller: Caller, headers: list[tuple[bytes, bytes]], auth: str) -> Caller:
    """Copilot takes only the caller's ``Authorization``: under ``auth: tokens`` when it is
    not the bridge token (BYOK as usual), under ``auth: none`` whenever it is present."""
    if auth == "none":
        keep = frozenset((n, v) for n, v in headers if n == b"authorization")
    else:
        keep = frozenset(pair for pair in caller.keep_auth if pair[0] == b"authorization")
    return replace(caller, byok=bool(keep), keep_auth=keep)


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope, ex: Exchange) -> None:
    """A client that goes away cancels its upstream request (or the upstream keeps generating)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if not ex.finished:
                ex.log.error = ex.log.error or "client disconnected"
                ex.log.status = ex.log.status or CLIENT_CLOSED
                scope.cancel()
            return


def _observe(ex: Exchange) -> None:
    entry = ex.log
    provider, route = ex.provider.name, ex.route.template
    now = trio.current_time()
    duration = now - entry.started
    status = str(entry.status or CLIENT_CLOSED)
    if ex.route.bridged:
        metrics.requests_child(provider, route, ex.model_label, status).inc()
    else:
        metrics.passthrough_child(provider, route, ex.method, status).inc()
    metrics.duration_child(provider, route).observe(duration)
    if entry.first_byte_at is not None:
        metrics.ttfb_child(provider, route).observe(entry.first_byte_at - entry.started)
    metrics.overhead_child(provider, route).observe(max(0.0, duration - ex.upstream_wait))
    usage = ex.usage
    # Tokens belong to the target that served the answer (a fallback, possibly).
    served, served_label = ex.served_provider or provider, ex.served_label or ex.model_label
    for kind, value in (
        ("input", usage.input),
        ("output", usage.output),
        ("cache_read", usage.cache_read),
        ("cache_write", usage.cache_write),
    ):
        if value:
            metrics.tokens_child(served, served_label, kind).inc(value)
