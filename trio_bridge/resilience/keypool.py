"""A provider's upstream keys: which one to use next, and which are cooling down.

A pure state machine. ``now`` is trio's clock; nothing here sleeps, reads a clock or does
I/O. Guarantees:

- :meth:`KeyPool.pick` returns the first key, in configured order, not cooling down.
- A new cooldown never shortens one in force (``cooling_until`` only grows).
- Key state lives in :class:`KeyState` objects shared by every snapshot holding the same
  resolved key value, so a reload keeps cooldowns (:class:`KeyStateRegistry`).
- A secret never appears in a ``repr``, a view or an exception message.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime

__all__ = [
    "AUTH_FAILED",
    "AUTH_FAILED_COOLDOWN",
    "DEFAULT_COOLDOWN",
    "MAX_COOLDOWN",
    "RATE_LIMITED",
    "VALID",
    "Exhaustion",
    "KeyPool",
    "KeyState",
    "KeyStateRegistry",
    "KeyView",
    "PoolKey",
    "cooldown_from_headers",
]

VALID = "valid"
RATE_LIMITED = "rate_limited"
AUTH_FAILED = "auth_failed"

DEFAULT_COOLDOWN = 60.0
AUTH_FAILED_COOLDOWN = 60.0
# Upper bound on any single cooldown, so a hostile or broken Retry-After cannot
# bench a key for years (or overflow the arithmetic with "1e400").
MAX_COOLDOWN = 86_400.0

# Float noise (0.1 + 3 - 0.1 == 3.0000000000000004) must not round 3 s up to 4 s.
_CEIL_SLACK = 1e-6


@dataclass(eq=False)
class KeyState:
    """Mutable cooldown state of one resolved key value; compared and hashed by identity.

    ``cooling_until`` is on trio's clock: the key cools while ``now < cooling_until``.
    ``reason`` is the reason of the cooldown that ends last; it is kept after the cooldown
    ends as the key's last failure (views report it only while cooling).
    """

    cooling_until: float = 0.0
    reason: str | None = None

    def cooling(self, now: float) -> bool:
        return now < self.cooling_until

    def status(self, now: float) -> str:
        """``"valid"``, ``"rate_limited"`` or ``"auth_failed"``."""
        if not self.cooling(now):
            return VALID
        return self.reason or RATE_LIMITED

    def cool(self, now: float, cooldown: float, reason: str) -> bool:
        """Cool for ``cooldown`` seconds from ``now`` unless a cooldown ending later is in force.

        Returns True when the visible status changed (a transition worth counting).
        """
        before = self.status(now)
        until = now + _clamp_cooldown(cooldown)
        if until > self.cooling_until:
            self.cooling_until = until
            self.reason = reason
        return self.status(now) != before


@dataclass(frozen=True)
class PoolKey:
    """One configured key. ``repr`` shows the hint, never the secret."""

    index: int
    secret: str = field(repr=False)
    hint: str
    state: KeyState = field(default_factory=KeyState)


@dataclass(frozen=True)
class KeyView:
    """A key as ``/-/snapshot`` and metrics show it; no secret."""

    index: int
    hint: str
    state: str
    cooling_until: float | None
    reason: str | None


@dataclass(frozen=True)
class Exhaustion:
    """What to answer when no key is usable."""

    status: int
    retry_after: int | None
    reason: str


class KeyPool:
    """The keys of one provider, in configured order."""

    def __init__(self, provider: str, keys: Sequence[PoolKey]) -> None:
        self.provider = provider
        self.keys: tuple[PoolKey, ...] = tuple(keys)

    def __repr__(self) -> str:
        return f"KeyPool(provider={self.provider!r}, keys={len(self.keys)})"

    def __len__(self) -> int:
        return len(self.keys)

    def pick(self, now: float, tried: Collection[int] = ()) -> PoolKey | None:
        """First key, in configured order, not cooling down and not in ``tried`` (indexes)."""
        for key in self.keys:
            if key.index not in tried and not key.state.cooling(now):
                return key
        return None

    def mark_rate_limited(self, key: PoolKey, now: float, cooldown: float) -> bool:
        """Cool ``key`` after a 429. True if its status changed."""
        return key.state.cool(now, cooldown, RATE_LIMITED)

    def mark_auth_failed(
        self, key: PoolKey, now: float, cooldown: float = AUTH_FAILED_COOLDOWN
    ) -> bool:
        """Cool ``key`` after a 401. True if its status changed."""
        return key.state.cool(now, cooldown, AUTH_FAILED)

    def exhaustion(self, now: float) -> Exhaustion:
        """The answer when :meth:`pick` found nothing.

        429 if any key is rate-limited, with ``retry_after`` the smallest remaining
        rate-limit cooldown rounded up to whole seconds (at least 1); auth-failed keys do
        not shorten it. If no rate-limit cooldown is still running but a key's last failure
        was a 429 (a tiny cooldown that ended during the request), 429 with 1 s. Otherwise
        (all keys auth-failed, or an empty pool) 502 ``auth_failed``.
        """
        remaining = [
            key.state.cooling_until - now
            for key in self.keys
            if key.state.status(now) == RATE_LIMITED
        ]
        if remaining:
            retry_after = max(1, math.ceil(min(remaining) - _CEIL_SLACK))
            return Exhaustion(429, retry_after, RATE_LIMITED)
        if any(key.state.reason == RATE_LIMITED for key in self.keys):
            return Exhaustion(429, 1, RATE_LIMITED)
        return Exhaustion(502, None, AUTH_FAILED)

    def states(self, now: float) -> list[KeyView]:
        """Every key's status, in configured order."""
        views = []
        for key in self.keys:
            status = key.state.status(now)
            cooling = status != VALID
            views.append(
                KeyView(
                    index=key.index,
                    hint=key.hint,
                    state=status,
                    cooling_until=key.state.cooling_until if cooling else None,
                    reason=status if cooling else None,
                )
            )
        return views

    def counts(self, now: float) -> dict[str, int]:
        """How many keys are in each status; every status present (for a gauge)."""
        counts = {VALID: 0, RATE_LIMITED: 0, AUTH_FAILED: 0}
        for key in self.keys:
            counts[key.state.status(now)] += 1
        return counts


class KeyStateRegistry:
    """Carries key state across reloads, keyed by (provider, sha256 of the key value).

    A key whose resolved value is unchanged keeps its state (and cooldown) whatever else
    changed; a new value starts valid; :meth:`retain` forgets every value not listed.
    Secrets are not stored, only their digests.
    """

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], KeyState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def state_for(self, provider: str, secret: str) -> KeyState:
        """The state known for this value, or a fresh valid one (remembered from now on)."""
        return self._states.setdefault((provider, _digest(secret)), KeyState())

    def retain(self, keys: Iterable[tuple[str, str]]) -> None:
        """Forget every state whose (provider, secret) is not in ``keys``."""
        keep = {(provider, _digest(secret)) for provider, secret in keys}
        self._states = {ident: st for ident, st in self._states.items() if ident in keep}


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _clamp_cooldown(cooldown: float) -> float:
    if not cooldown > 0:  # also catches NaN
        return 0.0
    return min(cooldown, MAX_COOLDOWN)


# ---- Retry-After ------------------------------------------------------------------------

_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


def cooldown_from_headers(
    headers: Headers, *, wall_now: float, default: float = DEFAULT_COOLDOWN
) -> float:
    """Seconds to cool a key after a 429.

    ``retry-after-ms`` (milliseconds), else ``Retry-After`` (delta-seconds, or an HTTP date
    converted once against ``wall_now`` = ``time.time()``), else ``default``. Header names
    are case-insensitive; the first occurrence counts. A value that is not a non-negative
    number (or date) falls through to the next rule.

    A 429 always takes the key out of rotation for at least one unit of the header's
    resolution: ``retry-after-ms: 0`` gives 1 ms, ``Retry-After: 0`` or a date not in the
    future gives 1 s. Results are capped at :data:`MAX_COOLDOWN`.
    """
    millis = _number(_header(headers, "retry-after-ms"))
    if millis is not None:
        return _clamp_cooldown(max(millis, 1.0) / 1000.0)
    value = _header(headers, "retry-after")
    if value is not None:
        seconds = _number(value)
        if seconds is None:
            seconds = _seconds_until(value, wall_now)
        if seconds is not None:
            return _clamp_cooldown(max(seconds, 1.0))
    return default


def _header(headers: Headers, name: str) -> str | None:
    items = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in items:
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        if key.lower() == name:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    return float(text)


def _seconds_until(text: str, wall_now: float) -> float | None:
    try:
        when = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC with no claim about local time
        when = when.replace(tzinfo=UTC)
    try:
        return when.timestamp() - wall_now
    except (OverflowError, ValueError):
        return None
