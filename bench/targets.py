"""What the load is pointed at: a port, the chat path, the Authorization to send."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .procs import Proc

BODY = (
    b'{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful '
    b'assistant."},{"role":"user","content":"Say hello in one short sentence."}],'
    b'"max_tokens":64,"temperature":0}'
)
PACED_MODEL = "paced-64x20"
PACE = 0.020
PACED_CHUNKS = 64


def stream_body(model: str = PACED_MODEL) -> bytes:
    return (
        b'{"model":"' + model.encode() + b'","stream":true,"messages":[{"role":"user",'
        b'"content":"Count slowly."}]}'
    )


@dataclass
class Target:
    """One system under test. ``proc`` is None when it runs outside the harness."""

    name: str
    port: int
    path: str
    auth: str
    proc: Proc | None = None
    startup_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": self.auth, "Content-Type": "application/json"}


def write_body(directory: Path) -> Path:
    path = directory / "body.json"
    path.write_bytes(BODY)
    return path
