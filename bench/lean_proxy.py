"""A lean reference proxy on trio: h11 on both sides, no hypercorn, no httpx2.

    python bench/lean_proxy.py --port 18102 --upstream-port 18001

Server: ``trio_bridge.testing.http11`` (one task per connection, h11). Upstream: a keep-alive
pool of trio sockets driven by h11. Forwards the request, streams the answer back one chunk
per upstream read. No auth, no pool, no breaker, no metrics, no disconnect watch: it shows
what the trio runtime plus h11 cost, i.e. the ceiling a leaner HTTP layer could reach.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import h11
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from trio_bridge.testing.http11 import Request, Responder, open_listeners, serve_listeners  # noqa: E402

_RECEIVE = 65536
_SKIP = {"host", "content-length", "connection", "authorization", "transfer-encoding"}
_RESPONSE_SKIP = {b"transfer-encoding", b"connection"}


class UpstreamPool:
    """Idle keep-alive connections to one upstream, reused LIFO."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[trio.SocketStream, h11.Connection]] = []

    async def exchange(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> AsyncIterator[tuple[int, list, bytes]]:
        """Send one request; yield (status, headers, b"") once, then (0, [], chunk) per read."""
        if self.idle:
            stream, conn = self.idle.pop()
        else:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
            conn = h11.Connection(h11.CLIENT)
        headers = [
            *headers,
            ("host", "127.0.0.1"),
            ("content-length", str(len(body))),
            ("authorization", "Bearer sk-bench-pool-key-1"),
        ]
        data = conn.send(h11.Request(method=method, target=path, headers=headers))
        data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        await stream.send_all(data)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(_RECEIVE))
            elif type(event) is h11.Response:
                yield (
                    event.status_code,
                    [(k, v) for k, v in event.headers if k not in _RESPONSE_SKIP],
                    b"",
                )
            elif type(event) is h11.Data:
                yield 0, [], event.data
            elif type(event) is h11.EndOfMessage:
                conn.start_next_cycle()
                self.idle.append((stream, conn))
                return
            else:
                await stream.aclose()
                return


def upstream_path(target: str) -> str:
    return "/v1" + target.split("/v1", 1)[-1]


def h11_handler(pool: UpstreamPool):
    """The lean server's handler: forward and relay, one chunk per upstream read."""

    async def forward(request: Request, resp: Responder) -> None:
        headers = [(k, v) for k, v in request.headers if k not in _SKIP]
        started = False
        async for status, head, chunk in pool.exchange(
            request.method, upstream_path(request.target), headers, request.body
        ):
            if status:
                await resp.start(status, [(k.decode(), v.decode()) for k, v in head])
                started = True
            else:
                await resp.send(chunk)
        if started:
            await resp.end()

    return forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args()
    pool = UpstreamPool(args.upstream_port)

    async def run() -> None:
        listeners, _ = await open_listeners("127.0.0.1", args.port)
        await serve_listeners(h11_handler(pool), listeners)

    trio.run(run)


if __name__ == "__main__":
    main()
