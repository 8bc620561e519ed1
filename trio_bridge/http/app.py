"""The main listener's ASGI app: health, readiness, and the bridge routes: admission (the
error table's checks in the contract's order, section 5; sans-IO in ``admission.py``), then
the exchange (``proxy.py``)."""

from __future__ import annotations

import logging

import trio

from .. import metrics
from ..dumps import DumpCapture
from ..recording.tap import new_tap
from ..snapshot import Snapshot
from ..state import BridgeState
from .access import RequestLog, request_id_from
from .admission import (
    Admitted,
    Prepared,
    Refusal,
    RequestHead,
    admit_body,
    admit_head,
)
from .asgi import BodyTooLarge, ClientGone, Receive, Scope, Send, read_body, send_response
from .errors import send_error, send_unavailable
from .headers import Headers, first
from .health import HEALTH_PATHS, health_answer
from .proxy import Exchange, run_exchange

log = logging.getLogger("trio_bridge.http")

CLIENT_CLOSED = 499
# An ASGI scope key: the snapshot to serve this request with instead of the current one.
PINNED_SNAPSHOT = "trio_bridge.snapshot"

__all__ = ["PINNED_SNAPSHOT", "BridgeApp", "pinned_snapshot"]


class BridgeApp:
    """ASGI app for ``--listen``. Reads the snapshot once per request and keeps it: the one
    pinned in ``scope["trio_bridge.snapshot"]`` if any, else ``state.current``."""

    def __init__(self, state: BridgeState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1")
        if path in HEALTH_PATHS:
            return await send_response(send, *health_answer(self.state, path))
        snapshot = pinned_snapshot(scope) or self.state.current
        headers: Headers = scope["headers"]
        log_entry = RequestLog(
            request_id_from(first(headers, b"x-request-id")),
            scope["method"],
            path,
            trio.current_time(),
        )
        self.state.inflight += 1
        try:
            head = RequestHead(scope["method"], path, scope.get("query_string") or b"", headers)
            admitted = admit_head(head, snapshot, self.state.inflight)
            _log_admission(log_entry, admitted)
            if isinstance(admitted, Refusal):
                return await _refuse(send, admitted, log_entry)
            try:
                body = await read_body(receive, snapshot.bridge.max_body_bytes)
            except BodyTooLarge:
                refusal = Refusal(413, "request body too large", admitted.provider.dialect)
                return await _refuse(send, refusal, log_entry)
            except ClientGone:
                log_entry.status = CLIENT_CLOSED
                return
            prepared = admit_body(admitted, body, headers)
            if isinstance(prepared, Refusal):
                if prepared.model is not None:
                    log_entry.model = prepared.model
                return await _refuse(send, prepared, log_entry)
            await self._exchange(scope, receive, send, admitted, prepared, log_entry)
        finally:
            self.state.inflight -= 1
            log_entry.emit()

    async def _exchange(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        admitted: Admitted,
        prepared: Prepared,
        entry: RequestLog,
    ) -> None:
        """Relay an admitted request upstream and its answer back (the proxy), with the
        request's metrics, recording and dump around it."""
        snapshot, provider, route = admitted.snapshot, admitted.provider, admitted.route
        bridge = snapshot.bridge
        headers: Headers = scope["headers"]
        if route.bridged:
            entry.model = prepared.model_label
        if prepared.caller.byok:
            entry.credential = "byok"
        query: bytes = scope.get("query_string") or b""
        upstream_path = provider.dialect.upstream_path(admitted.rest).encode("latin-1")
        if query:
            upstream_path += b"?" + query
        client = scope.get("client")
        exchange = Exchange(
            snapshot=snapshot,
            provider=provider,
            route=route,
            method=scope["method"],
            upstream_raw_path=upstream_path,
            body=prepared.body,
            peek=prepared.peek,
            wants_usage=prepared.wants_usage,
            caller=prepared.caller,
            client_headers=headers,
            client_ip=client[0].encode() if client else None,
            model_label=prepared.model_label,
            log=entry,
        )
        exchange.tap = new_tap(self.state, exchange)  # recording hook: records and spans
        dump_dir = bridge.api_dump_dir
        if dump_dir and self.state.dumps is not None:
            exchange.dump = DumpCapture(
                request_id=entry.request_id,
                provider=provider.name,
                method=scope["method"],
                path=entry.path + ("?" + query.decode("latin-1") if query else ""),
                request_headers=list(headers),
                request_body=prepared.body,
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
            if dump_dir and exchange.dump is not None and self.state.dumps is not None:
                exchange.dump.status = entry.status or CLIENT_CLOSED
                exchange.dump.error = entry.error
                self.state.dumps.submit(dump_dir, exchange.dump)


def pinned_snapshot(scope: Scope) -> Snapshot | None:
    """The snapshot a caller pinned for this request (``scope["trio_bridge.snapshot"]``: the
    interception tunnel serves every request with the snapshot it started on), if any."""
    pinned = scope.get(PINNED_SNAPSHOT)
    return pinned if isinstance(pinned, Snapshot) else None


def _log_admission(entry: RequestLog, result: Admitted | Refusal) -> None:
    caller = result.caller
    if caller is not None:
        entry.actor = caller.actor
        entry.credential = "byok" if caller.byok else "pool"
    if isinstance(result, Admitted):
        entry.provider = result.provider.name
        entry.route = result.route.template
    elif result.provider is not None:
        entry.provider = result.provider


async def _refuse(send: Send, refusal: Refusal, entry: RequestLog) -> None:
    """Send what admission refused with, and log it."""
    entry.status, entry.error = refusal.status, refusal.message
    if refusal.unavailable is not None and refusal.provider is not None:
        await send_unavailable(
            send,
            refusal.provider,
            refusal.unavailable,
            dialect=refusal.dialect,
            request_id=entry.request_id,
        )
        return
    await send_error(
        send,
        refusal.status,
        refusal.message,
        dialect=refusal.dialect,
        request_id=entry.request_id,
        retry_after=refusal.retry_after,
    )


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
