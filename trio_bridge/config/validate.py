"""Every schema error of one document, not just the first msgspec meets.

msgspec stops at the first problem. :func:`schema_errors` walks the document beside the
schema: each struct's unknown and missing fields, then each field on its own (structs,
lists of structs and optional structs recursively), and converts a node whole (its
constraints and ``__post_init__`` checks) only once nothing below it failed. Messages
name a JSON path and what was expected, never a rejected value or an unknown key.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import msgspec

from .errors import describe_validation_error
from .model import convert


def _unwrap(type_: Any) -> Any:
    """The type under ``Annotated[...]``."""
    while typing.get_origin(type_) is typing.Annotated:
        type_ = typing.get_args(type_)[0]
    return type_


def _struct(type_: Any) -> type[msgspec.Struct] | None:
    type_ = _unwrap(type_)
    if isinstance(type_, type) and issubclass(type_, msgspec.Struct):
        return type_
    if typing.get_origin(type_) in (typing.Union, types.UnionType):
        structs = [s for s in map(_struct, typing.get_args(type_)) if s is not None]
        return structs[0] if len(structs) == 1 else None
    return None


def _list_item(type_: Any) -> Any | None:
    type_ = _unwrap(type_)
    if typing.get_origin(type_) is list:
        return typing.get_args(type_)[0]
    return None


def _whole(data: Any, type_: Any, path: str) -> list[str]:
    try:
        convert(data, type_)
    except msgspec.ValidationError as exc:
        return [describe_validation_error(exc, at=path)]
    return []


def schema_errors(data: Any, type_: Any, path: str = "$") -> list[str]:
    """Every error found converting ``data`` to ``type_`` (empty: it converts)."""
    struct = _struct(type_)
    if struct is not None and isinstance(data, dict):
        fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
        errors: list[str] = []
        unknown = [key for key in data if key not in fields]
        if unknown:
            expected = ", ".join(fields)
            plural = f"{len(unknown)} unknown fields" if len(unknown) > 1 else "unknown field"
            errors.append(f"{path}: {plural} (expected only {expected})")
        for name, field in fields.items():
            if name not in data:
                if field.required:
                    errors.append(f"{path}: missing required field {name!r}")
                continue
            errors += schema_errors(data[name], field.type, f"{path}.{name}")
        return errors or _whole(data, type_, path)
    item = _list_item(type_)
    if item is not None and isinstance(data, list):
        errors = []
        for i, value in enumerate(data):
            errors += schema_errors(value, item, f"{path}[{i}]")
        return errors or _whole(data, type_, path)
    return _whole(data, type_, path)
