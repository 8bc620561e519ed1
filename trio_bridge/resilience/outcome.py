"""What an upstream attempt's outcome means, decided in one place (contract section 7).

Sans-IO: the proxy turns each attempt into an :class:`Outcome` (a status, or the kind of
transport failure), asks :func:`decide` what to do next, and does it. The breaker counts
exactly the outcomes whose ``breaker_failure`` is true. Nothing here sleeps or reads a clock;
``now`` and the jitter source are passed in.

Actions:

- ``RELAY``: this answer goes to the client as it is (a success, or an error that is never
  retried nor failed over: 403, 400, BYOK 401/429, ...).
- ``NEXT_KEY``: the key was marked (429/401); send the same bytes with the next key at once.
- ``RETRY``: the same upstream again after ``delay`` seconds (5xx, connection refused or
  reset before the head, a first-byte timeout when no fallback follows, a short
  ``Retry-After`` waited out).
- ``GIVE_UP``: this target is done; the next fallback target gets the request, else the
  client gets the last failure. ``reason`` is the ``fallbacks_total`` reason.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .breaker import FAILURE_STATUSES

__all__ = [
    "BREAKER_OPEN",
    "CONNECT_ERROR",
    "CONTEXT_LENGTH",
    "FIRST_TOKEN_TIMEOUT",
    "RATE_LIMITED",
    "SERVER_ERROR",
    "TIMEOUT",
    "Action",
    "Decision",
    "Kind",
    "Outcome",
    "RetryBudget",
    "classify_status",
    "decide",
]

# Reasons: the labels of retries_total and fallbacks_total.
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
CONNECT_ERROR = "connect_error"
TIMEOUT = "timeout"
FIRST_TOKEN_TIMEOUT = "first_token_timeout"  # noqa: S105 - a name, not a secret
BREAKER_OPEN = "breaker_open"
CONTEXT_LENGTH = "context_length"

# Same-upstream burst limit: never more than this many attempts of one request within
# WINDOW seconds against one provider, whatever max_attempts says.
WINDOW_ATTEMPTS = 4
WINDOW = 3.0


class Kind(enum.Enum):
    """What happened to one attempt."""

    OK = "ok"  # a head with a status < 400 (or any status the bridge relays as is)
    RATE_LIMITED = "rate_limited"  # 429
    AUTH_FAILED = "auth_failed"  # 401
    CLIENT_ERROR = "client_error"  # other 4xx, other 5xx: relayed, never retried
    CONTEXT_LENGTH = "context_length"  # 400 saying the prompt is too long
    SERVER_ERROR = "server_error"  # 500, 502, 503, 504, 529
    CONNECT_ERROR = "connect_error"  # refused, or reset/closed before the head
    TIMEOUT = "timeout"  # no head within first_byte_timeout
    FIRST_TOKEN_TIMEOUT = "first_token_timeout"  # noqa: S105 - a name; head, no content event in time
    STREAM_ERROR = "stream_error"  # the held stream broke before its first content event
    POOL_FULL = "pool_full"  # the bridge's own connection pool: not the upstream's fault
    PROTOCOL_ERROR = "protocol_error"  # anything else the transport raised


_BREAKER_FAILURES = frozenset(
    {
        Kind.SERVER_ERROR,
        Kind.CONNECT_ERROR,
        Kind.TIMEOUT,
        Kind.FIRST_TOKEN_TIMEOUT,
        Kind.STREAM_ERROR,
    }
)
_REASONS = {
    Kind.RATE_LIMITED: RATE_LIMITED,
    Kind.AUTH_FAILED: RATE_LIMITED,  # the key pool gave out
    Kind.SERVER_ERROR: SERVER_ERROR,
    Kind.STREAM_ERROR: SERVER_ERROR,
    Kind.CONNECT_ERROR: CONNECT_ERROR,
    Kind.TIMEOUT: TIMEOUT,
    Kind.FIRST_TOKEN_TIMEOUT: FIRST_TOKEN_TIMEOUT,
    Kind.CONTEXT_LENGTH: CONTEXT_LENGTH,
}


@dataclass(frozen=True)
class Outcome:
    """One attempt's result. ``retry_after``: seconds the upstream asked for (429/503)."""

    kind: Kind
    status: int | None = None
    retry_after: float | None = None

    @property
    def breaker_failure(self) -> bool:
        """500/502/503/504/529, connect errors, first-byte and first-token timeouts, and a
        stream that broke before its first token; never 429 or another 4xx."""
        return self.kind in _BREAKER_FAILURES

    @property
    def reason(self) -> str | None:
        """The retries_total / fallbacks_total reason, or None for outcomes that are neither
        retried nor failed over."""
        return _REASONS.get(self.kind)

    @property
    def label(self) -> str:
        """What the access log shows for the attempt: the status, else the kind."""
        return str(self.status) if self.status is not None else self.kind.value


def classify_status(status: int, retry_after: float | None = None) -> Outcome:
    """The outcome of an upstream head with ``status`` (context length is refined by the
    caller, which has to read the body to know)."""
    if status == 429:
        return Outcome(Kind.RATE_LIMITED, status, retry_after)
    if status == 401:
        return Outcome(Kind.AUTH_FAILED, status)
    if status in FAILURE_STATUSES:
        return Outcome(Kind.SERVER_ERROR, status, retry_after if status == 503 else None)
    if status >= 400:
        return Outcome(Kind.CLIENT_ERROR, status)
    return Outcome(Kind.OK, status)


@dataclass
class RetryBudget:
    """One request's attempts against one upstream (a fallback target), and the delays
    between them: full jitter, ``uniform(0, min(max_backoff, backoff * 2**n))`` before the
    n-th retry (n from 0)."""

    max_attempts: int = 3
    backoff: float = 0.25
    max_backoff: float = 2.0
    rand: Callable[[], float] = field(default=random.random, repr=False)
    attempts: int = 0
    retries: int = 0

    @property
    def left(self) -> int:
        return self.max_attempts - self.attempts

    def attempt(self) -> None:
        self.attempts += 1

    def jitter(self) -> float:
        cap = min(self.max_backoff, self.backoff * 2.0**self.retries)
        return self.rand() * cap


@dataclass
class AttemptWindow:
    """When one request attempted one provider: at most ``WINDOW_ATTEMPTS`` in ``WINDOW``
    seconds."""

    times: list[float] = field(default_factory=list)

    def wait(self, now: float) -> float:
        """Seconds to wait before the next attempt may start."""
        if len(self.times) < WINDOW_ATTEMPTS:
            return 0.0
        return max(0.0, self.times[-WINDOW_ATTEMPTS] + WINDOW - now)

    def record(self, now: float) -> None:
        self.times.append(now)


class Action(enum.Enum):
    RELAY = "relay"
    NEXT_KEY = "next_key"
    RETRY = "retry"
    GIVE_UP = "give_up"


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: float = 0.0
    reason: str | None = None
    # "rate_limited" / "auth_failed": mark the key before acting (pool keys only).
    mark: str | None = None


def decide(
    outcome: Outcome,
    *,
    byok: bool,
    budget: RetryBudget,
    other_key: bool,
    has_next_target: bool,
    context_length_fallback: bool,
) -> Decision:
    """What to do after ``outcome`` (see the module docstring).

    ``other_key``: another pool key could take the request for this model now;
    ``has_next_target``: a fallback target follows this one; ``context_length_fallback``:
    the matching fallback entry says ``context_length: true``. ``budget`` has counted the
    attempt that produced ``outcome``; a RETRY's delay consumes one of its retries.
    """
    kind = outcome.kind
    if kind is Kind.OK or kind is Kind.CLIENT_ERROR:
        return Decision(Action.RELAY)
    if kind in (Kind.RATE_LIMITED, Kind.AUTH_FAILED):
        if byok:  # the client's own key: its answer, never a failover, never a mark
            return Decision(Action.RELAY)
        mark = RATE_LIMITED if kind is Kind.RATE_LIMITED else "auth_failed"
        if budget.left > 0 and other_key:
            return Decision(Action.NEXT_KEY, mark=mark)
        wait = outcome.retry_after
        if (
            kind is Kind.RATE_LIMITED
            and budget.left > 0
            and wait is not None
            and wait <= budget.max_backoff
        ):
            budget.retries += 1
            return Decision(Action.RETRY, delay=wait, reason=RATE_LIMITED, mark=mark)
        return Decision(Action.GIVE_UP, reason=RATE_LIMITED, mark=mark)
    if kind is Kind.CONTEXT_LENGTH:
        if context_length_fallback:
            return Decision(Action.GIVE_UP, reason=CONTEXT_LENGTH)
        return Decision(Action.RELAY)
    if kind is Kind.FIRST_TOKEN_TIMEOUT:
        return Decision(Action.GIVE_UP, reason=FIRST_TOKEN_TIMEOUT)
    if kind in (Kind.POOL_FULL, Kind.PROTOCOL_ERROR):
        return Decision(Action.GIVE_UP)
    # 5xx, connect errors, first-byte timeouts, streams broken before the first token.
    reason = outcome.reason
    if kind is Kind.TIMEOUT and has_next_target:
        return Decision(Action.GIVE_UP, reason=reason)  # a silent upstream is not asked twice
    if budget.left <= 0:
        return Decision(Action.GIVE_UP, reason=reason)
    wait = outcome.retry_after
    if wait is not None:
        if wait > budget.max_backoff:
            return Decision(Action.GIVE_UP, reason=reason)
        budget.retries += 1
        return Decision(Action.RETRY, delay=wait, reason=reason)
    delay = budget.jitter()
    budget.retries += 1
    return Decision(Action.RETRY, delay=delay, reason=reason)
