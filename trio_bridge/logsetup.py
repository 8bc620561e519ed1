"""Logging: one line per event, as text or JSON. Nothing here ever formats a secret: callers
log hints and names only."""

from __future__ import annotations

import json
import logging
import sys
import time


def iso_utc(created: float) -> str:
    """``2026-12-01T09:30:00.123Z``: ISO-8601, UTC, milliseconds (truncated, never rounded
    into the next second)."""
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


_CORE = ("ts", "level", "logger", "msg")


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the field names log shippers expect (Vector, Fluent Bit,
    Loki, Datadog, ECS mappings): ``ts`` (ISO-8601 UTC, ms, ``Z``), ``level`` (lower-case),
    ``logger``, ``msg``; then the record's ``fields`` (they never replace those four), and
    ``exception`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                if key not in _CORE:
                    doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    converter = staticmethod(time.gmtime)

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )


def configure_logging(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library chatter at info level is noise for operators.
    for name in ("httpx2", "httpcore2", "hypercorn", "watchfiles"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
