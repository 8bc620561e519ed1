"""Reading SSE bodies in tests: whole events, and an event's name and data."""

from __future__ import annotations


def sse_blocks(body: bytes) -> list[bytes]:
    """The events of an SSE body; asserts it ends on an event boundary (no partial tail)."""
    *blocks, tail = body.split(b"\n\n")
    assert tail == b"", f"incomplete SSE tail relayed: {tail!r}"
    return [b + b"\n\n" for b in blocks]


def sse_parse(block: bytes) -> tuple[str | None, str]:
    name, data = None, []
    for line in block.strip(b"\n").split(b"\n"):
        if line.startswith(b"event:"):
            name = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data.append(line[5:].strip().decode())
    return name, "\n".join(data)
