"""FakeCopilot: a loopback GitHub Copilot API: OpenAI chat and responses at ``/chat/completions``
and ``/responses``, Anthropic messages at ``/v1/messages``, ``/models``; every request needs
a Copilot token (``Authorization: Bearer``) from ``tokens`` (401 otherwise), and the editor
headers it received are recorded like every other header::

    fake = FakeCopilot(tokens={"ghu_alice", "ghu_bob"})
    await nursery.start(fake.serve)
    fake.requests[0].key, fake.requests[0].header("editor-version")
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .behaviours import Answer, CutStream, RecordedRequest
from .fake_upstream import _MESSAGES, FakeUpstream
from .http11 import Responder

__all__ = ["FakeCopilot"]


class FakeCopilot(FakeUpstream):
    """FakeUpstream with Copilot's path layout; ``tokens`` are the Copilot tokens accepted
    (None: any token is accepted, but one is still required)."""

    def __init__(self, tokens: Collection[str] | None = None, **kwargs: Any) -> None:
        super().__init__(dialect="copilot", **kwargs)
        self.tokens = None if tokens is None else set(tokens)

    async def _route(
        self, rec: RecordedRequest, resp: Responder, forced: Answer | CutStream | None
    ) -> None:
        bearer = rec.header("authorization") or ""
        scheme, _, token = bearer.partition(" ")
        token = token.strip()
        if (
            scheme.lower() != "bearer"
            or not token
            or (self.tokens is not None and token not in self.tokens)
        ):
            await self._error(resp, 401, "Unauthorized: a Copilot token is required")
            return
        if rec.method == "POST" and rec.path == "/v1/messages":
            await self._generate(
                rec, resp, _MESSAGES, forced or Answer(), lenient=forced is not None
            )
            return
        await super()._route(rec, resp, forced)
