"""Resolving key references (env, file, value) to the secrets they name."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import TrioBridgeError
from .model import KeyRef


class KeyResolutionError(TrioBridgeError):
    """A key reference could not be resolved; the message names the reference, not a value."""


def key_file_path(ref: KeyRef, secrets_dir: Path | None) -> Path | None:
    """Where a ``file:`` reference points, or None for other kinds."""
    if ref.file is None:
        return None
    return (secrets_dir or Path(".")) / ref.file


def resolve_key(ref: KeyRef, secrets_dir: Path | None, environ: Mapping[str, str]) -> str:
    """The secret a reference names, stripped of surrounding white space."""
    if ref.value is not None:
        return ref.value
    if ref.env is not None:
        value = environ.get(ref.env, "").strip()
        if not value:
            raise KeyResolutionError(f"environment variable {ref.env} is not set or empty")
        return value
    if secrets_dir is None:
        raise KeyResolutionError(f"key file {ref.file} needs --secrets-dir")
    path = key_file_path(ref, secrets_dir)
    assert path is not None
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise KeyResolutionError(f"key file {ref.file} not found in the secrets dir") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = type(exc).__name__
        raise KeyResolutionError(f"key file {ref.file} cannot be read ({reason})") from None
    if not value:
        raise KeyResolutionError(f"key file {ref.file} is empty")
    return value
