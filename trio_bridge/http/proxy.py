"""One request's trip upstream: the fallback chain, key failover, same-upstream retries, the
breaker, and the relay of the answer back to the client as its bytes arrive.

What an attempt's outcome means (mark the key, next key, retry, fall back, relay) is decided
by :func:`trio_bridge.resilience.outcome.decide`; this module only does the I/O around it.
Upstream transport exceptions become outcomes in one place, :func:`_transport_outcome`.

Per-attempt hooks: :func:`_upstream_request` builds what is sent for one (target, key)
(a per-provider request transform goes there); :func:`_end_attempt` closes each
:class:`~trio_bridge.http.access.Attempt` (a per-attempt record goes there).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from .. import metrics
from ..dumps import DumpCapture
from ..providers.base import AttemptError, Dialect, Peek, Route, TokenUsage, UpstreamAttempt
from ..providers.sse import EventSplitter, iter_events
from ..resilience.breaker import Admission, CircuitBreaker
from ..resilience.fallbacks import ChainEntry, match_entry, plan, rewrite_model
from ..resilience.keypool import PoolKey, cooldown_from_headers
from ..resilience.outcome import (
    BREAKER_OPEN,
    RATE_LIMITED,
    Action,
    AttemptWindow,
    Kind,
    Outcome,
    RetryBudget,
    classify_status,
    decide,
)
from ..snapshot import ServedProvider, Snapshot
from ..upstream import (
    URL,
    ConnectError,
    ConnectTimeout,
    PoolTimeout,
    ReadError,
    RemoteProtocolError,
    Response,
    UpstreamClient,
    UpstreamError,
    UpstreamTimeout,
    WriteError,
    join_url,
)
from .access import Attempt, RequestLog
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
SERVED_BY = b"x-trio-bridge-served-by"
_USAGE_BODY_LIMIT = 8 * 1024 * 1024
# An upstream error answer kept to relay if nothing better comes; bigger ones are replaced by
# the bridge's own error with the same status.
_FAILURE_BODY_LIMIT = 1024 * 1024
# Events held while waiting for the first token; past this the stream is released as is.
_HOLD_LIMIT = 1024 * 1024

_jitter = random.Random()  # noqa: S311 - retry jitter needs no cryptographic randomness


@dataclass
class Exchange:
    """Everything about one request that the proxy needs, fixed before the first attempt."""

    snapshot: Snapshot
    provider: ServedProvider
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
    usage: TokenUsage = field(default_factory=TokenUsage)
    upstream_wait: float = 0.0
    dump: DumpCapture | None = None
    # The target that answered: usage and tokens_total are attributed to it.
    served_provider: str | None = None
    served_label: str | None = None
    # Attempt times per provider name (the same-upstream burst limit).
    windows: dict[str, AttemptWindow] = field(default_factory=dict)
    tap: ExchangeTap | None = None  # recording hook: records and spans (recording/tap.py)


@dataclass(frozen=True)
class Target:
    """One place the request may be sent: the primary, or a fallback target."""

    provider: ServedProvider
    model: str | None  # the model sent upstream
    label: str  # its label on this provider (breaker key, cooldown key, metrics)
    body: bytes
    fallback: bool

    @property
    def served_by(self) -> str:
        return f"{self.provider.name}/{self.label}"


@dataclass(frozen=True)
class Buffered:
    """An upstream answer read whole, to relay later."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    served_by: str


@dataclass(frozen=True)
class Failure:
    """What the client gets when nothing better comes: the bridge's own error (``message``)
    or an upstream answer (``answer``)."""

    status: int
    message: str = ""
    retry_after: int | None = None
    answer: Buffered | None = None


@dataclass
class _GiveUp:
    reason: str | None  # None: not a fallback trigger (the client gets ``failure``)
    failure: Failure


def _url(provider: ServedProvider, raw_tail: bytes) -> URL:
    """base_url's path + the raw tail, never normalised (cached)."""
    return join_url(provider.base_url, raw_tail)


# --- the chain ---------------------------------------------------------------------------


def _plan(ex: Exchange) -> tuple[list[Target], ChainEntry | None]:
    """The primary, then the matching fallback entry's servable targets (bridged routes
    only). A target that cannot serve now (disabled, failed to build, no key for a pool
    request) is left out."""
    primary = ex.provider
    model = ex.peek.model if ex.peek is not None else None
    entry = match_entry(primary.fallbacks, model) if ex.route.bridged else None
    targets = [Target(primary, model, ex.model_label, ex.body, False)]
    for name, target_model in plan(primary.name, model, entry)[1:]:
        provider = ex.snapshot.providers.get(name)
        if not isinstance(provider, ServedProvider):
            continue
        if not ex.caller.byok and not provider.has_keys:
            continue
        body = ex.body
        if target_model is not None and target_model != model:
            body = rewrite_model(ex.body, target_model)
        label = provider.labeler.label(target_model)
        targets.append(Target(provider, target_model, label, body, True))
    return targets, entry


async def run_exchange(ex: Exchange, send: Send) -> None:
    """Answer the request. Never raises for upstream trouble: every failure becomes a response
    (or, after the first byte, an error event)."""
    bridge = ex.snapshot.bridge
    targets, entry = _plan(ex)
    last: Failure | None = None
    with trio.move_on_after(bridge.upstream_timeout) as deadline:
        for i, target in enumerate(targets):
            has_next = i + 1 < len(targets)
            gave_up = await _serve_target(ex, send, target, has_next, entry)
            if gave_up is None:
                return
            last = gave_up.failure
            if not has_next or gave_up.reason is None:
                break
            following = targets[i + 1].provider.name
            metrics.fallbacks_child(target.provider.name, following, gave_up.reason).inc()
        if last is not None:
            await _send_failure(ex, send, last)
    if deadline.cancelled_caught:
        ex.log.error = "upstream timed out"
        if not ex.response_started:
            await _error(ex, send, 504, "upstream timed out")
        elif ex.sse and ex.route.bridged:
            await send_stream_deadline_error(ex, send)
        # else: a plain body cut short; leaving it unfinished makes the server close the
        # connection (see _relay_bytes).


async def _serve_target(
    ex: Exchange, send: Send, target: Target, has_next: bool, entry: ChainEntry | None
) -> _GiveUp | None:
    """Attempts against one target until one answer is relayed (None) or the target gives up."""
    provider, bridge = target.provider, ex.snapshot.bridge
    pool = provider.pool
    byok = ex.caller.byok
    retry = bridge.retry
    budget = RetryBudget(
        retry.max_attempts, float(retry.backoff), float(retry.max_backoff), rand=_jitter.random
    )
    window = ex.windows.setdefault(provider.name, AttemptWindow())
    breaker: CircuitBreaker | None = None
    if bridge.circuit_breaker.enabled:
        breaker = provider.breakers.get(ex.route.endpoint, target.label)
    context_length = entry is not None and entry.context_length and has_next
    tried: set[int] = set()
    last: Failure | None = None
    with provider.upstream.pinned() as upstream:
        while True:
            now = trio.current_time()
            if breaker is not None and breaker.state(now) == "open":
                return _GiveUp(BREAKER_OPEN, last or _reject_breaker(ex, target, breaker))
            key: PoolKey | None = None
            if not byok:
                key = pool.pick(now, tried, target.label)
                if key is None:
                    return _GiveUp(RATE_LIMITED, _exhausted(ex, target, now))
            admission = breaker.admit(now) if breaker is not None else None
            if breaker is not None and admission is None:
                return _GiveUp(BREAKER_OPEN, last or _reject_breaker(ex, target, breaker))
            reported = False
            try:
                wait = window.wait(now)
                if wait > 0:
                    await trio.sleep(wait)
                budget.attempt()
                window.record(trio.current_time())
                attempt = _begin_attempt(ex, target, key)
                outcome, response, body, held = await _attempt(
                    ex, target, upstream, key, attempt, context_length
                )
                if breaker is not None and admission is not None:
                    reported = True
                    _report_breaker(ex, target, breaker, admission, outcome.breaker_failure)
            finally:
                if breaker is not None and admission is not None and not reported:
                    breaker.release(admission, trio.current_time())
            other_key = (
                key is not None
                and pool.pick(trio.current_time(), tried | {key.index}, target.label) is not None
            )
            decision = decide(
                outcome,
                byok=byok,
                budget=budget,
                other_key=other_key,
                has_next_target=has_next,
                context_length_fallback=context_length,
            )
            if key is not None and decision.mark is not None:
                _mark_key(ex, target, key, outcome, trio.current_time())
            if decision.action is Action.RELAY:
                if key is not None and outcome.kind is Kind.OK:
                    pool.mark_success(key, target.label)
                if held is not None:
                    _end_attempt(ex, attempt, outcome)
                    await _send_failure(ex, send, held)
                    return None
                assert response is not None and body is not None
                try:
                    await _relay(ex, target, response, body, send)
                finally:
                    _end_attempt(ex, attempt, outcome)
                    await response.aclose()
                return None
            # Not relayed: keep what the client would get, then move on.
            if ex.tap is not None and outcome.status is not None:
                ex.tap.answered(outcome.status)  # recording hook: an answer not relayed
            if held is not None:
                last = held
            elif response is not None and body is not None:
                try:
                    last = await _buffer_failure(ex, target, response, body)
                finally:
                    await response.aclose()
            else:
                last = _transport_failure(outcome, attempt.error)
            _end_attempt(ex, attempt, outcome)
            if decision.action is Action.NEXT_KEY:
                assert key is not None
                tried.add(key.index)
                metrics.key_pool_failover.labels(provider.name).inc()
                continue
            if decision.action is Action.RETRY:
                assert decision.reason is not None
                metrics.retries_child(provider.name, decision.reason).inc()
                tried.clear()
                if decision.delay > 0:
                    await trio.sleep(decision.delay)
                continue
            # GIVE_UP
            if decision.reason == RATE_LIMITED and not byok:
                now = trio.current_time()
                if pool.pick(now, (), target.label) is None:
                    last = _exhausted(ex, target, now)
            return _GiveUp(decision.reason, last)


# --- one attempt -------------------------------------------------------------------------


def _begin_attempt(ex: Exchange, target: Target, key: PoolKey | None) -> Attempt:
    hint = key.hint if key is not None else "byok"
    attempt = Attempt(
        provider=target.provider.name,
        model=target.label,
        key_hint=hint,
        started=trio.current_time(),
        fallback=target.fallback,
    )
    ex.log.attempts.append(attempt)
    ex.log.key_hint = hint
    return attempt


def _end_attempt(ex: Exchange, attempt: Attempt, outcome: Outcome) -> None:
    """The attempt is over (answered, abandoned or relayed): one place to record it."""
    attempt.ended = trio.current_time()
    attempt.status = outcome.status
    attempt.outcome = outcome.label


def _upstream_request(
    ex: Exchange, target: Target, key: PoolKey | None
) -> tuple[str, URL, list[tuple[bytes, bytes]], bytes]:
    """Method, URL, headers and body of one attempt at ``target`` with ``key``."""
    provider, bridge = target.provider, ex.snapshot.bridge
    dialect = provider.dialect
    actor = (
        actor_headers(ex.caller.actor, dict(ex.caller.metadata))
        if bridge.send_actor_headers
        else ()
    )
    headers = upstream_request_headers(
        ex.client_headers,
        keep_auth=ex.caller.keep_auth,
        key_header=dialect.key_header(key.secret) if key is not None else None,
        extra=provider.headers,
        identity_encoding=ex.route.bridged,
        actor=actor,
        forwarded_for=ex.client_ip if bridge.forward_client_ip else None,
    )
    return ex.method, _url(provider, ex.upstream_raw_path), headers, target.body


async def _attempt(
    ex: Exchange,
    target: Target,
    upstream: UpstreamClient,
    key: PoolKey | None,
    attempt: Attempt,
    context_length: bool,
) -> tuple[Outcome, Response | None, _Body | None, Failure | None]:
    """Send once; return the outcome and, when a head arrived, the open response and its
    body reader. ``held``: an answer already read whole that must be relayed as is (a 400
    read to check for context length; a stream that failed before its first token)."""
    bridge = ex.snapshot.bridge
    dialect = target.provider.dialect
    method, url, headers, body_bytes = _upstream_request(ex, target, key)
    if ex.tap is not None:  # recording hook: attempt start (adds traceparent)
        ex.tap.attempt(
            headers, provider=target.provider, model=target.model, fallback=target.fallback
        )
    if ex.dump is not None:
        ex.dump.request_headers = headers
    # HOOK(dialect.prepare_attempt): the per-attempt request transform (Bedrock: path, body
    # rewrite, SigV4 signature); it runs on every attempt, so a retry signs again.
    plain = UpstreamAttempt(method, ex.upstream_raw_path, headers, body_bytes, key is None)
    try:
        prepared = await dialect.prepare_attempt(ex.route, plain)
    except AttemptError as exc:
        attempt.error = exc.message
        return Outcome(Kind.CLIENT_ERROR, exc.status), None, None, Failure(exc.status, exc.message)
    if prepared.raw_path != ex.upstream_raw_path:
        url = _url(target.provider, prepared.raw_path)
    try:
        response = await _first_byte(
            ex,
            upstream.send(method, url, prepared.headers, prepared.body),
            bridge.first_byte_timeout,
        )
    except _NoHead as exc:
        attempt.error = exc.message
        return exc.outcome, None, None, None
    attempt.first_byte_at = trio.current_time()
    # HOOK(dialect.adapt_response): the response transform, before the outcome is judged
    # (Bedrock: error mapping, event-stream frames -> Anthropic SSE).
    response = dialect.adapt_response(ex.route, response)
    status = response.status_code
    retry_after = None
    if status in (429, 503):
        retry_after = cooldown_from_headers(
            response.headers.multi_items(), wall_now=time.time(), default=None
        )
    outcome = classify_status(status, retry_after)
    body = _Body(ex, response)
    try:
        if status == 400 and context_length:
            failure = await _buffer_failure(ex, target, response, body)
            await response.aclose()
            answer = failure.answer
            if answer is not None and dialect.is_context_length_error(status, answer.body):
                return Outcome(Kind.CONTEXT_LENGTH, status), None, None, failure
            return outcome, None, None, failure
        first_token_timeout = target.provider.first_token_timeout
        if (
            outcome.kind is Kind.OK
            and first_token_timeout is not None
            and ex.route.bridged
            and status < 300
            and _is_sse(response)
        ):
            held = await _hold_first_token(
                ex, target, response, body, attempt, attempt.started + first_token_timeout
            )
            if held is not None:
                await response.aclose()
                return held[0], None, None, held[1]
    except BaseException:
        await response.aclose()
        raise
    return outcome, response, body, None


class _NoHead(Exception):
    def __init__(self, outcome: Outcome, message: str) -> None:
        self.outcome, self.message = outcome, message


def _transport_outcome(exc: BaseException) -> tuple[Outcome, str]:
    """The one mapping of upstream transport exceptions (before the head) to outcomes."""
    if isinstance(exc, trio.TooSlowError):
        return Outcome(Kind.TIMEOUT), "upstream did not answer in time"
    if isinstance(exc, PoolTimeout):
        return Outcome(Kind.POOL_FULL), "upstream connection pool exhausted"
    if isinstance(exc, ConnectError | ConnectTimeout):
        return Outcome(Kind.CONNECT_ERROR), "upstream unreachable"
    if isinstance(exc, UpstreamTimeout):
        return Outcome(Kind.TIMEOUT), "upstream timed out"
    if isinstance(exc, ReadError | WriteError | RemoteProtocolError):
        return Outcome(Kind.CONNECT_ERROR), "upstream closed the connection before answering"
    return Outcome(Kind.PROTOCOL_ERROR), f"upstream failed ({type(exc).__name__})"


# Exceptions an upstream read may raise (mid-body).
UPSTREAM_ERRORS: tuple[type[BaseException], ...] = (UpstreamError,)
_HEAD_ERRORS: tuple[type[BaseException], ...] = (trio.TooSlowError, *UPSTREAM_ERRORS)

_STATUS_OF = {
    Kind.TIMEOUT: 504,
    Kind.FIRST_TOKEN_TIMEOUT: 504,
    Kind.POOL_FULL: 503,
}


def _transport_failure(outcome: Outcome, message: str | None) -> Failure:
    return Failure(_STATUS_OF.get(outcome.kind, 502), message or "upstream failed")


async def _first_byte(ex: Exchange, sending: Awaitable[Response], timeout: float) -> Response:  # noqa: ASYNC109 - bounds one phase inside
    """Await the response head within ``timeout``; every failure becomes a ``_NoHead``."""
    t0 = trio.current_time()
    try:
        with trio.fail_after(timeout):
            return await sending
    except _HEAD_ERRORS as exc:
        raise _NoHead(*_transport_outcome(exc)) from None
    finally:
        ex.upstream_wait += trio.current_time() - t0


class _Body:
    """An upstream body being read; chunks already read (``held``) come out first."""

    def __init__(self, ex: Exchange, response: Response) -> None:
        self.ex = ex
        self.held: list[bytes] = []
        self._chunks = response.aiter_raw()

    async def read(self) -> bytes | None:
        if self.held:
            return self.held.pop(0)
        t0 = trio.current_time()
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None
        finally:
            self.ex.upstream_wait += trio.current_time() - t0

    async def fetch(self) -> bytes | None:
        """Read a chunk from upstream and hold it (it is still relayed later)."""
        t0 = trio.current_time()
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            return None
        finally:
            self.ex.upstream_wait += trio.current_time() - t0
        self.held.append(chunk)
        return chunk


def _is_sse(response: Response) -> bool:
    return (response.headers.get("content-type") or "").startswith("text/event-stream")


async def _hold_first_token(
    ex: Exchange,
    target: Target,
    response: Response,
    body: _Body,
    attempt: Attempt,
    deadline: float,
) -> tuple[Outcome, Failure] | None:
    """Hold the stream until its first content event (None: relay it, held bytes first).

    No content within ``first_token_timeout`` of the attempt's start: FIRST_TOKEN_TIMEOUT. An
    error event first: STREAM_ERROR, the events so far kept to relay as they are. The stream
    breaking first: STREAM_ERROR with the bridge's 502."""
    dialect = target.provider.dialect
    splitter = EventSplitter()
    size = 0
    with trio.move_on_at(deadline) as scope:
        try:
            while (chunk := await body.fetch()) is not None:
                size += len(chunk)
                for event in iter_events(splitter.feed(chunk)):
                    kind = dialect.stream_event_kind(ex.route, event)
                    if kind == "content":
                        return None
                    if kind == "error":
                        answer = Buffered(
                            response.status_code,
                            list(response.headers.raw),
                            b"".join(body.held),
                            target.served_by,
                        )
                        attempt.error = "upstream stream failed before the first token"
                        return Outcome(Kind.STREAM_ERROR, response.status_code), Failure(
                            response.status_code, answer=answer
                        )
                if size > _HOLD_LIMIT:
                    return None
            return None  # ended before any content: relayed as it is
        except UPSTREAM_ERRORS as exc:
            attempt.error = f"upstream stream failed before the first token ({type(exc).__name__})"
            return Outcome(Kind.STREAM_ERROR), Failure(502, attempt.error)
    assert scope.cancelled_caught
    attempt.error = "upstream sent no token in time"
    return Outcome(Kind.FIRST_TOKEN_TIMEOUT), Failure(504, attempt.error)


async def _buffer_failure(ex: Exchange, target: Target, response: Response, body: _Body) -> Failure:
    """Read an upstream error answer whole (bounded) to relay it if it turns out to be the
    last failure; one that is too big or breaks becomes the bridge's error with its status."""
    status = response.status_code
    chunks: list[bytes] = []
    size = 0
    try:
        while (chunk := await body.read()) is not None:
            size += len(chunk)
            if size > _FAILURE_BODY_LIMIT:
                return Failure(status, f"upstream answered {status}")
            chunks.append(chunk)
    except UPSTREAM_ERRORS:
        return Failure(status, f"upstream answered {status}")
    answer = Buffered(status, list(response.headers.raw), b"".join(chunks), target.served_by)
    return Failure(status, answer=answer)


def _mark_key(ex: Exchange, target: Target, key: PoolKey, outcome: Outcome, now: float) -> None:
    pool = target.provider.pool
    if outcome.kind is Kind.RATE_LIMITED:
        changed = pool.mark_rate_limited(key, now, outcome.retry_after, target.label)
        reason = "rate_limited"
    else:
        changed = pool.mark_auth_failed(key, now)
        reason = "auth_failed"
    if changed:
        metrics.key_pool_transitions.labels(target.provider.name, reason).inc()


def _report_breaker(
    ex: Exchange, target: Target, breaker: CircuitBreaker, admission: Admission, failure: bool
) -> None:
    now = trio.current_time()
    if failure:
        if breaker.record_failure(admission, now).tripped:
            metrics.breaker_trips.labels(
                target.provider.name, ex.route.endpoint, target.label
            ).inc()
    else:
        breaker.record_success(admission, now)


def _reject_breaker(ex: Exchange, target: Target, breaker: CircuitBreaker) -> Failure:
    metrics.breaker_rejects.labels(target.provider.name, ex.route.endpoint, target.label).inc()
    return Failure(
        503,
        f'provider "{target.provider.name}" is unavailable (circuit open)',
        retry_after=breaker.retry_after,
    )


def _exhausted(ex: Exchange, target: Target, now: float) -> Failure:
    pool = target.provider.pool
    exhaustion = pool.exhaustion(now, target.label)
    metrics.key_pool_exhaustions.labels(target.provider.name, exhaustion.reason).inc()
    if exhaustion.status == 429:
        return Failure(
            429,
            "all configured keys are rate limited; retry later",
            retry_after=exhaustion.retry_after,
        )
    return Failure(502, "all configured keys failed authentication")


# --- answering the client ----------------------------------------------------------------


async def _error(
    ex: Exchange, send: Send, status: int, message: str, retry_after: int | None = None
) -> None:
    ex.log.status = status
    ex.finished = True
    await send_error(
        send,
        status,
        message,
        dialect=ex.provider.dialect,
        request_id=ex.log.request_id,
        retry_after=retry_after,
    )


async def _send_failure(ex: Exchange, send: Send, failure: Failure) -> None:
    """The last failure, to the client: the upstream's own answer, or the bridge's error."""
    answer = failure.answer
    if answer is None:
        ex.log.error = failure.message
        await _error(ex, send, failure.status, failure.message, failure.retry_after)
        return
    headers = client_response_headers(answer.headers, reframed=True, sse=False)
    headers.append((b"content-length", str(len(answer.body)).encode()))
    headers.append((b"x-request-id", ex.log.request_id.encode()))
    if ex.route.bridged:
        headers.append((SERVED_BY, answer.served_by.encode()))
        ex.log.served_by = answer.served_by
    ex.log.status = answer.status
    if ex.dump is not None:
        ex.dump.response_headers = headers
        ex.dump.add_response_bytes(answer.body)
    ex.response_started = True
    ex.log.mark_first_byte()
    ex.finished = True
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body, "more_body": False})


async def _relay(ex: Exchange, target: Target, response: Response, body: _Body, send: Send) -> None:
    sse = _is_sse(response)
    bridged = ex.route.bridged
    headers = client_response_headers(response.headers.raw, reframed=sse and bridged, sse=sse)
    headers.append((b"x-request-id", ex.log.request_id.encode()))
    if bridged:
        headers.append((SERVED_BY, target.served_by.encode()))
        ex.log.served_by = target.served_by
    if sse:
        headers.extend(SSE_HEADERS)
        ex.sse = True
    ex.served_provider, ex.served_label = target.provider.name, target.label
    ex.log.status = response.status_code
    if ex.dump is not None:
        ex.dump.response_headers = headers
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    ex.response_started = True
    ex.log.mark_first_byte()
    dialect = target.provider.dialect
    if sse and bridged:
        await _relay_sse(ex, dialect, response, body, send)
    else:
        await _relay_bytes(
            ex, dialect, response, body, send, collect=bridged and response.status_code < 300
        )


async def _relay_bytes(
    ex: Exchange,
    dialect: Dialect,
    response: Response,
    body: _Body,
    send: Send,
    *,
    collect: bool,
) -> None:
    kept: list[bytes] = []
    size = sent = 0
    length = response.headers.get("content-length")
    declared = int(length) if length and length.isdigit() else -1
    try:
        while (chunk := await body.read()) is not None:
            if collect and size < _USAGE_BODY_LIMIT:
                kept.append(chunk)
                size += len(chunk)
            sent += len(chunk)
            if ex.dump is not None:
                ex.dump.add_response_bytes(chunk)
            # With a declared length the client may hang up as soon as it has every byte.
            ex.finished = sent == declared
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except UPSTREAM_ERRORS as exc:
        # The body cannot be completed honestly. Returning without the final message makes
        # the server close the connection, so the client sees a truncated body, not a whole one.
        ex.log.error = f"upstream failed mid-body ({type(exc).__name__})"
        return
    ex.finished = True  # set first: the server may report the disconnect during this send
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    if collect and kept:
        whole = b"".join(kept)
        usage = dialect.usage_from_body(ex.route, whole)
        if usage is not None:
            ex.usage = usage
        if ex.tap is not None:  # recording hook: the whole blocking body (tool calls)
            ex.tap.body(whole)


async def _relay_sse(
    ex: Exchange, dialect: Dialect, response: Response, body: _Body, send: Send
) -> None:
    splitter = EventSplitter()
    last_block = b""
    try:
        while (chunk := await body.read()) is not None:
            block = splitter.feed(chunk)
            if not block:
                continue
            if _USAGE_OBJECT.search(block) is not None:
                block = _fold_usage(ex, dialect, block)
            last_block = block or last_block
            if ex.dump is not None:
                ex.dump.add_response_bytes(block)
            if block:
                if ex.tap is not None:  # recording hook: each relayed SSE block (tool calls)
                    ex.tap.block(block)
                await send({"type": "http.response.body", "body": block, "more_body": True})
        if splitter.tail.strip():
            raise _StreamCut("upstream stream ended inside an event")
    except _STREAM_ERRORS as exc:
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
    ex.finished = True  # set first: the server may report the disconnect during this send
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class _StreamCut(Exception):
    """The upstream ended its body with an incomplete event."""


_STREAM_ERRORS: tuple[type[BaseException], ...] = (*UPSTREAM_ERRORS, _StreamCut)


def _fold_usage(ex: Exchange, dialect: Dialect, block: bytes) -> bytes:
    """Read usage from the block's events; drop the usage-only chunk the client did not ask for."""
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
    event = dialect.stream_error_event(ex.route, "upstream timed out", b"")
    await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
