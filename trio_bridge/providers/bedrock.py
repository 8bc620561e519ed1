"""Anthropic on AWS Bedrock: the Anthropic Messages API in front, Bedrock's InvokeModel behind.

Per attempt the request is rewritten (model mapped, ``model``/``stream`` dropped,
``anthropic_version: bedrock-2023-05-31``, accepted ``anthropic-beta`` values moved into the
body's ``anthropic_beta``) and SigV4-signed (service ``bedrock``) over the final bytes; a
retry signs again. Answers come back in Anthropic's shapes: errors mapped by
``x-amzn-ErrorType``, AWS event-stream frames turned into Anthropic SSE events, an exception
frame into one ``event: error``.

The translation is sans-IO; the only I/O is the credential source handed in (see
``trio_bridge.aws_credentials``), which loads in a worker thread.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec

from ..upstream.errors import RemoteProtocolError
from ..upstream.response import ResponseHeaders
from .anthropic import MESSAGES, AnthropicDialect
from .base import AttemptError, Route, RouteTable, UpstreamAttempt, encode

BEDROCK_VERSION = "bedrock-2023-05-31"
EXTRA_HINT = "pip install 'trio-bridge[bedrock]'"

# ``anthropic-beta`` values Bedrock's Claude models accept (as ``anthropic_beta`` in the
# body). Anything else (claude-code-*, oauth-*, prompt-caching-*, files-api-*, ...) makes
# Bedrock answer 400, so it is dropped.
BEDROCK_BETAS = frozenset(
    {
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "computer-use-2025-11-24",
        "token-efficient-tools-2025-02-19",
        "interleaved-thinking-2025-05-14",
        "output-128k-2025-02-19",
        "dev-full-thinking-2025-05-14",
        "context-1m-2025-08-07",
        "context-management-2025-06-27",
        "effort-2025-11-24",
        "tool-search-tool-2025-10-19",
        "tool-examples-2025-10-29",
        "fine-grained-tool-streaming-2025-05-14",
    }
)

# x-amzn-ErrorType (or an exception frame's :exception-type) -> (status, Anthropic type).
_ERRORS: dict[str, tuple[int, str]] = {
    "throttlingexception": (429, "rate_limit_error"),
    "servicequotaexceededexception": (429, "rate_limit_error"),
    "accessdeniedexception": (403, "permission_error"),
    "unrecognizedclientexception": (403, "authentication_error"),
    "invalidsignatureexception": (403, "authentication_error"),
    "incompletesignatureexception": (403, "authentication_error"),
    "expiredtokenexception": (403, "authentication_error"),
    "missingauthenticationtokenexception": (403, "authentication_error"),
    "modelnotreadyexception": (503, "overloaded_error"),
    "serviceunavailableexception": (503, "overloaded_error"),
    "validationexception": (400, "invalid_request_error"),
    "resourcenotfoundexception": (404, "not_found_error"),
    "modeltimeoutexception": (504, "timeout_error"),
    "modelerrorexception": (502, "api_error"),
    "modelstreamerrorexception": (502, "api_error"),
    "internalserverexception": (500, "api_error"),
}
_BY_STATUS = {
    400: "invalid_request_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}
# Headers the bridge sets itself for Bedrock (or that Bedrock must not see).
_DROPPED = frozenset(
    {
        b"content-type",
        b"accept",
        b"anthropic-version",
        b"anthropic-beta",
        b"x-api-key",
        b"authorization",
        b"x-amz-date",
        b"x-amz-security-token",
        b"x-amz-content-sha256",
    }
)
_EVENTSTREAM = "application/vnd.amazon.eventstream"


def botocore_available() -> bool:
    try:
        import botocore.auth  # noqa: F401
        import botocore.eventstream  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class BedrockInfo:
    """What ``/-/snapshot`` and ``check-config`` show: never a secret."""

    region: str
    model: str
    small_fast_model: str | None
    credentials: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "model": self.model,
            "small_fast_model": self.small_fast_model,
            "credentials": self.credentials,
        }


def map_model(requested: str, model: str, small_fast_model: str | None) -> str:
    """``small_fast_model`` for a requested name containing ``haiku``, else ``model``."""
    if small_fast_model and "haiku" in requested.lower():
        return small_fast_model
    return model


def accepted_betas(values: Iterable[bytes | str]) -> list[str]:
    """The comma-separated ``anthropic-beta`` values Bedrock accepts, in order, once each."""
    out: list[str] = []
    for value in values:
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        for item in text.split(","):
            item = item.strip()
            if item in BEDROCK_BETAS and item not in out:
                out.append(item)
    return out


def rewrite_body(body: bytes, betas: list[str]) -> tuple[bytes, str, bool]:
    """The Bedrock body (no ``model``/``stream``, ``anthropic_version`` set, accepted betas
    in ``anthropic_beta``), the requested model and whether it streams."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise AttemptError(400, "request body is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), str):
        raise AttemptError(400, 'request body must be a JSON object with a string "model"')
    model = data.pop("model")
    stream = data.pop("stream", False) is True
    data["anthropic_version"] = BEDROCK_VERSION
    in_body = data.pop("anthropic_beta", None)
    if isinstance(in_body, list):
        betas = accepted_betas([*betas, *(b for b in in_body if isinstance(b, str))])
    if betas:
        data["anthropic_beta"] = betas
    return encode(data), model, stream


def invoke_path(model_id: str, stream: bool) -> bytes:
    """``/model/{id}/invoke[-with-response-stream]``, the id percent-encoded (an inference
    profile ARN's ``:`` and ``/`` included), as botocore sends it."""
    action = "invoke-with-response-stream" if stream else "invoke"
    return f"/model/{quote(model_id, safe='')}/{action}".encode("ascii")


def sigv4_headers(
    method: str,
    url: str,
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    token: str | None,
    region: str,
    content_type: str = "application/json",
) -> list[tuple[bytes, bytes]]:
    """``X-Amz-Date``, ``X-Amz-Security-Token`` (with a session token) and ``Authorization``
    for this exact request; the signed headers are host, content-type and those two."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method=method, url=url, data=body, headers={"Content-Type": content_type})
    SigV4Auth(Credentials(access_key, secret_key, token), "bedrock", region).add_auth(request)
    out = []
    for name, value in request.headers.items():
        lower = name.lower()
        if lower in ("x-amz-date", "x-amz-security-token", "authorization"):
            out.append((lower.encode(), value.encode()))
    return out


def error_type_of(value: str | None) -> str | None:
    """``ThrottlingException:http://internal...`` -> ``throttlingexception``."""
    if not value:
        return None
    return value.split(":", 1)[0].strip().lower() or None


def map_error(status: int, error_type: str | None) -> tuple[int, str]:
    """The client-facing status and Anthropic error type of a Bedrock error."""
    known = _ERRORS.get(error_type or "")
    if known is not None:
        return known
    return status, _BY_STATUS.get(status, "api_error")


def anthropic_error(kind: str, message: str) -> bytes:
    return encode({"type": "error", "error": {"type": kind, "message": message}})


def error_event(kind: str, message: str) -> bytes:
    return b"event: error\ndata: " + anthropic_error(kind, message) + b"\n\n"


class _Message(msgspec.Struct):
    message: str | None = None
    Message: str | None = None


def _message_of(payload: bytes, fallback: str) -> str:
    try:
        m = msgspec.json.decode(payload, type=_Message)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return fallback
    return m.message or m.Message or fallback


class _Chunk(msgspec.Struct):
    bytes: str


class _Typed(msgspec.Struct):
    type: str


class EventStreamToSSE:
    """AWS event-stream frames in, Anthropic SSE events out (sans-IO).

    Each ``chunk`` frame's base64 ``bytes`` holds one Anthropic event; it leaves as
    ``event: <type>\\ndata: <json>\\n\\n``. An exception or error frame sets ``failure``
    (one Anthropic error event) and everything after it is ignored. ``finish`` says whether
    the upstream ended inside a frame."""

    def __init__(self) -> None:
        from botocore.eventstream import EventStreamBuffer

        self._buffer = EventStreamBuffer()
        self._pending = 0
        self.failure: bytes | None = None
        self.failure_reason: str | None = None

    def feed(self, data: bytes) -> bytes:
        if self.failure is not None:
            return b""
        from botocore.eventstream import ParserError

        self._buffer.add_data(data)
        self._pending += len(data)
        out: list[bytes] = []
        try:
            for message in self._buffer:
                # botocore-stubs annotate prelude and headers as int: they are a
                # MessagePrelude and a dict.
                self._pending -= message.prelude.total_length  # type: ignore[attr-defined]
                event = self._translate(message.headers, message.payload)  # type: ignore[arg-type]
                if event is not None:
                    out.append(event)
                if self.failure is not None:
                    break
        except ParserError as exc:
            self._fail("api_error", f"malformed event stream from Bedrock ({type(exc).__name__})")
        return b"".join(out)

    def finish(self) -> None:
        """At the end of the upstream body: a half frame is a cut stream."""
        if self.failure is None and self._pending:
            self._fail("api_error", "Bedrock stream ended inside a frame")

    def _fail(self, kind: str, message: str) -> None:
        self.failure = error_event(kind, message)
        self.failure_reason = message

    def _translate(self, headers: dict[str, Any], payload: bytes) -> bytes | None:
        kind = headers.get(":message-type")
        if kind == "event":
            if headers.get(":event-type") != "chunk":
                return None
            try:
                inner = base64.b64decode(msgspec.json.decode(payload, type=_Chunk).bytes)
                name = msgspec.json.decode(inner, type=_Typed).type
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
                self._fail("api_error", "undecodable chunk in Bedrock event stream")
                return None
            if b"\n" in inner or b"\r" in inner:
                inner = encode(msgspec.json.decode(inner))
            return b"event: " + name.encode() + b"\ndata: " + inner + b"\n\n"
        if kind == "exception":
            exc_type = str(headers.get(":exception-type") or "exception")
            _, anthropic_kind = map_error(502, exc_type.lower())
            message = _message_of(payload, exc_type)
            self._fail(anthropic_kind, f"{exc_type}: {message}")
            return None
        if kind == "error":
            code = str(headers.get(":error-code") or "error")
            message = str(headers.get(":error-message") or code)
            _, anthropic_kind = map_error(502, code.lower())
            self._fail(anthropic_kind, f"{code}: {message}")
        return None


class BedrockStreamError(RemoteProtocolError):
    """The Bedrock stream failed after it started; ``error_event`` is the one Anthropic
    error event the client gets."""

    def __init__(self, reason: str, error_event: bytes) -> None:
        super().__init__(reason)
        self.error_event = error_event


class _Translated:
    """The upstream body with a sans-IO translation applied as bytes arrive."""

    def __init__(self, response: Any, translate: Any, at_end: Any) -> None:
        self._response = response
        self._translate = translate
        self._at_end = at_end

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_raw():
            out = self._translate(chunk)
            if out:
                yield out
        tail = self._at_end()
        if tail:
            yield tail

    async def aclose(self) -> None:
        await self._response.aclose()


class AdaptedResponse:
    """An upstream response as the relay sees it (the attribute names of the pool's
    Response), with a translated status, headers and body."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: _Translated) -> None:
        self.status_code = status
        self.headers = ResponseHeaders(headers)
        self._body = body

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self._body.__aiter__()

    async def aclose(self) -> None:
        await self._body.aclose()


def _relayed_headers(response: Any, content_type: str) -> list[tuple[bytes, bytes]]:
    out = [
        (k, v)
        for k, v in response.headers.raw
        if k.lower() not in (b"content-type", b"content-length", b"transfer-encoding")
    ]
    out.append((b"content-type", content_type.encode()))
    return out


class BedrockDialect(AnthropicDialect):
    """An ``anthropic`` provider with ``bedrock:`` settings; one instance per provider."""

    def __init__(
        self,
        *,
        base_url: str,
        region: str,
        model: str,
        small_fast_model: str | None,
        credentials: Any,
    ) -> None:
        super().__init__()
        self.routes = RouteTable(exact={("POST", MESSAGES.template): MESSAGES}, prefixes=[])
        self.base_url = base_url.rstrip("/")
        self.region = region
        self.model = model
        self.small_fast_model = small_fast_model
        self.credentials = credentials
        self.bedrock_info = BedrockInfo(region, model, small_fast_model, credentials.description)

    def key_header(self, key: str) -> tuple[bytes, bytes]:
        # The pool key stands for the AWS credentials; prepare_attempt signs instead.
        return b"x-api-key", b""

    async def prepare_attempt(self, route: Route, attempt: UpstreamAttempt) -> UpstreamAttempt:
        betas = accepted_betas(v for k, v in attempt.headers if k == b"anthropic-beta")
        body, requested, stream = rewrite_body(attempt.body, betas)
        raw_path = invoke_path(map_model(requested, self.model, self.small_fast_model), stream)
        own = _own_key(attempt.headers) if attempt.byok else None
        headers = [(k, v) for k, v in attempt.headers if k not in _DROPPED]
        headers.append((b"content-type", b"application/json"))
        headers.append((b"accept", _EVENTSTREAM.encode() if stream else b"application/json"))
        if attempt.byok:
            if own is None:
                raise AttemptError(401, "send a Bedrock API key as Authorization: Bearer")
            headers.append((b"authorization", b"Bearer " + own))
        else:
            try:
                keys = await self.credentials.get()
            except Exception as exc:  # botocore's loaders raise many kinds
                raise AttemptError(
                    502, f"AWS credentials unavailable ({type(exc).__name__})"
                ) from None
            headers.extend(
                sigv4_headers(
                    attempt.method,
                    self.base_url + raw_path.decode("ascii"),
                    body,
                    access_key=keys.access_key,
                    secret_key=keys.secret_key,
                    token=keys.token,
                    region=self.region,
                )
            )
        return UpstreamAttempt(attempt.method, raw_path, headers, body, attempt.byok)

    def adapt_response(self, route: Route, response: Any) -> Any:
        status = response.status_code
        if status >= 400:
            return self._error_response(response)
        if response.headers.get("content-type", "").startswith(_EVENTSTREAM):
            translator = EventStreamToSSE()

            def translate(chunk: bytes) -> bytes:
                out = translator.feed(chunk)
                if translator.failure is not None:
                    raise _StreamFailed(out, translator)
                return out

            def at_end() -> bytes:
                translator.finish()
                if translator.failure is not None:
                    raise _StreamFailed(b"", translator)
                return b""

            return AdaptedResponse(
                status,
                _relayed_headers(response, "text/event-stream"),
                _FailingTranslated(response, translate, at_end),
            )
        return response

    def _error_response(self, response: Any) -> AdaptedResponse:
        error_type = error_type_of(response.headers.get("x-amzn-errortype"))
        status, kind = map_error(response.status_code, error_type)
        collected: list[bytes] = []

        def translate(chunk: bytes) -> bytes:
            if sum(map(len, collected)) < 65536:
                collected.append(chunk)
            return b""

        def at_end() -> bytes:
            fallback = error_type or f"Bedrock answered {response.status_code}"
            return anthropic_error(kind, _message_of(b"".join(collected), fallback))

        return AdaptedResponse(
            status,
            _relayed_headers(response, "application/json"),
            _Translated(response, translate, at_end),
        )


class _StreamFailed(Exception):
    def __init__(self, out: bytes, translator: EventStreamToSSE) -> None:
        self.out, self.translator = out, translator


class _FailingTranslated(_Translated):
    """Yields the events before a failure, then raises BedrockStreamError carrying the one
    error event (the relay sends it in place of its generic one)."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in super().__aiter__():
                yield chunk
        except _StreamFailed as failed:
            if failed.out:
                yield failed.out
            t = failed.translator
            assert t.failure is not None
            raise BedrockStreamError(
                t.failure_reason or "Bedrock stream failed", t.failure
            ) from None


def _own_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The caller's own Bedrock API key (BYOK): its Bearer token, else its X-Api-Key."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
    for name, value in headers:
        if name == b"x-api-key" and value:
            return value
    return None
