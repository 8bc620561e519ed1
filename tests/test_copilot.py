"""GitHub Copilot providers end to end: the OpenAI and Anthropic SDKs through the bridge with
the user's own Copilot token, to a fake Copilot endpoint that insists on one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anthropic
import openai
import pytest
import trio

from tests.support import RunningBridge, client, start_bridge, write_yaml
from trio_bridge.testing import FakeCopilot

ALICE = "tb-copilot-alice-token-0123456789abcdefghijk"
BOB = "tb-copilot-bob-token-0123456789abcdefghijklmn"
ALICE_GH = "ghu_alice0000000000000000000000000000"
BOB_GH = "ghu_bob00000000000000000000000000000000"
EDITOR = {
    "Editor-Version": "vscode/1.99.0",
    "Editor-Plugin-Version": "copilot-chat/0.26.0",
    "Copilot-Integration-Id": "vscode-chat",
}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def config(fake: FakeCopilot, bridge: str = "auth: tokens, allow_byok: false") -> str:
    return f"""
bridge: {{{bridge}}}
providers:
  - name: copilot
    type: copilot
    base_url: {fake.url}
clients:
  - id: alice
    token_sha256: {sha(ALICE)}
  - id: bob
    token_sha256: {sha(BOB)}
"""


@pytest.fixture
async def fake_copilot(nursery) -> FakeCopilot:
    fake = FakeCopilot(tokens={ALICE_GH, BOB_GH})
    await nursery.start(fake.serve)
    return fake


@pytest.fixture
async def bridge(nursery, tmp_path: Path, fake_copilot) -> RunningBridge:
    write_yaml(tmp_path, "bridge.yaml", config(fake_copilot))
    return await start_bridge(nursery, tmp_path)


def headers(bridge_token: str) -> dict[str, str]:
    return {"X-Trio-Bridge-Token": bridge_token, **EDITOR}


async def test_openai_sdk_chat_and_responses_with_the_users_copilot_token(
    bridge, fake_copilot
) -> None:
    def run() -> tuple[str, str, str]:
        sdk = openai.OpenAI(
            base_url=bridge.url + "/copilot",
            api_key=ALICE_GH,
            default_headers=headers(ALICE),
            max_retries=0,
        )
        blocking = sdk.chat.completions.create(**CHAT)
        streamed = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in sdk.chat.completions.create(**CHAT, stream=True)
            if chunk.choices
        )
        response = sdk.responses.create(model="gpt-4o", input="hi")
        return blocking.choices[0].message.content, streamed, response.output_text

    blocking, streamed, responded = await trio.to_thread.run_sync(run)
    assert blocking and streamed and responded
    paths = [r.path for r in fake_copilot.requests]
    assert paths == ["/chat/completions", "/chat/completions", "/responses"]
    for request in fake_copilot.requests:
        assert request.key == ALICE_GH
        assert request.header("x-trio-bridge-token") is None
        assert request.header("editor-version") == "vscode/1.99.0"
        assert request.header("editor-plugin-version") == "copilot-chat/0.26.0"
        assert request.header("copilot-integration-id") == "vscode-chat"
    # Usage is asked for on the stream (recording), like any openai-family provider.
    assert fake_copilot.requests[1].json["stream_options"] == {"include_usage": True}


async def test_anthropic_sdk_messages_through_copilot(bridge, fake_copilot) -> None:
    def run() -> tuple[str, str]:
        sdk = anthropic.Anthropic(
            base_url=bridge.url + "/copilot",
            api_key=BOB_GH,
            default_headers=headers(BOB),
            max_retries=0,
        )
        body = {
            "model": "claude-sonnet-4",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}],
        }
        message = sdk.messages.create(**body)
        with sdk.messages.stream(**body) as stream:
            text = "".join(stream.text_stream)
        return message.content[0].text, text

    blocking, streamed = await trio.to_thread.run_sync(run)
    assert blocking and streamed
    assert [r.path for r in fake_copilot.requests] == ["/v1/messages", "/v1/messages"]
    assert all(r.key == BOB_GH for r in fake_copilot.requests)


async def test_usage_of_copilot_answers_is_counted(bridge, fake_copilot) -> None:
    async with client() as c:
        r = await c.post(
            bridge.url + "/copilot/chat/completions",
            headers={**headers(ALICE), "Authorization": f"Bearer {ALICE_GH}"},
            json={**CHAT, "stream": True},
        )
        assert r.status_code == 200 and b"[DONE]" in r.content
        assert b'"choices":[]' not in r.content  # the usage chunk the client did not ask for
        metrics = (await c.get(bridge.admin + "/metrics")).text
    assert any(
        line.startswith("trio_bridge_tokens_total{")
        and 'provider="copilot"' in line
        and 'type="output"' in line
        for line in metrics.splitlines()
    )


async def test_two_users_in_parallel_never_see_each_others_token(
    socket_clock, nursery, tmp_path, fake_copilot
) -> None:
    write_yaml(tmp_path, "bridge.yaml", config(fake_copilot))
    bridge = await start_bridge(nursery, tmp_path)
    fake_copilot.default_pace = 0.01  # streams overlap on the shared upstream pool
    users = {"alice": (ALICE, ALICE_GH), "bob": (BOB, BOB_GH)}
    statuses: list[int] = []

    async def one(c, user: str, i: int) -> None:
        bridge_token, gh = users[user]
        r = await c.post(
            bridge.url + "/copilot/chat/completions",
            headers={
                **headers(bridge_token),
                "Authorization": f"Bearer {gh}",
                "X-Test-User": user,
            },
            json={**CHAT, "stream": i % 2 == 0},
        )
        statuses.append(r.status_code)

    async with client() as c, trio.open_nursery() as inner:
        for i in range(24):
            inner.start_soon(one, c, "alice" if i % 2 else "bob", i)
    assert statuses == [200] * 24
    assert len(fake_copilot.requests) == 24
    for request in fake_copilot.requests:
        expected = users[request.header("x-test-user")][1]
        assert request.header_values("authorization") == [f"Bearer {expected}"]


async def test_no_copilot_token_is_401_and_nothing_goes_upstream(bridge, fake_copilot) -> None:
    async with client() as c:
        only_bridge_token = await c.post(
            bridge.url + "/copilot/chat/completions",
            headers={"Authorization": f"Bearer {ALICE}", **EDITOR},
            json=CHAT,
        )
        header_only = await c.post(
            bridge.url + "/copilot/chat/completions", headers=headers(ALICE), json=CHAT
        )
        models_without = await c.get(bridge.url + "/copilot/models", headers=headers(ALICE))
        models = await c.get(
            bridge.url + "/copilot/models",
            headers={**headers(ALICE), "Authorization": f"Bearer {ALICE_GH}"},
        )
    for r in (only_bridge_token, header_only, models_without):
        assert r.status_code == 401
        assert "Authorization" in r.json()["error"]["message"]
    assert models.status_code == 200 and models.json()["object"] == "list"
    assert [r.path for r in fake_copilot.requests] == ["/models"]


async def test_a_token_copilot_rejects_is_relayed_not_failed_over(bridge, fake_copilot) -> None:
    async with client() as c:
        r = await c.post(
            bridge.url + "/copilot/chat/completions",
            headers={**headers(ALICE), "Authorization": "Bearer ghu_revoked"},
            json=CHAT,
        )
    assert r.status_code == 401
    assert len(fake_copilot.requests) == 1


async def test_under_auth_none_the_authorization_header_is_the_users_token(
    nursery, tmp_path, fake_copilot
) -> None:
    write_yaml(tmp_path, "bridge.yaml", config(fake_copilot, "auth: none"))
    bridge = await start_bridge(nursery, tmp_path)
    async with client() as c:
        r = await c.post(
            bridge.url + "/copilot/chat/completions",
            headers={"Authorization": f"Bearer {BOB_GH}", **EDITOR},
            json=CHAT,
        )
        missing = await c.post(bridge.url + "/copilot/chat/completions", json=CHAT)
    assert r.status_code == 200 and fake_copilot.requests[0].key == BOB_GH
    assert missing.status_code == 401


async def test_copilot_routes_other_than_sections_12_are_404(bridge, fake_copilot) -> None:
    async with client() as c:
        auth = {**headers(ALICE), "Authorization": f"Bearer {ALICE_GH}"}
        with_v1 = await c.post(bridge.url + "/copilot/v1/chat/completions", headers=auth, json=CHAT)
        embeddings = await c.post(bridge.url + "/copilot/embeddings", headers=auth, json=CHAT)
    assert with_v1.status_code == 404 and embeddings.status_code == 404
    assert fake_copilot.requests == []
