"""The bridge end to end on loopback: SDKs, streaming, the error table, header hygiene."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx2
import pytest
import trio
import trio.testing

from tests.support import RunningBridge, client, start_bridge, write_yaml
from trio_bridge.testing import CutStream, FakeUpstream, Stream

TOKEN = "tb-test-client-token-0123456789abcdefghijklmnop"
OTHER_TOKEN = "tb-test-other-token-0123456789abcdefghijklmnop"
OPENAI_KEY = "sk-openai-pool-key-aaaaaaaaaaaa1111"
ANTHROPIC_KEY = "sk-ant-pool-key-bbbbbbbbbbbbbbbb2222"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def config(fo: FakeUpstream, fa: FakeUpstream, bridge: str = "auth: tokens") -> str:
    return f"""
bridge: {{{bridge}}}
providers:
  - name: openai
    type: openai
    base_url: {fo.base_url}
    keys: [{{value: {OPENAI_KEY}}}]
  - name: anthropic
    type: anthropic
    base_url: {fa.base_url}
    keys: [{{value: {ANTHROPIC_KEY}}}]
  - name: keyless
    type: openai
    base_url: {fo.base_url}
  - name: legacy
    type: openai
    base_url: {fo.base_url}
    enabled: false
  - name: broken
    type: openai
    base_url: {fo.base_url}
    keys: [{{env: UNSET_VARIABLE_FOR_TEST}}]
clients:
  - id: alice
    token_sha256: {sha(TOKEN)}
    metadata: {{Team: infra}}
"""


async def bridge_with(
    nursery, config_dir: Path, fo: FakeUpstream, fa: FakeUpstream, settings: str = "auth: tokens"
) -> RunningBridge:
    """A bridge over the test config with these ``bridge:`` settings."""
    write_yaml(config_dir, "bridge.yaml", config(fo, fa, settings))
    return await start_bridge(nursery, config_dir)


@pytest.fixture
async def bridge(nursery, tmp_path: Path, fake_openai, fake_anthropic) -> RunningBridge:
    return await bridge_with(nursery, tmp_path, fake_openai, fake_anthropic)


AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}


async def test_openai_sdk_blocking_and_streaming_through_the_bridge(bridge, fake_openai) -> None:
    from openai import OpenAI

    def run() -> tuple[str, str, int]:
        sdk = OpenAI(base_url=bridge.url + "/openai/v1", api_key=TOKEN, max_retries=0)
        blocking = sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        text = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            if chunk.choices
        )
        return blocking.choices[0].message.content, text, blocking.usage.completion_tokens

    blocking, streamed, tokens = await trio.to_thread.run_sync(run)
    assert blocking == "Hello from the fake openai upstream."
    assert streamed and tokens > 0
    assert all(r.key == OPENAI_KEY for r in fake_openai.requests)
    assert all(r.header("x-trio-bridge-token") is None for r in fake_openai.requests)


async def test_anthropic_sdk_blocking_and_streaming_through_the_bridge(
    bridge, fake_anthropic
) -> None:
    from anthropic import Anthropic

    def run() -> tuple[str, str]:
        sdk = Anthropic(base_url=bridge.url + "/anthropic", api_key=TOKEN, max_retries=0)
        message = sdk.messages.create(
            model="claude-fake-1", max_tokens=32, messages=[{"role": "user", "content": "hi"}]
        )
        with sdk.messages.stream(
            model="claude-fake-1", max_tokens=32, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            streamed = "".join(stream.text_stream)
        return message.content[0].text, streamed

    blocking, streamed = await trio.to_thread.run_sync(run)
    assert blocking == "Hello from the fake anthropic upstream."
    assert streamed
    assert all(r.key == ANTHROPIC_KEY for r in fake_anthropic.requests)
    assert fake_anthropic.requests[0].header("anthropic-version")


async def test_paced_stream_reaches_the_client_chunk_by_chunk(
    socket_clock, nursery, tmp_path, fake_openai, fake_anthropic
) -> None:
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, trio.testing.MockClock)
    write_yaml(tmp_path, "bridge.yaml", config(fake_openai, fake_anthropic))
    bridge = await start_bridge(nursery, tmp_path)
    fake_openai.behave(Stream(chunks=6, pace=10.0))
    seen_when_received: list[int] = []
    async with httpx2.AsyncClient(timeout=None) as c:
        async with c.stream(
            "POST",
            bridge.url + "/openai/v1/chat/completions",
            headers=AUTH,
            json={**CHAT, "stream": True},
        ) as response:
            assert response.headers["x-accel-buffering"] == "no"
            assert response.headers["cache-control"] == "no-cache"
            async for _ in response.aiter_raw():
                seen_when_received.append(fake_openai.sent_events)
    # Every chunk arrived while the upstream was still waiting to send the next one.
    assert len(seen_when_received) >= 6
    assert seen_when_received == sorted(set(seen_when_received))


async def test_usage_chunk_reaches_only_a_client_that_asked(bridge, fake_openai) -> None:
    async with client() as c:
        plain = await c.post(
            bridge.url + "/openai/v1/chat/completions", headers=AUTH, json={**CHAT, "stream": True}
        )
        asked = await c.post(
            bridge.url + "/openai/v1/chat/completions",
            headers=AUTH,
            json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
        )
    assert all(
        json.loads(r.body)["stream_options"]["include_usage"] is True for r in fake_openai.requests
    )

    def usage_chunks(text: str) -> list[dict]:
        out = []
        for line in text.splitlines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if chunk.get("choices") == [] and chunk.get("usage"):
                    out.append(chunk)
        return out

    assert usage_chunks(plain.text) == []
    assert len(usage_chunks(asked.text)) == 1
    assert plain.text.rstrip().endswith("data: [DONE]")


async def test_error_table_order(bridge, fake_openai) -> None:
    """Each check in the contract's order; an unauthenticated caller learns nothing."""
    url = bridge.url
    big = await raw_request(
        bridge,
        "POST /nope/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {64 * 1024 * 1024}\r\n\r\n",
    )
    assert big.startswith(b"HTTP/1.1 413")
    async with client() as c:
        anon = await c.post(url + "/no-such-provider/v1/chat/completions", json=CHAT)
        assert anon.status_code == 401 and "no-such-provider" not in anon.text
        wrong = await c.get(
            url + "/openai/v1/models", headers={"Authorization": f"Bearer {OTHER_TOKEN}"}
        )
        assert wrong.status_code == 401
        unknown = await c.post(
            url + "/no-such-provider/v1/chat/completions", headers=AUTH, json=CHAT
        )
        assert unknown.status_code == 404
        assert unknown.json() == {
            "error": {
                "message": "route not supported: POST /no-such-provider/v1/chat/completions",
                "type": "not_found_error",
            }
        }
        route = await c.get(url + "/openai/v1/files", headers=AUTH)
        assert route.status_code == 404 and route.json()["error"]["code"] is None
        disabled = await c.post(url + "/legacy/v1/chat/completions", headers=AUTH, json=CHAT)
        assert disabled.status_code == 503 and "disabled" in disabled.text
        broken = await c.post(url + "/broken/v1/chat/completions", headers=AUTH, json=CHAT)
        assert broken.status_code == 503
        assert broken.json()["error"]["message"] == 'provider "broken" is misconfigured'
        bad_json = await c.post(url + "/openai/v1/chat/completions", headers=AUTH, content=b"{nope")
        assert bad_json.status_code == 400
        no_model = await c.post(
            url + "/openai/v1/chat/completions", headers=AUTH, json={"messages": []}
        )
        assert no_model.status_code == 400
        keyless = await c.post(url + "/keyless/v1/chat/completions", headers=AUTH, json=CHAT)
        assert keyless.status_code == 401
        assert (
            keyless.json()["error"]["message"]
            == "this provider has no configured key; send your own"
        )
        anthropic = await c.post(url + "/anthropic/v1/nothing", headers=AUTH, json={})
        assert anthropic.status_code == 404 and anthropic.json()["type"] == "error"
    assert fake_openai.requests == []
    for r in (anon, unknown, route, disabled, bad_json, keyless):
        assert r.headers["x-request-id"]


async def test_body_over_the_limit_while_read_is_413(
    nursery, tmp_path, fake_openai, fake_anthropic
) -> None:
    bridge = await bridge_with(
        nursery, tmp_path, fake_openai, fake_anthropic, "auth: tokens, max_body_bytes: 1000"
    )

    async def chunks():
        for _ in range(20):
            yield b"x" * 100

    async with client() as c:
        r = await c.post(bridge.url + "/openai/v1/chat/completions", headers=AUTH, content=chunks())
    assert r.status_code == 413 and fake_openai.requests == []


async def test_byok_forbidden_when_allow_byok_is_false(
    nursery, tmp_path, fake_openai, fake_anthropic
) -> None:
    bridge = await bridge_with(
        nursery, tmp_path, fake_openai, fake_anthropic, "auth: tokens, allow_byok: false"
    )
    async with client() as c:
        r = await c.post(
            bridge.url + "/openai/v1/chat/completions",
            json=CHAT,
            headers={"X-Trio-Bridge-Token": TOKEN, "Authorization": "Bearer sk-own-key"},
        )
    assert r.status_code == 403 and fake_openai.requests == []


async def test_byok_sends_the_clients_own_key_and_skips_the_pool(bridge, fake_openai) -> None:
    async with client() as c:
        r = await c.post(
            bridge.url + "/keyless/v1/chat/completions",
            json=CHAT,
            headers={"X-Trio-Bridge-Token": TOKEN, "Authorization": "Bearer sk-own-key"},
        )
    assert r.status_code == 200
    assert fake_openai.last_request.header("authorization") == "Bearer sk-own-key"


async def raw_request(bridge: RunningBridge, head: str) -> bytes:
    """Send a hand-written request (paths no client library would send) and read the answer."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", int(bridge.url.rsplit(":", 1)[1]))
        await stream.send_all(head.encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.find(b"\r\n\r\n") + 40:
            chunk = await stream.receive_some()
            if not chunk:
                break
            data += chunk
        await stream.aclose()
        return data


@pytest.mark.parametrize(
    "path",
    [
        "/openai/v1/models/../files",
        "/openai/v1/models/%2e%2e/files",
        "/openai/v1/models/%2E%2E/files",
        "/openai//v1/models",
    ],
)
async def test_unsafe_paths_answer_404_before_any_upstream_call(bridge, fake_openai, path) -> None:
    data = await raw_request(
        bridge,
        f"GET {path} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n",
    )
    assert data.startswith(b"HTTP/1.1 404")
    assert fake_openai.requests == []


async def test_query_string_and_raw_path_reach_upstream_unchanged(bridge, fake_openai) -> None:
    async with client() as c:
        r = await c.get(bridge.url + "/openai/v1/models/ft:gpt-4o:org?x=1&y=%20a", headers=AUTH)
    assert r.status_code == 200
    assert fake_openai.last_request.raw_path == "/v1/models/ft:gpt-4o:org?x=1&y=%20a"


async def test_headers_sent_upstream_follow_the_hygiene_rules(bridge, fake_anthropic) -> None:
    async with client() as c:
        await c.post(
            bridge.url + "/anthropic/v1/messages",
            json={"model": "m", "max_tokens": 5, "messages": []},
            headers={
                "X-Api-Key": TOKEN,
                "Anthropic-Beta": "tools-1",
                "Anthropic-Version": "2023-06-01",
                "Cookie": "a=1",
                "X-Forwarded-For": "6.6.6.6",
                "X-AI-Bridge-Actor-ID": "mallory",
                "Accept-Encoding": "gzip",
            },
        )
    sent = fake_anthropic.last_request
    assert sent.header("x-api-key") == ANTHROPIC_KEY
    assert sent.header("anthropic-beta") == "tools-1"
    assert sent.header("anthropic-version") == "2023-06-01"
    assert sent.header("accept-encoding") == "identity"
    assert sent.header("user-agent").startswith("python-httpx")
    for gone in ("cookie", "x-forwarded-for", "x-ai-bridge-actor-id", "authorization"):
        assert sent.header(gone) is None


async def test_actor_headers_when_enabled(nursery, tmp_path, fake_openai, fake_anthropic) -> None:
    bridge = await bridge_with(
        nursery, tmp_path, fake_openai, fake_anthropic, "auth: tokens, send_actor_headers: true"
    )
    async with client() as c:
        await c.post(bridge.url + "/openai/v1/chat/completions", headers=AUTH, json=CHAT)
    sent = fake_openai.last_request
    assert sent.header("x-ai-bridge-actor-id") == "alice"
    assert sent.header("x-ai-bridge-actor-metadata-team") == "infra"


async def test_request_id_is_echoed_when_sane_and_made_when_not(bridge) -> None:
    async with client() as c:
        mine = await c.get(
            bridge.url + "/openai/v1/models", headers={**AUTH, "X-Request-Id": "abc-123"}
        )
        odd = await c.get(
            bridge.url + "/openai/v1/models", headers={**AUTH, "X-Request-Id": "bad id\x01"}
        )
    assert mine.headers["x-request-id"] == "abc-123"
    assert odd.headers["x-request-id"] != "bad id\x01" and len(odd.headers["x-request-id"]) >= 16


@pytest.mark.parametrize(
    ("dialect_path", "done_marker"),
    [
        ("/openai/v1/chat/completions", b"[DONE]"),
        ("/openai/v1/responses", b"response.completed"),
        ("/anthropic/v1/messages", b"message_stop"),
    ],
)
async def test_stream_cut_after_first_byte_ends_with_whole_events_and_one_error_event(
    bridge, fake_openai, fake_anthropic, dialect_path, done_marker
) -> None:
    fake = fake_anthropic if dialect_path.startswith("/anthropic") else fake_openai
    fake.behave(CutStream(after_chunks=3))
    body = {"model": "m", "stream": True, "max_tokens": 5, "messages": [], "input": "hi"}
    async with client() as c:
        r = await c.post(bridge.url + dialect_path, headers=AUTH, json=body)
    assert r.status_code == 200
    raw = r.content
    assert raw.endswith(b"\n\n")
    events = [e for e in raw.split(b"\n\n") if e]
    assert done_marker not in raw
    last = events[-1]
    payload = json.loads(last.split(b"data: ", 1)[1])
    if dialect_path.startswith("/anthropic"):
        assert last.startswith(b"event: error") and payload["error"]["type"] == "api_error"
    elif dialect_path.endswith("responses"):
        assert last.startswith(b"event: error") and payload["type"] == "error"
        assert payload["sequence_number"] >= 1
    else:
        assert payload["error"]["type"] == "upstream_error"
    for event in events[:-1]:  # the incomplete upstream tail was held back
        data = event.split(b"data: ", 1)[1]
        json.loads(data)
    assert len(fake.requests) == 1


async def test_client_disconnect_cancels_the_upstream_request(bridge, fake_openai) -> None:
    fake_openai.behave(Stream(chunks=50, pace=0.2))
    async with client() as c:
        async with c.stream(
            "POST",
            bridge.url + "/openai/v1/chat/completions",
            headers=AUTH,
            json={**CHAT, "stream": True},
        ) as response:
            async for _ in response.aiter_raw():
                break
    with trio.fail_after(5):
        await fake_openai.wait_for(lambda: fake_openai.disconnects >= 1)
    assert fake_openai.sent_events < 50


async def test_healthz_and_readyz(bridge) -> None:
    async with client() as c:
        assert (await c.get(bridge.url + "/healthz")).status_code == 200
        assert (await c.get(bridge.url + "/readyz")).status_code == 200


async def test_max_inflight_answers_503_with_retry_after(
    nursery, tmp_path, fake_openai, fake_anthropic
) -> None:
    bridge = await bridge_with(
        nursery, tmp_path, fake_openai, fake_anthropic, "auth: tokens, max_inflight: 1"
    )
    fake_openai.behave(Stream(chunks=3, pace=0.5))
    async with client() as c:
        async with c.stream(
            "POST",
            bridge.url + "/openai/v1/chat/completions",
            headers=AUTH,
            json={**CHAT, "stream": True},
        ) as first:
            async for _ in first.aiter_raw():
                second = await c.get(bridge.url + "/openai/v1/models", headers=AUTH)
                break
    assert second.status_code == 503 and second.headers["retry-after"] == "1"


async def test_api_dumps_record_request_and_response_with_secrets_masked(
    nursery, tmp_path, fake_openai, fake_anthropic
) -> None:
    dumps = tmp_path / "dumps"
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    bridge = await bridge_with(
        nursery, config_dir, fake_openai, fake_anthropic, f"auth: tokens, api_dump_dir: '{dumps}'"
    )
    async with client() as c:
        r = await c.post(
            bridge.url + "/openai/v1/chat/completions?trace=1",
            headers=AUTH,
            json={**CHAT, "stream": True},
        )
    assert r.status_code == 200
    with trio.fail_after(10):
        while not list(dumps.glob("*.json")):
            await trio.sleep(0.02)  # written by a background task; nothing to wait on
    (path,) = list(dumps.glob("*.json"))
    text = path.read_text()
    doc = json.loads(text)
    assert doc["request"]["path"] == "/openai/v1/chat/completions?trace=1"
    assert doc["response"]["status"] == 200 and "[DONE]" in doc["response"]["body"]
    assert '"include_usage":true' in doc["request"]["body"]
    assert ["authorization", "Bearer sk-o...1111"] in doc["request"]["headers"]
    assert OPENAI_KEY not in text and TOKEN not in text


async def test_openai_sdk_responses_api_through_the_bridge(bridge, fake_openai) -> None:
    from openai import OpenAI

    def run() -> tuple[str, str]:
        sdk = OpenAI(base_url=bridge.url + "/openai/v1", api_key=TOKEN, max_retries=0)
        blocking = sdk.responses.create(model="gpt-4o-mini", input="hi")
        with sdk.responses.stream(model="gpt-4o-mini", input="hi") as stream:
            streamed = "".join(
                event.delta for event in stream if event.type == "response.output_text.delta"
            )
            final = stream.get_final_response()
        assert final.usage is not None
        return blocking.output_text, streamed

    blocking, streamed = await trio.to_thread.run_sync(run)
    assert blocking == "Hello from the fake openai upstream."
    assert streamed
    assert [r.raw_path for r in fake_openai.requests] == ["/v1/responses", "/v1/responses"]


async def test_a_body_cut_mid_way_is_not_presented_as_complete(nursery, tmp_path) -> None:
    async def upstream(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"partial":'
        )
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, upstream, listeners)
    write_yaml(
        tmp_path,
        "b.yaml",
        f"""
bridge: {{auth: none}}
providers:
  - {{name: cut, type: openai, base_url: "http://127.0.0.1:{port}/v1", keys: [{{value: {OPENAI_KEY}}}]}}
""",
    )
    bridge = await start_bridge(nursery, tmp_path)
    async with client() as c:
        with pytest.raises(httpx2.RemoteProtocolError):
            await c.get(bridge.url + "/cut/v1/models")
        assert (await c.get(bridge.url + "/healthz")).status_code == 200
