"""Which dialect serves which provider type."""

from __future__ import annotations

from .anthropic import AnthropicDialect
from .base import Dialect
from .openai import OpenAIDialect

_DIALECTS: dict[str, Dialect] = {
    "openai": OpenAIDialect(),
    "anthropic": AnthropicDialect(),
}


def dialect_for(provider_type: str) -> Dialect | None:
    return _DIALECTS.get(provider_type)
