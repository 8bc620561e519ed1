"""One request's trip upstream: key selection and failover, the breaker, and the relay of
the answer back to the client as its bytes arrive."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from .. import metrics
from ..dumps import DumpCapture
from ..providers.base import AttemptError, Peek, Route, UpstreamAttempt, Usage
from ..providers.sse import EventSplitter, iter_events
from ..resilience.breaker import is_breaker_failure
from ..resilience.keypool import PoolKey, cooldown_from_headers
from ..snapshot import Provider, Snapshot
from ..upstream import (
    URL,
    ConnectError,
    ConnectTimeout,
    PoolTimeout,
    Response,
    UpstreamError,
    UpstreamTimeout,
    join_url,
)
from .access import RequestLog
from .asgi import Send
from .auth import Caller
from .errors import send_error
from .headers import Headers, actor_headers, client_response_headers, upstream_request_headers

if TYPE_CHECKING:
    from ..recording.tap import ExchangeTap

# Only blocks carrying a usage object are parsed: with include_usage forced, OpenAI puts
# "usage":null on every chunk, which needs no look.
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
SSE_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
_USAGE_BODY_LIMIT = 8 * 1024 * 1024


@dataclass
class Exchange:
    """Everything about one request that the proxy needs, fixed before the first attempt."""

    snapshot: Snapshot
    provider: Provider
    route: Route
    method: str
    upstream_raw_path: bytes  # path + query, to append to the base URL's path
    body: bytes
    peek: Peek | None
    wants_usage: bool
    caller: Caller
    client_headers: Headers
    client_ip: bytes | None
    model_label: str
    log: RequestLog
    response_started: bool = False
    finished: bool = False
    sse: bool = False
    usage: Usage = field(default_factory=Usage)
    upstream_wait: float = 0.0
    dump: DumpCapture | None = None
    tap: ExchangeTap | None = None  # recording hook: records and spans (recording/tap.py)


async def _error(ex: Exchange, send: Send, status: int, message: str, **kw) -> None:
    ex.log.status = status
    ex.finished = True
    await send_error(send, status, message, **kw)


def _url(provider: Provider, raw_tail: bytes) -> URL:
    """base_url's path + the raw tail, never normalised (cached)."""
    return join_url(provider.base_url or "", raw_tail)


class _Fail(Exception):
    def __init__(self, status: int, message: str, breaker_failure: bool) -> None:
        self.status, self.message, self.breaker_failure = status, message, breaker_failure


async def run_exchange(ex: Exchange, send: Send) -> None:
    """Answer the request. Never raises for upstream trouble: every failure becomes a response
    (or, after the first byte, an error event)."""
    provider, bridge = ex.provider, ex.snapshot.bridge
    dialect = provider.dialect
    assert dialect is not None and provider.upstream is not None and provider.pool is not None
    now = trio.current_time()
    breaker = None
    if bridge.circuit_breaker.enabled and provider.breakers is not None:
        breaker = provider.breakers.get(ex.route.endpoint, ex.model_label)
        if breaker.state(now) == "open":
            return await _reject_breaker(ex, send, breaker.retry_after)
    key: PoolKey | None = None
    if not ex.caller.byok:
        key = provider.pool.pick(now)
        if key is None:
            return await _exhausted(ex, send, now)
    admission = breaker.admit(now) if breaker is not None else None
    if breaker is not None and admission is None:
        return await _reject_breaker(ex, send, breaker.retry_after)
    verdict = _Verdict(ex, breaker, admission)
    try:
        deadline = await _attempts(ex, send, key, verdict)
    finally:
        verdict.release()
    if deadline.cancelled_caught:
        ex.log.error = "upstream timed out"
        if not ex.response_started:
            await _error(
                ex, send, 504, "upstream timed out", dialect=dialect, request_id=ex.log.request_id
            )
        elif ex.sse and ex.route.bridged:
            await send_stream_deadline_error(ex, send)
        # else: a plain body cut short; leaving it unfinished makes hypercorn close the
        # connection (see _relay_bytes).


async def _attempts(
    ex: Exchange, send: Send, key: PoolKey | None, verdict: _Verdict
) -> trio.CancelScope:
    """Send the request, failing over to the next key on 429/401 while nothing has reached
    the client; relay the answer. Returns the whole-request deadline scope."""
    provider, bridge = ex.provider, ex.snapshot.bridge
    dialect = provider.dialect
    assert dialect is not None and provider.upstream is not None and provider.pool is not None
    tried: set[int] = set()
    url = _url(provider, ex.upstream_raw_path)
    actor = (
        actor_headers(ex.caller.actor, dict(ex.caller.metadata))
        if bridge.send_actor_headers
        else ()
    )
    forwarded = ex.client_ip if bridge.forward_client_ip else None
    with (
        provider.upstream.pinned() as upstream,
        trio.move_on_after(bridge.upstream_timeout) as deadline,
    ):
        while True:
            headers = upstream_request_headers(
                ex.client_headers,
                keep_auth=ex.caller.keep_auth,
                key_header=dialect.key_header(key.secret) if key is not None else None,
                extra=provider.headers,
                identity_encoding=ex.route.bridged,
                actor=actor,
                forwarded_for=forwarded,
            )
            if ex.dump is not None:
                ex.dump.request_headers = headers
            ex.log.attempts += 1
            ex.log.key_hint = key.hint if key is not None else "byok"
            if ex.tap is not None:  # recording hook: attempt start (adds traceparent)
                ex.tap.attempt(headers)
            try:
                # HOOK(dialect.prepare_attempt): per-attempt request transform (Bedrock: path,
                # body rewrite, SigV4 signature); runs on every attempt so a retry re-signs.
                attempt = await _prepare_attempt(ex, key, headers)
                response = await _send_first_byte(
                    ex,
                    upstream.send(
                        ex.method,
                        url
                        if attempt.raw_path == ex.upstream_raw_path
                        else _url(provider, attempt.raw_path),
                        attempt.headers,
                        attempt.body,
                    ),
                    bridge.first_byte_timeout,
                )
                # HOOK(dialect.adapt_response): response transform before key marking, the
                # breaker verdict and the relay (Bedrock: error mapping, event-stream -> SSE).
                response = dialect.adapt_response(ex.route, response)
            except _Fail as fail:
                verdict.report(fail.breaker_failure)
                ex.log.error = fail.message
                await _error(
                    ex,
                    send,
                    fail.status,
                    fail.message,
                    dialect=dialect,
                    request_id=ex.log.request_id,
                )
                return deadline
            status = response.status_code
            if key is not None and status in (429, 401):
                await response.aclose()
                if ex.tap is not None:  # recording hook: an answer not relayed
                    ex.tap.answered(status)
                _mark_key(ex, key, response, trio.current_time())
                tried.add(key.index)
                key = provider.pool.pick(trio.current_time(), tried)
                if key is None:
                    verdict.report(False)
                    await _exhausted(ex, send, trio.current_time())
                    return deadline
                metrics.key_pool_failover.labels(provider.name).inc()
                continue
            verdict.report(is_breaker_failure(status))
            try:
                await _relay(ex, response, send)
            finally:
                await response.aclose()
            return deadline
    return deadline


async def _prepare_attempt(ex: Exchange, key: PoolKey | None, headers: Headers) -> UpstreamAttempt:
    """The dialect's request for this attempt; its refusal becomes a ``_Fail``."""
    dialect = ex.provider.dialect
    assert dialect is not None
    plain = UpstreamAttempt(ex.method, ex.upstream_raw_path, headers, ex.body, key is None)
    try:
        return await dialect.prepare_attempt(ex.route, plain)
    except AttemptError as exc:
        raise _Fail(exc.status, exc.message, False) from None


async def _send_first_byte(ex: Exchange, sending: Awaitable[Response], timeout: float) -> Response:
    """Await the response head within ``timeout``; every failure becomes a ``_Fail``."""
    t0 = trio.current_time()
    try:
        with trio.fail_after(timeout):
            return await sending
    except trio.TooSlowError:
        raise _Fail(504, "upstream did not answer in time", True) from None
    except PoolTimeout:
        raise _Fail(503, "upstream connection pool exhausted", False) from None
    except (ConnectError, ConnectTimeout):
        raise _Fail(502, "upstream unreachable", True) from None
    except UpstreamTimeout:
        raise _Fail(504, "upstream timed out", True) from None
    except UpstreamError as exc:
        raise _Fail(502, f"upstream failed ({type(exc).__name__})", False) from None
    finally:
        ex.upstream_wait += trio.current_time() - t0


def _mark_key(ex: Exchange, key: PoolKey, response: Response, now: float) -> None:
    pool = ex.provider.pool
    assert pool is not None
    if response.status_code == 429:
        cooldown = cooldown_from_headers(response.headers.multi_items(), wall_now=time.time())
        changed = pool.mark_rate_limited(key, now, cooldown)
        reason = "rate_limited"
    else:
        changed = pool.mark_auth_failed(key, now)
        reason = "auth_failed"
    if changed:
        metrics.key_pool_transitions.labels(ex.provider.name, reason).inc()


class _Verdict:
    """Reports a breaker admission's outcome exactly once; released if never reported."""

    def __init__(self, ex: Exchange, breaker, admission) -> None:
        self.ex, self.breaker, self.admission = ex, breaker, admission

    def report(self, failure: bool) -> None:
        if self.breaker is None or self.admission is None:
            return
        now = trio.current_time()
        admission, self.admission = self.admission, None
        if failure:
            if self.breaker.record_failure(admission, now).tripped:
                ex = self.ex
                metrics.breaker_trips.labels(
                    ex.provider.name, ex.route.endpoint, ex.model_label
                ).inc()
        else:
            self.breaker.record_success(admission, now)

    def release(self) -> None:
        if self.breaker is not None and self.admission is not None:
            self.breaker.release(self.admission, trio.current_time())
            self.admission = None


async def _reject_breaker(ex: Exchange, send: Send, retry_after: int) -> None:
    metrics.breaker_rejects.labels(ex.provider.name, ex.route.endpoint, ex.model_label).inc()
    ex.log.error = "circuit open"
    await _error(
        ex,
        send,
        503,
        f'provider "{ex.provider.name}" is unavailable (circuit open)',
        dialect=ex.provider.dialect,
        request_id=ex.log.request_id,
        retry_after=retry_after,
    )


async def _exhausted(ex: Exchange, send: Send, now: float) -> None:
    pool = ex.provider.pool
    assert pool is not None
    exhaustion = pool.exhaustion(now)
    metrics.key_pool_exhaustions.labels(ex.provider.name, exhaustion.reason).inc()
    if exhaustion.status == 429:
        ex.log.error = "all keys rate limited"
        await _error(
            ex,
            send,
            429,
            "all configured keys are rate limited; retry later",
            dialect=ex.provider.dialect,
            request_id=ex.log.request_id,
            retry_after=exhaustion.retry_after,
        )
    else:
        ex.log.error = "all keys failed authentication"
        await _error(
            ex,
            send,
            502,
            "all configured keys failed authentication",
            dialect=ex.provider.dialect,
            request_id=ex.log.request_id,
        )


async def _relay(ex: Exchange, response: Response, send: Send) -> None:
    content_type = response.headers.get("content-type", "")
    sse = content_type.startswith("text/event-stream")
    bridged = ex.route.bridged
    headers = client_response_headers(response.headers.raw, reframed=sse and bridged, sse=sse)
    headers.append((b"x-request-id", ex.log.request_id.encode()))
    if sse:
        headers.extend(SSE_HEADERS)
        ex.sse = True
    ex.log.status = response.status_code
    if ex.dump is not None:
        ex.dump.response_headers = headers
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    ex.response_started = True
    ex.log.mark_first_byte()
    if sse and bridged:
        await _relay_sse(ex, response, send)
    else:
        await _relay_bytes(ex, response, send, collect=bridged and response.status_code < 300)


async def _next_chunk(ex: Exchange, chunks) -> bytes | None:
    t0 = trio.current_time()
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return None
    finally:
        ex.upstream_wait += trio.current_time() - t0


async def _relay_bytes(ex: Exchange, response: Response, send: Send, *, collect: bool) -> None:
    kept: list[bytes] = []
    size = sent = 0
    length = response.headers.get("content-length")
    declared = int(length) if length and length.isdigit() else -1
    chunks = response.aiter_raw()
    try:
        while (chunk := await _next_chunk(ex, chunks)) is not None:
            if collect and size < _USAGE_BODY_LIMIT:
                kept.append(chunk)
                size += len(chunk)
            sent += len(chunk)
            if ex.dump is not None:
                ex.dump.add_response_bytes(chunk)
            # With a declared length the client may hang up as soon as it has every byte.
            ex.finished = sent == declared
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except UpstreamError as exc:
        # The body cannot be completed honestly. Returning without the final message makes
        # hypercorn close the connection, so the client sees a truncated body, not a whole one.
        ex.log.error = f"upstream failed mid-body ({type(exc).__name__})"
        return
    ex.finished = True  # set first: hypercorn may report the disconnect during this send
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    if collect and kept and ex.provider.dialect is not None:
        body = b"".join(kept)
        usage = ex.provider.dialect.usage_from_body(ex.route, body)
        if usage is not None:
            ex.usage = usage
        if ex.tap is not None:  # recording hook: the whole blocking body (tool calls)
            ex.tap.body(body)


async def _relay_sse(ex: Exchange, response: Response, send: Send) -> None:
    dialect = ex.provider.dialect
    assert dialect is not None
    splitter = EventSplitter()
    last_block = b""
    chunks = response.aiter_raw()
    try:
        while (chunk := await _next_chunk(ex, chunks)) is not None:
            block = splitter.feed(chunk)
            if not block:
                continue
            if ex.tap is not None:  # recording hook: each relayed SSE block (tool calls)
                ex.tap.block(block)
            if _USAGE_OBJECT.search(block) is not None:
                block = _fold_usage(ex, block)
            last_block = block or last_block
            if ex.dump is not None:
                ex.dump.add_response_bytes(block)
            if block:
                await send({"type": "http.response.body", "body": block, "more_body": True})
        if splitter.tail.strip():
            raise _StreamCut("upstream stream ended inside an event")
    except (UpstreamError, _StreamCut) as exc:
        ex.log.error = (
            str(exc)
            if isinstance(exc, _StreamCut)
            else (f"upstream stream failed ({type(exc).__name__})")
        )
        # HOOK(dialect.adapt_response): a translated stream may carry its own error event.
        event = getattr(exc, "error_event", None) or dialect.stream_error_event(
            ex.route, "upstream stream interrupted", last_block
        )
        await send({"type": "http.response.body", "body": event, "more_body": True})
    ex.finished = True  # set first: hypercorn may report the disconnect during this send
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class _StreamCut(Exception):
    """The upstream ended its body with an incomplete event."""


def _fold_usage(ex: Exchange, block: bytes) -> bytes:
    """Read usage from the block's events; drop the usage-only chunk the client did not ask for."""
    dialect = ex.provider.dialect
    assert dialect is not None
    kept: list[bytes] = []
    dropped = False
    for event in iter_events(block):
        if dialect.usage_from_event(ex.route, event, ex.usage) and not ex.wants_usage:
            dropped = True
            continue
        kept.append(event)
    return b"".join(kept) if dropped else block


async def send_stream_deadline_error(ex: Exchange, send: Send) -> None:
    """After a whole-request deadline fired mid-stream: one error event and a clean end."""
    dialect = ex.provider.dialect
    if dialect is None:
        return
    event = dialect.stream_error_event(ex.route, "upstream timed out", b"")
    await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
