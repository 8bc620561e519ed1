"""Per-request bookkeeping and the one access-log line each request produces."""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass

import trio

log = logging.getLogger("trio_bridge.access")

_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


def request_id_from(value: bytes | None) -> str:
    """The client's X-Request-Id when sane, else a new random one."""
    if value is not None and _SANE_ID.match(value):
        return value.decode()
    return secrets.token_hex(12)


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
    attempts: int = 0
    error: str | None = None

    def mark_first_byte(self) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = trio.current_time()

    def emit(self) -> None:
        now = trio.current_time()
        duration = now - self.started
        ttfb = (self.first_byte_at - self.started) if self.first_byte_at is not None else None
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
            "attempts": self.attempts,
            "ttfb_ms": None if ttfb is None else round(ttfb * 1000, 2),
            "duration_ms": round(duration * 1000, 2),
        }
        if self.error:
            fields["error"] = self.error
        log.info(
            "%s %s %s provider=%s route=%s model=%s status=%d key=%s ttfb_ms=%s duration_ms=%s actor=%s%s",
            self.request_id, self.method, self.path, self.provider, self.route, self.model,
            self.status, self.key_hint, fields["ttfb_ms"], fields["duration_ms"], self.actor,
            f" error={self.error!r}" if self.error else "",
            extra={"fields": fields},
        )
