"""Timeouts and the upstream pool limit, driven by trio's clock where a clock can drive them."""

from __future__ import annotations

import json

import httpx2
import trio

from tests.support import start_bridge, write_yaml
from trio_bridge.testing import Answer, SlowFirstByte, Stream

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def yaml(fake, bridge: str) -> str:
    return f"""
bridge: {{auth: none, {bridge}}}
providers:
  - {{name: openai, type: openai, base_url: "{fake.base_url}", keys: [{{value: sk-timeout-test-000000000}}]}}
"""


async def test_no_response_head_within_first_byte_timeout_is_504(
    socket_clock, nursery, tmp_path, fake_openai
) -> None:
    write_yaml(tmp_path, "b.yaml", yaml(fake_openai, "first_byte_timeout: 5s"))
    bridge = await start_bridge(nursery, tmp_path)
    fake_openai.behave(*[SlowFirstByte(60)] * 3)  # retried: 3 attempts (bridge.retry)
    async with httpx2.AsyncClient(timeout=None) as c:
        started = trio.current_time()
        r = await c.post(bridge.url + "/openai/v1/chat/completions", json=CHAT)
    assert (
        r.status_code == 504 and r.json()["error"]["message"] == "upstream did not answer in time"
    )
    assert 15 <= trio.current_time() - started < 60
    assert fake_openai.request_count == 3


async def test_upstream_timeout_mid_stream_ends_with_an_error_event(
    socket_clock, nursery, tmp_path, fake_openai
) -> None:
    write_yaml(tmp_path, "b.yaml", yaml(fake_openai, "upstream_timeout: 10s"))
    bridge = await start_bridge(nursery, tmp_path)
    fake_openai.behave(Stream(chunks=30, pace=1.0))
    async with httpx2.AsyncClient(timeout=None) as c:
        r = await c.post(bridge.url + "/openai/v1/chat/completions", json={**CHAT, "stream": True})
    assert r.status_code == 200
    events = [e for e in r.content.split(b"\n\n") if e]
    assert b"[DONE]" not in r.content
    last = json.loads(events[-1].split(b"data: ", 1)[1])
    assert last["error"]["message"] == "upstream timed out"
    assert 5 <= len(events) < 30


async def test_a_stalled_stream_ends_after_stream_idle_timeout(
    socket_clock, nursery, tmp_path, fake_anthropic
) -> None:
    write_yaml(
        tmp_path,
        "b.yaml",
        f"""
bridge: {{auth: none, stream_idle_timeout: 5s}}
providers:
  - {{name: anthropic, type: anthropic, base_url: "{fake_anthropic.base_url}", keys: [{{value: sk-timeout-test-000000000}}]}}
""",
    )
    bridge = await start_bridge(nursery, tmp_path)
    fake_anthropic.behave(Answer(stream=True, stall_after=3))
    async with httpx2.AsyncClient(timeout=None) as c:
        started = trio.current_time()
        r = await c.post(
            bridge.url + "/anthropic/v1/messages",
            json={"model": "m", "max_tokens": 5, "stream": True, "messages": []},
        )
    elapsed = trio.current_time() - started
    assert r.status_code == 200 and 5 <= elapsed < 60
    events = [e for e in r.content.split(b"\n\n") if e]
    assert len(events) == 4 and events[-1].startswith(b"event: error")
    assert b"message_stop" not in r.content


async def test_full_upstream_pool_for_one_second_is_503(
    socket_clock, nursery, tmp_path, fake_openai
) -> None:
    """With the only upstream connection busy, a second request waits ``pool_timeout`` (1 s
    on trio's clock, per attempt) and is answered 503 while the first stream goes on."""
    write_yaml(tmp_path, "b.yaml", yaml(fake_openai, "upstream_max_connections: 1"))
    bridge = await start_bridge(nursery, tmp_path)
    fake_openai.behave(Stream(chunks=4, pace=30.0))  # minutes of virtual time, no real wait
    async with httpx2.AsyncClient(timeout=3600) as c:  # its timeouts run on the clock too
        async with c.stream(
            "POST", bridge.url + "/openai/v1/chat/completions", json={**CHAT, "stream": True}
        ) as first:
            chunks = first.aiter_raw()
            await chunks.__anext__()  # the only upstream connection is now busy
            started = trio.current_time()
            second = await c.get(bridge.url + "/openai/v1/models")
            waited = trio.current_time() - started
            async for _ in chunks:
                pass
    assert second.status_code == 503
    assert second.json()["error"]["message"] == "upstream connection pool exhausted"
    assert 1 <= waited < 30  # the pool wait, not the first stream's end
    assert fake_openai.request_count == 1
