"""Sans-IO wire formats of the OpenAI and Anthropic APIs, as the fake upstreams speak them.

Pure functions: response bodies (dicts ready for JSON), SSE event sequences
(``bytes``, one event per item, each ending in a blank line, in the order the
real API sends them) and error bodies in each provider's shape. Nothing here
touches a socket or trio; the only clock read is ``time.time()`` for
``created`` stamps.

Shapes follow the public API references: OpenAI Chat Completions (and its
``chat.completion.chunk`` stream), OpenAI Responses (with its typed
``event:`` stream and ``sequence_number``), Anthropic Messages (with its
``message_start`` ... ``message_stop`` stream).
"""

from __future__ import annotations

import base64
import os
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

DialectName = Literal["openai", "anthropic", "copilot"]
DIALECTS: tuple[DialectName, ...] = ("openai", "anthropic", "copilot")

_encoder = msgspec.json.Encoder()

SSE_DONE = b"data: [DONE]\n\n"
OPENAI_MODELS = ("gpt-4o-mini", "gpt-4.1", "text-embedding-3-small")
ANTHROPIC_MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5")
EMBEDDING_DIMENSIONS = 8


def dumps(obj: Any) -> bytes:
    """Compact JSON, as the providers send it."""
    return _encoder.encode(obj)


def sse_data(obj: Any) -> bytes:
    """An unnamed SSE event: ``data: {json}\\n\\n`` (OpenAI chat style)."""
    return b"data: " + _encoder.encode(obj) + b"\n\n"


def sse_event(name: str, obj: Any) -> bytes:
    """A named SSE event: ``event: name\\ndata: {json}\\n\\n`` (Responses, Anthropic style)."""
    return b"event: " + name.encode() + b"\ndata: " + _encoder.encode(obj) + b"\n\n"


def new_id(prefix: str) -> str:
    """A fresh random id with the provider's prefix (``chatcmpl-``, ``resp_``, ``msg_``...)."""
    return prefix + os.urandom(12).hex()


# --- what the fake model says -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one answer; ``cache_*`` map to each provider's cache fields,
    ``reasoning_tokens`` to OpenAI's ``*_tokens_details.reasoning_tokens``. As on the real
    APIs, OpenAI's ``prompt_tokens``/``input_tokens`` (= ``input_tokens`` here) include the
    cached tokens, Anthropic's ``input_tokens`` exclude them."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function/tool call the fake model makes instead of answering with text."""

    name: str = "get_weather"
    arguments: Mapping[str, Any] = field(default_factory=lambda: {"city": "Paris"})
    id: str | None = None  # call id; generated when None

    @property
    def arguments_json(self) -> str:
        return dumps(dict(self.arguments)).decode()


@dataclass(frozen=True, slots=True)
class Completion:
    """One answer: ``pieces`` are the text deltas, or the argument fragments of ``tool_call``."""

    model: str
    pieces: tuple[str, ...]
    usage: Usage
    tool_call: ToolCall | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def text_pieces(n: int, dialect: DialectName) -> tuple[str, ...]:
    """``n`` deterministic text deltas: "Hello", " from", " the", " fake", " <dialect>",
    " upstream." and round again. Six pieces make the blocking answer
    ``"Hello from the fake <dialect> upstream."``."""
    words = ("Hello", "from", "the", "fake", dialect, "upstream.")
    return tuple(words[i % 6] if i == 0 else " " + words[i % 6] for i in range(n))


BLOCKING_PIECES = 6


def split_text(text: str, n: int) -> tuple[str, ...]:
    """``text`` cut into ``n`` (at least 1) consecutive fragments, none empty unless text is."""
    n = max(1, min(n, len(text))) if text else 1
    size, extra = divmod(len(text), n)
    out, pos = [], 0
    for i in range(n):
        step = size + (1 if i < extra else 0)
        out.append(text[pos : pos + step])
        pos += step
    return tuple(out)


_TEXT_KEYS = ("messages", "input", "system", "instructions", "content", "text", "prompt")


def estimate_input_tokens(payload: Any) -> int:
    """A deterministic token count for a request payload: the number of whitespace-separated
    words in its text (``messages``/``input``/``system``/``instructions`` and the
    ``content``/``text`` inside them), at least 1."""
    count = 0
    stack = [payload]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            count += len(node.split())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            stack.extend(node[k] for k in _TEXT_KEYS if k in node)
    return max(1, count)


def make_completion(
    dialect: DialectName,
    model: str,
    payload: Any,
    *,
    chunks: int,
    usage: Usage | None = None,
    tool_call: ToolCall | None = None,
) -> Completion:
    """The fake model's answer to ``payload``: text in ``chunks`` pieces, or ``tool_call``
    with its arguments in ``chunks`` fragments. Output tokens = number of pieces."""
    if tool_call is not None:
        if tool_call.id is None:
            prefix = "toolu_" if dialect == "anthropic" else "call_"
            tool_call = ToolCall(tool_call.name, tool_call.arguments, new_id(prefix))
        pieces = split_text(tool_call.arguments_json, chunks)
    else:
        pieces = text_pieces(chunks, dialect)
    if usage is None:
        usage = Usage(estimate_input_tokens(payload), len(pieces))
    return Completion(model=model, pieces=pieces, usage=usage, tool_call=tool_call)


# --- OpenAI Chat Completions --------------------------------------------------------------


def _chat_usage(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": u.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completion(c: Completion) -> dict[str, Any]:
    """A blocking ``chat.completion`` object."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "annotations": [],
    }
    if c.tool_call is not None:
        tc = c.tool_call
        message["tool_calls"] = [
            {
                "id": tc.id,
                "type": "function",
                "function": {"name": tc.name, "arguments": tc.arguments_json},
            }
        ]
        finish = "tool_calls"
    else:
        message["content"] = c.text
        finish = "stop"
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": c.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _chat_usage(c.usage),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def chat_completion_events(c: Completion, *, include_usage: bool) -> list[bytes]:
    """The ``chat.completion.chunk`` stream: a role chunk, one chunk per piece, a
    ``finish_reason`` chunk, the usage chunk (``choices: []``) only when
    ``include_usage``, then ``data: [DONE]``. With ``include_usage`` every chunk
    carries ``"usage": null`` like the real API."""
    cid, created = new_id("chatcmpl-"), int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": c.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            body["usage"] = None
        return sse_data(body)

    tc = c.tool_call
    first: dict[str, object]
    deltas: list[dict[str, object]]
    if tc is not None:
        first = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.name, "arguments": ""},
                }
            ],
            "refusal": None,
        }
        deltas = [{"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in c.pieces]
        finish = "tool_calls"
    else:
        first = {"role": "assistant", "content": "", "refusal": None}
        deltas = [{"content": p} for p in c.pieces]
        finish = "stop"
    events = [chunk(first)]
    events.extend(chunk(d) for d in deltas)
    events.append(chunk({}, finish))
    if include_usage:
        events.append(
            sse_data(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": c.model,
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": _chat_usage(c.usage),
                }
            )
        )
    events.append(SSE_DONE)
    return events


# --- OpenAI Responses -----------------------------------------------------------------------


def _responses_usage(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens,
    }


def _response_shell(
    rid: str, model: str, created: int, status: str, output: list[Any], usage: Any
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": created if status == "completed" else None,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _output_item(c: Completion, item_id: str, status: str, done: bool) -> dict[str, Any]:
    tc = c.tool_call
    if tc is not None:
        return {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "arguments": tc.arguments_json if done else "",
            "call_id": tc.id,
            "name": tc.name,
        }
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": [_output_text(c.text)] if done else [],
        "role": "assistant",
    }


def response_object(c: Completion, response_id: str | None = None) -> dict[str, Any]:
    """A blocking, completed ``response`` object."""
    item_id = new_id("fc_" if c.tool_call else "msg_")
    return _response_shell(
        response_id or new_id("resp_"),
        c.model,
        int(time.time()),
        "completed",
        [_output_item(c, item_id, "completed", True)],
        _responses_usage(c.usage),
    )


def response_events(c: Completion) -> list[bytes]:
    """The Responses stream: ``response.created``, ``response.in_progress``,
    ``response.output_item.added``, (``response.content_part.added``), one
    ``response.output_text.delta`` (or ``response.function_call_arguments.delta``)
    per piece, the matching ``.done`` events, ``response.output_item.done`` and
    ``response.completed`` with usage; ``sequence_number`` counts from 0."""
    rid, created = new_id("resp_"), int(time.time())
    tool = c.tool_call is not None
    item_id = new_id("fc_" if tool else "msg_")
    events: list[bytes] = []

    def emit(name: str, body: dict[str, Any]) -> None:
        events.append(sse_event(name, {"type": name, "sequence_number": len(events), **body}))

    def shell(status: str, output: list[Any], usage: Any) -> dict[str, Any]:
        return _response_shell(rid, c.model, created, status, output, usage)

    emit("response.created", {"response": shell("in_progress", [], None)})
    emit("response.in_progress", {"response": shell("in_progress", [], None)})
    emit(
        "response.output_item.added",
        {"output_index": 0, "item": _output_item(c, item_id, "in_progress", False)},
    )
    where = {"item_id": item_id, "output_index": 0}
    if tool:
        for piece in c.pieces:
            emit("response.function_call_arguments.delta", {**where, "delta": piece})
        emit("response.function_call_arguments.done", {**where, "arguments": c.text})
    else:
        where["content_index"] = 0
        emit("response.content_part.added", {**where, "part": _output_text("")})
        for piece in c.pieces:
            emit("response.output_text.delta", {**where, "delta": piece, "logprobs": []})
        emit("response.output_text.done", {**where, "text": c.text, "logprobs": []})
        emit("response.content_part.done", {**where, "part": _output_text(c.text)})
    done_item = _output_item(c, item_id, "completed", True)
    emit("response.output_item.done", {"output_index": 0, "item": done_item})
    emit(
        "response.completed",
        {"response": shell("completed", [done_item], _responses_usage(c.usage))},
    )
    return events


# --- Anthropic Messages ---------------------------------------------------------------------


def _anthropic_usage(u: Usage, output_tokens: int | None = None) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "output_tokens": u.output_tokens if output_tokens is None else output_tokens,
    }


def anthropic_message(c: Completion) -> dict[str, Any]:
    """A blocking ``message`` object."""
    tc = c.tool_call
    if tc is not None:
        content = [{"type": "tool_use", "id": tc.id, "name": tc.name, "input": dict(tc.arguments)}]
        stop = "tool_use"
    else:
        content = [{"type": "text", "text": c.text}]
        stop = "end_turn"
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": c.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": _anthropic_usage(c.usage),
    }


def anthropic_events(c: Completion) -> list[bytes]:
    """The Messages stream: ``message_start``, ``content_block_start``, ``ping``, one
    ``content_block_delta`` per piece (``text_delta`` or ``input_json_delta``),
    ``content_block_stop``, ``message_delta`` (stop_reason, output_tokens), ``message_stop``."""
    tc = c.tool_call
    start: dict[str, object] = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": c.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _anthropic_usage(c.usage, output_tokens=1),
    }
    block: dict[str, object]
    if tc is not None:
        block = {"type": "tool_use", "id": tc.id, "name": tc.name, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in c.pieces]
        stop = "tool_use"
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in c.pieces]
        stop = "end_turn"
    events = [
        sse_event("message_start", {"type": "message_start", "message": start}),
        sse_event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        ),
        sse_event("ping", {"type": "ping"}),
    ]
    events.extend(
        sse_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d})
        for d in deltas
    )
    events += [
        sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": c.usage.output_tokens},
            },
        ),
        sse_event("message_stop", {"type": "message_stop"}),
    ]
    return events


def anthropic_count_tokens(payload: Any) -> dict[str, Any]:
    """``POST /v1/messages/count_tokens``: ``{"input_tokens": n}``."""
    return {"input_tokens": estimate_input_tokens(payload)}


# --- models, embeddings ---------------------------------------------------------------------


def openai_model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "openai"}


def openai_models() -> dict[str, Any]:
    return {"object": "list", "data": [openai_model(m) for m in OPENAI_MODELS]}


def anthropic_model(model_id: str) -> dict[str, Any]:
    return {
        "type": "model",
        "id": model_id,
        "display_name": model_id,
        "created_at": "2025-09-29T00:00:00Z",
    }


def anthropic_models() -> dict[str, Any]:
    data = [anthropic_model(m) for m in ANTHROPIC_MODELS]
    return {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}


def embedding_vector(index: int) -> list[float]:
    """A deterministic vector, exact in float32 (so base64 and float forms agree)."""
    return [((index + j) % 8 - 4) / 8 for j in range(EMBEDDING_DIMENSIONS)]


def embeddings(model: str, inputs: Any, *, encoding_format: str | None = None) -> dict[str, Any]:
    """``POST /v1/embeddings``: one vector per input (float list, or base64 float32
    little-endian when ``encoding_format == "base64"``, as the OpenAI SDK asks)."""
    items = (
        inputs
        if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int)
        else [inputs]
    )
    data = []
    for i in range(len(items)):
        vec: Any = embedding_vector(i)
        if encoding_format == "base64":
            vec = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vec})
    tokens = estimate_input_tokens({"input": inputs})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# --- errors -----------------------------------------------------------------------------------

_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", None, "You are not allowed to access this resource."),
    404: ("invalid_request_error", None, "Not found."),
    409: ("invalid_request_error", None, "Conflict."),
    413: ("invalid_request_error", None, "Request too large."),
    422: ("invalid_request_error", None, "Unprocessable request."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again later.",
    ),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}

_ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low."),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


def openai_error(
    status: int, message: str | None = None, *, type: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}``, OpenAI's type/code for ``status``."""
    default_type, default_code, default_message = _OPENAI_ERRORS.get(
        status,
        ("server_error", None, "Server error.")
        if status >= 500
        else ("invalid_request_error", None, "Invalid request."),
    )
    return {
        "error": {
            "message": message or default_message,
            "type": type or default_type,
            "param": None,
            "code": code if code is not None else default_code,
        }
    }


def anthropic_error(
    status: int, message: str | None = None, *, type: str | None = None
) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` with Anthropic's type for ``status``."""
    default_type, default_message = _ANTHROPIC_ERRORS.get(
        status,
        ("api_error", "Internal server error")
        if status >= 500
        else ("invalid_request_error", "Invalid request."),
    )
    return {
        "type": "error",
        "error": {"type": type or default_type, "message": message or default_message},
    }


def error_body(dialect: DialectName, status: int, message: str | None = None) -> dict[str, Any]:
    """The error body ``dialect``'s API sends with ``status``."""
    if dialect == "anthropic":
        return anthropic_error(status, message)
    return openai_error(status, message)
