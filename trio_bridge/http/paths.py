"""Raw-path safety and the split into provider name and the rest. Sans-IO."""

from __future__ import annotations

import re

_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|2e)", re.IGNORECASE)


def is_safe_path(raw_path: str) -> bool:
    """False for ``.``/``..`` segments, empty segments, backslashes and encoded ``/ \\ .``."""
    if not raw_path.startswith("/") or "\\" in raw_path or _ENCODED_SEPARATOR.search(raw_path):
        return False
    segments = raw_path[1:].split("/")
    return all(s not in ("", ".", "..") for s in segments)


def split_provider(raw_path: str) -> tuple[str, str]:
    """``/openai/v1/models`` -> (``openai``, ``/v1/models``); the rest may be empty."""
    _, _, tail = raw_path.partition("/")
    name, slash, rest = tail.partition("/")
    return name, (slash + rest)
