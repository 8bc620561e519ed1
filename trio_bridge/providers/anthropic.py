"""The Anthropic dialect: messages bridged; models and count_tokens passed through."""

from __future__ import annotations

from typing import Any

import msgspec

from .base import Dialect, Route, RouteTable, TokenUsage, encode, error_kind
from .records_anthropic import fold_usage
from .sse import event_data

MESSAGES = Route("messages", "/v1/messages", True)

_KINDS = {502: "api_error", 503: "overloaded_error", 504: "api_error", 413: "request_too_large"}


class _Message(msgspec.Struct):
    usage: dict[str, Any] | None = None


class _Event(msgspec.Struct):
    type: str | None = None
    message: _Message | None = None
    usage: dict[str, Any] | None = None


class _Block(msgspec.Struct):
    type: str | None = None


class _KindPeek(msgspec.Struct):
    type: str | None = None
    content_block: _Block | None = None


class _Error(msgspec.Struct):
    type: str | None = None
    message: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _Error | None = None


_CONTENT_EVENTS = frozenset({"content_block_delta", "message_delta", "message_stop"})
# Blocks that are an answer as soon as they start (a text or thinking block starts empty).
_CONTENT_BLOCKS = frozenset({"tool_use", "server_tool_use"})

_message_decoder = msgspec.json.Decoder(_Message)
_kind_decoder = msgspec.json.Decoder(_KindPeek)
_error_decoder = msgspec.json.Decoder(_ErrorBody)
_event_decoder = msgspec.json.Decoder(_Event)
# Usage as recorded (cache kept apart, extra fields): see records_anthropic.
_fold = fold_usage


class AnthropicDialect(Dialect):
    type = "anthropic"
    base_path = ""

    def __init__(self) -> None:
        self.routes = RouteTable(
            exact={
                ("POST", MESSAGES.template): MESSAGES,
                ("POST", "/v1/messages/count_tokens"): Route(
                    "count_tokens", "/v1/messages/count_tokens", False
                ),
            },
            prefixes=[("/v1/models", Route("models", "/v1/models", False), True)],
        )

    def key_header(self, key: str) -> tuple[bytes, bytes]:
        return b"x-api-key", key.encode()

    def error_body(self, status: int, message: str, kind: str | None = None) -> bytes:
        kind = kind or _KINDS.get(status) or error_kind(status)
        return encode({"type": "error", "error": {"type": kind, "message": message}})

    def stream_error_event(self, route: Route, message: str, last_event: bytes) -> bytes:
        payload = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + encode(payload) + b"\n\n"

    def usage_from_body(self, route: Route, body: bytes) -> TokenUsage | None:
        if route.endpoint != "messages":
            return None
        try:
            msg = _message_decoder.decode(body)
        except msgspec.DecodeError:
            return None
        if msg.usage is None:
            return None
        usage = TokenUsage()
        _fold(usage, msg.usage)
        return usage

    def stream_event_kind(self, route: Route, event: bytes) -> str | None:
        data = event_data(event).strip()
        if not data:
            return None
        try:
            peek = _kind_decoder.decode(data)
        except msgspec.DecodeError:
            return None
        if peek.type == "error":
            return "error"
        if peek.type in _CONTENT_EVENTS:
            return "content"
        if peek.type == "content_block_start" and peek.content_block is not None:
            return "content" if peek.content_block.type in _CONTENT_BLOCKS else None
        return None

    def is_context_length_error(self, status: int, body: bytes) -> bool:
        if status != 400:
            return False
        try:
            error = _error_decoder.decode(body).error
        except msgspec.DecodeError:
            return False
        return (
            error is not None
            and error.type == "invalid_request_error"
            and "prompt is too long" in (error.message or "").lower()
        )

    def usage_from_event(self, route: Route, event: bytes, usage: TokenUsage) -> bool:
        data = event_data(event)
        if b'"usage"' not in data:
            return False
        try:
            ev = _event_decoder.decode(data)
        except msgspec.DecodeError:
            return False
        if ev.message is not None and ev.message.usage is not None:
            _fold(usage, ev.message.usage)
        if ev.usage is not None:
            _fold(usage, ev.usage)
        return False
