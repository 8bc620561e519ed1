"""The request path's one hook into recording and tracing: an :class:`ExchangeTap` per
exchange, fed by the proxy (attempt start, an answer not relayed, each SSE block, the
blocking body) and finished by the app once the response is over. It reads, never holds
a byte back, and hands finished records to the recorder without waiting.

Call sites (kept to one line each):
  app:   ``exchange.tap = new_tap(state, exchange)``; in the ``finally``: ``tap.finish()``
  proxy: ``tap.attempt(headers)`` once the attempt's key is chosen and its headers built;
         ``tap.answered(status)`` when an answer is not relayed (429/401, next key; a
         retried 5xx); ``tap.block(block)`` per relayed SSE block; ``tap.body(body)``
         with a whole blocking body.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio

from ..masking import mask_secret
from ..providers.records import Tap, last_user_prompt, tap_for
from .records import Interception, client_kind

if TYPE_CHECKING:
    from ..http.proxy import Exchange
    from ..state import BridgeState
    from ..tracing import Tracing
    from .recorder import Recorder

_GENERATION = ("chat_completions", "responses", "messages")


def new_tap(state: BridgeState, ex: Exchange) -> ExchangeTap | None:
    """The tap for ``ex``, or None when neither recording nor tracing is on."""
    settings = ex.snapshot.bridge.recording
    recorder = getattr(state, "recorder", None) if settings.enabled else None
    tracing = getattr(state, "tracing", None)
    if recorder is None and tracing is None:
        return None
    return ExchangeTap(ex, recorder, tracing, prompts=settings.prompts)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None


def gen_ai_provider(provider: Any) -> str:
    """``gen_ai.provider.name`` of a provider: openai, anthropic, aws.bedrock,
    github_copilot."""
    if provider.type == "copilot":
        return "github_copilot"
    if "bedrock" in type(provider.dialect).__name__.lower():
        return "aws.bedrock"
    return provider.type or "unknown"


class ExchangeTap:
    """Records one interception per upstream attempt that got an answer (and always one
    for the request's final outcome), and the request's spans when tracing is on."""

    __slots__ = (
        "ex",
        "recorder",
        "tracing",
        "prompts",
        "extract",
        "attempts",
        "_offset",
        "_attempt_started",
        "_attempt_hint",
        "_attempt_provider",
        "_attempt_model",
        "_request_span",
        "_attempt_span",
        "_user_agent",
    )

    def __init__(
        self, ex: Exchange, recorder: Recorder | None, tracing: Tracing | None, *, prompts: bool
    ) -> None:
        self.ex = ex
        self.recorder = recorder
        self.tracing = tracing
        self.prompts = prompts
        self.extract: Tap | None = tap_for(ex.route.endpoint) if ex.route.bridged else None
        self.attempts = 0
        # Wall-clock stamps derived from trio's clock (so records agree with durations).
        self._offset = time.time() - trio.current_time()
        self._attempt_started = ex.log.started
        self._attempt_hint: str | None = None
        self._attempt_provider = ex.provider
        self._attempt_model = ex.peek.model if ex.peek is not None else None
        self._user_agent = _header(ex.client_headers, b"user-agent")
        self._attempt_span: Any = None
        self._request_span: Any = None
        if tracing is not None:
            self._request_span = tracing.request_span(
                ex.client_headers,
                f"{ex.method} {ex.route.template}",
                int((ex.log.started + self._offset) * 1e9),
                {
                    "http.request.method": ex.method,
                    "http.route": ex.route.template,
                    "gen_ai.operation.name": _operation(ex.route.endpoint),
                    "gen_ai.provider.name": gen_ai_provider(ex.provider),
                    "gen_ai.request.model": self._attempt_model or "",
                    "trio_bridge.request_id": ex.log.request_id,
                    "trio_bridge.provider": ex.provider.name,
                },
            )

    # --- fed by the proxy -------------------------------------------------------------------

    def attempt(
        self,
        headers: list[tuple[bytes, bytes]],
        *,
        provider: Any = None,
        model: str | None = None,
        fallback: bool = False,
    ) -> None:
        """An upstream attempt starts with these headers (trace context added in place).
        An attempt still open got no answer: its span ends with the error, no record."""
        ex = self.ex
        if self._attempt_span is not None:
            self._end_attempt_span(None, ex.log.error or "no answer")
        self.attempts += 1
        self._attempt_started = trio.current_time()
        self._attempt_provider = provider or ex.provider
        if model is not None:
            self._attempt_model = model
        self._attempt_hint = self._key_hint()
        if self.tracing is not None:
            p = self._attempt_provider
            op = _operation(ex.route.endpoint)
            model_name = self._attempt_model
            if ex.route.endpoint in _GENERATION or ex.route.endpoint == "embeddings":
                name = f"{op} {model_name}" if model_name else op
            else:
                name = f"{ex.method} {ex.route.template}"
            attributes = {
                "gen_ai.operation.name": op,
                "gen_ai.provider.name": gen_ai_provider(p),
                "gen_ai.request.model": model_name or "",
                "http.request.method": ex.method,
                "trio_bridge.attempt": self.attempts,
                "trio_bridge.fallback": fallback,
                "trio_bridge.key_hint": self._attempt_hint or "",
                "trio_bridge.provider": p.name,
            }
            attributes.update(_server(p.base_url))
            self._attempt_span = self.tracing.attempt_span(self._request_span, name, attributes)
            self.tracing.inject(self._attempt_span, headers)

    def answered(self, status: int) -> None:
        """The current attempt got an answer that is not relayed (the next key or target
        takes over): recorded on its own, linked by the request id."""
        now = trio.current_time()
        self._emit(status, now, now, error=None, relayed=False)
        if self._attempt_span is not None:
            self._end_attempt_span(status, None)

    def block(self, block: bytes) -> None:
        if self.extract is not None:
            self.extract.block(block)

    def body(self, body: bytes) -> None:
        if self.extract is not None:
            self.extract.body(body)

    # --- called by the app ------------------------------------------------------------------

    def finish(self) -> None:
        """The response is over: record the final attempt (or the refusal, when none was
        made), end the spans."""
        ex = self.ex
        log = ex.log
        status = log.status or 499
        first_byte = log.first_byte_at
        if first_byte is not None and first_byte < self._attempt_started:
            first_byte = None
        self._emit(status, first_byte, trio.current_time(), error=log.error, relayed=True)
        if self.tracing is not None:
            if self._attempt_span is not None:
                self._end_attempt_span(status, log.error)
            error_type = str(status) if status >= 500 or status == 499 else None
            self.tracing.end(
                self._request_span,
                {
                    "http.response.status_code": status,
                    "gen_ai.response.model": self.extract.response_model
                    if self.extract is not None
                    else None,
                    "trio_bridge.attempts": self.attempts,
                },
                error_type,
            )

    # --- inside -----------------------------------------------------------------------------

    def _key_hint(self) -> str | None:
        ex = self.ex
        if not ex.caller.byok:
            hint = ex.log.key_hint
            return None if hint in ("-", "byok") else hint
        for _name, raw in sorted(ex.caller.keep_auth):
            value = raw.decode("latin-1")
            if value:
                scheme, sep, token = value.partition(" ")
                return mask_secret(token.strip() if sep and scheme.lower() == "bearer" else value)
        return None

    def _emit(
        self,
        status: int,
        first_byte: float | None,
        ended: float,
        *,
        error: str | None,
        relayed: bool,
    ) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        ex = self.ex
        provider = self._attempt_provider
        bridged = ex.route.bridged
        usage = tools = prompt = None
        if relayed and bridged and 200 <= status < 300:
            usage = (
                ex.usage if (ex.usage.input is not None or ex.usage.output is not None) else None
            )
            tools = self.extract.tools if self.extract is not None else None
        if bridged and self.prompts and relayed:
            prompt = last_user_prompt(ex.route.endpoint, ex.body)
        offset = self._offset
        record = Interception(
            request_id=ex.log.request_id,
            attempt=max(1, self.attempts),
            client_id=ex.caller.actor,
            provider_name=provider.name,
            provider_type=provider.type,
            route=ex.route.template,
            model=self._attempt_model,
            streaming=bool(ex.peek.stream) if ex.peek is not None else ex.sse,
            status=status,
            credential_kind="byok" if ex.caller.byok else "pool",
            key_hint=self._attempt_hint if self.attempts else None,
            started_at=self._attempt_started + offset,
            first_byte_at=None if first_byte is None else first_byte + offset,
            ended_at=ended + offset,
            error=error,
            user_agent=self._user_agent,
            client=client_kind(self._user_agent),
            usage=usage,
            prompt=prompt,
            tools=tools or [],
        )
        recorder.submit(record)
        self._attempt_started = ended

    def _end_attempt_span(self, status: int | None, error: str | None) -> None:
        assert self.tracing is not None
        span, self._attempt_span = self._attempt_span, None
        attributes: dict[str, Any] = {"http.response.status_code": status}
        ex = self.ex
        if status is not None and 200 <= status < 300 and self.extract is not None:
            attributes["gen_ai.response.model"] = self.extract.response_model
            u = ex.usage
            if u.input is not None:
                attributes["gen_ai.usage.input_tokens"] = (
                    u.input + (u.cache_read or 0) + (u.cache_write or 0)
                )
            attributes["gen_ai.usage.output_tokens"] = u.output
            attributes["gen_ai.usage.cache_read.input_tokens"] = u.cache_read
            attributes["gen_ai.usage.cache_creation.input_tokens"] = u.cache_write
        if status is None:
            error_type = "no_answer"
        elif status >= 400:
            error_type = str(status)
        elif error:
            error_type = "stream_interrupted"
        else:
            error_type = None
        self.tracing.end(span, attributes, error_type)


def _operation(endpoint: str) -> str:
    if endpoint in _GENERATION:
        return "chat"
    if endpoint == "embeddings":
        return "embeddings"
    return endpoint


def _server(base_url: str | None) -> dict[str, Any]:
    if not base_url:
        return {}
    parts = urlsplit(base_url)
    out: dict[str, Any] = {"server.address": parts.hostname or ""}
    port = parts.port or (443 if parts.scheme == "https" else 80)
    out["server.port"] = port
    return out
