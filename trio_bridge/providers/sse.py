"""Server-sent events framing over a byte stream: whole events out, the incomplete tail held.

Line endings follow the SSE spec: a line ends with CRLF, LF or a lone CR, in any mix; an
event ends with an empty line (two line endings in a row). Bytes are never rewritten: the
blocks and events handed out are slices of what arrived.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# Two line endings in a row. A CR directly followed by LF is one ending (CRLF), so a lone CR
# only counts as an ending when no LF follows it; the second ending may be a CR at the very
# end of the data (if an LF follows in the next chunk, it merely starts the next event with
# an empty line, which dispatches nothing).
_BOUNDARY = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
_LONGEST_BOUNDARY = 4  # "\r\n\r\n"


class EventSplitter:
    """Feed bytes as they arrive; ``feed`` returns the whole events completed so far, as one
    contiguous block (ready to relay), and keeps the unfinished tail."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        if self._tail:
            # The tail holds no boundary, so only its last bytes can start one.
            start = max(0, len(self._tail) - (_LONGEST_BOUNDARY - 1))
            data = self._tail + chunk
        else:
            start, data = 0, chunk
        end = _last_boundary(data, start)
        if end == 0:
            self._tail = data
            return b""
        self._tail = data[end:]
        return data[:end]

    @property
    def tail(self) -> bytes:
        return self._tail


def _last_boundary(data: bytes, start: int = 0) -> int:
    """Index just past the last event terminator at or after ``start``, or 0."""
    if b"\r" not in data:  # the common case: LF framing only
        i = data.rfind(b"\n\n", start)
        return i + 2 if i >= 0 else 0
    end = 0
    for match in _BOUNDARY.finditer(data, start):
        end = match.end()
    return end


def iter_events(block: bytes) -> Iterator[bytes]:
    """Split a block of whole events into single events (each with its terminator, bytes as
    received)."""
    start = 0
    if b"\r" not in block:
        while (i := block.find(b"\n\n", start)) >= 0:
            yield block[start : i + 2]
            start = i + 2
        return
    for match in _BOUNDARY.finditer(block):
        yield block[start : match.end()]
        start = match.end()


def event_data(event: bytes) -> bytes:
    """The ``data`` field of one event: its ``data:`` lines joined with LF (a line ``data``
    without a colon counts as an empty value), whatever the line endings."""
    lines = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
        elif line == b"data":
            lines.append(b"")
    return b"\n".join(lines)
