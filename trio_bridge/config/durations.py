"""Durations as operators write them: ``250ms``, ``10s``, ``5m``, ``1h``."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class Duration(float):
    """Seconds, parsed from a string with a unit; renders back in the shortest unit."""

    def __str__(self) -> str:
        return format_duration(self)


def parse_duration(text: str | float | int) -> Duration:
    """Parse ``250ms`` / ``10s`` / ``5m`` / ``1h`` (or a bare number of seconds).

    Raises ValueError naming the expected form, never echoing the input.
    """
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 250ms, 10s or 5m")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("expected a non-negative duration")
        return Duration(float(text))
    match = _DURATION.match(text)
    if not match:
        raise ValueError("expected a duration such as 250ms, 10s or 5m")
    return Duration(float(match.group(1)) * _UNIT[match.group(2)])


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
