"""Many concurrent SSE streams from one asyncio process, each chunk arrival timestamped.

    python bench/sse_client.py --port P --path /v1/chat/completions --auth 'Bearer x' \
        --model paced-64x20 --streams 256 --ramp 0.5

Runs in its own process (so it never shares a core's event loop with the orchestrator) and
prints one JSON line: per stream the time to first chunk (from before connect) and the
gaps between reads that carried event bytes; plus errors. A stream ends at ``[DONE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time


class StreamProtocol(asyncio.Protocol):
    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.head = b""
        self.status = 0
        self.in_body = False
        self.arrivals: list[float] = []
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(self.head[9:12])
            data, self.in_body = self.head[end + 4 :], True
            if self.status != 200:
                self._finish()
                return
        if b"data:" in data:
            self.arrivals.append(now)
        window = self.tail + data
        if b"[DONE]" in window:
            self._finish()
        self.tail = window[-16:]

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError("closed before [DONE]"))


async def one_stream(port: int, request: bytes, delay: float, timeout: float) -> dict:
    await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    done: asyncio.Future[None] = loop.create_future()
    try:
        transport, proto = await asyncio.wait_for(
            loop.create_connection(lambda: StreamProtocol(done), "127.0.0.1", port), timeout
        )
    except (TimeoutError, OSError) as exc:
        return {"error": f"connect: {type(exc).__name__}"}
    transport.write(request)
    try:
        await asyncio.wait_for(done, timeout)
    except (TimeoutError, OSError) as exc:
        return {"error": f"stream: {type(exc).__name__}", "chunks": len(proto.arrivals)}
    finally:
        transport.close()
    if proto.status != 200:
        return {"error": f"status {proto.status}"}
    arr = proto.arrivals
    return {
        "ttfb_ms": (arr[0] - t0) * 1000 if arr else None,
        "gaps_ms": [round((b - a) * 1000, 3) for a, b in zip(arr, arr[1:], strict=False)],
        "chunks": len(arr),
    }


async def run(args: argparse.Namespace) -> dict:
    body = json.dumps(
        {
            "model": args.model,
            "stream": True,
            "messages": [{"role": "user", "content": "Count slowly."}],
        }
    ).encode()
    request = (
        f"POST {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {args.auth}\r\n"
        f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    step = args.ramp / max(1, args.streams)
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(one_stream(args.port, request, i * step, args.timeout) for i in range(args.streams))
    )
    return {
        "streams": args.streams,
        "wall_s": round(time.perf_counter() - t0, 3),
        "results": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--auth", required=True)
    parser.add_argument("--model", default="paced-64x20")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--ramp", type=float, default=0.5, help="seconds to spread starts over")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    json.dump(asyncio.run(run(args)), sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
