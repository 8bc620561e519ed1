"""What the recorder reads from a bridged exchange, shared by the dialects. Sans-IO.

A :class:`Tap` is fed the bytes the relay forwards (whole SSE blocks, or the whole blocking
body once it is complete) and collects the tool calls the model made and the model that
answered. It never holds a byte back: it only reads. Blocks are first checked with a cheap
byte search; only events that can carry a tool call are decoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

PROMPT_LIMIT = 32 * 1024  # characters of the last user prompt kept
PROMPT_BODY_LIMIT = 2 * 1024 * 1024  # larger request bodies are not parsed for the prompt
_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
_MODEL_WINDOW = 8192


@dataclass(slots=True)
class ToolUse:
    """One tool call the model made: the tool's name, the provider's call id, its arguments
    (the JSON value, or the raw text when the model produced invalid JSON)."""

    tool: str
    tool_call_id: str | None
    args: Any


def parse_args(text: str | None) -> Any:
    """Tool-call arguments as the JSON value they spell; ``{}`` when empty; the text itself
    when it is not valid JSON (a model can emit broken arguments, the record keeps them)."""
    if text is None or not text.strip():
        return {}
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


class _Call:
    """A tool call being assembled from streamed argument fragments."""

    __slots__ = ("tool", "call_id", "parts", "final")

    def __init__(self, tool: str = "", call_id: str | None = None) -> None:
        self.tool = tool
        self.call_id = call_id
        self.parts: list[str] = []
        self.final: str | None = None

    def done(self) -> ToolUse:
        text = self.final if self.final is not None else "".join(self.parts)
        return ToolUse(self.tool, self.call_id, parse_args(text))


class Tap:
    """Reads one upstream answer on the way through. Subclasses know one endpoint."""

    #: bytes whose presence means a block may carry a tool call
    markers: tuple[bytes, ...] = ()

    def __init__(self) -> None:
        self.response_model: str | None = None
        self._calls: dict[Any, _Call] = {}
        self._body_tools: list[ToolUse] = []
        self._looked_for_model = False

    def block(self, block: bytes) -> None:
        """One or more whole SSE events, exactly as relayed."""
        if not self._looked_for_model:
            self._looked_for_model = True
            self.response_model = find_model(block)
        for marker in self.markers:
            if marker in block:
                self._events(block)
                return

    def body(self, body: bytes) -> None:
        """A whole (blocking) response body."""
        self.response_model = find_model(body)
        for marker in self.markers:
            if marker in body:
                try:
                    self._body_tools = self._tools_from_body(body)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    self._body_tools = []
                return

    @property
    def tools(self) -> list[ToolUse]:
        """The tool calls seen so far, in the order the model made them."""
        return self._body_tools + [call.done() for call in self._calls.values()]

    def _events(self, block: bytes) -> None:
        from .sse import event_data, iter_events

        for event in iter_events(block):
            if any(marker in event for marker in self.markers):
                try:
                    self._event(event_data(event))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue

    def _event(self, data: bytes) -> None:
        raise NotImplementedError

    def _tools_from_body(self, body: bytes) -> list[ToolUse]:
        raise NotImplementedError


def find_model(data: bytes) -> str | None:
    """The first ``"model": "..."`` near the start of a body or stream: the model that
    answered (every dialect puts it ahead of the content)."""
    match = _MODEL.search(data, 0, _MODEL_WINDOW)
    return match.group(1).decode("utf-8", "replace") if match else None


def content_text(content: Any) -> str | None:
    """The text of a message's ``content``: a string, or the text parts of a list
    (``text`` / ``input_text``), joined by newlines; None when there is no text."""
    if isinstance(content, str):
        return content or None
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") in ("text", "input_text")
            and isinstance(part.get("text"), str)
        ]
        text = "\n".join(t for t in texts if t)
        return text or None
    return None


class _Role(msgspec.Struct):
    role: str | None = None
    type: str | None = None


class _Message(msgspec.Struct):
    role: str | None = None
    content: Any = None


_role_decoder = msgspec.json.Decoder(_Role)
_message_decoder = msgspec.json.Decoder(_Message)


def last_user_text(items: list[msgspec.Raw]) -> str | None:
    """The text of the last ``role: user`` item that has text (tool results carry none).
    Only roles are decoded until that item is found."""
    for raw in reversed(items):
        try:
            if _role_decoder.decode(raw).role != "user":
                continue
            text = content_text(_message_decoder.decode(raw).content)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if text:
            return text
    return None


def clip_prompt(text: str | None) -> str | None:
    if text is None:
        return None
    return text[:PROMPT_LIMIT]


def tap_for(endpoint: str) -> Tap | None:
    """A fresh tap for a bridged endpoint (``chat_completions``, ``responses``,
    ``messages``: the same for every provider type speaking it), None for others."""
    from .records_anthropic import MessagesTap
    from .records_openai import ChatTap, ResponsesTap

    cls = {"chat_completions": ChatTap, "responses": ResponsesTap, "messages": MessagesTap}.get(
        endpoint
    )
    return cls() if cls is not None else None


def last_user_prompt(endpoint: str, body: bytes) -> str | None:
    """The last user prompt of a bridged request body (None when absent or too large)."""
    if len(body) > PROMPT_BODY_LIMIT:
        return None
    from .records_anthropic import messages_prompt
    from .records_openai import chat_prompt, responses_prompt

    extract = {
        "chat_completions": chat_prompt,
        "responses": responses_prompt,
        "messages": messages_prompt,
    }.get(endpoint)
    if extract is None:
        return None
    try:
        return clip_prompt(extract(body))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
