"""Database rows -> config schema objects, through the same validator as the YAML files."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import msgspec

from ..config import errors as config_errors
from ..config.model import ClientSpec, ProviderSpec, convert

SETTINGS_FIELDS = ("headers", "bedrock", "fallbacks", "first_token_timeout")

# Schema paths -> where that value lives in the database.
_PATH_MAP = [
    (re.compile(r"^\$\.keys\[(\d+)\]\.value"), r"$.keys[\1]"),
    (re.compile(r"^\$\.(headers|bedrock|fallbacks|first_token_timeout)"), r"$.settings.\1"),
]


class InvalidRow(ValueError):
    """A row the schema rejects; the message names the field, never the rejected value."""


def describe_validation_error(exc: msgspec.ValidationError) -> str:
    """``$.path: expected ...`` worded as for YAML files, with paths as the database stores
    them (``settings.headers``, not ``headers``); never the rejected value."""
    text = config_errors.describe_validation_error(exc)
    path, sep, what = text.partition(": ")
    for pattern, repl in _PATH_MAP:
        path = pattern.sub(repl, path)
    return f"{path}{sep}{what}"


def provider_dict(
    *,
    name: str,
    type: str,
    base_url: str,
    enabled: bool,
    settings: Any,
    keys: Sequence[str],
) -> dict[str, Any]:
    """The YAML-shaped dict of one provider row; InvalidRow if ``settings`` is malformed."""
    if not isinstance(settings, dict):
        raise InvalidRow("$.settings: expected an object")
    unknown = sorted(set(settings) - set(SETTINGS_FIELDS))
    if unknown:
        raise InvalidRow(
            f"$.settings: unknown field `{unknown[0]}` (expected only {', '.join(SETTINGS_FIELDS)})"
        )
    data: dict[str, Any] = {
        "name": name,
        "type": type,
        "base_url": base_url,
        "enabled": enabled,
        "keys": [{"value": key} for key in keys],
    }
    for field in SETTINGS_FIELDS:
        if settings.get(field) is not None:
            data[field] = settings[field]
    return data


def validate_provider(data: dict[str, Any]) -> ProviderSpec:
    """``data`` converted to a ProviderSpec; InvalidRow with a value-free reason otherwise."""
    try:
        return convert(data, ProviderSpec)
    except msgspec.ValidationError as exc:
        raise InvalidRow(describe_validation_error(exc)) from None


def provider_from_row(
    *,
    name: str,
    type: str,
    base_url: str,
    enabled: bool,
    settings: Any,
    keys: Sequence[str],
) -> ProviderSpec:
    """One ``ai_providers`` row and its keys (in order) as a ProviderSpec, or InvalidRow."""
    return validate_provider(
        provider_dict(
            name=name, type=type, base_url=base_url, enabled=enabled, settings=settings, keys=keys
        )
    )


def metadata_dict(metadata: Any) -> dict[str, str]:
    """Client metadata as strings: non-string JSON values are rendered as compact JSON."""
    if not isinstance(metadata, dict):
        raise InvalidRow("$.metadata: expected an object")
    return {
        str(key): value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        for key, value in metadata.items()
    }


def client_from_row(*, id: str, token_sha256: str, metadata: Any) -> ClientSpec:
    """One ``ai_bridge_clients`` row as a ClientSpec, or InvalidRow."""
    data = {
        "id": id,
        "token_sha256": token_sha256.strip().lower(),
        "metadata": metadata_dict(metadata),
    }
    try:
        return convert(data, ClientSpec)
    except msgspec.ValidationError as exc:
        raise InvalidRow(describe_validation_error(exc)) from None
