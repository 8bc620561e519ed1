"""The testing kit: fake upstreams and a whole bridge inside your trio test suite.

Real HTTP/1.1 servers on loopback speaking the providers' wire formats::

    fake = FakeUpstream(dialect="openai")
    await nursery.start(fake.serve)
    fake.behave(RateLimited(retry_after="2"))

and the bridge itself, on the caller's clock (docs/testing.md)::

    async with open_bridge(config) as bridge:
        OpenAI(base_url=bridge.base_url("openai"), ...)

``FakeUpstream`` and ``open_bridge`` are imported lazily, so importing this package (the
pytest plugin does) stays cheap and ``python -m trio_bridge.testing.fake_upstream`` runs
cleanly.
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
    from .bridge import BridgeConfigError, BridgeHandle, open_bridge
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
    "BridgeConfigError",
    "BridgeHandle",
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
    "open_bridge",
]

_LAZY = {
    "FakeUpstream": "fake_upstream",
    "BridgeConfigError": "bridge",
    "BridgeHandle": "bridge",
    "open_bridge": "bridge",
    "FakeBedrock": "fake_bedrock",
    "Throttled": "fake_bedrock",
    "BedrockError": "fake_bedrock",
    "StreamException": "fake_bedrock",
    "FakeCopilot": "fake_copilot",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
