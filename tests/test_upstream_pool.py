"""The upstream HTTP/1.1 client over real loopback sockets: keep-alive, body framings,
limits, idle expiry, stale connections, cancellation, errors."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from tests.support.upstream_servers import Wire, keep_alive_ok, ok, reset, start_server
from trio_bridge.upstream import (
    ConnectError,
    PoolTimeout,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    UpstreamClient,
    UpstreamLimits,
    join_url,
)


def client(max_connections: int = 8, **kw) -> UpstreamClient:
    return UpstreamClient("test", UpstreamLimits(max_connections=max_connections, **kw))


def url(port: int, tail: bytes = b"/v1/chat") -> object:
    return join_url(f"http://127.0.0.1:{port}/base/", tail)


async def get(c: UpstreamClient, port: int, tail: bytes = b"/v1/chat", body: bytes = b"") -> bytes:
    response = await c.send("POST", url(port, tail), [(b"x-test", b"1")], body)
    try:
        return b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()


async def test_keep_alive_reuses_one_connection_and_sends_exactly_the_given_headers(
    nursery,
) -> None:
    server = await start_server(nursery, keep_alive_ok)
    c = client()
    for _ in range(3):
        assert await get(c, server.port, b"/v1/../a%2F?q=1", b'{"x":1}') == b"ok"
    assert server.connections == 1
    seen = server.seen[0]
    assert seen.target == b"/base/v1/../a%2F?q=1"  # never normalised
    assert seen.headers == [
        (b"host", f"127.0.0.1:{server.port}".encode()),
        (b"x-test", b"1"),
        (b"content-length", b"7"),
    ]
    assert seen.body == b'{"x":1}'
    assert c.pool.open_connections == 1 and c.pool.idle_connections == 1


async def test_head_comes_back_before_the_body_and_chunks_stream_as_they_arrive(nursery) -> None:
    release = trio.Event()

    async def chunked(wire: Wire) -> None:
        await wire.read_request()
        await wire.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nX-Up: a\r\n\r\n")
        await release.wait()
        await wire.send(b"5\r\nhello\r\n")
        await release.wait()
        await wire.send(b"6\r\n world\r\n0\r\n\r\n")
        await keep_alive_ok(wire)

    server = await start_server(nursery, chunked)
    c = client()
    response = await c.send("GET", url(server.port), [], b"")
    assert response.status_code == 200 and response.headers.get("x-up") == "a"
    assert response.headers.multi_items()[0] == ("transfer-encoding", "chunked")
    chunks = response.aiter_raw()
    release.set()
    assert await chunks.__anext__() == b"hello"
    assert await chunks.__anext__() == b" world"
    with pytest.raises(StopAsyncIteration):
        await chunks.__anext__()
    await response.aclose()
    assert server.seen[0].headers == [(b"host", f"127.0.0.1:{server.port}".encode())]
    assert c.pool.idle_connections == 1  # a fully read chunked body keeps the connection


async def test_close_delimited_body_is_read_to_eof_and_the_connection_dropped(nursery) -> None:
    async def close_delimited(wire: Wire) -> None:
        await wire.read_request()
        await wire.send(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\npart one, ")
        await wire.send(b"part two")

    server = await start_server(nursery, close_delimited)
    c = client()
    assert await get(c, server.port) == b"part one, part two"
    assert c.pool.open_connections == 0


async def test_a_body_shorter_than_its_content_length_is_an_error(nursery) -> None:
    async def short(wire: Wire) -> None:
        await wire.read_request()
        await wire.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")

    server = await start_server(nursery, short)
    c = client()
    with pytest.raises(RemoteProtocolError, match="before the body was complete"):
        await get(c, server.port)
    assert c.pool.open_connections == 0


async def test_a_server_that_resets_before_the_head_is_a_read_error_not_retried(nursery) -> None:
    async def rst(wire: Wire) -> None:
        await wire.read_request()
        reset(wire.stream)

    server = await start_server(nursery, rst)
    c = client()
    with pytest.raises(ReadError):
        await get(c, server.port)
    assert server.connections == 1 and c.pool.open_connections == 0


async def test_a_server_that_closes_before_the_head_is_a_protocol_error(nursery) -> None:
    async def close(wire: Wire) -> None:
        await wire.read_request()

    server = await start_server(nursery, close)
    with pytest.raises(RemoteProtocolError, match="without answering"):
        await get(client(), server.port)


async def test_a_reused_connection_the_server_dropped_is_retried_once_on_a_fresh_one(
    nursery,
) -> None:
    async def answer_once_then_drop(wire: Wire) -> None:
        await wire.read_request()
        await wire.send(ok(b"first"))
        wire.next_cycle()
        if wire.number == 1:
            await wire.read_request()  # the second request arrives; no answer, close
            return
        await keep_alive_ok(wire)

    server = await start_server(nursery, answer_once_then_drop)
    c = client()
    assert await get(c, server.port) == b"first"
    assert await get(c, server.port) == b"first"  # sent twice: connection 1, then 2
    assert [s.connection for s in server.seen] == [1, 1, 2]


async def test_no_retry_once_a_byte_of_the_answer_arrived(nursery) -> None:
    async def half_head_on_reuse(wire: Wire) -> None:
        await wire.read_request()
        await wire.send(ok())
        wire.next_cycle()
        await wire.read_request()
        await wire.send(b"HTTP/1.1 200")

    server = await start_server(nursery, half_head_on_reuse)
    c = client()
    assert await get(c, server.port) == b"ok"
    with pytest.raises(RemoteProtocolError):
        await get(c, server.port)
    assert server.connections == 1 and len(server.seen) == 2


async def test_an_idle_connection_closed_by_the_server_is_not_used(nursery) -> None:
    async def one_per_connection(wire: Wire) -> None:
        await wire.read_request()
        await wire.send(ok())  # keep-alive advertised, then closed while idle

    server = await start_server(nursery, one_per_connection)
    c = client()
    assert await get(c, server.port) == b"ok"
    await trio.testing.wait_all_tasks_blocked()
    assert await get(c, server.port) == b"ok"
    assert server.connections == 2 and len(server.seen) == 2  # nothing sent into the dead one


async def test_connection_limit_waits_one_second_then_pool_timeout(socket_clock, nursery) -> None:
    server = await start_server(nursery, keep_alive_ok)
    c = client(max_connections=1)
    held = await c.send("GET", url(server.port), [], b"")
    started = trio.current_time()
    with pytest.raises(PoolTimeout, match="within 1s"):
        await c.send("GET", url(server.port), [], b"")
    assert 1.0 <= trio.current_time() - started < 1.2
    assert c.pool.waiting == 0
    # A slot freed within the wait is handed over (the same connection, reused).
    async with trio.open_nursery() as inner:

        async def release_later() -> None:
            await trio.sleep(0.5)
            await held.aread()
            await held.aclose()

        inner.start_soon(release_later)
        assert await get(c, server.port) == b"ok"
    assert server.connections == 1


async def test_waiters_for_other_origins_take_over_idle_slots(nursery) -> None:
    a = await start_server(nursery, keep_alive_ok)
    b = await start_server(nursery, keep_alive_ok)
    c = client(max_connections=1)
    assert await get(c, a.port) == b"ok"
    assert await get(c, b.port) == b"ok"  # the idle connection to a is closed for b
    assert c.pool.open_connections == 1 and a.connections == b.connections == 1


async def test_idle_connections_expire_after_keepalive_expiry(socket_clock, nursery) -> None:
    server = await start_server(nursery, keep_alive_ok)
    c = client()
    assert await get(c, server.port) == b"ok"
    await trio.sleep(29)
    assert await get(c, server.port) == b"ok"
    assert server.connections == 1
    await trio.sleep(31)
    assert await get(c, server.port) == b"ok"  # lazily: the expired one is not used
    assert server.connections == 2
    await trio.sleep(31)
    assert c.sweep() == 1 and c.pool.open_connections == 0  # the sweep closes it


async def test_read_timeout_is_a_gap_between_chunks(socket_clock, nursery) -> None:
    async def trickle(wire: Wire) -> None:
        await wire.read_request()
        await wire.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(5):
            await trio.sleep(4)
            await wire.send(b"1\r\nx\r\n")
        await trio.sleep(60)

    server = await start_server(nursery, trickle)
    c = client(read_timeout=5)
    response = await c.send("GET", url(server.port), [], b"")
    got = b""
    with pytest.raises(ReadTimeout):
        async for chunk in response.aiter_raw():
            got += chunk
    await response.aclose()
    assert got == b"xxxxx" and c.pool.open_connections == 0


async def test_connect_refused_is_a_connect_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    c = client()
    with pytest.raises(ConnectError, match=f"cannot connect to http://127.0.0.1:{port}"):
        await c.send("GET", url(port), [], b"")
    assert c.pool.open_connections == 0


async def test_a_cancelled_body_read_discards_the_connection(nursery) -> None:
    async def slow_body(wire: Wire) -> None:
        await wire.read_request()
        await wire.send(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab")
        await trio.sleep_forever()

    server = await start_server(nursery, slow_body)
    c = client()
    response = await c.send("GET", url(server.port), [], b"")
    with trio.move_on_after(0.05):
        async for _ in response.aiter_raw():
            pass
    await response.aclose()
    assert c.pool.open_connections == 0 and c.pool.idle_connections == 0


async def test_cancellation_at_random_points_leaves_the_pool_consistent(nursery) -> None:
    """Hundreds of requests cancelled after a random number of scheduler rounds (connect,
    send, head wait, body), two at a time on a 2-slot pool; afterwards every slot is free,
    no cancelled connection is reused, and requests still succeed."""

    async def varied(wire: Wire) -> None:
        while (seen := await wire.read_request()) is not None:
            mode = seen.target.rsplit(b"/", 1)[1]
            if mode == b"slowhead":
                await trio.lowlevel.checkpoint()
                await trio.testing.wait_all_tasks_blocked(0)
            await wire.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for _ in range(3):
                await trio.lowlevel.checkpoint()
                await wire.send(b"2\r\nab\r\n")
            await wire.send(b"0\r\n\r\n")
            wire.next_cycle()

    server = await start_server(nursery, varied)
    c = client(max_connections=2)
    rng = random.Random(8)
    outcomes = {"done": 0, "cancelled": 0}

    async def one(tail: bytes, rounds: int) -> None:
        with trio.CancelScope() as scope:

            async def cancel_after() -> None:
                for _ in range(rounds):
                    await trio.lowlevel.checkpoint()
                scope.cancel()

            async with trio.open_nursery() as inner:
                inner.start_soon(cancel_after)
                body = await get(c, server.port, tail)
                assert body == b"ababab"
                outcomes["done"] += 1
                inner.cancel_scope.cancel()
        if scope.cancelled_caught:
            outcomes["cancelled"] += 1

    for _ in range(150):
        async with trio.open_nursery() as batch:
            for _ in range(3):
                tail = rng.choice([b"/fast", b"/slowhead"])
                batch.start_soon(one, tail, rng.randrange(0, 40))
        pool = c.pool
        assert pool.waiting == 0
        assert pool.open_connections == pool.idle_connections <= 2
    assert outcomes["cancelled"] > 50 and outcomes["done"] > 20
    # Both slots usable at once afterwards.
    async with trio.open_nursery() as last:
        for _ in range(2):
            last.start_soon(get, c, server.port)
    assert await get(c, server.port) == b"ababab"
