"""Per-request bookkeeping and the one access-log line each request produces."""

from __future__ import annotations

import itertools
import logging
import re
import secrets
from dataclasses import dataclass, field

import trio

log = logging.getLogger("trio_bridge.access")

_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


# New ids: a random per-process prefix and a counter. Unique, not secret, and far cheaper
# than reading the OS random source for every request.
_PREFIX = secrets.token_hex(6)
_COUNTER = itertools.count(1)


def request_id_from(value: bytes | None) -> str:
    """The client's X-Request-Id when sane, else a new unique one."""
    if value is not None and _SANE_ID.match(value):
        return value.decode()
    return f"{_PREFIX}{next(_COUNTER):012x}"


@dataclass(slots=True)
class Attempt:
    """One upstream attempt of a request, in the order made (times on trio's clock).

    ``outcome`` is what the attempt came to: the upstream status (``"503"``), or a transport
    outcome (``connect_error``, ``timeout``, ``first_token_timeout``, ``stream_error``, ...);
    ``error`` a human-readable reason when it failed. ``fallback``: the target is not the
    provider the client called. No secret: ``key_hint`` is masked (or ``byok``).
    """

    provider: str
    model: str
    key_hint: str
    started: float
    fallback: bool = False
    status: int | None = None
    outcome: str | None = None
    first_byte_at: float | None = None
    ended: float | None = None
    error: str | None = None

    def describe(self) -> str:
        """``provider/model/key hint->outcome``, as the access line shows it."""
        return f"{self.provider}/{self.model}/{self.key_hint}->{self.outcome or '-'}"


@dataclass(slots=True)
class RequestLog:
    request_id: str
    method: str
    path: str
    started: float
    provider: str = "-"
    route: str = "-"
    model: str = "-"
    actor: str = "-"
    credential: str = "-"
    key_hint: str = "-"
    status: int = 0
    first_byte_at: float | None = None
    upstream_time: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    served_by: str | None = None
    error: str | None = None

    def mark_first_byte(self) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = trio.current_time()

    def emit(self) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        now = trio.current_time()
        ttfb = (
            None
            if self.first_byte_at is None
            else round((self.first_byte_at - self.started) * 1000, 2)
        )
        fields = {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "provider": self.provider,
            "route": self.route,
            "model": self.model,
            "status": self.status,
            "actor": self.actor,
            "credential": self.credential,
            "key": self.key_hint,
            "attempts": ",".join(a.describe() for a in self.attempts) or "-",
            "ttfb_ms": ttfb,
            "duration_ms": round((now - self.started) * 1000, 2),
        }
        if self.served_by is not None:
            fields["served_by"] = self.served_by
        if self.error:
            fields["error"] = self.error
        text = " ".join(
            f"{k}={v}" for k, v in fields.items() if k not in ("request_id", "method", "path")
        )
        log.info(
            "%s %s %s %s", self.request_id, self.method, self.path, text, extra={"fields": fields}
        )
