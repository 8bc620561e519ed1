"""HTTPS_PROXY / HTTP_PROXY / NO_PROXY: parsing (sans-IO) and a loopback CONNECT proxy."""

from __future__ import annotations

import base64
import ssl

import pytest
import trustme

from tests.support.upstream_servers import keep_alive_ok, start_connect_proxy, start_server
from trio_bridge.upstream import (
    ConnectError,
    Origin,
    ProxyConfigError,
    ProxySettings,
    UpstreamClient,
    UpstreamClients,
    UpstreamConfigError,
    UpstreamLimits,
    join_url,
)


def https(host: str, port: int = 443) -> Origin:
    return Origin("https", host, port)


def http(host: str, port: int = 80) -> Origin:
    return Origin("http", host, port)


def test_lower_case_wins_and_an_empty_value_means_no_proxy() -> None:
    s = ProxySettings.from_environ(
        {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2", "HTTP_PROXY": "p:3"}
    )
    assert s.proxy_for(https("api.test")).origin == Origin("http", "lower", 2)
    assert s.proxy_for(http("api.test")).origin == Origin("http", "p", 3)  # scheme-less
    s = ProxySettings.from_environ({"HTTPS_PROXY": "http://upper:1", "https_proxy": ""})
    assert s.proxy_for(https("api.test")) is None
    s = ProxySettings.from_environ({"ALL_PROXY": "http://all:8"})
    assert s.proxy_for(https("x")).origin.host == "all" and s.proxy_for(http("x")) is not None
    assert ProxySettings.from_environ({}).proxy_for(https("x")) is None


def test_userinfo_becomes_basic_proxy_authorization_and_never_shows() -> None:
    s = ProxySettings.from_environ({"HTTPS_PROXY": "http://al%40ice:s3cret@proxy.test:3128"})
    proxy = s.proxy_for(https("api.test"))
    assert proxy.authorization == b"Basic " + base64.b64encode(b"al@ice:s3cret")
    assert "s3cret" not in repr(proxy) and "s3cret" not in repr(s)


def test_unsupported_proxy_schemes_name_the_variable_not_the_value() -> None:
    with pytest.raises(ProxyConfigError) as caught:
        ProxySettings.from_environ({"HTTPS_PROXY": "socks5://u:s3cret@h:1080"})
    assert "HTTPS_PROXY" in str(caught.value) and "s3cret" not in str(caught.value)
    clients = UpstreamClients({"https_proxy": "socks5://h:1"})
    with pytest.raises(UpstreamConfigError, match="https_proxy"):
        clients.client_for("p", UpstreamLimits(max_connections=1))


@pytest.mark.parametrize(
    ("no_proxy", "bypassed", "proxied"),
    [
        ("*", ["a.test", "127.0.0.1"], []),
        ("example.com", ["example.com", "api.example.com"], ["notexample.com", "example.org"]),
        (".example.com", ["api.example.com"], ["example.com"]),
        ("*.example.com", ["api.example.com"], ["example.com"]),
        ("example.com:8443", ["example.com:8443"], ["example.com"]),
        ("10.0.0.0/8, 192.168.1.5", ["10.2.3.4", "192.168.1.5"], ["11.0.0.1", "192.168.1.6"]),
        (" localhost ,,", ["localhost"], ["localhost.evil.test.x"]),
        ("http://plain.test", ["http://plain.test"], ["plain.test"]),
    ],
)
def test_no_proxy_rules(no_proxy: str, bypassed: list[str], proxied: list[str]) -> None:
    s = ProxySettings.from_environ(
        {"HTTPS_PROXY": "http://p:1", "HTTP_PROXY": "http://p:1", "no_proxy": no_proxy}
    )

    def origin(text: str) -> Origin:
        scheme = "https"
        if "://" in text:
            scheme, text = text.split("://")
        host, _, port = text.partition(":")
        return Origin(scheme, host, int(port) if port else 443)

    for name in bypassed:
        assert s.proxy_for(origin(name)) is None, name
    for name in proxied:
        assert s.proxy_for(origin(name)) is not None, name


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    return context


async def fetch(c: UpstreamClient, base: str) -> bytes:
    response = await c.send("GET", join_url(base, b"/v1/models"), [(b"x-k", b"v")], b"")
    try:
        return await response.aread()
    finally:
        await response.aclose()


async def test_https_upstreams_go_through_connect_with_proxy_authorization(nursery, ca) -> None:
    upstream = await start_server(nursery, keep_alive_ok, tls=tls_server(ca))
    proxy = await start_connect_proxy(nursery)
    environ = {"HTTPS_PROXY": f"http://bob:pw@127.0.0.1:{proxy.port}"}
    c = UpstreamClient(
        "p", UpstreamLimits(max_connections=2), ca_pem=ca.cert_pem.bytes().decode(), environ=environ
    )
    base = f"https://localhost:{upstream.port}"
    assert await fetch(c, base) == b"ok"
    assert await fetch(c, base) == b"ok"  # the tunnel is kept alive
    assert len(proxy.heads) == 1
    line, *headers = proxy.heads[0].split(b"\r\n")
    assert line == f"CONNECT localhost:{upstream.port} HTTP/1.1".encode()
    assert b"proxy-authorization: Basic " + base64.b64encode(b"bob:pw") in headers
    # Inside the tunnel the upstream sees no proxy header.
    assert [k for k, _ in upstream.seen[0].headers] == [b"host", b"x-k"]


async def test_no_proxy_sends_the_request_direct(nursery, ca) -> None:
    upstream = await start_server(nursery, keep_alive_ok, tls=tls_server(ca))
    proxy = await start_connect_proxy(nursery)
    environ = {"HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}", "NO_PROXY": "localhost"}
    c = UpstreamClient(
        "p", UpstreamLimits(max_connections=2), ca_pem=ca.cert_pem.bytes().decode(), environ=environ
    )
    assert await fetch(c, f"https://localhost:{upstream.port}") == b"ok"
    assert proxy.heads == [] and upstream.connections == 1


async def test_http_upstreams_use_absolute_form_through_http_proxy(nursery) -> None:
    proxy = await start_connect_proxy(nursery)
    environ = {"http_proxy": f"http://u:p@127.0.0.1:{proxy.port}"}
    c = UpstreamClient("p", UpstreamLimits(max_connections=2), environ=environ)
    assert await fetch(c, "http://api.test:8000/base") == b"from proxy"
    line, *headers = proxy.heads[0].split(b"\r\n")
    assert line == b"GET http://api.test:8000/base/v1/models HTTP/1.1"
    assert headers[0] == b"host: api.test:8000"
    assert b"proxy-authorization: Basic " + base64.b64encode(b"u:p") in headers


async def test_a_refused_connect_is_a_connect_error_without_credentials(nursery) -> None:
    proxy = await start_connect_proxy(nursery, refuse=407)
    environ = {"HTTPS_PROXY": f"http://bob:s3cret@127.0.0.1:{proxy.port}"}
    c = UpstreamClient("p", UpstreamLimits(max_connections=2), environ=environ)
    with pytest.raises(ConnectError, match="refused CONNECT to api.test:443: 407") as caught:
        await fetch(c, "https://api.test")
    assert "s3cret" not in str(caught.value) and "bob" not in str(caught.value)
    assert c.pool.open_connections == 0
