"""Fallback chains (contract section 7): which targets a request may go to, in order.

Sans-IO. A provider's ``fallbacks`` entries are matched against the requested model by
globs; the first matching entry applies and its ``to`` targets follow the primary in order.
A target's own fallbacks are never followed; one (provider, model) is never tried twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import msgspec

__all__ = [
    "FAMILIES",
    "ChainEntry",
    "ChainTarget",
    "family",
    "match_entry",
    "plan",
    "rewrite_model",
]

# API families: a request may only fall back within its own.
FAMILIES = {"openai": "openai", "copilot": "openai", "anthropic": "anthropic"}


def family(provider_type: str | None) -> str | None:
    return FAMILIES.get(provider_type or "")


@dataclass(frozen=True)
class ChainTarget:
    provider: str
    model: str | None = None  # None: the requested model, unchanged


@dataclass(frozen=True)
class ChainEntry:
    """One ``fallbacks`` entry, as the snapshot keeps it."""

    to: tuple[ChainTarget, ...]
    models: tuple[str, ...] | None = None  # None: every model
    context_length: bool = False

    def matches(self, model: str | None) -> bool:
        if self.models is None:
            return True
        return model is not None and any(fnmatchcase(model, glob) for glob in self.models)


def match_entry(entries: Sequence[ChainEntry], model: str | None) -> ChainEntry | None:
    """The first entry whose globs match ``model`` (an entry without globs matches all)."""
    for entry in entries:
        if entry.matches(model):
            return entry
    return None


def plan(primary: str, model: str | None, entry: ChainEntry | None) -> list[tuple[str, str | None]]:
    """(provider, model) pairs to try in order: the primary with the requested model, then
    the entry's targets; duplicates dropped (first occurrence kept)."""
    chain: list[tuple[str, str | None]] = [(primary, model)]
    if entry is not None:
        for target in entry.to:
            pair = (target.provider, target.model if target.model is not None else model)
            if pair not in chain:
                chain.append(pair)
    return chain


def rewrite_model(body: bytes, model: str) -> bytes:
    """The JSON object ``body`` with its ``model`` set to ``model`` (other fields kept, in
    order)."""
    data = msgspec.json.decode(body)
    if not isinstance(data, dict):
        raise ValueError("request body is not a JSON object")
    data["model"] = model
    return msgspec.json.encode(data)
