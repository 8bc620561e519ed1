"""Key pools and circuit breakers: state machines over a caller-supplied clock, no I/O.

Every ``now`` is trio's clock (``trio.current_time()``), so ``trio.testing.MockClock``
drives them deterministically. The only wall-clock input is ``wall_now`` in
:func:`cooldown_from_headers`, used once to turn an HTTP-date ``Retry-After`` into a delay.
"""

from .breaker import (
    BREAKER_STATES,
    Admission,
    BreakerSet,
    BreakerSettings,
    BreakerState,
    BreakerView,
    CircuitBreaker,
    ModelLabeler,
    Transition,
)
from .keypool import (
    KEY_STATUSES,
    Exhaustion,
    KeyPool,
    KeyState,
    KeyStateRegistry,
    KeyStatus,
    KeyView,
    PoolKey,
    cooldown_from_headers,
)

__all__ = [
    "BREAKER_STATES",
    "KEY_STATUSES",
    "Admission",
    "BreakerSet",
    "BreakerSettings",
    "BreakerState",
    "BreakerView",
    "CircuitBreaker",
    "Exhaustion",
    "KeyPool",
    "KeyState",
    "KeyStateRegistry",
    "KeyStatus",
    "KeyView",
    "ModelLabeler",
    "PoolKey",
    "Transition",
    "cooldown_from_headers",
]
