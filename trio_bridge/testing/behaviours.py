"""What a fake upstream can be told to do with a request, and what it recorded.

Behaviours are immutable values; a :class:`~trio_bridge.testing.FakeUpstream`
applies one per request (see ``FakeUpstream.behave``). Every delay is a
``trio.sleep`` on trio's clock, so ``trio.testing.MockClock`` drives it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .wire import ToolCall, Usage

__all__ = [
    "Answer",
    "Behaviour",
    "ContentPolicy",
    "ContextLengthExceeded",
    "CutStream",
    "Fail",
    "PrefillRejected",
    "RateLimited",
    "RawStream",
    "RecordedRequest",
    "Reply",
    "Reset",
    "SlowFirstByte",
    "Stream",
    "Unauthorized",
]


@dataclass(frozen=True)
class Reply:
    """An explicit response. A dict body is sent as JSON; ``Content-Type`` defaults to
    ``application/json``; ``None`` sends an empty body."""

    status: int = 200
    body: bytes | dict[str, Any] | None = None
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Answer:
    """The normal answer of the route, customised. It streams when the request asked
    (``"stream": true``), unless ``stream`` forces it either way.

    ``chunks``/``pace`` of None and ``first_byte_delay`` of 0 fall back to the fake's
    defaults (``default_chunks``, ``default_pace``, ``default_first_byte_delay``).
    ``usage`` replaces the computed token counts; ``tool_call`` answers with a tool
    call instead of text; ``stall_after=k`` sends k events then goes silent (the
    connection stays open); ``text`` replaces the default text ("Hello from the fake
    ... upstream."), cut into ``chunks`` deltas when streamed.

    Stream faults: ``first_token_delay`` sends the head and the events before the first
    content event (role chunk, ``message_start``, ``ping``, ``response.created``...) at
    once, then waits that long; ``malformed_after=k`` inserts one event whose data is not
    JSON after k events; ``omit_terminal`` leaves out the final event (``[DONE]``,
    ``message_stop``, ``response.completed``) and ends the body cleanly.
    """

    chunks: int | None = None
    pace: float | None = None
    first_byte_delay: float = 0.0
    usage: Usage | None = None
    tool_call: ToolCall | None = None
    stall_after: int | None = None
    stream: bool | None = None
    text: str | None = None
    first_token_delay: float = 0.0
    malformed_after: int | None = None
    omit_terminal: bool = False


@dataclass(frozen=True)
class Stream(Answer):
    """A streamed answer, whatever the request asked for."""

    stream: bool | None = True


@dataclass(frozen=True)
class RateLimited:
    """429 in the dialect's error shape, with ``Retry-After`` / ``retry-after-ms`` only as given."""

    retry_after: str | None = None
    retry_after_ms: int | None = None


@dataclass(frozen=True)
class Unauthorized:
    """401 in the dialect's error shape."""


@dataclass(frozen=True)
class Fail:
    """``status`` with the dialect's error body (anthropic 529: ``overloaded_error``)."""

    status: int = 500
    message: str | None = None


@dataclass(frozen=True)
class CutStream:
    """A normal SSE stream that breaks: ``after_chunks`` whole events, then half of the
    next event's bytes (``partial``), then the connection is closed without the
    terminating chunk (``abort``; with ``abort=False`` the body ends cleanly instead,
    an upstream that just stops)."""

    after_chunks: int = 3
    partial: bool = True
    abort: bool = True
    pace: float | None = None
    chunks: int | None = None


@dataclass(frozen=True)
class SlowFirstByte:
    """Wait ``delay`` seconds before the response head, then behave as ``then`` (default:
    the normal answer). ``math.inf`` never answers; the wait ends if the client leaves."""

    delay: float
    then: Behaviour | None = None


@dataclass(frozen=True)
class Reset:
    """Accept the request, then reset the connection (TCP RST) before any response byte."""


@dataclass(frozen=True)
class ContextLengthExceeded:
    """400: the prompt exceeds the model's context, as each API says it (OpenAI
    ``code: context_length_exceeded``; Anthropic ``prompt is too long``)."""


@dataclass(frozen=True)
class ContentPolicy:
    """400: a content-policy refusal (OpenAI ``code: content_policy_violation``; Anthropic
    ``invalid_request_error`` naming the content filtering policy)."""


@dataclass(frozen=True)
class PrefillRejected:
    """400: the model does not accept a final assistant message (a prefill)."""


@dataclass(frozen=True)
class RawStream:
    """A chunked response of exactly these bytes, one chunk per item, ``pace`` apart.
    Useful for hand-made SSE (e.g. an upstream error event mid-stream)."""

    events: tuple[bytes, ...]
    pace: float | None = None
    status: int = 200
    headers: dict[str, str] | None = None


Behaviour = (
    Reply
    | Answer
    | RateLimited
    | Unauthorized
    | Fail
    | CutStream
    | SlowFirstByte
    | RawStream
    | Reset
    | ContextLengthExceeded
    | ContentPolicy
    | PrefillRejected
)


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the fake received it: ``raw_path`` exactly as on the wire (query
    included, never normalised), header names lower-cased in wire order, ``key`` the
    ``Authorization: Bearer`` token, else the ``X-Api-Key`` value."""

    method: str
    raw_path: str
    headers: list[tuple[str, str]]
    body: bytes
    key: str | None = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        name = name.lower()
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in wire order."""
        name = name.lower()
        return [v for n, v in self.headers if n == name]

    @property
    def path(self) -> str:
        """``raw_path`` without its query string."""
        return self.raw_path.split("?", 1)[0]

    @cached_property
    def json(self) -> Any:
        """The body parsed as JSON, or None when it is empty or not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except (ValueError, RecursionError):  # deep nesting: not JSON a fake can read
            return None

    @property
    def model(self) -> str | None:
        """The body's ``model`` (a JSON object's string field), or None."""
        payload = self.json
        model = payload.get("model") if isinstance(payload, dict) else None
        return model if isinstance(model, str) else None
