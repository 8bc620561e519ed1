"""One usage record: an interception (one upstream attempt of one request) with its token
usage, the last user prompt and the tool calls the model made.

Records are built on the request path from values already in hand; everything costly
(ids, timestamps as text, JSON) happens in :meth:`Interception.document`, which the
writer calls in a worker thread.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..providers.base import TokenUsage
from ..providers.records import ToolUse

# (pattern on the User-Agent, client kind); first match wins.
_CLIENTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind)
    for pattern, kind in (
        (r"claude-cli|claude-code|claude_code", "claude-code"),
        (r"codex", "codex"),
        (r"cursor", "cursor"),
        (r"copilot|vscode|visual studio code", "copilot"),
        (r"zed/|\bzed\b", "zed"),
        (r"aider", "aider"),
        (r"cline", "cline"),
        (r"roo-?code", "roo-code"),
        (r"continue", "continue"),
        (r"openai/python", "openai-python"),
        (r"openai/js|openai-node", "openai-node"),
        (r"anthropic/python", "anthropic-python"),
        (r"anthropic/js|anthropic-typescript", "anthropic-node"),
        (r"langchain", "langchain"),
        (r"litellm", "litellm"),
        (r"^curl/", "curl"),
        (r"python-httpx|httpx2?/", "httpx"),
        (r"python-requests", "python-requests"),
        (r"^trio-bridge/", "unknown"),
    )
)


@functools.lru_cache(maxsize=512)  # clients repeat a handful of User-Agents; ~15 regexes each
def client_kind(user_agent: str | None) -> str:
    """The kind of client guessed from its User-Agent (``claude-code``, ``codex``,
    ``cursor``, ``copilot``, ``openai-python``, ...), ``unknown`` when nothing matches."""
    if user_agent:
        for pattern, kind in _CLIENTS:
            if pattern.search(user_agent):
                return kind
    return "unknown"


def _ts(wall: float | None) -> str | None:
    return None if wall is None else datetime.fromtimestamp(wall, UTC).isoformat()


def _clean(text: str | None) -> str | None:
    # Postgres text and jsonb cannot hold NUL.
    return text.replace("\x00", "\ufffd") if text and "\x00" in text else text


def _clean_value(value: Any) -> Any:
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {_clean(str(k)): _clean_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_value(v) for v in value]
    return value


@dataclass(slots=True)
class Interception:
    """The columns of ``ai_bridge_interceptions`` (times are wall-clock seconds), plus the
    rows that hang off it. ``usage`` is None for passthrough routes and answers without
    usage; ``tools`` empty when the model called none."""

    request_id: str
    attempt: int
    client_id: str | None
    provider_name: str
    provider_type: str | None
    route: str
    model: str | None
    streaming: bool
    status: int
    credential_kind: str
    key_hint: str | None
    started_at: float
    first_byte_at: float | None
    ended_at: float
    error: str | None
    user_agent: str | None
    client: str
    usage: TokenUsage | None = None
    prompt: str | None = None
    tools: list[ToolUse] = field(default_factory=list)
    id: uuid.UUID | None = None

    def document(self) -> dict[str, Any]:
        """The record as one JSON object: the JSON-lines format and the writer's input.
        Gives the record its id on first call (stable across retries)."""
        if self.id is None:
            self.id = uuid.uuid4()
        usage = self.usage
        return {
            "id": str(self.id),
            "request_id": self.request_id,
            "attempt": self.attempt,
            "client_id": self.client_id,
            "provider_name": self.provider_name,
            "provider_type": self.provider_type,
            "route": self.route,
            "model": _clean(self.model),
            "streaming": self.streaming,
            "status": self.status,
            "credential_kind": self.credential_kind,
            "key_hint": self.key_hint,
            "started_at": _ts(self.started_at),
            "first_byte_at": _ts(self.first_byte_at),
            "ended_at": _ts(self.ended_at),
            "error": _clean(self.error),
            "user_agent": _clean(self.user_agent),
            "client": self.client,
            "usage": None
            if usage is None
            else {
                "input": usage.input,
                "output": usage.output,
                "cache_read": usage.cache_read,
                "cache_write": usage.cache_write,
                "extra": _clean_value(usage.extra) if usage.extra else {},
            },
            "prompt": _clean(self.prompt),
            "tools": [
                {
                    "tool": _clean(t.tool),
                    "tool_call_id": t.tool_call_id,
                    "args": _clean_value(t.args),
                }
                for t in self.tools
            ],
        }
