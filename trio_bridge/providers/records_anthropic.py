"""What is recorded from Anthropic answers: usage, tool calls, the last prompt.

Token accounting: Anthropic's ``input_tokens`` already excludes the cache, which it reports
as ``cache_read_input_tokens`` and ``cache_creation_input_tokens``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .base import TokenUsage
from .records import Tap, ToolUse, _Call, last_user_text, parse_args

_COLUMNS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation_input_tokens": "cache_write",
}


def fold_usage(into: TokenUsage, u: dict[str, Any]) -> None:
    """Fold one ``usage`` object (``message_start``'s, then ``message_delta``'s) into
    ``into``: later counts replace earlier ones; other fields go to ``extra``."""
    extra: dict[str, Any] | None = None
    for key, value in u.items():
        column = _COLUMNS.get(key)
        if column is not None:
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(into, column, value)
        elif value is not None:
            if extra is None:
                extra = dict(into.extra) if into.extra else {}
            extra[key] = value
    if extra is not None:
        into.extra = extra
    if into.input is not None or into.output is not None:
        into.cache_read = into.cache_read or 0
        into.cache_write = into.cache_write or 0


def messages_usage(u: dict[str, Any]) -> TokenUsage:
    usage = TokenUsage()
    fold_usage(usage, u)
    return usage


class _Block(msgspec.Struct):
    type: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class _Delta(msgspec.Struct):
    type: str | None = None
    partial_json: str | None = None


class _Event(msgspec.Struct):
    type: str | None = None
    index: int = 0
    content_block: _Block | None = None
    delta: _Delta | None = None


class _Message(msgspec.Struct):
    content: list[_Block] | None = None


_event_decoder = msgspec.json.Decoder(_Event)
_message_decoder = msgspec.json.Decoder(_Message)
_TOOL_BLOCKS = ("tool_use", "server_tool_use")


class MessagesTap(Tap):
    """``content_block_start`` with a ``tool_use`` block opens a call at its index; the
    ``input_json_delta`` fragments of that index are its arguments."""

    markers = (b'"tool_use"', b'"server_tool_use"', b'"input_json_delta"')

    def _event(self, data: bytes) -> None:
        ev = _event_decoder.decode(data)
        if ev.type == "content_block_start":
            block = ev.content_block
            if block is not None and block.type in _TOOL_BLOCKS:
                call = self._calls[ev.index] = _Call(block.name or "", block.id)
                if isinstance(block.input, dict) and block.input:
                    call.final = msgspec.json.encode(block.input).decode()
        elif ev.type == "content_block_delta" and ev.delta is not None:
            if ev.delta.type == "input_json_delta" and ev.delta.partial_json:
                open_call = self._calls.get(ev.index)
                if open_call is not None:
                    open_call.final = None
                    open_call.parts.append(ev.delta.partial_json)

    def _tools_from_body(self, body: bytes) -> list[ToolUse]:
        return [
            ToolUse(
                block.name or "",
                block.id,
                block.input if block.input is not None else {},
            )
            for block in _message_decoder.decode(body).content or ()
            if block.type in _TOOL_BLOCKS
        ]


class _Request(msgspec.Struct):
    messages: list[msgspec.Raw] = []


_request_decoder = msgspec.json.Decoder(_Request)


def messages_prompt(body: bytes) -> str | None:
    return last_user_text(_request_decoder.decode(body).messages)


__all__ = ["MessagesTap", "fold_usage", "messages_prompt", "messages_usage", "parse_args"]
