"""GitHub Copilot: OpenAI chat and responses plus Anthropic messages, all without ``/v1``
except messages, always with the caller's own ``Authorization`` (no pool).

Chat and responses bodies, usage and stream errors follow the OpenAI dialect; messages
follow the Anthropic one. Errors the bridge itself makes use the OpenAI shape (Copilot is
of the openai family). Editor headers (``Editor-Version``, ``Editor-Plugin-Version``,
``Copilot-Integration-Id``) travel like any other client header.
"""

from __future__ import annotations

from .anthropic import MESSAGES, AnthropicDialect
from .base import Dialect, Peek, Route, RouteTable, TokenUsage
from .openai import OpenAIDialect

CHAT = Route("chat_completions", "/chat/completions", True)
RESPONSES = Route("responses", "/responses", True)
MODELS = Route("models", "/models", False)


class CopilotDialect(Dialect):
    type = "copilot"
    base_path = ""

    def __init__(self) -> None:
        self._openai = OpenAIDialect(prefix="")
        self._anthropic = AnthropicDialect()
        self.routes = RouteTable(
            exact={
                ("POST", CHAT.template): CHAT,
                ("POST", RESPONSES.template): RESPONSES,
                ("POST", MESSAGES.template): MESSAGES,
            },
            prefixes=[(MODELS.template, MODELS, True)],
        )

    def _for(self, route: Route) -> Dialect:
        return self._anthropic if route.endpoint == MESSAGES.endpoint else self._openai

    def key_header(self, key: str) -> tuple[bytes, bytes]:
        # Never used: a copilot provider has no pool; the caller's header travels as is.
        return self._openai.key_header(key)

    def error_body(self, status: int, message: str, kind: str | None = None) -> bytes:
        return self._openai.error_body(status, message, kind)

    def stream_error_event(self, route: Route, message: str, last_event: bytes) -> bytes:
        return self._for(route).stream_error_event(route, message, last_event)

    def prepare_body(self, route: Route, body: bytes, peek: Peek) -> tuple[bytes, bool]:
        return self._for(route).prepare_body(route, body, peek)

    def usage_from_body(self, route: Route, body: bytes) -> TokenUsage | None:
        return self._for(route).usage_from_body(route, body)

    def usage_from_event(self, route: Route, event: bytes, usage: TokenUsage) -> bool:
        return self._for(route).usage_from_event(route, event, usage)
