"""Which dialect serves which provider type (Bedrock dialects are built per provider, with
their settings and credentials: see ``snapshot``)."""

from __future__ import annotations

from .anthropic import AnthropicDialect
from .base import Dialect
from .copilot import CopilotDialect
from .openai import OpenAIDialect

_DIALECTS: dict[str, Dialect] = {
    "openai": OpenAIDialect(),
    "anthropic": AnthropicDialect(),
    "copilot": CopilotDialect(),
}


def dialect_for(provider_type: str) -> Dialect | None:
    return _DIALECTS.get(provider_type)
