"""What is recorded from OpenAI answers: usage (both APIs), tool calls, the last prompt.

Token accounting: OpenAI's ``prompt_tokens`` / ``input_tokens`` include the cached tokens,
so ``input`` is that count minus ``cached_tokens``; OpenAI reports no cache writes (0).
"""

from __future__ import annotations

from typing import Any

import msgspec

from .base import TokenUsage
from .records import Tap, ToolUse, _Call, content_text, last_user_text, parse_args


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _usage(
    u: dict[str, Any], input_key: str, output_key: str, details_key: str, out_details: str
) -> TokenUsage:
    total_in = _int(u.get(input_key))
    details = u.get(details_key)
    cached = _int(details.get("cached_tokens")) if isinstance(details, dict) else None
    extra = {k: v for k, v in u.items() if k not in (input_key, output_key, details_key)}
    if isinstance(details, dict):
        rest = {k: v for k, v in details.items() if k != "cached_tokens"}
        if rest:
            extra[details_key] = rest
    out = u.get(out_details)
    reasoning = _int(out.get("reasoning_tokens")) if isinstance(out, dict) else None
    if reasoning is not None:
        extra["reasoning_tokens"] = reasoning
    return TokenUsage(
        input=None if total_in is None else max(0, total_in - (cached or 0)),
        output=_int(u.get(output_key)),
        cache_read=cached or 0,
        cache_write=0,
        extra=extra or None,
    )


def chat_usage(u: dict[str, Any]) -> TokenUsage:
    """A Chat Completions ``usage`` object as recorded."""
    return _usage(
        u,
        "prompt_tokens",
        "completion_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
    )


def responses_usage(u: dict[str, Any]) -> TokenUsage:
    """A Responses ``usage`` object as recorded."""
    return _usage(
        u, "input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details"
    )


# --- Chat Completions -------------------------------------------------------------------------


class _Fn(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Fn | None = None


class _Delta(msgspec.Struct):
    tool_calls: list[_ToolCall] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    message: _Delta | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] | None = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)


class ChatTap(Tap):
    """``choices[].delta.tool_calls[]``: the first fragment of each call (by choice and call
    index) has its id and name, the next ones add to ``function.arguments``."""

    markers = (b'"tool_calls"',)

    def _event(self, data: bytes) -> None:
        chunk = _chunk_decoder.decode(data)
        for choice in chunk.choices or ():
            if choice.delta is None:
                continue
            for tc in choice.delta.tool_calls or ():
                call = self._calls.get((choice.index, tc.index))
                if call is None:
                    call = self._calls[(choice.index, tc.index)] = _Call()
                if tc.id:
                    call.call_id = tc.id
                if tc.function is not None:
                    if tc.function.name:
                        call.tool = tc.function.name
                    if tc.function.arguments:
                        call.parts.append(tc.function.arguments)

    def _tools_from_body(self, body: bytes) -> list[ToolUse]:
        out = []
        for choice in _chunk_decoder.decode(body).choices or ():
            for tc in (choice.message.tool_calls if choice.message else None) or ():
                fn = tc.function or _Fn()
                out.append(ToolUse(fn.name or "", tc.id, parse_args(fn.arguments)))
        return out


class _ChatRequest(msgspec.Struct):
    messages: list[msgspec.Raw] = []


_chat_request_decoder = msgspec.json.Decoder(_ChatRequest)


def chat_prompt(body: bytes) -> str | None:
    return last_user_text(_chat_request_decoder.decode(body).messages)


# --- Responses --------------------------------------------------------------------------------


class _Item(msgspec.Struct):
    type: str | None = None
    id: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    input: str | None = None  # custom tool calls


class _RespEvent(msgspec.Struct):
    type: str | None = None
    item: _Item | None = None
    item_id: str | None = None
    delta: str | None = None
    arguments: str | None = None


class _RespBody(msgspec.Struct):
    output: list[_Item] | None = None


_resp_event_decoder = msgspec.json.Decoder(_RespEvent)
_resp_body_decoder = msgspec.json.Decoder(_RespBody)
_CALL_ITEMS = ("function_call", "custom_tool_call")


class ResponsesTap(Tap):
    """``response.output_item.added`` names a function call (item id, call id, name);
    ``response.function_call_arguments.delta`` events add to its arguments, ``.done``
    (and ``output_item.done``) carry them whole."""

    markers = (b"function_call", b"custom_tool_call")

    def _event(self, data: bytes) -> None:
        ev = _resp_event_decoder.decode(data)
        kind = ev.type or ""
        if kind in ("response.output_item.added", "response.output_item.done"):
            item = ev.item
            if item is None or item.type not in _CALL_ITEMS:
                return
            call = self._calls.get(item.id)
            if call is None:
                call = self._calls[item.id] = _Call()
            call.tool = item.name or call.tool
            call.call_id = item.call_id or call.call_id
            whole = item.arguments if item.type == "function_call" else item.input
            if kind.endswith(".done") and whole:
                call.final = whole
        elif kind.endswith("_arguments.delta") or kind.endswith("_input.delta"):
            call = self._calls.get(ev.item_id)
            if call is None:
                call = self._calls[ev.item_id] = _Call()
            if ev.delta:
                call.parts.append(ev.delta)
        elif kind.endswith("_arguments.done"):
            call = self._calls.get(ev.item_id)
            if call is None:
                call = self._calls[ev.item_id] = _Call()
            if ev.arguments is not None:
                call.final = ev.arguments

    def _tools_from_body(self, body: bytes) -> list[ToolUse]:
        return [
            ToolUse(
                item.name or "",
                item.call_id,
                parse_args(item.arguments if item.type == "function_call" else item.input),
            )
            for item in _resp_body_decoder.decode(body).output or ()
            if item.type in _CALL_ITEMS
        ]


class _RespRequest(msgspec.Struct):
    input: str | list[msgspec.Raw] | None = None


_resp_request_decoder = msgspec.json.Decoder(_RespRequest)


def responses_prompt(body: bytes) -> str | None:
    given = _resp_request_decoder.decode(body).input
    if isinstance(given, str):
        return content_text(given)
    return last_user_text(given or [])
