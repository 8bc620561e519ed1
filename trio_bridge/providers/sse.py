"""Server-sent events framing over a byte stream: whole events out, the incomplete tail held."""

from __future__ import annotations

from collections.abc import Iterator


class EventSplitter:
    """Feed bytes as they arrive; ``feed`` returns the whole events completed so far, as one
    contiguous block (ready to relay), and keeps the unfinished tail."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._tail + chunk if self._tail else chunk
        end = _last_boundary(data)
        if end == 0:
            self._tail = data
            return b""
        self._tail = data[end:]
        return data[:end]

    @property
    def tail(self) -> bytes:
        return self._tail


def _last_boundary(data: bytes) -> int:
    """Index just past the last blank line (event terminator), or 0."""
    i = data.rfind(b"\n\n")
    best = i + 2 if i >= 0 else 0
    if b"\r" in data:  # CRLF or CR framing: rare, so checked only when present
        for sep in (b"\r\n\r\n", b"\r\r"):
            j = data.rfind(sep)
            if j >= 0:
                best = max(best, j + len(sep))
    return best


def iter_events(block: bytes) -> Iterator[bytes]:
    """Split a block of whole events into single events (each with its terminator)."""
    block = block.replace(b"\r\n", b"\n")
    start = 0
    while True:
        i = block.find(b"\n\n", start)
        if i < 0:
            return
        yield block[start : i + 2]
        start = i + 2


def event_data(event: bytes) -> bytes:
    """The concatenated ``data:`` lines of one event."""
    lines = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(lines)
