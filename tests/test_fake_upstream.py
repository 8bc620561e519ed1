"""The fake upstreams: real sockets, real wire formats, behaviours, and the official SDKs."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import trio
import trio.testing

from trio_bridge.testing import (
    Answer,
    CutStream,
    Fail,
    FakeUpstream,
    RateLimited,
    RawStream,
    RecordedRequest,
    Reply,
    SlowFirstByte,
    Stream,
    ToolCall,
    Unauthorized,
    Usage,
    wire,
)

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "say hello please"}]}
MESSAGES = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "say hello please"}],
}


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
async def oai(nursery: trio.Nursery) -> FakeUpstream:
    return await nursery.start(FakeUpstream("openai").serve)


@pytest.fixture
async def ant(nursery: trio.Nursery) -> FakeUpstream:
    return await nursery.start(FakeUpstream("anthropic").serve)


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    # Generous: under the virtual clock the client's timeouts run on virtual time too.
    async with httpx2.AsyncClient(timeout=3600) as c:
        yield c


@pytest.fixture
def jump_clock() -> trio.testing.MockClock:
    """Virtual time that jumps only when every task has waited 50 ms of real time."""
    return trio.testing.MockClock(autojump_threshold=0.05)


def parse_sse(data: bytes) -> list[tuple[str | None, Any]]:
    """Complete SSE events in ``data`` as (event name, parsed data); asserts no tail."""
    *blocks, tail = data.split(b"\n\n")
    assert tail == b"", f"incomplete tail: {tail!r}"
    events = []
    for block in blocks:
        name, payload = None, []
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                payload.append(line[6:].decode())
        text = "\n".join(payload)
        events.append((name, text if text == "[DONE]" else json.loads(text)))
    return events


async def stream_bytes(client: httpx2.AsyncClient, url: str, **kw: Any) -> httpx2.Response:
    async with client.stream("POST", url, **kw) as r:
        await r.aread()
    return r


# --- OpenAI chat completions ----------------------------------------------------------------


async def test_chat_blocking(oai: FakeUpstream, client: httpx2.AsyncClient) -> None:
    assert oai.base_url == oai.url + "/v1"
    r = await client.post(
        oai.base_url + "/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-a"}
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content)
    assert r.headers["x-request-id"].startswith("req_")
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    assert body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"] == {
        "role": "assistant",
        "content": "Hello from the fake openai upstream.",
        "refusal": None,
        "annotations": [],
    }
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == 3  # the words of the messages
    assert usage["completion_tokens"] == 6
    assert usage["total_tokens"] == 9

    rec = oai.last_request
    assert isinstance(rec, RecordedRequest)
    assert (rec.method, rec.raw_path, rec.key) == ("POST", "/v1/chat/completions", "sk-a")
    assert rec.json == CHAT
    assert rec.header("AUTHORIZATION") == "Bearer sk-a"
    assert rec.header("x-missing") is None
    assert all(name == name.lower() for name, _ in rec.headers)


async def test_chat_streaming_without_usage(oai: FakeUpstream, client: httpx2.AsyncClient) -> None:
    r = await stream_bytes(
        client, oai.base_url + "/chat/completions", json={**CHAT, "stream": True}
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in r.headers
    events = parse_sse(r.content)
    assert all(name is None for name, _ in events)
    datas = [d for _, d in events]
    assert datas[-1] == "[DONE]"
    chunks = datas[:-1]
    assert all(
        c["object"] == "chat.completion.chunk" and c["model"] == "gpt-4o-mini" for c in chunks
    )
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(deltas) == 8
    assert "".join(deltas) == "".join(wire.text_pieces(8, "openai"))
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)
    assert oai.sent_events == len(events)


async def test_chat_streaming_with_usage(oai: FakeUpstream, client: httpx2.AsyncClient) -> None:
    payload = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    r = await stream_bytes(client, oai.base_url + "/chat/completions", json=payload)
    datas = [d for _, d in parse_sse(r.content)]
    assert datas[-1] == "[DONE]"
    last = datas[-2]
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 8
    assert last["usage"]["prompt_tokens"] == 3
    assert all(d["usage"] is None for d in datas[:-2])


async def test_stream_chunks_and_usage_override(
    oai: FakeUpstream, client: httpx2.AsyncClient
) -> None:
    oai.behave(Stream(chunks=3, usage=Usage(11, 22, cache_read_tokens=5)))
    payload = {**CHAT, "stream_options": {"include_usage": True}}  # no "stream": forced
    r = await stream_bytes(client, oai.base_url + "/chat/completions", json=payload)
    datas = [d for _, d in parse_sse(r.content)]
    assert len(datas) == 1 + 3 + 1 + 1 + 1
    usage = datas[-2]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (11, 22)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 5


# --- OpenAI responses ---------------------------------------------------------------------


async def test_responses_blocking(oai: FakeUpstream, client: httpx2.AsyncClient) -> None:
    r = await client.post(oai.base_url + "/responses", json={"model": "gpt-4.1", "input": "hi you"})
    body = r.json()
    assert (body["object"], body["status"], body["model"]) == ("response", "completed", "gpt-4.1")
    (item,) = body["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["content"][0]["type"] == "output_text"
    assert item["content"][0]["text"] == "Hello from the fake openai upstream."
    assert body["usage"]["input_tokens"] == 2
    assert body["usage"]["output_tokens"] == 6
    assert body["usage"]["total_tokens"] == 8


async def test_responses_streaming(oai: FakeUpstream, client: httpx2.AsyncClient) -> None:
    payload = {"model": "gpt-4.1", "input": "hi you", "stream": True}
    r = await stream_bytes(client, oai.base_url + "/responses", json=payload)
    events = parse_sse(r.content)
    names = [n for n, _ in events]
    assert names[0] == "response.created"
    assert names[-1] == "response.completed"
    assert names.count("response.output_text.delta") == 8
    assert names.index("response.output_text.done") > names.index("response.output_text.delta")
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert all(d["type"] == n for n, d in events)
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    done = next(d for n, d in events if n == "response.output_text.done")
    assert done["text"] == text
    completed = events[-1][1]["response"]
    assert completed["status"] == "completed"
    assert completed["usage"]["output_tokens"] == 8
    assert completed["output"][0]["content"][0]["text"] == text


# --- OpenAI passthrough routes ------------------------------------------------------------


async def test_models_and_raw_path(oai: FakeUpstream, client: httpx2.AsyncClient) -> None:
    r = await client.get(oai.base_url + "/models")
    assert r.json()["object"] == "list"
    assert {m["id"] for m in r.json()["data"]} >= {"gpt-4o-mini"}
    r = await client.get(oai.url + "/v1/models/a%2Fb?x=1")
    assert r.status_code == 200
    assert r.json()["id"] == "a/b"
    assert oai.last_request.raw_path == "/v1/models/a%2Fb?x=1"
    assert oai.last_request.path == "/v1/models/a%2Fb"


async def test_raw_path_never_normalised(oai: FakeUpstream) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", oai.port)
    async with stream:
        await stream.send_all(b"GET /v1/x/../models/%2e%2E//y?q=a%20b HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
    assert data.startswith(b"HTTP/1.1 404 ")
    assert oai.last_request.raw_path == "/v1/x/../models/%2e%2E//y?q=a%20b"


async def test_embeddings(oai: FakeUpstream, client: httpx2.AsyncClient) -> None:
    payload = {"model": "text-embedding-3-small", "input": ["a b", "c"]}
    body = (await client.post(oai.base_url + "/embeddings", json=payload)).json()
    assert body["model"] == "text-embedding-3-small"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][1]["embedding"] == wire.embedding_vector(1)
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    payload["encoding_format"] = "base64"
    body = (await client.post(oai.base_url + "/embeddings", json=payload)).json()
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == wire.embedding_vector(0)


async def test_openai_not_found_and_bad_json(oai: FakeUpstream, client: httpx2.AsyncClient) -> None:
    r = await client.get(oai.base_url + "/nope")
    assert r.status_code == 404
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] == "Invalid URL (GET /v1/nope)"
    assert (await client.get(oai.url + "/other")).status_code == 404
    assert (await client.get(oai.base_url + "/chat/completions")).status_code == 404

    r = await client.post(oai.base_url + "/chat/completions", content=b"{not json")
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = await client.post(oai.base_url + "/chat/completions", json={"messages": []})
    assert r.status_code == 400
    assert "model" in r.json()["error"]["message"]


async def test_copilot_dialect_has_no_v1(nursery: trio.Nursery, client: httpx2.AsyncClient) -> None:
    fake = await nursery.start(FakeUpstream("copilot").serve)
    assert fake.base_url == fake.url
    r = await client.post(fake.url + "/chat/completions", json=CHAT)
    assert r.json()["object"] == "chat.completion"
    assert (await client.get(fake.url + "/models")).status_code == 200


# --- Anthropic ----------------------------------------------------------------------------


async def test_messages_blocking(ant: FakeUpstream, client: httpx2.AsyncClient) -> None:
    assert ant.base_url == ant.url
    r = await client.post(ant.base_url + "/v1/messages", json=MESSAGES, headers={"x-api-key": "k1"})
    assert r.status_code == 200
    assert r.headers["request-id"].startswith("req_")
    body = r.json()
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["id"].startswith("msg_")
    assert body["model"] == "claude-sonnet-4-5"
    assert body["content"] == [{"type": "text", "text": "Hello from the fake anthropic upstream."}]
    assert (body["stop_reason"], body["stop_sequence"]) == ("end_turn", None)
    assert body["usage"] == {
        "input_tokens": 3,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 6,
    }
    assert ant.last_request.key == "k1"


async def test_messages_streaming(ant: FakeUpstream, client: httpx2.AsyncClient) -> None:
    r = await stream_bytes(client, ant.base_url + "/v1/messages", json={**MESSAGES, "stream": True})
    assert r.headers["content-type"] == "text/event-stream"
    events = parse_sse(r.content)
    names = [n for n, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 8,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(d["type"] == n for n, d in events)
    assert events[0][1]["message"]["usage"]["input_tokens"] == 3
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "".join(wire.text_pieces(8, "anthropic"))
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 8


async def test_anthropic_other_routes(ant: FakeUpstream, client: httpx2.AsyncClient) -> None:
    r = await client.post(ant.url + "/v1/messages/count_tokens", json=MESSAGES)
    assert r.json() == {"input_tokens": 3}
    r = await client.get(ant.url + "/v1/models")
    assert r.json()["data"][0]["type"] == "model"
    r = await client.get(ant.url + "/v1/models/claude-x")
    assert r.json()["id"] == "claude-x"
    r = await client.get(ant.url + "/v1/nope")
    assert r.status_code == 404
    assert r.json() == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "Not Found"},
    }
    r = await client.post(ant.url + "/v1/messages", content=b"nope")
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


# --- behaviours -----------------------------------------------------------------------------


async def test_rate_limited_headers(
    oai: FakeUpstream, ant: FakeUpstream, client: httpx2.AsyncClient
) -> None:
    oai.behave(RateLimited(retry_after="7"), RateLimited(retry_after_ms=1500), RateLimited())
    url = oai.base_url + "/chat/completions"
    r1, r2, r3 = [await client.post(url, json=CHAT) for _ in range(3)]
    assert [r.status_code for r in (r1, r2, r3)] == [429, 429, 429]
    assert r1.headers["retry-after"] == "7" and "retry-after-ms" not in r1.headers
    assert r2.headers["retry-after-ms"] == "1500" and "retry-after" not in r2.headers
    assert "retry-after" not in r3.headers and "retry-after-ms" not in r3.headers
    assert r1.json()["error"]["code"] == "rate_limit_exceeded"
    assert (await client.post(url, json=CHAT)).status_code == 200  # queue drained

    ant.behave(RateLimited(retry_after="Wed, 21 Oct 2015 07:28:00 GMT"))
    r = await client.post(ant.url + "/v1/messages", json=MESSAGES)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "Wed, 21 Oct 2015 07:28:00 GMT"
    assert r.json()["error"]["type"] == "rate_limit_error"


async def test_error_behaviours(
    oai: FakeUpstream, ant: FakeUpstream, client: httpx2.AsyncClient
) -> None:
    oai.behave(Unauthorized(), Fail(), Fail(503, message="busy"))
    url = oai.base_url + "/chat/completions"
    r = await client.post(url, json=CHAT)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = await client.post(url, json=CHAT)
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    r = await client.post(url, json=CHAT)
    assert r.status_code == 503 and r.json()["error"]["message"] == "busy"

    ant.behave(Unauthorized(), Fail(), Fail(529))
    url = ant.url + "/v1/messages"
    types = []
    for status in (401, 500, 529):
        r = await client.post(url, json={**MESSAGES, "stream": True})
        assert r.status_code == status
        assert r.headers["content-type"] == "application/json"
        assert r.json()["type"] == "error"
        types.append(r.json()["error"]["type"])
    assert types == ["authentication_error", "api_error", "overloaded_error"]


async def test_reply(oai: FakeUpstream, client: httpx2.AsyncClient) -> None:
    oai.behave(
        Reply(201, {"ok": True}, headers={"X-Extra": "1"}),
        Reply(502, b"<html>bad gateway</html>", headers={"Content-Type": "text/html"}),
        Reply(204),
    )
    r = await client.get(oai.base_url + "/anything")
    assert (r.status_code, r.json(), r.headers["x-extra"]) == (201, {"ok": True}, "1")
    r = await client.get(oai.base_url + "/anything")
    assert (r.status_code, r.text, r.headers["content-type"]) == (
        502,
        "<html>bad gateway</html>",
        "text/html",
    )
    r = await client.get(oai.base_url + "/anything")
    assert (r.status_code, r.content) == (204, b"")


async def test_per_key_behaviour(
    oai: FakeUpstream, ant: FakeUpstream, client: httpx2.AsyncClient
) -> None:
    oai.behave_for_key("k0", RateLimited(retry_after="3"))
    oai.behave(Fail(500))
    url = oai.base_url + "/chat/completions"
    for _ in range(2):  # sticky, and does not consume the queue
        r = await client.post(url, json=CHAT, headers={"Authorization": "Bearer k0"})
        assert r.status_code == 429
    r = await client.post(url, json=CHAT, headers={"X-Api-Key": "k0"})
    assert r.status_code == 429
    r = await client.post(url, json=CHAT, headers={"Authorization": "Bearer k1"})
    assert r.status_code == 500  # the queued one
    oai.clear()
    r = await client.post(url, json=CHAT, headers={"Authorization": "Bearer k0"})
    assert r.status_code == 200
    assert [rq.key for rq in oai.requests] == ["k0", "k0", "k0", "k1", "k0"]

    ant.behave_for_key("bad", Unauthorized())
    r = await client.post(ant.url + "/v1/messages", json=MESSAGES, headers={"x-api-key": "bad"})
    assert r.status_code == 401
    r = await client.post(ant.url + "/v1/messages", json=MESSAGES, headers={"x-api-key": "good"})
    assert r.status_code == 200


async def test_valid_keys(oai: FakeUpstream, client: httpx2.AsyncClient) -> None:
    oai.valid_keys = {"sk-good"}
    url = oai.base_url + "/chat/completions"
    assert (await client.post(url, json=CHAT)).status_code == 401
    assert (
        await client.post(url, json=CHAT, headers={"Authorization": "Bearer sk-bad"})
    ).status_code == 401
    assert (
        await client.post(url, json=CHAT, headers={"Authorization": "Bearer sk-good"})
    ).status_code == 200


async def test_cut_stream_leaves_incomplete_tail(
    oai: FakeUpstream, client: httpx2.AsyncClient
) -> None:
    oai.behave(CutStream(after_chunks=3))
    received = b""
    with pytest.raises(httpx2.RemoteProtocolError):
        async with client.stream(
            "POST", oai.base_url + "/chat/completions", json={**CHAT, "stream": True}
        ) as r:
            assert r.status_code == 200
            async for chunk in r.aiter_raw():
                received += chunk
    *whole, tail = received.split(b"\n\n")
    assert len(whole) == 3
    assert tail and tail.startswith(b"data: {")
    assert oai.sent_events == 3
    # The server survives and keeps answering.
    assert (await client.post(oai.base_url + "/chat/completions", json=CHAT)).status_code == 200


async def test_cut_stream_clean_eof(ant: FakeUpstream, client: httpx2.AsyncClient) -> None:
    ant.behave(CutStream(after_chunks=4, abort=False))
    r = await stream_bytes(client, ant.url + "/v1/messages", json={**MESSAGES, "stream": True})
    *whole, tail = r.content.split(b"\n\n")
    assert len(whole) == 4 and tail.startswith(b"event: content_block_delta")
    assert b"message_stop" not in r.content


async def test_raw_stream(oai: FakeUpstream, client: httpx2.AsyncClient) -> None:
    error = wire.sse_data({"error": {"message": "boom", "type": "server_error", "code": None}})
    oai.behave(RawStream((b"data: {}\n\n", error)))
    r = await stream_bytes(client, oai.base_url + "/chat/completions", json=CHAT)
    assert r.headers["content-type"] == "text/event-stream"
    assert r.content == b"data: {}\n\n" + error


async def test_tool_calls(oai: FakeUpstream, ant: FakeUpstream, client: httpx2.AsyncClient) -> None:
    tool = ToolCall("lookup", {"q": "trio"}, id="call_1")
    oai.behave(Answer(tool_call=tool), Stream(tool_call=tool, chunks=4))
    body = (await client.post(oai.base_url + "/chat/completions", json=CHAT)).json()
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert call == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"q":"trio"}'},
    }
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    r = await stream_bytes(client, oai.base_url + "/chat/completions", json=CHAT)
    datas = [d for _, d in parse_sse(r.content)][:-1]
    args = "".join(
        d["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for d in datas[:-1]
    )
    assert json.loads(args) == {"q": "trio"}

    ant.behave(Stream(tool_call=ToolCall("lookup", {"q": "trio"})))
    r = await stream_bytes(client, ant.url + "/v1/messages", json=MESSAGES)
    events = parse_sse(r.content)
    assert events[1][1]["content_block"]["type"] == "tool_use"
    assert events[1][1]["content_block"]["id"].startswith("toolu_")
    partial = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta")
    assert json.loads(partial) == {"q": "trio"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


# --- time: pacing, first byte, stalls (virtual clock) ----------------------------------------


async def test_paced_stream_order(
    oai: FakeUpstream, client: httpx2.AsyncClient, jump_clock: trio.testing.MockClock
) -> None:
    oai.default_pace = 10.0
    start = trio.current_time()
    arrivals: list[float] = []
    buf = b""
    async with client.stream(
        "POST", oai.base_url + "/chat/completions", json={**CHAT, "stream": True}
    ) as r:
        async for chunk in r.aiter_raw():
            buf += chunk
            while buf.count(b"\n\n") > len(arrivals):
                arrivals.append(trio.current_time() - start)
                # The fake has not sent event k+1 before the client saw event k.
                assert oai.sent_events <= len(arrivals)
    assert len(arrivals) == 11  # role, 8 deltas, finish, [DONE]
    assert arrivals == pytest.approx([10.0 * k for k in range(11)], abs=0.5)


async def test_wait_sent_events(
    oai: FakeUpstream, client: httpx2.AsyncClient, jump_clock: trio.testing.MockClock
) -> None:
    oai.behave(Stream(pace=5.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream_bytes, client, oai.base_url + "/chat/completions")
        await oai.wait_sent_events(3)
        assert oai.sent_events == 3
        assert trio.current_time() == pytest.approx(10.0, abs=0.5)
        nursery.cancel_scope.cancel()


async def test_slow_first_byte(
    oai: FakeUpstream, client: httpx2.AsyncClient, jump_clock: trio.testing.MockClock
) -> None:
    oai.behave(
        SlowFirstByte(30.0), SlowFirstByte(5.0, then=Fail(503)), Stream(first_byte_delay=7.0)
    )
    url = oai.base_url + "/chat/completions"
    t0 = trio.current_time()
    assert (await client.post(url, json=CHAT)).status_code == 200
    t1 = trio.current_time()
    assert t1 - t0 == pytest.approx(30.0, abs=0.5)
    assert (await client.post(url, json=CHAT)).status_code == 503
    t2 = trio.current_time()
    assert t2 - t1 == pytest.approx(5.0, abs=0.5)
    async with client.stream("POST", url, json=CHAT) as r:
        assert trio.current_time() - t2 == pytest.approx(7.0, abs=0.5)
        await r.aread()

    oai.default_first_byte_delay = 2.0
    t3 = trio.current_time()
    assert (await client.post(url, json=CHAT)).status_code == 200
    assert trio.current_time() - t3 == pytest.approx(2.0, abs=0.5)


async def test_stall_after(
    oai: FakeUpstream, client: httpx2.AsyncClient, jump_clock: trio.testing.MockClock
) -> None:
    oai.behave(Stream(stall_after=2))
    buf = b""
    with trio.move_on_after(1000) as scope:
        async with client.stream("POST", oai.base_url + "/chat/completions", json=CHAT) as r:
            async for chunk in r.aiter_raw():
                buf += chunk
    assert scope.cancelled_caught
    assert buf.count(b"\n\n") == 2
    await oai.wait_for(lambda: oai.disconnects == 1)


# --- connections -----------------------------------------------------------------------------


async def test_client_disconnect_mid_stream(
    oai: FakeUpstream, client: httpx2.AsyncClient, jump_clock: trio.testing.MockClock
) -> None:
    oai.default_pace = 60.0
    async with client.stream(
        "POST", oai.base_url + "/chat/completions", json={**CHAT, "stream": True}
    ) as r:
        buf = b""
        async for chunk in r.aiter_raw():
            buf += chunk
            if buf.count(b"\n\n") >= 2:
                break
    # Closing the unfinished response closed the connection; the fake notices at once.
    before = trio.current_time()
    await oai.wait_for(lambda: oai.disconnects == 1)
    assert trio.current_time() - before < 60.0
    assert oai.sent_events == 2
    oai.default_pace = 0.0
    assert (await client.post(oai.base_url + "/chat/completions", json=CHAT)).status_code == 200


async def test_client_leaves_while_waiting_for_first_byte(oai: FakeUpstream) -> None:
    oai.behave(SlowFirstByte(math.inf))
    async with httpx2.AsyncClient() as c:
        with trio.move_on_after(0.2):
            await c.post(oai.base_url + "/chat/completions", json=CHAT)
    with trio.fail_after(5):
        await oai.wait_for(lambda: oai.disconnects == 1)


async def test_keep_alive_pipelining_and_chunked_body(oai: FakeUpstream) -> None:
    body = json.dumps(CHAT).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    requests = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
        + b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunked
        + b"GET /v1/models HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", oai.port)
        async with stream:
            await stream.send_all(requests)
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 3  # one connection, then closed as asked
    assert [r.json for r in oai.requests[:2]] == [CHAT, CHAT]
    assert oai.requests[1].header("transfer-encoding") == "chunked"


async def test_expect_continue_and_bad_request(oai: FakeUpstream) -> None:
    body = json.dumps(CHAT).encode()
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", oai.port)
        async with stream:
            await stream.send_all(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            )
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 100 ")
            await stream.send_all(body)
            data = b""
            while b"}}" not in data:
                data += await stream.receive_some(65536)
            assert data.startswith(b"HTTP/1.1 200 ")

        stream = await trio.open_tcp_stream("127.0.0.1", oai.port)
        async with stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 400 ")
    assert oai.request_count == 1


async def test_serve_exits_cleanly_on_cancel() -> None:
    fake = FakeUpstream("anthropic")
    fake.behave(Stream(pace=3600.0))
    errors: list[BaseException] = []

    async def hold_stream(c: httpx2.AsyncClient) -> None:
        try:
            await stream_bytes(c, fake.url + "/v1/messages", json=MESSAGES)
        except httpx2.HTTPError as exc:
            errors.append(exc)

    with trio.fail_after(5):
        async with httpx2.AsyncClient() as c, trio.open_nursery() as outer:
            async with trio.open_nursery() as inner:
                await inner.start(fake.serve)
                outer.start_soon(hold_stream, c)
                await fake.wait_sent_events(1)
                inner.cancel_scope.cancel()
    assert len(errors) == 1  # the open stream was cut when the server stopped
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", fake.port)


async def test_many_fakes_one_process(nursery: trio.Nursery, client: httpx2.AsyncClient) -> None:
    fakes = [await nursery.start(FakeUpstream().serve) for _ in range(3)]
    assert len({f.port for f in fakes}) == 3
    for f in fakes:
        assert (await client.get(f.base_url + "/models")).status_code == 200
        assert f.request_count == 1


def test_wire_helpers() -> None:
    assert wire.text_pieces(3, "openai") == ("Hello", " from", " the")
    assert "".join(wire.split_text("abcdefg", 3)) == "abcdefg"
    assert len(wire.split_text("ab", 5)) == 2
    assert (
        wire.estimate_input_tokens({"system": "a b", "messages": [{"content": [{"text": "c"}]}]})
        == 3
    )
    assert wire.estimate_input_tokens({}) == 1
    assert wire.error_body("anthropic", 529)["error"]["type"] == "overloaded_error"
    assert wire.error_body("openai", 418)["error"]["type"] == "invalid_request_error"
    with pytest.raises(ValueError):
        FakeUpstream("gemini")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError):
        _ = FakeUpstream().url


# --- the official SDKs parse what the fakes send ----------------------------------------------


async def test_openai_sdk(oai: FakeUpstream) -> None:
    def run() -> dict[str, Any]:
        with openai.OpenAI(api_key="sk-sdk", base_url=oai.base_url, max_retries=0) as c:
            out: dict[str, Any] = {}
            out["chat"] = c.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            stream = c.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            out["chunks"] = list(stream)
            out["response"] = c.responses.create(model="gpt-4.1", input="hi")
            with c.responses.stream(model="gpt-4.1", input="hi") as rs:
                out["response_events"] = [e.type for e in rs]
                out["final_response"] = rs.get_final_response()
            out["models"] = [m.id for m in c.models.list()]
            out["embedding"] = c.embeddings.create(model="text-embedding-3-small", input="a b")
            oai.behave(RateLimited(retry_after="1"))
            try:
                c.chat.completions.create(model="gpt-4o-mini", messages=[])
            except openai.RateLimitError as exc:
                out["error"] = exc
            return out

    out = await trio.to_thread.run_sync(run)
    assert out["chat"].choices[0].message.content == "Hello from the fake openai upstream."
    assert out["chat"].usage.total_tokens == out["chat"].usage.prompt_tokens + 6
    chunks = out["chunks"]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "".join(wire.text_pieces(8, "openai"))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert out["response"].output_text == "Hello from the fake openai upstream."
    assert out["response_events"][0] == "response.created"
    assert out["response_events"][-1] == "response.completed"
    assert out["final_response"].output_text == text
    assert "gpt-4o-mini" in out["models"]
    assert out["embedding"].data[0].embedding == wire.embedding_vector(0)
    assert out["error"].status_code == 429
    assert all(r.key == "sk-sdk" for r in oai.requests)


async def test_openai_sdk_tool_call_stream(oai: FakeUpstream) -> None:
    oai.behave(Stream(tool_call=ToolCall("get_weather", {"city": "Paris"})))

    def run() -> Any:
        with openai.OpenAI(api_key="sk", base_url=oai.base_url, max_retries=0) as c:
            with c.responses.stream(model="gpt-4.1", input="weather?") as rs:
                return rs.get_final_response()

    final = await trio.to_thread.run_sync(run)
    (call,) = final.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}


async def test_anthropic_sdk(ant: FakeUpstream) -> None:
    msgs = [{"role": "user", "content": "hi there"}]

    def run() -> dict[str, Any]:
        with anthropic.Anthropic(api_key="sk-ant", base_url=ant.base_url, max_retries=0) as c:
            out: dict[str, Any] = {}
            out["message"] = c.messages.create(model="claude-fake-1", max_tokens=10, messages=msgs)
            out["events"] = list(
                c.messages.create(model="claude-fake-1", max_tokens=10, messages=msgs, stream=True)
            )
            with c.messages.stream(model="claude-fake-1", max_tokens=10, messages=msgs) as s:
                out["text"] = "".join(s.text_stream)
                out["final"] = s.get_final_message()
            out["count"] = c.messages.count_tokens(model="claude-fake-1", messages=msgs)
            out["models"] = [m.id for m in c.models.list()]
            ant.behave(Fail(529))
            try:
                c.messages.create(model="claude-fake-1", max_tokens=10, messages=msgs)
            except anthropic.APIStatusError as exc:
                out["error"] = exc
            return out

    out = await trio.to_thread.run_sync(run)
    assert out["message"].content[0].text == "Hello from the fake anthropic upstream."
    assert out["message"].usage.input_tokens == 2
    assert [e.type for e in out["events"]][0] == "message_start"
    assert [e.type for e in out["events"]][-1] == "message_stop"
    assert out["text"] == "".join(wire.text_pieces(8, "anthropic"))
    assert out["final"].stop_reason == "end_turn"
    assert out["final"].usage.output_tokens == 8
    assert out["count"].input_tokens == 2
    assert "claude-sonnet-4-5" in out["models"]
    assert out["error"].status_code == 529
    assert out["error"].body["error"]["type"] == "overloaded_error"
    assert ant.requests[0].header("anthropic-version")
