"""The OpenAI dialect: chat completions and responses bridged; models & co. passed through."""

from __future__ import annotations

from typing import Any

import msgspec

from .base import (
    Dialect,
    Peek,
    Route,
    RouteTable,
    TokenUsage,
    encode,
    error_kind,
    last_sequence_number,
)
from .records_openai import chat_usage, responses_usage
from .sse import event_data

CHAT = Route("chat_completions", "/v1/chat/completions", True)
RESPONSES = Route("responses", "/v1/responses", True)


class _ChatChunk(msgspec.Struct):
    choices: list[Any] | None = None
    usage: dict[str, Any] | None = None


class _Response(msgspec.Struct):
    usage: dict[str, Any] | None = None


class _RespEvent(msgspec.Struct):
    type: str | None = None
    response: _Response | None = None


class _Choice(msgspec.Struct):
    delta: dict[str, Any] | None = None
    finish_reason: str | None = None


class _ChatPeek(msgspec.Struct):
    choices: list[_Choice] | None = None
    error: dict[str, Any] | None = None


class _Error(msgspec.Struct):
    code: str | None = None
    type: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _Error | None = None


# Delta fields that carry an answer (an empty content string or a role alone does not).
_CONTENT_FIELDS = ("content", "tool_calls", "function_call", "refusal", "reasoning", "audio")
_RESP_CONTENT = frozenset(
    {"response.completed", "response.incomplete", "response.output_item.done"}
)
_RESP_ERRORS = frozenset({"error", "response.failed"})

_chat_decoder = msgspec.json.Decoder(_ChatChunk)
_chat_peek_decoder = msgspec.json.Decoder(_ChatPeek)
_error_decoder = msgspec.json.Decoder(_ErrorBody)
_resp_decoder = msgspec.json.Decoder(_Response)
_resp_event_decoder = msgspec.json.Decoder(_RespEvent)
# A JSON object's members as their raw bytes: rewriting one member leaves the others untouched.
_raw_object = msgspec.json.Decoder(dict[str, msgspec.Raw])
_TRUE = msgspec.Raw(b"true")
# Usage as recorded (input without cached tokens, extra fields): see records_openai.
_chat_usage = chat_usage
_resp_usage = responses_usage


class OpenAIDialect(Dialect):
    type = "openai"
    base_path = "/v1"

    def __init__(self, prefix: str = "/v1") -> None:
        chat = Route(CHAT.endpoint, prefix + "/chat/completions", True)
        responses = Route(RESPONSES.endpoint, prefix + "/responses", True)
        self.base_path = prefix
        self.routes = RouteTable(
            exact={
                ("POST", chat.template): chat,
                ("POST", responses.template): responses,
                ("*", prefix + "/embeddings"): Route("embeddings", prefix + "/embeddings", False),
            },
            prefixes=[
                (prefix + "/models", Route("models", prefix + "/models", False), True),
                (
                    prefix + "/responses",
                    Route("responses_item", prefix + "/responses/{id}", False),
                    False,
                ),
                (
                    prefix + "/conversations",
                    Route("conversations", prefix + "/conversations", False),
                    True,
                ),
            ],
        )

    def key_header(self, key: str) -> tuple[bytes, bytes]:
        return b"authorization", b"Bearer " + key.encode()

    def error_body(self, status: int, message: str, kind: str | None = None) -> bytes:
        return encode(
            {"error": {"message": message, "type": kind or error_kind(status), "code": None}}
        )

    def stream_error_event(self, route: Route, message: str, last_event: bytes) -> bytes:
        if route.endpoint == "responses":
            seq = last_sequence_number(last_event)
            payload = {
                "type": "error",
                "code": "upstream_error",
                "message": message,
                "sequence_number": 0 if seq is None else seq + 1,
            }
            return b"event: error\ndata: " + encode(payload) + b"\n\n"
        payload = {"error": {"message": message, "type": "upstream_error", "code": None}}
        return b"data: " + encode(payload) + b"\n\n"

    def prepare_body(self, route: Route, body: bytes, peek: Peek) -> tuple[bytes, bool]:
        """Force ``stream_options.include_usage`` on streaming chat. Every value the client
        sent travels as its own bytes (``1e999`` stays ``1e999``): nothing is re-encoded.
        Never raises for a body ``peek_body`` accepted; if the body cannot be rewritten it
        goes upstream unchanged (usage is then whatever the upstream reports)."""
        if route.endpoint != "chat_completions" or not peek.stream:
            return body, True
        options = peek.stream_options
        if options is not None and options.get("include_usage") is True:
            return body, True
        if options is None and b'"stream_options"' not in body:
            # Common case: splice the option in rather than re-encoding the whole body.
            start = body.index(b"{") + 1
            return body[:start] + b'"stream_options":{"include_usage":true},' + body[start:], False
        try:
            fields = _raw_object.decode(body)
            raw_options = fields.get("stream_options")
            merged = (
                _raw_object.decode(raw_options)
                if options is not None and raw_options is not None
                else {}
            )
        except (msgspec.DecodeError, RecursionError):
            return body, True
        merged["include_usage"] = _TRUE
        fields["stream_options"] = msgspec.Raw(encode(merged))
        return encode(fields), False

    def usage_from_body(self, route: Route, body: bytes) -> TokenUsage | None:
        try:
            if route.endpoint == "chat_completions":
                chunk = _chat_decoder.decode(body)
                return _chat_usage(chunk.usage) if chunk.usage else None
            if route.endpoint == "responses":
                resp = _resp_decoder.decode(body)
                return _resp_usage(resp.usage) if resp.usage else None
        except msgspec.DecodeError:
            return None
        return None

    def usage_from_event(self, route: Route, event: bytes, usage: TokenUsage) -> bool:
        data = event_data(event)
        if b'"usage"' not in data:
            return False
        try:
            if route.endpoint == "responses":
                ev = _resp_event_decoder.decode(data)
                if ev.response is not None and ev.response.usage is not None:
                    _merge(usage, _resp_usage(ev.response.usage))
                return False
            chunk = _chat_decoder.decode(data)
        except msgspec.DecodeError:
            return False
        if chunk.usage is not None:
            _merge(usage, _chat_usage(chunk.usage))
        return chunk.usage is not None and chunk.choices == []

    def stream_event_kind(self, route: Route, event: bytes) -> str | None:
        data = event_data(event).strip()
        if not data:
            return None
        if data == b"[DONE]":
            return "content"
        try:
            if route.endpoint == "responses":
                kind = _resp_event_decoder.decode(data).type or ""
                if kind in _RESP_ERRORS:
                    return "error"
                if kind.endswith(".delta") or kind in _RESP_CONTENT:
                    return "content"
                return None
            chunk = _chat_peek_decoder.decode(data)
        except msgspec.DecodeError:
            return None
        if chunk.error is not None:
            return "error"
        if chunk.choices == []:
            return "content"  # the usage chunk: the answer is over
        for choice in chunk.choices or ():
            if choice.finish_reason is not None:
                return "content"
            delta = choice.delta or {}
            if any(delta.get(name) or delta.get(name + "_content") for name in _CONTENT_FIELDS):
                return "content"
        return None

    def is_context_length_error(self, status: int, body: bytes) -> bool:
        if status != 400:
            return False
        try:
            error = _error_decoder.decode(body).error
        except msgspec.DecodeError:
            return False
        return error is not None and error.code == "context_length_exceeded"


def _merge(into: TokenUsage, new: TokenUsage) -> None:
    for field in ("input", "output", "cache_read", "cache_write", "extra"):
        value = getattr(new, field)
        if value is not None:
            setattr(into, field, value)
