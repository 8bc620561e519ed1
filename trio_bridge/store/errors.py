"""Errors raised by the store, with messages scrubbed of database passwords."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qsl, unquote, urlsplit

from ..errors import TrioBridgeError
from ..masking import redact_dsn

_KV_PASSWORD = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_UNDEFINED_TABLE = "42P01"


class StoreError(TrioBridgeError):
    """A database operation failed. The message is safe to print: it holds no password."""


def _passwords(dsn: str) -> set[str]:
    """Every spelling of the password that ``dsn`` carries (URL userinfo, query, key=value)."""
    found: set[str] = set()
    try:
        parts = urlsplit(dsn)
        if parts.password:
            found.update({parts.password, unquote(parts.password)})
        for key, value in parse_qsl(parts.query):
            if key == "password" and value:
                found.update({value, unquote(value)})
        userinfo = parts.netloc.rpartition("@")[0]
        if ":" in userinfo:
            raw = userinfo.partition(":")[2]
            found.update({raw, unquote(raw)})
    except ValueError:
        pass
    for match in _KV_PASSWORD.finditer(dsn):
        value = match.group(1)
        found.add(value)
        if value.startswith("'") and value.endswith("'") and len(value) >= 2:
            found.add(value[1:-1].replace("\\'", "'").replace("\\\\", "\\"))
    return {p for p in found if p}


def _redact_url(match: re.Match[str]) -> str:
    try:
        return redact_dsn(match.group(0))
    except ValueError:
        return "<database url>"


def scrub(message: str, dsn: str) -> str:
    """``message`` with every password of ``dsn`` and every embedded DSN password removed."""
    for secret in sorted(_passwords(dsn), key=len, reverse=True):
        message = message.replace(secret, "***")
    message = _URL.sub(_redact_url, message)
    message = _KV_PASSWORD.sub("password=***", message)
    return " ".join(message.split())


def describe(exc: BaseException, dsn: str) -> str:
    """A one-line, password-free description of a database error."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc) or type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate == _UNDEFINED_TABLE:
        text += " (is the schema installed? run `trio-bridge db migrate`)"
    return scrub(text, dsn)


@contextmanager
def database_errors(dsn: str, what: str = "database") -> Iterator[None]:
    """Turn any psycopg (or OS-level) error raised inside into a scrubbed StoreError."""
    import psycopg

    try:
        yield
    except StoreError:
        raise
    except (psycopg.Error, OSError) as exc:
        raise StoreError(f"{what}: {describe(exc, dsn)}") from None
