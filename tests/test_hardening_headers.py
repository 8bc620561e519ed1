"""Secrets and client addresses never travel where they must not (issue 9, items 4, 5, 7):
dumps mask every credential-like header, the bridge token never goes upstream even when a
client repeats its auth header, and proxy headers describing the client are stripped."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import trio

from tests.support import RunningBridge, client, start_bridge, write_yaml
from trio_bridge.dumps import DumpCapture, masked_headers
from trio_bridge.http.auth import authenticate
from trio_bridge.http.headers import upstream_request_headers
from trio_bridge.testing import FakeUpstream

TOKEN = "tb-test-client-token-0123456789abcdefghijklmnop"
OPENAI_KEY = "sk-openai-pool-key-aaaaaaaaaaaa1111"
ANTHROPIC_KEY = "sk-ant-pool-key-bbbbbbbbbbbbbbbb2222"
AZURE_KEY = "azure-api-key-cccccccccccccccc3333"
CUSTOM_VALUE = "org-secret-looking-dddddddddd4444"
OWN_KEY = "sk-own-byok-key-eeeeeeeeeeeeeeee5555"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def bridge_over(
    nursery, config_dir: Path, fo: FakeUpstream, fa: FakeUpstream, bridge: str
) -> RunningBridge:
    write_yaml(
        config_dir,
        "b.yaml",
        f"""
        bridge: {{{bridge}}}
        providers:
          - name: azure
            type: openai
            base_url: "{fo.base_url}"
            keys: [{{value: {OPENAI_KEY}}}]
            headers: {{api-key: {AZURE_KEY}, X-Org-Context: {CUSTOM_VALUE}}}
          - {{name: openai, type: openai, base_url: "{fo.base_url}", keys: [{{value: {OPENAI_KEY}}}]}}
          - {{name: anthropic, type: anthropic, base_url: "{fa.base_url}", keys: [{{value: {ANTHROPIC_KEY}}}]}}
        clients:
          - {{id: alice, token_sha256: {sha(TOKEN)}}}
        """,
    )
    return await start_bridge(nursery, config_dir)


# 4. Dumps mask every credential-like header, provider headers included


def test_dump_masks_provider_headers_and_credential_like_names() -> None:
    capture = DumpCapture(
        request_id="r1",
        provider="azure",
        method="POST",
        path="/azure/v1/chat/completions?key=AIzaSyA-very-secret-param-0000&alt=sse",
        request_headers=[
            (b"api-key", AZURE_KEY.encode()),
            (b"x-org-context", CUSTOM_VALUE.encode()),
            (b"x-goog-api-key", b"AIzaSyB-another-secret-1111"),
            (b"x-amz-security-token", b"FwoGZXIvYXdzEXAMPLETOKEN2222"),
            (b"content-type", b"application/json"),
        ],
        request_body=b"{}",
        provider_headers=frozenset({b"api-key", b"x-org-context"}),
    )
    text = json.dumps(capture.document())
    for secret in (
        AZURE_KEY,
        CUSTOM_VALUE,
        "AIzaSyB-another-secret-1111",
        "FwoGZXIvYXdzEXAMPLETOKEN2222",
        "AIzaSyA-very-secret-param-0000",
    ):
        assert secret not in text
    assert ["content-type", "application/json"] in capture.document()["request"]["headers"]
    assert capture.document()["request"]["path"].endswith("&alt=sse")


def test_counting_headers_are_not_mistaken_for_credentials() -> None:
    out = masked_headers([(b"x-ratelimit-remaining-tokens", b"1000"), (b"openai-model", b"m")])
    assert out == [["x-ratelimit-remaining-tokens", "1000"], ["openai-model", "m"]]


async def test_api_dump_never_holds_a_provider_header_value(
    nursery, tmp_path, fake_openai, fake_anthropic
) -> None:
    dumps = tmp_path / "dumps"
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    bridge = await bridge_over(
        nursery,
        config_dir,
        fake_openai,
        fake_anthropic,
        f"auth: tokens, api_dump_dir: '{dumps}'",
    )
    async with client() as c:
        r = await c.post(
            bridge.url + "/azure/v1/chat/completions",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json=CHAT,
        )
    assert r.status_code == 200
    assert fake_openai.last_request.header("api-key") == AZURE_KEY  # it does go upstream
    with trio.fail_after(10):
        while not list(dumps.glob("*.json")):
            await trio.sleep(0.02)  # written by a background task; nothing to wait on
    (path,) = list(dumps.glob("*.json"))
    text = path.read_text()
    assert AZURE_KEY not in text and CUSTOM_VALUE not in text
    assert OPENAI_KEY not in text and TOKEN not in text
    headers = dict(json.loads(text)["request"]["headers"])
    assert headers["api-key"] == "azur...3333"


# 5. BYOK with a repeated auth header: the bridge token never goes upstream


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
@pytest.mark.parametrize("token_first", [True, False])
def test_repeated_auth_header_keeps_only_the_clients_own_key(
    header: str, token_first: bool
) -> None:
    own = (f"Bearer {OWN_KEY}" if header == "authorization" else OWN_KEY).encode()
    mine = (f"Bearer {TOKEN}" if header == "authorization" else TOKEN).encode()
    pair = [(header.encode(), mine), (header.encode(), own)]
    if not token_first:
        pair.reverse()
    headers = [(b"x-trio-bridge-token", TOKEN.encode()), *pair]
    caller = authenticate(headers, auth="none", clients={})
    assert caller.byok
    sent = upstream_request_headers(
        headers, keep_auth=caller.keep_auth, key_header=None, identity_encoding=True
    )
    assert [v for k, v in sent if k == header.encode()] == [own]
    assert all(TOKEN.encode() not in v for _, v in sent)


@pytest.mark.parametrize("token_first", [True, False])
async def test_byok_with_two_authorization_headers_sends_only_the_own_key(
    nursery, tmp_path, fake_openai, fake_anthropic, token_first: bool
) -> None:
    bridge = await bridge_over(nursery, tmp_path, fake_openai, fake_anthropic, "auth: tokens")
    auth = [("Authorization", f"Bearer {TOKEN}"), ("Authorization", f"Bearer {OWN_KEY}")]
    if not token_first:
        auth.reverse()
    async with client() as c:
        r = await c.post(
            bridge.url + "/openai/v1/chat/completions",
            headers=[("X-Trio-Bridge-Token", TOKEN), *auth],
            json=CHAT,
        )
    assert r.status_code == 200
    sent = fake_openai.last_request
    assert sent.header_values("authorization") == [f"Bearer {OWN_KEY}"]
    assert all(TOKEN not in v for _, v in sent.headers)


async def test_byok_with_two_x_api_key_headers_sends_only_the_own_key(
    nursery, tmp_path, fake_openai, fake_anthropic
) -> None:
    bridge = await bridge_over(nursery, tmp_path, fake_openai, fake_anthropic, "auth: tokens")
    async with client() as c:
        r = await c.post(
            bridge.url + "/anthropic/v1/messages",
            headers=[
                ("X-Trio-Bridge-Token", TOKEN),
                ("X-Api-Key", OWN_KEY),
                ("X-Api-Key", TOKEN),
            ],
            json={"model": "claude-fake-1", "max_tokens": 5, "messages": []},
        )
    assert r.status_code == 200
    sent = fake_anthropic.last_request
    assert sent.header_values("x-api-key") == [OWN_KEY]
    assert all(TOKEN not in v for _, v in sent.headers)


# 7. Proxy headers that describe the client or rewrite the target are stripped

PROXY_HEADERS = {
    "X-Real-IP": "10.1.2.3",
    "True-Client-IP": "10.1.2.4",
    "X-Original-URL": "/admin",
    "X-Rewrite-URL": "/admin",
    "X-Original-Forwarded-For": "10.1.2.5",
    "CF-Connecting-IP": "10.1.2.6",
    "Fastly-Client-IP": "10.1.2.7",
    "X-Cluster-Client-IP": "10.1.2.8",
    "X-Client-IP": "10.1.2.9",
    "Client-IP": "10.1.2.10",
    "Via": "1.1 internal-proxy.corp",
    "X-Forwarded-For": "10.1.2.11",
    "X-Forwarded-Host": "internal.corp",
    "Forwarded": "for=10.1.2.12",
}


def test_proxy_headers_never_go_upstream() -> None:
    headers = [(k.lower().encode(), v.encode()) for k, v in PROXY_HEADERS.items()]
    headers.append((b"openai-organization", b"org-1"))
    sent = upstream_request_headers(
        headers, keep_auth=frozenset(), key_header=None, identity_encoding=False
    )
    assert [k for k, _ in sent] == [b"openai-organization", b"user-agent"]


@pytest.mark.parametrize("forward", [False, True])
async def test_proxy_headers_are_stripped_on_the_wire(
    nursery, tmp_path, fake_openai, fake_anthropic, forward: bool
) -> None:
    settings = "auth: tokens" + (", forward_client_ip: true" if forward else "")
    bridge = await bridge_over(nursery, tmp_path, fake_openai, fake_anthropic, settings)
    async with client() as c:
        r = await c.get(
            bridge.url + "/openai/v1/models",
            headers={"Authorization": f"Bearer {TOKEN}", **PROXY_HEADERS},
        )
    assert r.status_code == 200
    sent = fake_openai.last_request
    for name in PROXY_HEADERS:
        if forward and name == "X-Forwarded-For":
            assert sent.header_values(name) == ["127.0.0.1"]
        else:
            assert sent.header(name) is None, name
    assert all("10.1.2." not in v and "corp" not in v for _, v in sent.headers)
