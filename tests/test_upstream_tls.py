"""Upstream TLS with trustme certificates: system store, SSL_CERT_FILE, a provider's CA
bundle, SNI, hostname checks, ALPN, connect timeout on a silent handshake."""

from __future__ import annotations

import ssl

import pytest
import trio
import trustme

from tests.support.upstream_servers import keep_alive_ok, start_server
from trio_bridge.upstream import (
    ConnectError,
    ConnectTimeout,
    TLSConfigError,
    UpstreamClient,
    UpstreamLimits,
    join_url,
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *names: str, sni: list | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    context.set_alpn_protocols(["h2", "http/1.1"])
    if sni is not None:
        context.sni_callback = lambda _obj, name, _ctx: sni.append(name)
    return context


def client(ca_pem: str | None = None, environ: dict | None = None, **kw) -> UpstreamClient:
    limits = UpstreamLimits(max_connections=4, **kw)
    return UpstreamClient("tls", limits, ca_pem=ca_pem, environ=environ or {})


async def fetch(c: UpstreamClient, base: str) -> bytes:
    response = await c.send("GET", join_url(base, b"/v1/models"), [], b"")
    try:
        return await response.aread()
    finally:
        await response.aclose()


async def test_a_provider_ca_bundle_is_trusted_with_sni_and_alpn(nursery, ca) -> None:
    sni: list = []
    server = await start_server(
        nursery, keep_alive_ok, tls=server_context(ca, "localhost", sni=sni)
    )
    c = client(ca_pem=ca.cert_pem.bytes().decode())
    base = f"https://localhost:{server.port}"
    assert await fetch(c, base) == b"ok"
    assert await fetch(c, base) == b"ok"
    assert server.connections == 1  # keep-alive over TLS
    assert sni == ["localhost"] and server.alpn == ["http/1.1"]
    assert server.seen[0].headers[0] == (b"host", f"localhost:{server.port}".encode())


async def test_the_system_store_alone_refuses_an_unknown_ca(nursery, ca) -> None:
    server = await start_server(nursery, keep_alive_ok, tls=server_context(ca, "localhost"))
    c = client()
    with pytest.raises(ConnectError, match="certificate verify failed"):
        await fetch(c, f"https://localhost:{server.port}")
    assert c.pool.open_connections == 0


async def test_ssl_cert_file_from_the_environment_is_the_trust_store(nursery, ca, tmp_path) -> None:
    server = await start_server(nursery, keep_alive_ok, tls=server_context(ca, "localhost"))
    bundle = tmp_path / "bundle.pem"
    ca.cert_pem.write_to_path(str(bundle))
    c = client(environ={"SSL_CERT_FILE": str(bundle)})
    assert await fetch(c, f"https://localhost:{server.port}") == b"ok"


async def test_a_certificate_for_another_name_is_refused(nursery, ca) -> None:
    server = await start_server(nursery, keep_alive_ok, tls=server_context(ca, "other.test"))
    c = client(ca_pem=ca.cert_pem.bytes().decode())
    with pytest.raises(ConnectError, match="Hostname mismatch"):
        await fetch(c, f"https://localhost:{server.port}")
    # An IP address is checked against the certificate too.
    with pytest.raises(ConnectError, match="certificate verify failed"):
        await fetch(c, f"https://127.0.0.1:{server.port}")


async def test_an_ip_certificate_is_accepted_for_that_ip(nursery, ca) -> None:
    server = await start_server(nursery, keep_alive_ok, tls=server_context(ca, "127.0.0.1"))
    c = client(ca_pem=ca.cert_pem.bytes().decode())
    assert await fetch(c, f"https://127.0.0.1:{server.port}") == b"ok"


async def test_a_handshake_that_never_completes_is_a_connect_timeout(socket_clock, nursery) -> None:
    async def silent(wire) -> None:
        await trio.sleep_forever()

    server = await start_server(nursery, silent)  # plain TCP: never answers the ClientHello
    c = client(connect_timeout=3)
    started = trio.current_time()
    with pytest.raises(ConnectTimeout, match="timed out"):
        await fetch(c, f"https://localhost:{server.port}")
    assert 3 <= trio.current_time() - started < 3.5
    assert c.pool.open_connections == 0


def test_a_bundle_that_is_not_pem_is_refused() -> None:
    with pytest.raises(TLSConfigError, match="ca_file is not a PEM CA bundle"):
        client(ca_pem="-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----")
    with pytest.raises(TLSConfigError, match="SSL_CERT_FILE"):
        client(environ={"SSL_CERT_FILE": "/nonexistent/bundle.pem"})
