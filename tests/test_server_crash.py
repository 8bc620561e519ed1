"""Issue 8's crash: a head with ``Content-Length: 100``, no body, a half-close, while the app
answers early (401/404/413), took hypercorn's trio worker and the whole daemon down. On our
core the answer arrives, the connection closes, and the daemon stays up on both listeners."""

from __future__ import annotations

import hashlib
from pathlib import Path

import trio

from tests.support import start_bridge, write_yaml
from trio_bridge.testing import FakeUpstream

TOKEN = "tb-crash-client-token-0123456789abcdefghijklmnop"
ADMIN_TOKEN = "admin-token-0123456789"
ATTEMPTS = 2000
CLIENTS = 4


def config(fake: FakeUpstream, max_body: int) -> str:
    return f"""
bridge: {{auth: tokens, max_body_bytes: {max_body}}}
providers:
  - name: anthropic
    type: anthropic
    base_url: {fake.base_url}
    keys: [{{value: sk-ant-pool-0123456789}}]
clients:
  - id: ci
    token_sha256: {hashlib.sha256(TOKEN.encode()).hexdigest()}
"""


async def half_closed_post(port: int, target: str, extra: str = "") -> bytes:
    """The reproduction: head, no body, SHUT_WR, read until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n{extra}\r\n".encode()
        )
        await stream.send_eof()
        return await read_until_close(stream)


async def read_until_close(stream: trio.SocketStream) -> bytes:
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_half_closed_heads_with_early_answers_never_take_the_daemon_down(
    nursery, tmp_path: Path, fake_anthropic
) -> None:
    main_dir, small_dir = tmp_path / "main", tmp_path / "small"
    main_dir.mkdir()
    small_dir.mkdir()
    write_yaml(main_dir, "b.yaml", config(fake_anthropic, 32 << 20))
    write_yaml(small_dir, "b.yaml", config(fake_anthropic, 50))
    main = await start_bridge(nursery, main_dir, admin_token=ADMIN_TOKEN)
    small = await start_bridge(nursery, small_dir)
    auth = f"Authorization: Bearer {TOKEN}\r\n"
    # (port, target, extra headers, the early status expected)
    cases = [
        (port_of(main.url), "/anthropic/v1/messages", "", b"401"),
        (port_of(main.url), "/nope/v1/messages", auth, b"404"),
        (port_of(small.url), "/anthropic/v1/messages", auth, b"413"),
        (port_of(main.admin), "/-/reload", "", b"401"),
        (port_of(main.admin), "/nothing", "", b"404"),
    ]
    statuses: dict[bytes, int] = {}
    failures: list[bytes] = []
    done = 0

    async def worker(n: int) -> None:
        nonlocal done
        for i in range(n, ATTEMPTS, CLIENTS):
            port, target, extra, status = cases[i % len(cases)]
            data = await half_closed_post(port, target, extra)
            if data.startswith(b"HTTP/1.1 " + status + b" "):
                statuses[status] = statuses.get(status, 0) + 1
            else:
                failures.append(data[:80])
            done += 1

    health_checks = 0

    async def health(stop: trio.Event) -> None:
        nonlocal health_checks
        while not stop.is_set():
            for url in (main.url, main.admin, small.url):
                data = await get_healthz(port_of(url))
                assert data.startswith(b"HTTP/1.1 200 "), data[:80]
                health_checks += 1
            await trio.sleep(0.02)

    stop = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as load:
            load.start_soon(health, stop)
            async with trio.open_nursery() as workers:
                for n in range(CLIENTS):
                    workers.start_soon(worker, n)
            stop.set()
    assert failures == []
    assert done == ATTEMPTS
    assert set(statuses) == {b"401", b"404", b"413"}
    assert health_checks >= 3
    # Both daemons still serve both listeners.
    for url in (main.url, main.admin, small.url, small.admin):
        assert (await get_healthz(port_of(url))).startswith(b"HTTP/1.1 200 ")


async def get_healthz(port: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return await read_until_close(stream)


async def test_a_websocket_upgrade_gets_404_and_the_connection_lives(
    nursery, tmp_path: Path, fake_anthropic
) -> None:
    write_yaml(tmp_path, "b.yaml", config(fake_anthropic, 1 << 20))
    bridge = await start_bridge(nursery, tmp_path)
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(bridge.url))
    async with stream:
        await stream.send_all(
            f"GET /anthropic/v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}"
            "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
            + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        data = b""
        while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b'{"status":"ok"}'):
            data += await stream.receive_some(65536)
    assert data.startswith(b"HTTP/1.1 404 ")
    assert b"HTTP/1.1 200 " in data
