"""Circuit breakers per provider x endpoint x model, as pure state machines.

``now`` is trio's clock; nothing here sleeps, reads a clock or does I/O. Transitions that
depend only on time (open -> half-open, the closed count window) happen lazily on the
next call that passes ``now``.

- closed: consecutive failures are counted; the counts reset every ``interval`` seconds
  (windows on trio's clock; ``interval == 0`` never resets). ``failure_threshold``
  consecutive failures trip the breaker.
- open: every request is rejected for ``timeout`` seconds, then half-open.
- half-open: ``max_requests`` requests are admitted in total, the rest rejected. Any
  failure trips it again; ``max_requests`` successes close it.

Each state change starts a new *generation*. An :class:`Admission` carries the generation
it was issued in, and a result reported for an older generation (a slow request admitted
before a trip) changes nothing. The closed count window is not a generation: a slow
request's failure still counts after a window rolls over, since first-byte timeouts are
usually longer than ``interval``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "BREAKER_STATES",
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "OTHER_MODEL",
    "Admission",
    "BreakerSet",
    "BreakerSettings",
    "BreakerState",
    "BreakerView",
    "CircuitBreaker",
    "ModelLabeler",
    "Transition",
]

BreakerState = Literal["closed", "half_open", "open"]
"""A breaker's state, as ``/-/snapshot`` and the ``circuit_breaker_state`` gauge show it."""
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
BREAKER_STATES: Final[tuple[BreakerState, ...]] = (CLOSED, HALF_OPEN, OPEN)

FAILURE_STATUSES = frozenset({500, 502, 503, 504, 529})


@dataclass(frozen=True)
class BreakerSettings:
    """Validated on construction: thresholds >= 1, durations >= 0 (seconds)."""

    failure_threshold: int = 5
    interval: float = 10.0
    timeout: float = 30.0
    max_requests: int = 3

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.max_requests < 1:
            raise ValueError("failure_threshold and max_requests must be at least 1")
        if not (self.interval >= 0 and self.timeout >= 0):
            raise ValueError("interval and timeout must be non-negative")


@dataclass(frozen=True)
class Admission:
    """Permission to send one request; report its result with the same breaker."""

    generation: int


@dataclass(frozen=True)
class Transition:
    """What a reported result did. ``stale``: it belonged to an older generation, ignored."""

    previous: BreakerState
    current: BreakerState
    stale: bool = False

    @property
    def changed(self) -> bool:
        return self.previous != self.current

    @property
    def tripped(self) -> bool:
        """The breaker opened because of this result (count it as a trip)."""
        return self.current == OPEN and self.previous != OPEN

    @property
    def recovered(self) -> bool:
        return self.current == CLOSED and self.previous == HALF_OPEN


class CircuitBreaker:
    """One breaker. Not shared across threads; trio tasks may share it freely."""

    def __init__(self, settings: BreakerSettings | None = None) -> None:
        self.settings = settings or BreakerSettings()
        self.trips = 0
        self._state: BreakerState = CLOSED
        self._generation = 0
        # closed: end of the current count window (None: not started, or no windows);
        # open: when it turns half-open; half-open: unused.
        self._deadline: float | None = None
        self._admitted = 0
        self._successes = 0
        self._failures = 0

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self._state!r}, generation={self._generation}, "
            f"failures={self._failures}, trips={self.trips})"
        )

    @property
    def retry_after(self) -> int:
        """Whole seconds to suggest to a rejected client: ``ceil(timeout)``, at least 1."""
        return max(1, math.ceil(self.settings.timeout))

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def idle(self) -> bool:
        """Closed with no failure counted: indistinguishable from a new breaker but for
        ``trips``."""
        return self._state == CLOSED and self._failures == 0

    def state(self, now: float) -> BreakerState:
        """``"closed"``, ``"open"`` or ``"half_open"`` at ``now``."""
        self._advance(now)
        return self._state

    def admit(self, now: float) -> Admission | None:
        """An admission, or None if the request must be rejected.

        The caller must later call exactly one of :meth:`record_success`,
        :meth:`record_failure` or :meth:`release` with it.
        """
        self._advance(now)
        if self._state == OPEN:
            return None
        if self._state == HALF_OPEN and self._admitted >= self.settings.max_requests:
            return None
        self._admitted += 1
        return Admission(self._generation)

    def record_success(self, admission: Admission, now: float) -> Transition:
        self._advance(now)
        previous = self._state
        if admission.generation != self._generation:
            return Transition(previous, previous, stale=True)
        if self._state == HALF_OPEN:
            self._successes += 1
            if self._successes >= self.settings.max_requests:
                self._enter(CLOSED, now)
        else:
            self._failures = 0
        return Transition(previous, self._state)

    def record_failure(self, admission: Admission, now: float) -> Transition:
        self._advance(now)
        previous = self._state
        if admission.generation != self._generation:
            return Transition(previous, previous, stale=True)
        if self._state == HALF_OPEN:
            self._trip(now)
        else:
            self._failures += 1
            if self._failures >= self.settings.failure_threshold:
                self._trip(now)
        return Transition(previous, self._state)

    def release(self, admission: Admission, now: float) -> None:
        """Give an admission back without a verdict (the request was cancelled).

        In half-open this frees the slot, so an abandoned probe cannot wedge the breaker.
        """
        self._advance(now)
        if admission.generation == self._generation and self._state == HALF_OPEN:
            self._admitted = max(0, self._admitted - 1)

    def _trip(self, now: float) -> None:
        self.trips += 1
        self._enter(OPEN, now)

    def _enter(self, state: BreakerState, now: float) -> None:
        self._state = state
        self._generation += 1
        self._admitted = self._successes = self._failures = 0
        if state == OPEN:
            self._deadline = now + self.settings.timeout
        elif state == CLOSED and self.settings.interval > 0:
            self._deadline = now + self.settings.interval
        else:
            self._deadline = None

    def _advance(self, now: float) -> None:
        if self._state == OPEN:
            assert self._deadline is not None
            if now >= self._deadline:
                self._enter(HALF_OPEN, now)
        elif self._state == CLOSED:
            interval = self.settings.interval
            if interval <= 0:
                self._deadline = None
            elif self._deadline is None:
                self._deadline = now + interval
            elif now >= self._deadline:
                self._admitted = self._successes = self._failures = 0
                # Windows stay aligned to when counting started, however long we were idle.
                self._deadline += ((now - self._deadline) // interval + 1) * interval


@dataclass(frozen=True)
class BreakerView:
    endpoint: str
    model: str
    state: BreakerState
    trips: int


class BreakerSet:
    """One provider's breakers keyed by (endpoint, model label), created on demand.

    Survives reloads when the caller keeps it; :meth:`update_settings` applies new settings
    to every breaker without losing state. Memory stays bounded: once ``max_breakers``
    exist, idle breakers (see :meth:`prune`) are dropped before a new one is added.
    """

    def __init__(self, settings: BreakerSettings | None = None, max_breakers: int = 4096) -> None:
        self._settings = settings or BreakerSettings()
        self._max_breakers = max_breakers
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def __len__(self) -> int:
        return len(self._breakers)

    @property
    def settings(self) -> BreakerSettings:
        return self._settings

    def get(self, endpoint: str, model: str) -> CircuitBreaker:
        breaker = self._breakers.get((endpoint, model))
        if breaker is None:
            if len(self._breakers) >= self._max_breakers:
                self.prune()
            breaker = self._breakers[endpoint, model] = CircuitBreaker(self._settings)
        return breaker

    def update_settings(self, settings: BreakerSettings) -> None:
        """New settings for every breaker. States, counts and running timers are kept;
        the new ``timeout``/``interval`` apply from the next open/window."""
        self._settings = settings
        for breaker in self._breakers.values():
            breaker.settings = settings

    def prune(self) -> int:
        """Drop breakers that are closed with no failure counted (only their trip count is
        lost). Returns how many were dropped."""
        idle = [ident for ident, breaker in self._breakers.items() if breaker.idle]
        for ident in idle:
            del self._breakers[ident]
        return len(idle)

    def views(self, now: float) -> list[BreakerView]:
        return [
            BreakerView(endpoint, model, breaker.state(now), breaker.trips)
            for (endpoint, model), breaker in self._breakers.items()
        ]


OTHER_MODEL = "other"
_MODEL = re.compile(r"[A-Za-z0-9._:/-]{1,128}")


class ModelLabeler:
    """Maps a request's model to a bounded label for breaker keys and metrics.

    The model itself when it matches ``^[A-Za-z0-9._:/-]{1,128}$`` and fewer than
    ``limit`` distinct models were seen before it; else ``"other"`` (also for None or
    empty). One instance per provider per snapshot; remembers at most ``limit`` names.
    """

    def __init__(self, limit: int = 100) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __len__(self) -> int:
        return len(self._seen)

    def label(self, model: str | None) -> str:
        if not isinstance(model, str) or not _MODEL.fullmatch(model):
            return OTHER_MODEL
        if model in self._seen:
            return model
        if len(self._seen) < self._limit:
            self._seen.add(model)
            return model
        return OTHER_MODEL
