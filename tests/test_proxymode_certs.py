"""Proxy-mode CA handling and leaf minting (contract section 11): real TLS handshakes over
in-memory streams, no sockets needed."""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
import stat
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509

from trio_bridge.proxymode.ca import CAError, load_ca, new_ca, write_new_ca
from trio_bridge.proxymode.connect import (
    Action,
    ConnectError,
    decide,
    parse_target,
    proxy_credential,
)
from trio_bridge.proxymode.hostmap import base_url_key, build_host_map
from trio_bridge.proxymode.leaves import LeafCache, mint_leaf


@pytest.fixture(scope="module")
def ca():
    return load_ca(*new_ca())


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


async def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, name: str) -> str:
    """Run both sides of a TLS handshake; the ALPN protocol the client ended with."""
    left, right = trio.testing.memory_stream_pair()
    server = trio.SSLStream(left, server_ctx, server_side=True)
    client = trio.SSLStream(right, client_ctx, server_hostname=name)

    async def serve() -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            await server.do_handshake()

    failure: BaseException | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        try:
            await client.do_handshake()
        except trio.BrokenResourceError as exc:
            failure = exc.__cause__ or exc
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return client.selected_alpn_protocol() or ""


async def test_a_minted_leaf_is_trusted_by_a_client_holding_the_ca_and_offers_http11_only(ca):
    leaf = mint_leaf(ca, "api.openai.com")
    assert await handshake(leaf.context, client_context(ca.cert_pem), "api.openai.com") == (
        "http/1.1"
    )
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["api.openai.com"]
    assert cert.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.total_seconds() <= 26 * 3600


async def test_a_leaf_for_one_host_is_refused_for_another(ca):
    leaf = mint_leaf(ca, "api.openai.com")
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(leaf.context, client_context(ca.cert_pem), "api.anthropic.com")


async def test_a_client_without_the_ca_refuses_the_leaf(ca):
    other = load_ca(*new_ca("someone else"))
    leaf = mint_leaf(ca, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(leaf.context, client_context(other.cert_pem), "localhost")


async def test_ip_literal_hosts_get_an_ip_san(ca):
    leaf = mint_leaf(ca, "127.0.0.1")
    assert await handshake(leaf.context, client_context(ca.cert_pem), "127.0.0.1") == "http/1.1"


async def test_concurrent_requests_for_one_host_mint_once_and_reuse_the_leaf(ca):
    cache = LeafCache(ca)
    got = []

    async def get() -> None:
        got.append(await cache.get("API.openai.com"))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(get)
    assert cache.minted == 1 and all(leaf is got[0] for leaf in got)
    assert await cache.get("api.openai.com") is got[0]


async def test_the_cache_is_bounded_least_recently_used_first(ca):
    cache = LeafCache(ca, max_hosts=2)
    a = await cache.get("a.example")
    await cache.get("b.example")
    assert await cache.get("a.example") is a
    await cache.get("c.example")  # evicts b, the least recently used
    assert await cache.get("a.example") is a
    minted = cache.minted
    await cache.get("b.example")
    assert cache.minted == minted + 1


def test_load_ca_rejects_a_key_of_another_ca_and_a_non_ca_certificate(ca, tmp_path):
    cert_pem, _ = new_ca()
    _, other_key = new_ca()
    with pytest.raises(CAError, match="does not match"):
        load_ca(cert_pem, other_key)
    leaf = mint_leaf(ca, "x.example")
    leaf_cert = leaf.cert_pem.split(b"-----END CERTIFICATE-----")[0] + (
        b"-----END CERTIFICATE-----\n"
    )
    with pytest.raises(CAError):
        load_ca(leaf_cert, other_key)
    with pytest.raises(CAError, match="not a PEM certificate"):
        load_ca(b"garbage", other_key)
    with pytest.raises(CAError, match="private key") as info:
        load_ca(cert_pem, b"-----BEGIN PRIVATE KEY-----\nc2stc2VjcmV0\n-----END PRIVATE KEY-----\n")
    assert "c2stc2VjcmV0" not in str(info.value)


def test_write_new_ca_creates_the_dir_with_a_0600_key_and_refuses_to_overwrite(tmp_path: Path):
    target = tmp_path / "nested" / "ca"
    cert_path, key_path = write_new_ca(target)
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    ca = load_ca(cert_path.read_bytes(), key_path.read_bytes())
    assert "trio-bridge" in ca.subject
    before = key_path.read_bytes()
    with pytest.raises(CAError, match="already exists"):
        write_new_ca(target)
    assert key_path.read_bytes() == before


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"api.openai.com:443", ("api.openai.com", 443)),
        (b"API.Anthropic.com:8443", ("api.anthropic.com", 8443)),
        (b"[::1]:443", ("::1", 443)),
        (b"127.0.0.1:1", ("127.0.0.1", 1)),
    ],
)
def test_connect_targets_parse(target, expected):
    assert parse_target(target) == expected


@pytest.mark.parametrize(
    "target",
    [
        b"api.openai.com",
        b":443",
        b"host:0",
        b"host:65536",
        b"host:x",
        b"a/b:443",
        b"user@host:443",
        b"[::1:443",
        b"[zz]:443",
        b"h\xffst:443",
        b"ho st:443",
    ],
)
def test_bad_connect_targets_are_refused(target):
    with pytest.raises(ConnectError):
        parse_target(target)


def test_proxy_credentials_bearer_or_basic_with_the_token_as_password():
    basic = b"Basic " + base64.b64encode(b"anything:tok-123")
    assert proxy_credential(basic) == "tok-123"
    assert proxy_credential(b"Basic " + base64.b64encode(b"tok-123:")) == "tok-123"
    assert proxy_credential(b"Bearer tok-123") == "tok-123"
    assert proxy_credential(b"Basic !!!") is None
    assert proxy_credential(b"Digest x") is None
    assert proxy_credential(None) is None


def test_host_map_keys_default_ports_and_drops_shared_hosts():
    hosts = build_host_map(
        [
            ("openai", "https://api.openai.com/v1"),
            ("azure", "https://Shared.example:443/openai"),
            ("azure2", "https://shared.example/other"),
            ("local", "http://127.0.0.1:8081/v1"),
        ]
    )
    assert dict(hosts.hosts) == {"api.openai.com:443": "openai", "127.0.0.1:8081": "local"}
    assert dict(hosts.shared) == {"shared.example:443": ("azure", "azure2")}
    assert base_url_key("https://[::1]:9/v1") == "[::1]:9"


def test_decide_intercepts_mapped_tunnels_passthrough_and_forbids_the_rest():
    hosts = build_host_map([("openai", "https://api.openai.com/v1")])
    passthrough = frozenset({"github.com:443"})
    assert decide("api.openai.com", 443, hosts, passthrough).provider == "openai"
    assert decide("github.com", 443, hosts, passthrough).action is Action.PASSTHROUGH
    assert decide("api.openai.com", 8443, hosts, passthrough).action is Action.FORBIDDEN
