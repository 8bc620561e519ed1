"""Raw-path safety and the split into provider name and the rest. Sans-IO."""

from __future__ import annotations

import re

_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|2e)", re.IGNORECASE)
# What may be forwarded in an upstream URL's path or query as is: printable ASCII without
# space and without "#" (a fragment is never sent; httpx2 refuses it, and control or
# non-ASCII bytes, with InvalidURL). Anything else must be refused before any upstream call.
_UNFORWARDABLE = re.compile(r"[^!\"$-~]")
_UNFORWARDABLE_BYTES = re.compile(rb"[^!\"$-~]")


def is_safe_path(raw_path: str) -> bool:
    """False for ``.``/``..`` segments, empty segments, backslashes, encoded ``/ \\ .``, and
    any character that cannot travel in an upstream URL as is (``#``, space, control and
    non-ASCII characters)."""
    if (
        not raw_path.startswith("/")
        or "\\" in raw_path
        or _ENCODED_SEPARATOR.search(raw_path)
        or _UNFORWARDABLE.search(raw_path)
    ):
        return False
    segments = raw_path[1:].split("/")
    return all(s not in ("", ".", "..") for s in segments)


def split_provider(raw_path: str) -> tuple[str, str]:
    """``/openai/v1/models`` -> (``openai``, ``/v1/models``); the rest may be empty."""
    _, _, tail = raw_path.partition("/")
    name, slash, rest = tail.partition("/")
    return name, (slash + rest)


def is_safe_query(query: bytes) -> bool:
    """False when the raw query string holds a byte that cannot travel upstream as is
    (``#``, space, control or non-ASCII bytes). Nothing is normalised either way."""
    return _UNFORWARDABLE_BYTES.search(query) is None
