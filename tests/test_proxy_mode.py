"""Interception proxy mode end to end (contract section 11; issue 13): real TLS on loopback.

The fake upstreams serve ``https://localhost:PORT`` through a TLS front with a trustme
certificate that the bridge trusts via each provider's ``ca_file``; clients reach them only
through ``--proxy-listen`` with ``HTTPS_PROXY``-style proxies and the proxy CA as their trust
store, the way an IDE plugin or CLI that cannot change its base URL would.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import ssl
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import trio
import trustme

from tests.support.tls_front import TLSFront
from trio_bridge import metrics
from trio_bridge.daemon import Daemon, ServeOptions, StartupError
from trio_bridge.proxymode.ca import write_new_ca
from trio_bridge.testing import FakeUpstream

TOKEN = "tb-proxy-client-token-0123456789abcdef0123"
POOL_KEY = "sk-pool-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-pool-0123456789abcdef"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Rig:
    daemon: Daemon
    config: Path
    secrets: Path
    proxy: str  # host:port of --proxy-listen
    admin: str
    proxy_ca: Path
    openai: FakeUpstream
    anthropic: FakeUpstream
    openai_front: TLSFront
    anthropic_front: TLSFront

    def client(self, token: str | None = TOKEN, **kw) -> httpx2.AsyncClient:
        auth = f"x:{token}@" if token is not None else ""
        verify = ssl.create_default_context(cafile=str(self.proxy_ca))
        return httpx2.AsyncClient(
            proxy=f"http://{auth}{self.proxy}", verify=verify, timeout=30, **kw
        )

    @property
    def openai_url(self) -> str:
        return f"https://localhost:{self.openai_front.port}/v1"

    @property
    def anthropic_url(self) -> str:
        return f"https://localhost:{self.anthropic_front.port}"

    async def write_config(self, text: str) -> None:
        """Replace the providers file and wait for the reload that reads it."""
        path = self.config / "20-providers.yaml"
        path.write_text(textwrap.dedent(text))
        await self.daemon.reloader.reload({self.daemon.files.name}, full=False, reason="test")


def providers_yaml(rig_or_urls: tuple[str, str], extra: str = "") -> str:
    openai_url, anthropic_url = rig_or_urls
    return f"""
        providers:
          - name: openai
            type: openai
            base_url: {openai_url}
            keys: [{{value: {POOL_KEY}}}]
            ca_file: {{file: upstream-ca.pem}}
          - name: anthropic
            type: anthropic
            base_url: {anthropic_url}
            keys: [{{value: {ANTHROPIC_KEY}}}]
            ca_file: {{file: upstream-ca.pem}}
        {extra}
        """


@pytest.fixture
async def rig(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Rig]:
    upstream_ca = trustme.CA()
    openai = await nursery.start(FakeUpstream(dialect="openai").serve)
    anthropic = await nursery.start(FakeUpstream(dialect="anthropic").serve)
    openai_front, anthropic_front = TLSFront(upstream_ca), TLSFront(upstream_ca)
    await nursery.start(openai_front.serve, openai.port)
    await nursery.start(anthropic_front.serve, anthropic.port)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    upstream_ca.cert_pem.write_to_path(str(secrets / "upstream-ca.pem"))
    write_new_ca(secrets / "proxy-ca")
    config = tmp_path / "config"
    config.mkdir()
    (config / "10-bridge.yaml").write_text(
        textwrap.dedent(
            f"""
            bridge:
              auth: tokens
              reload: {{debounce: 0s}}
              proxy_mode:
                ca_cert: {{file: proxy-ca/ca.pem}}
                ca_key: {{file: proxy-ca/ca.key}}
            clients:
              - id: alice
                token_sha256: {sha256(TOKEN)}
            """
        )
    )
    urls = (
        f"https://localhost:{openai_front.port}/v1",
        f"https://localhost:{anthropic_front.port}",
    )
    (config / "20-providers.yaml").write_text(textwrap.dedent(providers_yaml(urls)))
    daemon = Daemon(
        ServeOptions(
            config_dir=config,
            secrets_dir=secrets,
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            proxy_listen="127.0.0.1:0",
            drain_delay=0,
            shutdown_grace=5,
            handle_signals=False,
            environ={},
        )
    )
    addresses = await nursery.start(daemon.run)
    assert addresses.proxy is not None
    yield Rig(
        daemon,
        config,
        secrets,
        addresses.proxy.removeprefix("http://"),
        addresses.admin,
        secrets / "proxy-ca" / "ca.pem",
        openai,
        anthropic,
        openai_front,
        anthropic_front,
    )
    await daemon.drain()


async def raw_connect(proxy: str, head: bytes) -> tuple[trio.SocketStream, bytes]:
    """Open a TCP connection to the proxy, send ``head``, read the answer's head."""
    host, port = proxy.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(head)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return stream, data


def connect_head(target: str, token: str | None = TOKEN) -> bytes:
    head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
    if token is not None:
        cred = base64.b64encode(f"x:{token}".encode()).decode()
        head += f"Proxy-Authorization: Basic {cred}\r\n"
    return (head + "\r\n").encode()


# --- the must-show cases ------------------------------------------------------------------


async def test_clients_with_default_base_urls_get_blocking_and_streaming_answers_through_the_proxy(
    rig: Rig,
) -> None:
    async with rig.client() as http:
        blocking = await http.post(
            rig.openai_url + "/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert blocking.status_code == 200, blocking.text
        assert blocking.json()["choices"][0]["message"]["content"]
        chunks = []
        async with http.stream(
            "POST",
            rig.openai_url + "/chat/completions",
            json={**CHAT, "stream": True},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as streamed:
            assert streamed.status_code == 200
            async for chunk in streamed.aiter_text():
                chunks.append(chunk)
        assert "data: [DONE]" in "".join(chunks)
        message = await http.post(
            rig.anthropic_url + "/v1/messages",
            json={"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": CHAT["messages"]},
            headers={"x-api-key": TOKEN, "anthropic-version": "2023-06-01"},
        )
        assert message.status_code == 200, message.text
        assert message.json()["type"] == "message"
    # The fakes saw the pool keys, never the client token.
    assert [r.key for r in rig.openai.requests] == [POOL_KEY, POOL_KEY]
    assert [r.key for r in rig.anthropic.requests] == [ANTHROPIC_KEY]
    for fake in (rig.openai, rig.anthropic):
        for request in fake.requests:
            assert all(TOKEN not in value for _, value in request.headers)


async def test_the_openai_sdk_pointed_at_its_real_url_works_through_https_proxy(rig: Rig) -> None:
    from openai import OpenAI

    verify = ssl.create_default_context(cafile=str(rig.proxy_ca))

    def run() -> tuple[str, str]:
        with httpx2.Client(proxy=f"http://x:{TOKEN}@{rig.proxy}", verify=verify) as http:
            sdk = OpenAI(base_url=rig.openai_url, api_key=TOKEN, http_client=http, max_retries=0)
            answer = sdk.chat.completions.create(**CHAT)
            text = "".join(
                c.choices[0].delta.content or ""
                for c in sdk.chat.completions.create(**CHAT, stream=True)
                if c.choices
            )
            return answer.choices[0].message.content or "", text

    blocking, streamed = await trio.to_thread.run_sync(run)
    assert blocking and streamed
    assert {r.key for r in rig.openai.requests} == {POOL_KEY}


async def test_an_inner_key_other_than_the_connect_token_is_byok(rig: Rig) -> None:
    async with rig.client() as http:
        answer = await http.post(
            rig.openai_url + "/chat/completions",
            json=CHAT,
            headers={"Authorization": "Bearer sk-users-own-key-0123456789"},
        )
    assert answer.status_code == 200
    assert rig.openai.requests[-1].key == "sk-users-own-key-0123456789"


async def test_a_provider_added_or_moved_in_yaml_is_intercepted_and_a_removed_one_refused(
    rig: Rig,
) -> None:
    old = rig.openai_url
    moved = f"https://127.0.0.1:{rig.openai_front.port}/v1"
    # The openai provider moves to another host:port key: the old one is refused at once.
    await rig.write_config(providers_yaml((moved, rig.anthropic_url)))
    stream, head = await raw_connect(rig.proxy, connect_head(f"localhost:{rig.openai_front.port}"))
    await stream.aclose()
    assert head.startswith(b"HTTP/1.1 403"), head
    doc = (await _admin_json(rig, "/-/snapshot"))["proxy_mode"]
    assert doc["hosts"] == {
        f"127.0.0.1:{rig.openai_front.port}": "openai",
        f"localhost:{rig.anthropic_front.port}": "anthropic",
    }
    # Back again, without a restart.
    await rig.write_config(providers_yaml((old, rig.anthropic_url)))
    async with rig.client() as http:
        answer = await http.post(
            old + "/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert answer.status_code == 200


async def test_a_passthrough_host_tunnels_bytes_unchanged(rig: Rig, nursery: trio.Nursery) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def echo(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server_ctx, server_side=True)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await tls.receive_some(65536):
                await tls.send_all(data)

    nursery.start_soon(trio.serve_listeners, echo, listeners)
    (rig.config / "30-passthrough.yaml").write_text("")
    bridge = (rig.config / "10-bridge.yaml").read_text()
    (rig.config / "10-bridge.yaml").write_text(
        bridge.replace(
            "    ca_key: {file: proxy-ca/ca.key}\n",
            f'    ca_key: {{file: proxy-ca/ca.key}}\n    passthrough_hosts: ["localhost:{port}"]\n',
        )
    )
    await rig.daemon.reloader.reload({rig.daemon.files.name}, full=False, reason="test")
    stream, head = await raw_connect(rig.proxy, connect_head(f"localhost:{port}"))
    assert head.startswith(b"HTTP/1.1 200"), head
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    tls = trio.SSLStream(stream, client_ctx, server_hostname="localhost")
    payload = bytes(range(256)) * 64
    await tls.send_all(payload)
    got = b""
    while len(got) < len(payload):
        got += await tls.receive_some(65536)
    assert got == payload  # the echo server's own certificate, the bytes unchanged
    await tls.aclose()


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (connect_head("localhost:1", token=None), b"HTTP/1.1 407"),
        (connect_head("localhost:1", token="not-a-client-token-0123456789"), b"HTTP/1.1 407"),
        (connect_head("unknown.example:443"), b"HTTP/1.1 403"),
        (b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n", b"HTTP/1.1 405"),
        (connect_head("nohost"), b"HTTP/1.1 400"),
        (b"\x16\x03\x01garbage\r\n\r\n", b"HTTP/1.1 400"),
    ],
)
async def test_bad_connects_get_their_answer(rig: Rig, head: bytes, expected: bytes) -> None:
    stream, answer = await raw_connect(rig.proxy, head)
    await stream.aclose()
    assert answer.startswith(expected), answer
    if expected == b"HTTP/1.1 407":
        assert b'proxy-authenticate: Basic realm="trio-bridge"' in answer.lower().replace(
            b"basic", b"Basic"
        )


async def test_a_tunnel_that_speaks_garbage_or_aborts_tls_closes_alone(rig: Rig) -> None:
    target = f"localhost:{rig.openai_front.port}"
    async with rig.client() as good, trio.open_nursery() as nursery:
        # A healthy tunnel stays open across the bad ones.
        first = await good.post(
            rig.openai_url + "/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert first.status_code == 200
        garbage, head = await raw_connect(rig.proxy, connect_head(target))
        assert head.startswith(b"HTTP/1.1 200")
        await garbage.send_all(b"this is not a TLS client hello\r\n\r\n" * 10)
        assert await _read_until_closed(garbage) is not None
        aborted, head = await raw_connect(rig.proxy, connect_head(target))
        assert head.startswith(b"HTTP/1.1 200")
        await aborted.send_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a cut hello
        await aborted.aclose()
        nursery.cancel_scope.cancel()
        again = await good.post(
            rig.openai_url + "/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert again.status_code == 200
    assert (await _admin_json(rig, "/healthz"))["status"] == "ok"


async def test_no_ca_key_client_token_or_pool_key_leaks(rig: Rig, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    async with rig.client() as http:
        await http.post(
            rig.openai_url + "/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    stream, _ = await raw_connect(rig.proxy, connect_head("unknown.example:443"))
    await stream.aclose()
    ca_key = (rig.secrets / "proxy-ca" / "ca.key").read_text()
    key_body = "".join(ca_key.strip().splitlines()[1:-1])
    snapshot = await _admin_text(rig, "/-/snapshot")
    rendered = await metrics.render()
    text = "\n".join(r.getMessage() for r in caplog.records) + snapshot + rendered.decode()
    for secret in (key_body, key_body[:40], TOKEN, POOL_KEY, ANTHROPIC_KEY):
        assert secret not in text
    doc = (await _admin_json(rig, "/-/snapshot"))["proxy_mode"]
    assert doc["ca_subject"].startswith("CN=trio-bridge")
    assert doc["ca_not_after"].endswith("Z") and doc["error"] is None
    assert b'trio_bridge_proxy_mode_connections_total{outcome="intercepted"}' in rendered


async def test_proxy_listen_without_proxy_mode_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("bridge: {auth: none}\n")
    daemon = Daemon(
        ServeOptions(
            config_dir=tmp_path,
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            proxy_listen="127.0.0.1:0",
            handle_signals=False,
            environ={},
        )
    )
    with pytest.raises(StartupError, match="proxy_mode"):
        await daemon.run()


async def test_a_broken_ca_is_reported_and_intercepts_nothing(rig: Rig) -> None:
    (rig.secrets / "proxy-ca" / "ca.key").write_text("not a key")
    await rig.daemon.reloader.reload({rig.daemon.files.name}, full=False, reason="test")
    doc = (await _admin_json(rig, "/-/snapshot"))["proxy_mode"]
    assert doc["ca_subject"] is None and "ca_key" in doc["error"]
    stream, head = await raw_connect(rig.proxy, connect_head(f"localhost:{rig.openai_front.port}"))
    await stream.aclose()
    assert head.startswith(b"HTTP/1.1 403")


# --- helpers ------------------------------------------------------------------------------


async def _read_until_closed(stream: trio.abc.Stream) -> bytes | None:
    data = b""
    with trio.move_on_after(10):
        try:
            while chunk := await stream.receive_some(65536):
                data += chunk
        except trio.BrokenResourceError:
            pass
        return data
    return None


async def _admin_text(rig: Rig, path: str) -> str:
    async with httpx2.AsyncClient() as http:
        return (await http.get(rig.admin + path)).text


async def _admin_json(rig: Rig, path: str) -> dict:
    async with httpx2.AsyncClient() as http:
        return (await http.get(rig.admin + path)).json()


def test_check_config_shows_the_ca_and_the_host_map_and_fails_on_a_broken_ca(
    tmp_path: Path, capsys
) -> None:
    from trio_bridge.commands.check import check_config

    secrets = tmp_path / "s"
    write_new_ca(secrets / "ca")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "b.yaml").write_text(
        textwrap.dedent(
            f"""
            bridge:
              proxy_mode: {{ca_cert: {{file: ca/ca.pem}}, ca_key: {{file: ca/ca.key}}}}
            providers:
              - {{name: openai, type: openai, base_url: "https://api.openai.com/v1",
                  keys: [{{value: {POOL_KEY}}}]}}
            """
        )
    )
    assert check_config(tmp_path / "c", secrets) == 0
    out = capsys.readouterr().out
    assert "proxy mode: CA CN=trio-bridge proxy CA" in out
    assert "intercept api.openai.com:443 -> openai" in out
    (secrets / "ca" / "ca.key").write_text("broken")
    assert check_config(tmp_path / "c", secrets, as_json=True) == 1
    out = capsys.readouterr().out
    assert '"ok": false' in out and "ca_key" in out and "broken" not in out


async def test_a_tunnel_keeps_the_snapshot_it_started_on(rig: Rig) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    new_key = "sk-pool-openai-rotated-0123456789"
    async with rig.client() as tunnel:
        first = await tunnel.post(rig.openai_url + "/chat/completions", json=CHAT, headers=headers)
        assert first.status_code == 200
        await rig.write_config(
            providers_yaml((rig.openai_url, rig.anthropic_url)).replace(POOL_KEY, new_key)
        )
        # The same tunnel (a kept-alive CONNECT): still the snapshot it started on.
        again = await tunnel.post(rig.openai_url + "/chat/completions", json=CHAT, headers=headers)
        assert again.status_code == 200
    async with rig.client() as fresh:  # a new CONNECT sees the newest snapshot
        third = await fresh.post(rig.openai_url + "/chat/completions", json=CHAT, headers=headers)
        assert third.status_code == 200
    assert [r.key for r in rig.openai.requests] == [POOL_KEY, POOL_KEY, new_key]
    assert rig.openai_front.connections >= 1


async def test_a_tunnel_keeps_its_upstream_clients_open_when_a_reload_retires_them(
    rig: Rig,
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    bridge_file = rig.config / "10-bridge.yaml"
    async with rig.client() as tunnel:
        assert (
            await tunnel.post(rig.openai_url + "/chat/completions", json=CHAT, headers=headers)
        ).status_code == 200
        # New connection limits: every provider gets a new upstream client; the old ones
        # are retired and would close once unpinned.
        bridge_file.write_text(
            bridge_file.read_text().replace(
                "  auth: tokens\n", "  auth: tokens\n  upstream_max_connections: 7\n"
            )
        )
        await rig.daemon.reloader.reload({rig.daemon.files.name}, full=False, reason="test")
        again = await tunnel.post(rig.openai_url + "/chat/completions", json=CHAT, headers=headers)
        assert again.status_code == 200, again.text
