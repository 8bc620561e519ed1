"""Rendering secrets so they can be logged: masked hints and passwordless URLs."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


def mask_secret(secret: str) -> str:
    """A hint that identifies a key without revealing it: ``sk-a...9xyz``.

    Short secrets give away nothing but their length class.
    """
    if len(secret) >= 16:
        return f"{secret[:4]}...{secret[-4:]}"
    return "****"


def strip_userinfo(url: str) -> str:
    """The URL without ``user:password@``; unparsable input gives ``<invalid url>``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<invalid url>"


_DSN_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """A database URL or key=value DSN with its password removed."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        if parts.password is not None:
            netloc = parts.netloc.rsplit("@", 1)[1]
            user = parts.username or ""
            netloc = f"{user}:***@{netloc}" if user else f"***@{netloc}"
            dsn = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        return _DSN_PASSWORD.sub(r"\1***", dsn)
    return _DSN_PASSWORD.sub(r"\1***", dsn)
