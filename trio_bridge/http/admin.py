"""The admin listener: /metrics, /-/snapshot, /-/reload (contract section 9)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import trio

from .. import metrics
from ..masking import strip_userinfo
from ..proxymode.view import proxy_mode_document
from ..snapshot import Snapshot, SourceStatus
from ..sources.base import ReloadRequest
from ..state import BridgeState
from .asgi import Receive, Scope, Send, send_response
from .headers import first
from .health import HEALTH_PATHS, health_answer


def snapshot_document(snapshot: Snapshot, now: float) -> dict[str, Any]:
    """The JSON of ``/-/snapshot``: never a secret (key hints are masked, URLs lose userinfo).

    ``cooling_until`` is given in wall-clock seconds (converted from trio's clock)."""
    import time

    wall_offset = time.time() - now
    providers = []
    for p in sorted(snapshot.providers.values(), key=lambda p: p.name):
        keys = []
        if p.pool is not None:
            for view in p.pool.states(now):
                keys.append(
                    {
                        "index": view.index,
                        "hint": view.hint,
                        "state": view.state,
                        "cooling_until": None
                        if view.cooling_until is None
                        else round(view.cooling_until + wall_offset, 3),
                        "reason": view.reason,
                    }
                )
        providers.append(
            {
                "name": p.name,
                "type": p.type,
                "source": p.source,
                "enabled": p.enabled,
                "status": p.status,
                "error": p.error,
                "base_url": strip_userinfo(p.base_url) if p.base_url else None,
                "keys": keys,
            }
        )
        bedrock = getattr(p.dialect, "bedrock_info", None)
        if bedrock is not None:  # region, models, credential source: never a secret
            providers[-1]["bedrock"] = bedrock.as_dict()
    doc: dict[str, Any] = {
        "version": snapshot.version,
        "built_at": snapshot.built_at,
        "sources": [_source_document(s) for s in snapshot.sources],
        "providers": providers,
    }
    if snapshot.proxy is not None:
        doc["proxy_mode"] = proxy_mode_document(snapshot.proxy)
    return doc


def _source_document(source: SourceStatus) -> dict[str, Any]:
    """One ``sources[]`` entry; ``connection`` only for sources with a live connection."""
    doc: dict[str, Any] = {
        "name": source.name,
        "loaded_at": source.loaded_at,
        "error": source.error,
    }
    if source.connection is not None:
        doc["connection"] = {
            "state": source.connection.state,
            "since": round(source.connection.since, 3),
            "last_error": source.connection.last_error,
        }
    return doc


class AdminApp:
    """ASGI app for ``--admin-listen``."""

    def __init__(
        self,
        state: BridgeState,
        request_reload: Callable[[ReloadRequest], None],
        admin_token: str | None = None,
    ) -> None:
        self.state = state
        self.request_reload = request_reload
        self._token = admin_token.encode() if admin_token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        method = scope["method"]
        if path == "/metrics" and method == "GET":
            body = await metrics.render()
            return await send_response(
                send, 200, body, content_type=b"text/plain; version=0.0.4; charset=utf-8"
            )
        if path in HEALTH_PATHS:
            return await send_response(send, *health_answer(self.state, path))
        if not path.startswith("/-/"):
            return await send_response(
                send, 404, b'{"error":{"message":"not found","type":"not_found_error"}}'
            )
        if self._token is not None and not self._authorized(scope["headers"]):
            return await send_response(
                send,
                401,
                b'{"error":{"message":"admin token required","type":"authentication_error"}}',
            )
        if path == "/-/snapshot" and method == "GET":
            doc = snapshot_document(self.state.current, trio.current_time())
            return await send_response(send, 200, msgspec.json.encode(doc))
        if path == "/-/reload" and method == "POST":
            self.request_reload(ReloadRequest("admin", full=True))
            return await send_response(send, 202, b'{"status":"reload queued"}')
        await send_response(
            send, 404, b'{"error":{"message":"not found","type":"not_found_error"}}'
        )

    def _authorized(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        value = first(headers, b"authorization") or b""
        scheme, _, token = value.partition(b" ")
        assert self._token is not None
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._token)
