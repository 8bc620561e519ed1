"""A provider's upstream keys: which one to use next, and which are cooling down.

A pure state machine. ``now`` is trio's clock; nothing here sleeps, reads a clock or does
I/O. Guarantees:

- :meth:`KeyPool.pick` returns the first key, in configured order, not cooling down for the
  request's model label: a 429 cools one (key, model) pair, a 401 the whole key.
- A new cooldown never shortens one in force (every ``cooling_until`` only grows).
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
from typing import Final, Literal

__all__ = [
    "AUTH_FAILED",
    "KEY_STATUSES",
    "KeyStatus",
    "AUTH_FAILED_COOLDOWN",
    "DEFAULT_COOLDOWN",
    "BACKOFF_MAX",
    "BACKOFF_START",
    "MAX_COOLDOWN",
    "RATE_LIMITED",
    "VALID",
    "Exhaustion",
    "KeyPool",
    "KeyState",
    "KeyStateRegistry",
    "KeyView",
    "PairState",
    "PoolKey",
    "cooldown_from_headers",
]

KeyStatus = Literal["valid", "rate_limited", "auth_failed"]
"""A key's state, as ``/-/snapshot`` and the ``key_pool_state`` gauge show it."""
VALID: Final = "valid"
RATE_LIMITED: Final = "rate_limited"
AUTH_FAILED: Final = "auth_failed"
KEY_STATUSES: Final[tuple[KeyStatus, ...]] = (VALID, RATE_LIMITED, AUTH_FAILED)

DEFAULT_COOLDOWN = 60.0
AUTH_FAILED_COOLDOWN = 60.0
# A 429 without a rate-limit header: 1 s, doubling per consecutive one, at most 60 s.
BACKOFF_START = 1.0
BACKOFF_MAX = 60.0
# Upper bound on any single cooldown, so a hostile or broken Retry-After cannot
# bench a key for years (or overflow the arithmetic with "1e400").
MAX_COOLDOWN = 86_400.0
# Model labels remembered per key; labels are bounded per snapshot, this bounds them across
# reloads too.
MAX_MODELS_PER_KEY = 256

# Float noise (0.1 + 3 - 0.1 == 3.0000000000000004) must not round 3 s up to 4 s.
_CEIL_SLACK = 1e-6


@dataclass(eq=False, slots=True)
class PairState:
    """The rate-limit state of one (key, model label) pair."""

    cooling_until: float = 0.0
    # Consecutive 429s without a rate-limit header (the exponential backoff's exponent).
    streak: int = 0


@dataclass(eq=False)
class KeyState:
    """Mutable cooldown state of one resolved key value; compared and hashed by identity.

    Two kinds of cooldown, on trio's clock (cooling while ``now < until``):

    - key-wide (``cooling_until``/``reason``): after a 401, the key is unusable for every model;
    - per model label (``models``): after a 429, only that (key, model) pair cools, so one
      model's rate limit never blocks the key's other models.

    ``reason`` is the reason of the key-wide cooldown that ends last; it is kept after the
    cooldown ends as the key's last key-wide failure. ``last_failure`` is the reason of the
    latest cooldown of either kind.
    """

    cooling_until: float = 0.0
    reason: KeyStatus | None = None
    models: dict[str, PairState] = field(default_factory=dict)
    last_failure: KeyStatus | None = None

    def until(self, model: str = "") -> float:
        """When the key becomes usable for ``model``."""
        pair = self.models.get(model)
        return max(self.cooling_until, pair.cooling_until if pair is not None else 0.0)

    def cooling(self, now: float, model: str = "") -> bool:
        """Whether the key is unusable for ``model`` at ``now``."""
        return now < self.until(model)

    def status(self, now: float, model: str | None = None) -> KeyStatus:
        """``"valid"``, ``"rate_limited"`` or ``"auth_failed"``.

        For a model: the reason of the cooldown in force that ends last. Without a model (the
        key as a whole): ``auth_failed`` while key-wide cooling, ``rate_limited`` while any of
        its (key, model) pairs cools.
        """
        if model is not None:
            pair = self.models.get(model)
            pair_until = pair.cooling_until if pair is not None else 0.0
            if now < self.cooling_until and self.cooling_until >= pair_until:
                return self.reason or AUTH_FAILED
            return RATE_LIMITED if now < pair_until else VALID
        if now < self.cooling_until:
            return self.reason or AUTH_FAILED
        if any(now < pair.cooling_until for pair in self.models.values()):
            return RATE_LIMITED
        return VALID

    def view_until(self, now: float) -> float | None:
        """The end of what makes :meth:`status` (without a model) non-valid, or None."""
        if now < self.cooling_until:
            return self.cooling_until
        ends = [p.cooling_until for p in self.models.values() if now < p.cooling_until]
        return max(ends) if ends else None

    def cooling_models(self, now: float) -> dict[str, float]:
        """Model label -> cooldown end, for every pair cooling at ``now``."""
        return {m: p.cooling_until for m, p in self.models.items() if now < p.cooling_until}

    def cool(self, now: float, cooldown: float, reason: KeyStatus) -> bool:
        """Cool the whole key for ``cooldown`` seconds from ``now`` unless a key-wide cooldown
        ending later is in force. Returns True when the key's visible status changed."""
        before = self.status(now)
        until = now + _clamp_cooldown(cooldown)
        if until > self.cooling_until:
            self.cooling_until = until
            self.reason = reason
        self.last_failure = reason
        return self.status(now) != before

    def cool_model(self, now: float, model: str, cooldown: float | None) -> bool:
        """Cool the (key, ``model``) pair after a 429: for ``cooldown`` seconds, or (None: no
        rate-limit header) for the pair's exponential backoff. A 429 arriving while the pair
        already cools does not double the backoff (concurrent requests hitting one limit count
        once). Never shortens a cooldown in force. True when the pair's status changed."""
        pair = self._pair(now, model)
        before = self.status(now, model)
        if cooldown is None:
            if now >= pair.cooling_until:
                pair.streak += 1
            cooldown = min(BACKOFF_MAX, BACKOFF_START * 2.0 ** max(0, pair.streak - 1))
        until = now + _clamp_cooldown(cooldown)
        if until > pair.cooling_until:
            pair.cooling_until = until
        self.last_failure = RATE_LIMITED
        return self.status(now, model) != before

    def succeeded(self, model: str) -> None:
        """A success on (key, ``model``): its backoff starts again from 1 s."""
        pair = self.models.get(model)
        if pair is not None and pair.streak:
            pair.streak = 0

    def _pair(self, now: float, model: str) -> PairState:
        pair = self.models.get(model)
        if pair is None:
            if len(self.models) >= MAX_MODELS_PER_KEY:
                self._prune(now)
            pair = self.models[model] = PairState()
        return pair

    def _prune(self, now: float) -> None:
        """Forget pairs that neither cool nor carry a backoff streak; if none, the one whose
        cooldown ended first."""
        idle = [m for m, p in self.models.items() if now >= p.cooling_until and not p.streak]
        if not idle:
            idle = [min(self.models, key=lambda m: self.models[m].cooling_until)]
        for m in idle:
            del self.models[m]


@dataclass(frozen=True)
class PoolKey:
    """One configured key. ``repr`` shows the hint, never the secret."""

    index: int
    secret: str = field(repr=False)
    hint: str
    state: KeyState = field(default_factory=KeyState)


@dataclass(frozen=True)
class KeyView:
    """A key as ``/-/snapshot`` and metrics show it; no secret. ``models``: the model labels
    it is rate-limited for, with each cooldown's end."""

    index: int
    hint: str
    state: KeyStatus
    cooling_until: float | None
    reason: KeyStatus | None
    models: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Exhaustion:
    """What to answer when no key is usable."""

    status: int
    retry_after: int | None
    reason: str


class KeyPool:
    """The keys of one provider, in configured order.

    Every per-model operation takes the request's model label (``""``: one implicit model, for
    callers with no model, e.g. passthrough routes)."""

    def __init__(self, provider: str, keys: Sequence[PoolKey]) -> None:
        self.provider = provider
        self.keys: tuple[PoolKey, ...] = tuple(keys)

    def __repr__(self) -> str:
        return f"KeyPool(provider={self.provider!r}, keys={len(self.keys)})"

    def __len__(self) -> int:
        return len(self.keys)

    def pick(self, now: float, tried: Collection[int] = (), model: str = "") -> PoolKey | None:
        """First key, in configured order, not cooling for ``model`` and not in ``tried``."""
        for key in self.keys:
            if key.index not in tried and not key.state.cooling(now, model):
                return key
        return None

    def mark_rate_limited(
        self, key: PoolKey, now: float, cooldown: float | None, model: str = ""
    ) -> bool:
        """Cool (``key``, ``model``) after a 429; ``cooldown`` None: the pair's backoff.
        True if the pair's status changed."""
        return key.state.cool_model(now, model, cooldown)

    def mark_auth_failed(
        self, key: PoolKey, now: float, cooldown: float = AUTH_FAILED_COOLDOWN
    ) -> bool:
        """Cool ``key`` for every model after a 401. True if its status changed."""
        return key.state.cool(now, cooldown, AUTH_FAILED)

    def mark_success(self, key: PoolKey, model: str = "") -> None:
        """A success with (``key``, ``model``): resets that pair's backoff."""
        key.state.succeeded(model)

    def exhaustion(self, now: float, model: str = "") -> Exhaustion:
        """The answer when :meth:`pick` found nothing for ``model``.

        429 if any key is rate-limited for the model, with ``retry_after`` the smallest
        remaining rate-limit cooldown rounded up to whole seconds (at least 1); auth-failed
        keys do not shorten it. If no rate-limit cooldown is still running but a key whose last
        failure was a 429 is usable again (a tiny cooldown that ended during the request),
        429 with 1 s.
        Otherwise (all keys auth-failed, or an empty pool) 502 ``auth_failed``.
        """
        remaining = [
            key.state.until(model) - now
            for key in self.keys
            if key.state.status(now, model) == RATE_LIMITED
        ]
        if remaining:
            retry_after = max(1, math.ceil(min(remaining) - _CEIL_SLACK))
            return Exhaustion(429, retry_after, RATE_LIMITED)
        if any(
            key.state.last_failure == RATE_LIMITED and not key.state.cooling(now, model)
            for key in self.keys
        ):
            return Exhaustion(429, 1, RATE_LIMITED)
        return Exhaustion(502, None, AUTH_FAILED)

    def states(self, now: float) -> list[KeyView]:
        """Every key's status, in configured order (see :meth:`KeyState.status`)."""
        views = []
        for key in self.keys:
            status = key.state.status(now)
            cooling = status != VALID
            views.append(
                KeyView(
                    index=key.index,
                    hint=key.hint,
                    state=status,
                    cooling_until=key.state.view_until(now) if cooling else None,
                    reason=status if cooling else None,
                    models=key.state.cooling_models(now),
                )
            )
        return views

    def counts(self, now: float) -> dict[KeyStatus, int]:
        """How many keys are in each status; every status present (for a gauge)."""
        counts = dict.fromkeys(KEY_STATUSES, 0)
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

UpstreamHeaders = Mapping[str, str] | Iterable[tuple[str, str]]


def cooldown_from_headers(
    headers: UpstreamHeaders, *, wall_now: float, default: float | None = DEFAULT_COOLDOWN
) -> float | None:
    """Seconds to cool a key after a 429 (or to wait after a 503).

    ``retry-after-ms`` (milliseconds), else ``Retry-After`` (delta-seconds, or an HTTP date
    converted once against ``wall_now`` = ``time.time()``), else ``default`` (None: the
    caller applies its own backoff). Header names
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


def _header(headers: UpstreamHeaders, name: str) -> str | None:
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
