"""What the recorder reads from answers, sans-IO: usage with cache kept apart in both
dialects, tool calls assembled from streamed fragments, the last user prompt."""

from __future__ import annotations

import json

from trio_bridge.providers.records import last_user_prompt, tap_for
from trio_bridge.providers.records_anthropic import messages_usage
from trio_bridge.providers.records_openai import chat_usage, responses_usage
from trio_bridge.testing import wire


def sse(obj, name: str | None = None) -> bytes:
    return wire.sse_event(name, obj) if name else wire.sse_data(obj)


def test_openai_input_excludes_cached_tokens_and_extra_keeps_the_rest() -> None:
    u = chat_usage(
        {
            "prompt_tokens": 100,
            "completion_tokens": 7,
            "total_tokens": 107,
            "prompt_tokens_details": {"cached_tokens": 40, "audio_tokens": 2},
            "completion_tokens_details": {"reasoning_tokens": 3},
        }
    )
    assert (u.input, u.output, u.cache_read, u.cache_write) == (60, 7, 40, 0)
    assert u.extra == {
        "total_tokens": 107,
        "prompt_tokens_details": {"audio_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": 3},
        "reasoning_tokens": 3,
    }
    r = responses_usage(
        {"input_tokens": 50, "input_tokens_details": {"cached_tokens": 50}, "output_tokens": 1}
    )
    assert (r.input, r.cache_read, r.output) == (0, 50, 1)


def test_anthropic_input_is_already_without_cache() -> None:
    u = messages_usage(
        {
            "input_tokens": 11,
            "cache_read_input_tokens": 30,
            "cache_creation_input_tokens": 20,
            "output_tokens": 9,
            "cache_creation": {"ephemeral_5m_input_tokens": 20},
            "service_tier": "standard",
        }
    )
    assert (u.input, u.output, u.cache_read, u.cache_write) == (11, 9, 30, 20)
    assert u.extra == {
        "cache_creation": {"ephemeral_5m_input_tokens": 20},
        "service_tier": "standard",
    }


def test_chat_parallel_tool_calls_are_assembled_by_index_across_blocks() -> None:
    tap = tap_for("chat_completions")
    assert tap is not None

    def chunk(calls):
        return sse({"model": "gpt-4.1", "choices": [{"index": 0, "delta": {"tool_calls": calls}}]})

    tap.block(chunk([{"index": 0, "id": "a", "function": {"name": "f", "arguments": ""}}]))
    tap.block(
        chunk([{"index": 1, "id": "b", "function": {"name": "g", "arguments": '{"y"'}}])
        + chunk([{"index": 0, "function": {"arguments": '{"x": '}}])
    )
    tap.block(chunk([{"index": 0, "function": {"arguments": "1}"}}]))
    tap.block(chunk([{"index": 1, "function": {"arguments": ": [2]}"}}]))
    tap.block(sse({"choices": [{"index": 0, "delta": {"content": "no tools here"}}]}))
    assert [(t.tool, t.tool_call_id, t.args) for t in tap.tools] == [
        ("f", "a", {"x": 1}),
        ("g", "b", {"y": [2]}),
    ]
    assert tap.response_model == "gpt-4.1"


def test_invalid_tool_arguments_are_kept_as_text() -> None:
    tap = tap_for("chat_completions")
    body = wire.dumps(
        {
            "model": "m",
            "choices": [
                {
                    "message": {
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]
                    }
                }
            ],
        }
    )
    tap.body(body)
    assert [(t.tool, t.args) for t in tap.tools] == [("f", "{oops")]


def test_responses_function_call_from_deltas_or_done() -> None:
    tool = wire.ToolCall("lookup", {"q": "trio", "n": 3}, "call_9")
    c = wire.make_completion("openai", "gpt-4.1", {}, chunks=5, tool_call=tool)
    tap = tap_for("responses")
    events = wire.response_events(c)
    # drop the .done events: the deltas alone must give the whole arguments
    for event in events:
        if b"arguments.done" not in event and b"output_item.done" not in event:
            tap.block(event)
    assert [(t.tool, t.tool_call_id, t.args) for t in tap.tools] == [
        ("lookup", "call_9", {"q": "trio", "n": 3})
    ]


def test_anthropic_tool_use_among_text_blocks() -> None:
    tap = tap_for("messages")
    tap.block(
        sse(
            {"type": "message_start", "message": {"model": "claude-x", "usage": {}}},
            "message_start",
        )
    )
    tap.block(
        sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        )
    )
    tap.block(
        sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "tool_use is a word"},
            },
            "content_block_delta",
        )
    )
    tap.block(
        sse(
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
            },
            "content_block_start",
        )
    )
    for part in ('{"a"', ": 1", "}"):
        tap.block(
            sse(
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": part},
                },
                "content_block_delta",
            )
        )
    tap.block(
        sse(
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {}},
            },
            "content_block_start",
        )
    )
    assert [(t.tool, t.tool_call_id, t.args) for t in tap.tools] == [
        ("f", "toolu_1", {"a": 1}),
        ("g", "toolu_2", {}),
    ]
    assert tap.response_model == "claude-x"


def test_last_user_prompt_skips_tool_results_and_reads_every_shape() -> None:
    anthropic = {
        "messages": [
            {"role": "user", "content": "the question"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": "42"}],
            },
        ]
    }
    assert last_user_prompt("messages", json.dumps(anthropic).encode()) == "the question"
    chat = {
        "messages": [
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a"},
                    {"type": "image_url", "image_url": {}},
                    {"type": "text", "text": "b"},
                ],
            },
        ]
    }
    assert last_user_prompt("chat_completions", json.dumps(chat).encode()) == "a\nb"
    assert last_user_prompt("responses", b'{"input": "plain"}') == "plain"
    assert (
        last_user_prompt(
            "responses",
            b'{"input": [{"role": "user", "content": [{"type": "input_text", "text": "t"}]}]}',
        )
        == "t"
    )
    assert last_user_prompt("chat_completions", b"not json") is None
    assert last_user_prompt("models", b"{}") is None
    long = {"messages": [{"role": "user", "content": "x" * 100_000}]}
    assert len(last_user_prompt("chat_completions", json.dumps(long).encode())) == 32 * 1024
