"""API dumps (``bridge.api_dump_dir``): one JSON file per proxied request, secrets masked.

Capture happens on the request path (bounded copies of the bytes already in hand); files are
written by one background task fed through a bounded channel, so a slow disk never slows a
request: when the channel is full a dump is dropped and counted.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .masking import mask_secret

log = logging.getLogger("trio_bridge.dumps")

BODY_LIMIT = 1024 * 1024
_SECRET_HEADERS = {
    b"authorization",
    b"x-api-key",
    b"x-trio-bridge-token",
    b"cookie",
    b"set-cookie",
    b"proxy-authorization",
}


def masked_headers(headers: list[tuple[bytes, bytes]]) -> list[list[str]]:
    """Header pairs with every credential masked (``Bearer sk-a...9xyz``)."""
    out = []
    for name, value in headers:
        text = value.decode("latin-1")
        if name.lower() in _SECRET_HEADERS:
            scheme, sep, token = text.partition(" ")
            text = f"{scheme} {mask_secret(token)}" if sep else mask_secret(text)
        out.append([name.decode("latin-1"), text])
    return out


@dataclass
class DumpCapture:
    """What one request sent and received, kept within BODY_LIMIT per direction."""

    request_id: str
    provider: str
    method: str
    path: str
    request_headers: list[tuple[bytes, bytes]]
    request_body: bytes
    started_at: float = field(default_factory=time.time)
    status: int = 0
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    response_body: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    error: str | None = None

    def add_response_bytes(self, chunk: bytes) -> None:
        room = BODY_LIMIT - len(self.response_body)
        if room <= 0:
            self.truncated = True
            return
        self.response_body += chunk[:room]
        self.truncated = self.truncated or len(chunk) > room

    def document(self) -> dict:
        return {
            "request_id": self.request_id,
            "provider": self.provider,
            "started_at": self.started_at,
            "request": {
                "method": self.method,
                "path": self.path,
                "headers": masked_headers(self.request_headers),
                "body": _text(self.request_body[:BODY_LIMIT]),
            },
            "response": {
                "status": self.status,
                "headers": masked_headers(self.response_headers),
                "body": _text(bytes(self.response_body)),
                "truncated": self.truncated,
            },
            "error": self.error,
        }


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


class DumpWriter:
    """Owns the dump directory writes. ``submit`` never blocks."""

    def __init__(self, capacity: int = 256) -> None:
        self._send, self._receive = trio.open_memory_channel[tuple[Path, DumpCapture]](capacity)
        self.dropped = 0

    def submit(self, directory: str, capture: DumpCapture) -> None:
        try:
            self._send.send_nowait((Path(directory), capture))
        except trio.WouldBlock:
            self.dropped += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for directory, capture in self._receive:
            try:
                await trio.to_thread.run_sync(_write, directory, capture)
            except OSError as exc:
                log.warning("api dump not written (%s)", type(exc).__name__)


def _write(directory: Path, capture: DumpCapture) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(capture.started_at))
    final = directory / f"{stamp}-{capture.provider}-{capture.request_id}.json"
    tmp = final.with_suffix(".tmp")
    tmp.write_text(json.dumps(capture.document(), indent=1))
    os.replace(tmp, final)
