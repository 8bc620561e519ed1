"""A fast mock OpenAI upstream for benchmarks: asyncio protocol, canned answers, no framework.

    python bench/mock_upstream.py --port 18001

- ``POST .../chat/completions`` with ``"stream": true`` answers an SSE stream; the model name
  sets its shape: ``paced-64x20`` sends 64 content chunks 20 ms apart (``paced-NxMS``), any
  other model sends 8 chunks at once. ``stream_options.include_usage`` is honoured like the
  real API (every chunk carries ``"usage": null``, then a usage-only chunk).
- Any other ``POST .../chat/completions`` answers a blocking ``chat.completion`` (~600 bytes).
- Anything else answers a small models list (used to observe reloads).

Much faster than the trio/h11 fake of ``trio_bridge.testing`` (which favours fidelity), so it
is never the bottleneck; ``bench/run.py`` measures its ceiling in every run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import socket
import time

_PACED = re.compile(r"paced-(\d+)x(\d+)")

_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench0000000000000000",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "The quick brown fox jumps over the lazy dog. " * 4,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 19,
            "completion_tokens": 40,
            "total_tokens": 59,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_bench",
    },
    separators=(",", ":"),
).encode()
_MODELS = b'{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","owned_by":"bench"}]}'


def _response(status: str, content_type: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 "
        + status.encode()
        + b"\r\ncontent-type: "
        + content_type
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nx-request-id: req_bench\r\n\r\n"
        + body
    )


COMPLETION_RESPONSE = _response("200 OK", b"application/json", _COMPLETION)
MODELS_RESPONSE = _response("200 OK", b"application/json", _MODELS)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"x-request-id: req_bench\r\ntransfer-encoding: chunked\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_events(model: str, count: int, include_usage: bool) -> list[bytes]:
    """``count`` content chunks (the first carries the role); the finish chunk, the optional
    usage chunk and ``[DONE]`` ride with the last one."""
    usage = ',"usage":null' if include_usage else ""
    head = (
        'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
        f'"model":"{model}","system_fingerprint":"fp_bench","choices":[{{"index":0,"delta":'
    )
    events = []
    for i in range(count):
        delta = '{"role":"assistant","content":"tok"}' if i == 0 else f'{{"content":" tok{i}"}}'
        events.append(f'{head}{delta},"logprobs":null,"finish_reason":null}}]{usage}}}\n\n')
    tail = f'{head}{{}},"logprobs":null,"finish_reason":"stop"}}]{usage}}}\n\n'
    if include_usage:
        tail += (
            'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":'
            f'1700000000,"model":"{model}","choices":[],"usage":{{"prompt_tokens":19,'
            f'"completion_tokens":{count},"total_tokens":{19 + count}}}}}\n\n'
        )
    tail += "data: [DONE]\n\n"
    events[-1] += tail
    return [e.encode() for e in events]


class MockProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests are answered in order."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False  # an SSE stream is being written

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def _drain(self) -> None:
        while self.transport is not None and not self.busy:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            lower = head.lower()
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                j = lower.find(b"\r\n", i + 2)
                length = int(lower[i + 17 : j if j >= 0 else None])
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[end + 4 : total]
            self.buffer = self.buffer[total:]
            self._answer(head, body)

    def _answer(self, head: bytes, body: bytes) -> None:
        line = head[: head.find(b"\r\n")]
        assert self.transport is not None
        if not (line.startswith(b"POST ") and b"/chat/completions" in line):
            self.transport.write(MODELS_RESPONSE)
            return
        if b'"stream"' not in body:
            self.transport.write(COMPLETION_RESPONSE)
            return
        payload = json.loads(body)
        if payload.get("stream") is not True:
            self.transport.write(COMPLETION_RESPONSE)
            return
        model = str(payload.get("model", "gpt-4o-mini"))
        options = payload.get("stream_options") or {}
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        paced = _PACED.fullmatch(model)
        count, pace = (int(paced[1]), int(paced[2]) / 1000) if paced else (8, 0.0)
        events = sse_events(model, count, include_usage)
        if pace <= 0:
            self.transport.write(SSE_HEAD + b"".join(_chunk(e) for e in events) + b"0\r\n\r\n")
            return
        self.busy = True
        asyncio.get_running_loop().create_task(self._paced(events, pace))

    async def _paced(self, events: list[bytes], pace: float) -> None:
        """Write one event per ``pace`` on an absolute schedule (no drift from late wake-ups)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, event in enumerate(events):
            if i:
                await asyncio.sleep(max(0.0, start + i * pace - loop.time()))
            if self.transport is None:
                return
            data = _chunk(event)
            if i == 0:
                data = SSE_HEAD + data
            if i == len(events) - 1:
                data += b"0\r\n\r\n"
            self.transport.write(data)
        self.busy = False
        if self.buffer:
            self._drain()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockProtocol, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://{host}:{bound} at {time.time():.3f}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18001)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
