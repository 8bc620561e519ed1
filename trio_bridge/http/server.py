"""Serving an ASGI app with hypercorn's trio worker, tuned for long LLM streams."""

from __future__ import annotations

import logging

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from .asgi import Receive, Scope, Send

log = logging.getLogger("trio_bridge.server")


def hypercorn_config(bind: str, *, graceful_timeout: float) -> Config:
    config = Config()
    config.bind = [bind]
    config.accesslog = None  # we write our own access line
    config.errorlog = logging.getLogger("trio_bridge.hypercorn")
    config.graceful_timeout = graceful_timeout
    config.keep_alive_max_requests = 1_000_000
    config.keep_alive_timeout = 75
    config.include_server_header = False
    config.backlog = 1024
    return config


async def serve_app(
    app,
    bind: str,
    shutdown: trio.Event,
    graceful_timeout: float,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set; then stop accepting and give in-flight requests
    ``graceful_timeout`` seconds. ``task_status.started`` gets the bound addresses."""
    config = hypercorn_config(bind, graceful_timeout=graceful_timeout)

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        await app(scope, receive, send)

    await serve(asgi, config, shutdown_trigger=shutdown.wait, task_status=task_status, mode="asgi")
