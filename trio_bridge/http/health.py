"""``/healthz`` and ``/readyz``: one answer, whichever listener is asked. Sans-IO."""

from __future__ import annotations

from ..state import BridgeState

HEALTH_PATHS = frozenset({"/healthz", "/readyz"})

_OK = (200, b'{"status":"ok"}')
_READY = (200, b'{"status":"ready"}')
_DRAINING = (503, b'{"status":"draining"}')
_STARTING = (503, b'{"status":"starting"}')


def health_answer(state: BridgeState, path: str) -> tuple[int, bytes]:
    """Status and JSON body for ``path`` (one of HEALTH_PATHS).

    ``/healthz``: 200 ``ok`` while the process runs. ``/readyz``: 503 ``draining`` once a
    drain began, 503 ``starting`` until the first database load attempt ended, else 200
    ``ready``. Both listeners answer from here, so they never disagree.
    """
    if path == "/healthz":
        return _OK
    if state.draining:
        return _DRAINING
    if not state.database_settled.is_set():
        return _STARTING
    return _READY
