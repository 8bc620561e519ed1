"""Error responses in the provider's own shape, or the generic one before it is known."""

from __future__ import annotations

from typing import Literal

from ..providers.base import Dialect, encode, generic_error_body
from .asgi import Send, send_response

# The error ``type`` a provider that cannot serve (disabled, misconfigured) answers with, per
# dialect: what that API itself uses for "not available". Anthropic's API has no 503 type of
# its own (its ``overloaded_error`` is 529, "try again soon"); a provider switched off is not
# overloaded, so Anthropic clients get ``api_error``. OpenAI-shaped answers keep the generic
# ``service_unavailable``.
Unavailable = Literal["disabled", "misconfigured"]
"""Why a provider answers 503 without going upstream."""

UNAVAILABLE_KIND = {"anthropic": "api_error"}


async def send_error(
    send: Send,
    status: int,
    message: str,
    *,
    dialect: Dialect | None = None,
    request_id: str,
    retry_after: int | None = None,
    kind: str | None = None,
) -> None:
    body = (
        dialect.error_body(status, message, kind)
        if dialect
        else generic_error_body(status, message)
    )
    headers = [(b"x-request-id", request_id.encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send_response(send, status, body, headers)


def unavailable_body(provider: str, reason: Unavailable, dialect: Dialect | None) -> bytes:
    """The 503 body of a provider that cannot serve. One shape whatever the provider's
    source: a provider whose type is unknown (a database row that failed validation) gets
    the OpenAI shape with ``code``, exactly like an OpenAI provider from YAML."""
    message = f'provider "{provider}" is {reason}'
    if dialect is not None:
        return dialect.error_body(503, message, UNAVAILABLE_KIND.get(dialect.type))
    return encode({"error": {"message": message, "type": "service_unavailable", "code": None}})


async def send_unavailable(
    send: Send,
    provider: str,
    reason: Unavailable,
    *,
    dialect: Dialect | None,
    request_id: str,
) -> None:
    """503 for a provider that is disabled or failed to build (error table row 6)."""
    body = unavailable_body(provider, reason, dialect)
    await send_response(send, 503, body, [(b"x-request-id", request_id.encode())])
