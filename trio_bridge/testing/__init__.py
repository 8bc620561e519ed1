"""Fake OpenAI and Anthropic upstreams for tests, demos and benchmarks.

Real HTTP/1.1 servers on loopback speaking the providers' wire formats::

    fake = FakeUpstream(dialect="openai")
    await nursery.start(fake.serve)
    fake.behave(RateLimited(retry_after="2"))

``FakeUpstream`` is imported lazily so ``python -m trio_bridge.testing.fake_upstream``
runs cleanly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .behaviours import (
    Answer,
    Behaviour,
    ContentPolicy,
    ContextLengthExceeded,
    CutStream,
    Fail,
    PrefillRejected,
    RateLimited,
    RawStream,
    RecordedRequest,
    Reply,
    Reset,
    SlowFirstByte,
    Stream,
    Unauthorized,
)
from .wire import ToolCall, Usage

if TYPE_CHECKING:
    from .fake_upstream import FakeUpstream

__all__ = [
    "Answer",
    "Behaviour",
    "ContentPolicy",
    "ContextLengthExceeded",
    "CutStream",
    "Fail",
    "FakeUpstream",
    "PrefillRejected",
    "RateLimited",
    "RawStream",
    "RecordedRequest",
    "Reply",
    "Reset",
    "SlowFirstByte",
    "Stream",
    "ToolCall",
    "Unauthorized",
    "Usage",
]


def __getattr__(name: str) -> Any:
    if name == "FakeUpstream":
        from .fake_upstream import FakeUpstream

        return FakeUpstream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
