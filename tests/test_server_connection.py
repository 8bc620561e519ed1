"""The serving core's connection rules (contract section 5, "Connections") on raw sockets."""

from __future__ import annotations

import errno
import json
import logging
import socket
import struct

import h11
import trio
import trio.testing

from trio_bridge.http.asgi import read_body, send_response
from trio_bridge.server import HTTPServer, Limits, open_tcp_listeners


class Probe:
    """What the test app saw."""

    def __init__(self) -> None:
        self.disconnected = trio.Event()
        self.stream_started = trio.Event()


async def app(scope, receive, send, probe: Probe) -> None:
    path = scope["raw_path"]
    if path == b"/boom":
        raise RuntimeError("a bug in the app")
    if path == b"/early":  # answers before reading the body (like a 401)
        return await send_response(send, 401, b'{"error":"no"}')
    if path == b"/stream":  # streams until the client goes away
        await send({"type": "http.response.start", "status": 200, "headers": []})
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                probe.disconnected.set()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            probe.stream_started.set()
            while True:
                await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
                await trio.sleep(0.01)
    if path == b"/half":  # a streamed body left unfinished
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"half", "more_body": True})
        return
    if path == b"/slow":
        await trio.sleep(0.2)
    body = await read_body(receive, 1 << 22)
    doc = {"method": scope["method"], "path": path.decode(), "body": body.decode("latin-1")}
    await send_response(send, 200, json.dumps(doc).encode())


async def start(
    nursery: trio.Nursery, limits: Limits | None = None
) -> tuple[HTTPServer, int, Probe]:
    probe = Probe()
    server = HTTPServer(lambda s, r, se: app(s, r, se, probe), limits or Limits(), name="test")
    listeners = await open_tcp_listeners("127.0.0.1:0")
    await nursery.start(server.serve, listeners)
    return server, listeners[0].address[1], probe


async def connect(port: int) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port)


async def read_until_close(stream: trio.SocketStream) -> bytes:
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


class Reader:
    """Parses responses off a raw stream with h11's client side, one cycle at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    async def response(self, method: bytes = b"GET") -> tuple[h11.Response, bytes]:
        conn = self.conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        conn.send(h11.Request(method=method, target=b"/", headers=[(b"host", b"x")]))
        conn.send(h11.EndOfMessage())
        head: h11.Response | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.stream.receive_some(65536))
            elif type(event) is h11.Response:
                head = event
            elif type(event) is h11.Data:
                body += event.data
            elif type(event) is h11.EndOfMessage:
                assert head is not None
                return head, body
            elif type(event) is h11.InformationalResponse:
                continue
            else:
                raise AssertionError(event)


def header(response: h11.Response, name: bytes) -> bytes | None:
    return next((v for n, v in response.headers if n == name), None)


GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_a_head_over_64_kib_gets_431_and_the_connection_closes(nursery) -> None:
    _, port, _ = await start(nursery)
    async with await connect(port) as s:  # just under the limit: served
        await s.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 60_000 + b"\r\n\r\n")
        response, _ = await Reader(s).response()
        assert response.status_code == 200
    async with await connect(port) as s:
        await s.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        data = await read_until_close(s)
    assert data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


async def test_a_head_trickled_past_the_header_timeout_is_closed(nursery, socket_clock) -> None:
    _, port, _ = await start(nursery, Limits(header_timeout=10))
    async with await connect(port) as s:
        t0 = trio.current_time()
        await s.send_all(b"GET / HTTP/1.1\r\n")
        closed_at = None

        async def trickle() -> None:
            try:
                for _ in range(20):
                    await trio.sleep(3)
                    await s.send_all(b"X-Slow: yes\r\n")
            except trio.BrokenResourceError:
                pass

        async with trio.open_nursery() as inner:
            inner.start_soon(trickle)
            assert await read_until_close(s) == b""
            closed_at = trio.current_time() - t0
            inner.cancel_scope.cancel()
    assert 10 <= closed_at < 12


async def test_an_idle_kept_alive_connection_closes_after_the_keepalive_timeout(
    nursery, socket_clock
) -> None:
    _, port, _ = await start(nursery, Limits(keepalive_timeout=75))
    async with await connect(port) as s:
        reader = Reader(s)
        await s.send_all(GET)
        assert (await reader.response())[0].status_code == 200
        await trio.sleep(74)  # still within the timeout: served on the same connection
        await s.send_all(GET)
        assert (await reader.response())[0].status_code == 200
        t0 = trio.current_time()
        assert await read_until_close(s) == b""
        assert 75 <= trio.current_time() - t0 < 77


async def test_beyond_max_connections_new_ones_are_accepted_and_closed(nursery) -> None:
    server, port, _ = await start(nursery, Limits(max_connections=2))
    held = [await connect(port) for _ in range(2)]
    for s in held:
        await s.send_all(GET)
        assert (await Reader(s).response())[0].status_code == 200
    async with await connect(port) as extra:
        await extra.send_all(GET)
        assert await read_until_close(extra) == b""
    assert server.refused == 1
    await held.pop().aclose()
    with trio.fail_after(5):
        while server.connections > 1:
            await trio.sleep(0.01)  # the server notices the close through the kernel
    async with await connect(port) as again:
        await again.send_all(GET)
        assert (await Reader(again).response())[0].status_code == 200
    await held[0].aclose()


async def test_pipelined_requests_are_answered_in_order(nursery) -> None:
    _, port, _ = await start(nursery)
    async with await connect(port) as s:
        await s.send_all(
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        reader = Reader(s)
        paths = [json.loads((await reader.response())[1])["path"] for _ in range(3)]
    assert paths == ["/slow", "/b", "/c"]


async def test_a_chunked_request_body_arrives_whole(nursery) -> None:
    _, port, _ = await start(nursery)
    async with await connect(port) as s:
        await s.send_all(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b"5\r\nhello\r\n", b"1\r\n \r\n", b"5\r\nworld\r\n", b"0\r\n\r\n"):
            await s.send_all(part)
            await trio.sleep(0.01)
        response, body = await Reader(s).response(b"POST")
    assert response.status_code == 200
    assert json.loads(body)["body"] == "hello world"


async def test_expect_100_continue_is_answered_before_the_body(nursery) -> None:
    _, port, _ = await start(nursery)
    async with await connect(port) as s:
        await s.send_all(
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await s.receive_some(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        await s.send_all(b"12345")
        response, body = await Reader(s).response(b"POST")
    assert response.status_code == 200 and json.loads(body)["body"] == "12345"


def reset(stream: trio.SocketStream) -> None:
    """Close with RST (SO_LINGER 0), as a crashed client or a middlebox does."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


async def test_a_reset_mid_response_ends_that_exchange_only(nursery) -> None:
    server, port, probe = await start(nursery)
    s = await connect(port)
    await s.send_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"tick" not in data:
        data += await s.receive_some(65536)
    reset(s)
    with trio.fail_after(5):
        await probe.disconnected.wait()  # the app learned, as it would to cancel upstream
    async with await connect(port) as again:
        await again.send_all(GET)
        assert (await Reader(again).response())[0].status_code == 200


async def test_garbage_gets_400_and_the_connection_closes(nursery) -> None:
    _, port, _ = await start(nursery)
    async with await connect(port) as s:
        await s.send_all(b"\x16\x03\x01\x02\x00garbage \xff\r\n\r\n")
        data = await read_until_close(s)
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in data.lower()


async def test_a_bug_in_the_app_closes_its_connection_only(nursery, caplog) -> None:
    _, port, _ = await start(nursery)
    async with await connect(port) as bystander:
        bystander_reader = Reader(bystander)
        await bystander.send_all(GET)
        assert (await bystander_reader.response())[0].status_code == 200
        with caplog.at_level(logging.DEBUG, logger="trio_bridge.server"):
            async with await connect(port) as s:
                await s.send_all(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
                data = await read_until_close(s)
        assert data.startswith(b"HTTP/1.1 500 ")
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and errors[0].exc_info is not None
        assert "a bug in the app" in str(errors[0].exc_info[1])
        await bystander.send_all(GET)  # the kept-alive neighbour still works
        assert (await bystander_reader.response())[0].status_code == 200
    async with await connect(port) as s:  # and so does a new connection
        await s.send_all(GET)
        assert (await Reader(s).response())[0].status_code == 200


async def test_an_early_answer_drops_a_small_body_and_keeps_the_connection(nursery) -> None:
    _, port, _ = await start(nursery)
    async with await connect(port) as s:
        reader = Reader(s)
        await s.send_all(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        response, _ = await reader.response(b"POST")
        assert response.status_code == 401 and header(response, b"connection") is None
        await s.send_all(b"x" * 100 + GET)  # the body arrives late; the next request works
        assert (await reader.response())[0].status_code == 200


async def test_an_early_answer_before_a_large_body_says_close_and_is_readable(nursery) -> None:
    _, port, _ = await start(nursery)
    size = 8 << 20
    async with await connect(port) as s:
        await s.send_all(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)

        async def push() -> None:
            try:
                for _ in range(size // 65536):
                    await s.send_all(b"x" * 65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async with trio.open_nursery() as inner:
            inner.start_soon(push)
            data = await read_until_close(s)
            inner.cancel_scope.cancel()
    assert data.startswith(b"HTTP/1.1 401 ")
    assert b"connection: close" in data.lower()


async def test_a_streamed_body_left_unfinished_closes_so_the_cut_shows(nursery) -> None:
    _, port, _ = await start(nursery)
    async with await connect(port) as s:
        await s.send_all(b"GET /half HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await read_until_close(s)
    assert b"transfer-encoding: chunked" in data.lower() and b"half" in data
    assert not data.endswith(b"0\r\n\r\n")


async def test_http10_keep_alive_when_asked_close_otherwise(nursery) -> None:
    _, port, _ = await start(nursery)
    async with await connect(port) as s:
        for _ in range(2):
            await s.send_all(b"GET /ten HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            data = b""
            while b'"body": ""}' not in data:
                data += await s.receive_some(65536)
            assert data.startswith(b"HTTP/1.0 200 ") or data.startswith(b"HTTP/1.1 200 ")
            assert b"connection: keep-alive" in data.lower()
    async with await connect(port) as s:
        await s.send_all(b"GET /ten HTTP/1.0\r\n\r\n")
        assert b"200" in await read_until_close(s)


async def test_head_gets_the_headers_without_a_body(nursery) -> None:
    _, port, _ = await start(nursery)
    async with await connect(port) as s:
        reader = Reader(s)
        await s.send_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        response, body = await reader.response(b"HEAD")
        assert response.status_code == 200 and body == b""
        assert int(header(response, b"content-length") or 0) > 0
        await s.send_all(GET)
        assert (await reader.response())[0].status_code == 200


class FlakyListener:
    """A listener whose first accepts fail with EMFILE, as when file descriptors run out."""

    def __init__(self, inner, failures: int) -> None:
        self.inner, self.failures = inner, failures

    async def accept(self):
        if self.failures:
            self.failures -= 1
            await trio.lowlevel.checkpoint()
            raise OSError(errno.EMFILE, "Too many open files")
        return await self.inner.accept()

    def accept_queued(self):
        return self.inner.accept_queued()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_emfile_on_accept_backs_off_and_the_listener_lives(nursery, socket_clock) -> None:
    probe = Probe()
    server = HTTPServer(lambda s, r, se: app(s, r, se, probe), Limits(), name="test")
    (listener,) = await open_tcp_listeners("127.0.0.1:0")
    flaky = FlakyListener(listener, failures=5)
    await nursery.start(server.serve, [flaky])
    async with await connect(listener.address[1]) as s:
        await s.send_all(GET)
        assert (await Reader(s).response())[0].status_code == 200
    assert flaky.failures == 0


async def test_an_upgrade_request_is_answered_without_switching(nursery) -> None:
    _, port, _ = await start(nursery)
    async with await connect(port) as s:
        reader = Reader(s)
        await s.send_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        response, _ = await reader.response()
        assert response.status_code == 200  # the app's answer; never 101
        await s.send_all(GET)
        assert (await reader.response())[0].status_code == 200
