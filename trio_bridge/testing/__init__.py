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
    CutStream,
    Fail,
    RateLimited,
    RawStream,
    RecordedRequest,
    Reply,
    SlowFirstByte,
    Stream,
    Unauthorized,
)
from .wire import ToolCall, Usage

if TYPE_CHECKING:
    from .fake_bedrock import BedrockError, FakeBedrock, StreamException, Throttled
    from .fake_copilot import FakeCopilot
    from .fake_upstream import FakeUpstream

__all__ = [
    "Answer",
    "BedrockError",
    "FakeBedrock",
    "FakeCopilot",
    "StreamException",
    "Throttled",
    "Behaviour",
    "CutStream",
    "Fail",
    "FakeUpstream",
    "RateLimited",
    "RawStream",
    "RecordedRequest",
    "Reply",
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
    if name in ("FakeBedrock", "Throttled", "BedrockError", "StreamException"):
        from . import fake_bedrock

        return getattr(fake_bedrock, name)
    if name == "FakeCopilot":
        from .fake_copilot import FakeCopilot

        return FakeCopilot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
