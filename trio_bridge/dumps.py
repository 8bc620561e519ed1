"""API dumps (``bridge.api_dump_dir``): one JSON file per proxied request, secrets masked.

Capture happens on the request path (bounded copies of the bytes already in hand); files are
written by one background task fed through a bounded channel, so a slow disk never slows a
request: when the channel is full a dump is dropped and counted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from .masking import mask_secret

log = logging.getLogger("trio_bridge.dumps")

BODY_LIMIT = 1024 * 1024
_SECRET_HEADERS = frozenset(
    {
        b"authorization",
        b"proxy-authorization",
        b"x-api-key",
        b"api-key",
        b"x-trio-bridge-token",
        b"cookie",
        b"set-cookie",
    }
)
# A header whose name has one of these words (split at "-" and "_") is taken as a
# credential: x-goog-api-key, ocp-apim-subscription-key, x-amz-security-token, x-auth-token,
# x-csrf-token, x-session-id, ... Counting headers ("x-ratelimit-remaining-tokens") are not.
_SECRET_WORDS = frozenset(
    {
        b"key",
        b"apikey",
        b"token",
        b"secret",
        b"password",
        b"passwd",
        b"auth",
        b"authorization",
        b"credential",
        b"credentials",
        b"signature",
        b"session",
        b"sessionid",
        b"cookie",
    }
)
_WORD_SPLIT = re.compile(rb"[-_]")
_SECRET_PARAM = re.compile(
    r"(?i)(?<=[?&])([^=&]*(?:key|token|secret|password|passwd|auth|signature|sig|session)[^=&]*)=([^&]*)"
)


def is_secret_header(name: bytes) -> bool:
    """True for a header name that carries a credential (exact list, then name words)."""
    name = name.lower()
    return name in _SECRET_HEADERS or any(w in _SECRET_WORDS for w in _WORD_SPLIT.split(name))


def _mask_value(text: str) -> str:
    scheme, sep, token = text.partition(" ")
    return f"{scheme} {mask_secret(token)}" if sep else mask_secret(text)


def masked_headers(
    headers: list[tuple[bytes, bytes]], also: frozenset[bytes] = frozenset()
) -> list[list[str]]:
    """Header pairs with every credential masked (``Bearer sk-a...9xyz``): the known
    credential headers, every credential-like name, and every name in ``also`` (a
    provider's configured ``headers:``, which may hold an Azure ``api-key`` or the like)."""
    out = []
    for name, value in headers:
        text = value.decode("latin-1")
        lower = name.lower()
        if lower in also or is_secret_header(lower):
            text = _mask_value(text)
        out.append([name.decode("latin-1"), text])
    return out


def masked_path(path: str) -> str:
    """The path with credential-like query parameters masked (``?key=AIza...abcd``)."""
    if "?" not in path:
        return path
    head, _, query = path.partition("?")
    return head + "?" + _SECRET_PARAM.sub(lambda m: f"{m[1]}={mask_secret(m[2])}", "&" + query)[1:]


@dataclass
class DumpCapture:
    """What one request sent and received, kept within BODY_LIMIT per direction."""

    request_id: str
    provider: str
    method: str
    path: str
    request_headers: list[tuple[bytes, bytes]]
    request_body: bytes
    # Names (lower-case) of the provider's configured extra headers: always masked.
    provider_headers: frozenset[bytes] = frozenset()
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

    def document(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "provider": self.provider,
            "started_at": self.started_at,
            "request": {
                "method": self.method,
                "path": masked_path(self.path),
                "headers": masked_headers(self.request_headers, self.provider_headers),
                "body": _text(self.request_body[:BODY_LIMIT]),
            },
            "response": {
                "status": self.status,
                "headers": masked_headers(self.response_headers, self.provider_headers),
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
