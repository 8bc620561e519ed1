"""The bridge on its own upstream client: a provider's ca_file (file or env reference),
a missing or invalid bundle failing only that provider, proxies from the environment."""

from __future__ import annotations

import ssl

import pytest
import trustme

from tests.support import client, start_bridge, write_yaml
from tests.support.upstream_servers import start_connect_proxy, start_tls_front

KEY = "sk-openai-pool-key-aaaaaaaaaaaa1111"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def tls_fake(nursery, ca: trustme.CA, fake) -> str:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    port = await start_tls_front(nursery, context, fake.port)
    return f"https://localhost:{port}/v1"


def providers(base_url: str, ca_ref: str | None) -> str:
    ca_line = f"\n    ca_file: {ca_ref}" if ca_ref else ""
    return f"""
bridge: {{auth: none}}
providers:
  - name: openai
    type: openai
    base_url: {base_url}
    keys: [{{value: {KEY}}}]{ca_line}
  - name: other
    type: openai
    base_url: {base_url}
    keys: [{{value: {KEY}}}]
"""


async def test_ca_file_from_the_secrets_dir_trusts_the_upstream(
    nursery, tmp_path, ca, fake_openai
) -> None:
    base_url = await tls_fake(nursery, ca, fake_openai)
    secrets = tmp_path / "secrets"
    (secrets / "ca").mkdir(parents=True)
    ca.cert_pem.write_to_path(str(secrets / "ca" / "upstream.pem"))
    config = tmp_path / "config"
    config.mkdir()
    write_yaml(config, "p.yaml", providers(base_url, "{file: ca/upstream.pem}"))
    bridge = await start_bridge(nursery, config, secrets_dir=secrets)
    async with client() as c:
        ok = await c.post(bridge.url + "/openai/v1/chat/completions", json=CHAT)
        # Without the bundle the system store refuses the certificate.
        refused = await c.post(bridge.url + "/other/v1/chat/completions", json=CHAT)
    assert ok.status_code == 200, ok.text
    assert ok.json()["choices"][0]["message"]["content"]
    assert refused.status_code == 502
    assert refused.json()["error"]["message"] == "upstream unreachable"
    assert fake_openai.requests[0].key == KEY and len(fake_openai.requests) == 1


async def test_ca_file_from_an_env_variable_holding_pem(nursery, tmp_path, ca, fake_openai) -> None:
    base_url = await tls_fake(nursery, ca, fake_openai)
    write_yaml(tmp_path, "p.yaml", providers(base_url, "{env: UPSTREAM_CA}"))
    environ = {"UPSTREAM_CA": ca.cert_pem.bytes().decode()}
    bridge = await start_bridge(nursery, tmp_path, environ=environ)
    async with client() as c:
        r = await c.post(bridge.url + "/openai/v1/chat/completions", json=CHAT)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("ref", "content", "reason"),
    [
        ("{file: missing.pem}", None, "ca_file: key file missing.pem not found in the secrets dir"),
        ("{file: bad.pem}", "not a certificate", "ca_file is not a PEM CA bundle"),
    ],
)
async def test_a_missing_or_invalid_ca_file_fails_only_that_provider(
    nursery, tmp_path, fake_openai, ref: str, content: str | None, reason: str
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    if content is not None:
        (secrets / "bad.pem").write_text(content)
    config = tmp_path / "config"
    config.mkdir()
    write_yaml(config, "p.yaml", providers(fake_openai.base_url, ref))
    bridge = await start_bridge(nursery, config, secrets_dir=secrets)
    provider = bridge.snapshot.providers["openai"]
    assert provider.status == "error" and reason in (provider.error or "")
    assert bridge.snapshot.providers["other"].status == "ok"
    async with client() as c:
        r = await c.post(bridge.url + "/openai/v1/chat/completions", json=CHAT)
    assert r.status_code == 503
    assert r.json()["error"]["message"] == 'provider "openai" is misconfigured'


async def test_https_proxy_from_the_daemon_environment(nursery, tmp_path, ca, fake_openai) -> None:
    base_url = await tls_fake(nursery, ca, fake_openai)
    proxy = await start_connect_proxy(nursery)
    write_yaml(tmp_path, "p.yaml", providers(base_url, "{env: UPSTREAM_CA}"))
    environ = {
        "UPSTREAM_CA": ca.cert_pem.bytes().decode(),
        "HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}",
    }
    bridge = await start_bridge(nursery, tmp_path, environ=environ)
    async with client() as c:
        r = await c.post(bridge.url + "/openai/v1/chat/completions", json=CHAT)
    assert r.status_code == 200, r.text
    assert proxy.heads and proxy.heads[0].startswith(b"CONNECT localhost:")
