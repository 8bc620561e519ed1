"""Reference points: the HTTP stack the bridge was built on until it got its own serving
core (hypercorn's trio worker, configured as the bridge configured it). Needs hypercorn,
a bench-only dependency (``pip install -e .[bench]``):

- ``hello``: a raw ASGI app that reads the body and answers a fixed ~600-byte JSON: the
  ceiling of hypercorn on trio, no upstream at all;
- ``proxy``: a raw ASGI app that forwards the request with httpx2 to the upstream and streams
  the answer back, no auth, no key pool, no breaker, no metrics: the ceiling of
  hypercorn + httpx2 on trio, i.e. what the bridge could reach if its own code were free;
- ``proxy-h11``: the same with httpx2 replaced by a bare h11 keep-alive pool
  (``bench/lean_proxy.py``): what hypercorn alone leaves on the table.

    python bench/stack_apps.py hello --port 18100
    python bench/stack_apps.py proxy --port 18101 --upstream http://127.0.0.1:18001
    python bench/stack_apps.py proxy-h11 --port 18102 --upstream http://127.0.0.1:18001
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import httpx2
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.mock_upstream import _COMPLETION  # noqa: E402

HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_COMPLETION)).encode()),
]
_SKIP = {b"host", b"content-length", b"connection", b"authorization"}


def hypercorn_config(bind: str, *, graceful_timeout: float) -> Config:
    """The config the bridge ran hypercorn with before its own core."""
    config = Config()
    config.bind = [bind]
    config.accesslog = None
    config.graceful_timeout = graceful_timeout
    config.keep_alive_max_requests = 1_000_000
    config.keep_alive_timeout = 75
    config.include_server_header = False
    config.backlog = 1024
    return config


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def hello_app():
    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        await _body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": _COMPLETION})

    return app


def proxy_app(upstream: str):
    client = httpx2.AsyncClient(
        limits=httpx2.Limits(max_connections=1024, max_keepalive_connections=1024),
        timeout=httpx2.Timeout(60.0),
        trust_env=False,
    )
    client.headers.clear()
    base = httpx2.URL(upstream)

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        body = await _body(receive)
        path = scope["raw_path"].split(b"/v1", 1)[-1]
        headers = [(k, v) for k, v in scope["headers"] if k not in _SKIP]
        headers.append((b"authorization", b"Bearer sk-bench-pool-key-1"))
        request = client.build_request(
            scope["method"], base.copy_with(raw_path=b"/v1" + path), content=body, headers=headers
        )
        response = await client.send(request, stream=True)
        try:
            out = [
                (k, v)
                for k, v in response.headers.raw
                if k.lower() not in (b"transfer-encoding", b"connection")
            ]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": out}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    return app


def proxy_h11_app(upstream: str):
    from bench.lean_proxy import UpstreamPool, upstream_path

    pool = UpstreamPool(httpx2.URL(upstream).port or 80)
    skip = {k.decode() for k in _SKIP} | {"transfer-encoding"}

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        body = await _body(receive)
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k.decode() not in skip]
        async for status, head, chunk in pool.exchange(
            scope["method"], upstream_path(scope["raw_path"].decode()), headers, body
        ):
            if status:
                await send({"type": "http.response.start", "status": status, "headers": head})
            else:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="hypercorn-on-trio reference apps")
    parser.add_argument("mode", choices=["hello", "proxy", "proxy-h11"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", default="http://127.0.0.1:18001")
    args = parser.parse_args()
    apps = {
        "hello": hello_app,
        "proxy": lambda: proxy_app(args.upstream),
        "proxy-h11": lambda: proxy_h11_app(args.upstream),
    }
    app = apps[args.mode]()
    config = hypercorn_config(f"127.0.0.1:{args.port}", graceful_timeout=1.0)

    async def run() -> None:
        await serve(app, config, mode="asgi")

    trio.run(run)


if __name__ == "__main__":
    main()
