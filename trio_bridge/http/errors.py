"""Error responses in the provider's own shape, or the generic one before it is known."""

from __future__ import annotations

from ..providers.base import Dialect, generic_error_body
from .asgi import Send, send_response


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
