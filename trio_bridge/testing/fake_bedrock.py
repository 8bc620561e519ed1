"""FakeBedrock: a real loopback server speaking Bedrock's InvokeModel API for Claude.

It checks every request the way AWS does: a SigV4 signature (service ``bedrock``) recomputed
with botocore from a known key pair, the path ``/model/{id}/invoke`` or
``/invoke-with-response-stream``, and a Bedrock body (``anthropic_version``, no ``model``
or ``stream``, only accepted ``anthropic_beta`` values). It answers with Anthropic message
JSON (blocking) or real AWS event-stream frames (streaming), and can be told to throttle,
fail, or break a stream with an exception frame. Every request is recorded first::

    fake = FakeBedrock()
    await nursery.start(fake.serve)
    fake.behave(Throttled())
    ... fake.requests[0].signature_ok, fake.requests[0].model_id

Needs botocore (``pip install 'trio-bridge[bedrock]'``).
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import struct
import zlib
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import trio

from . import wire
from .behaviours import RecordedRequest
from .http11 import Request, Responder, open_listeners, serve_listeners

__all__ = [
    "BedrockError",
    "BedrockRequest",
    "FakeBedrock",
    "StreamException",
    "Throttled",
    "encode_frame",
]

ACCESS_KEY = "AKIAFAKEBEDROCK0TEST"
SECRET_KEY = "fake/bedrock+secret/key/0123456789abcdefghij"  # noqa: S105 - a fake's test key
BEDROCK_VERSION = "bedrock-2023-05-31"
_PATH = re.compile(r"^/model/([^/]+)/(invoke|invoke-with-response-stream)$")
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$"
)


@dataclass(frozen=True)
class Throttled:
    """429 ``ThrottlingException``, as Bedrock sends when over the account's rate."""

    message: str = "Too many requests, please wait before trying again."


@dataclass(frozen=True)
class BedrockError:
    """Any Bedrock error: ``status``, ``x-amzn-ErrorType`` ``error_type``, ``{"message"}``."""

    status: int = 503
    error_type: str = "ServiceUnavailableException"
    message: str = "Bedrock is unable to process your request."


@dataclass(frozen=True)
class StreamException:
    """A stream that sends ``after_events`` chunk frames, then one exception frame
    (``:message-type: exception``) and ends the body cleanly, as Bedrock does."""

    after_events: int = 3
    exception_type: str = "modelStreamErrorException"
    message: str = "The model stream failed."


FakeBedrockBehaviour = Throttled | BedrockError | StreamException


@dataclass(frozen=True)
class BedrockRequest(RecordedRequest):
    """A recorded request plus what the fake found: ``model_id`` (percent-decoded),
    ``streaming`` (the invoke-with-response-stream path), ``signature_ok`` (recomputed
    with botocore), ``access_key`` and ``signature`` from the Authorization header."""

    model_id: str | None = None
    streaming: bool = False
    signature_ok: bool = False
    access_key: str | None = None
    signature: str | None = None


# --- AWS event-stream encoding ----------------------------------------------------------------


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (lengths + CRC), string headers, payload, CRC."""
    raw_headers = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        raw_headers += struct.pack("!B", len(n)) + n + b"\x07" + struct.pack("!H", len(v)) + v
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(raw_headers))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + raw_headers + payload
    return message + struct.pack("!I", zlib.crc32(message))


def chunk_frame(event: dict[str, Any]) -> bytes:
    """A ``chunk`` event frame carrying one Anthropic event, base64 in ``bytes``."""
    inner = base64.b64encode(wire.dumps(event)).decode()
    payload = wire.dumps({"bytes": inner, "p": "abcdefghijklmnopqrstuvwxyz"[: len(inner) % 26]})
    return encode_frame(
        {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
        payload,
    )


def exception_frame(exception_type: str, message: str) -> bytes:
    return encode_frame(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        wire.dumps({"message": message}),
    )


def _sse_to_events(events: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for event in events:
        for line in event.split(b"\n"):
            if line.startswith(b"data: "):
                out.append(json.loads(line[6:]))
    return out


# --- the server -------------------------------------------------------------------------------


class FakeBedrock:
    """A fake ``bedrock-runtime`` endpoint. Credentials it accepts: ``credentials``
    (access key -> (secret, session token or None)); Bedrock API keys (``Authorization:
    Bearer``) in ``api_keys``. ``accepted_betas`` are the ``anthropic_beta`` values it takes
    (default: the bridge's list)."""

    def __init__(
        self,
        *,
        region: str = "us-east-1",
        credentials: dict[str, tuple[str, str | None]] | None = None,
        api_keys: Collection[str] = (),
        accepted_betas: Collection[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        from ..providers.bedrock import BEDROCK_BETAS

        self.region = region
        self.credentials = dict(credentials or {ACCESS_KEY: (SECRET_KEY, None)})
        self.api_keys = set(api_keys)
        self.accepted_betas = frozenset(BEDROCK_BETAS if accepted_betas is None else accepted_betas)
        self.host = host
        self._wanted_port = port
        self._port: int | None = None
        self.requests: list[BedrockRequest] = []
        self.default_chunks = 4
        self.default_pace = 0.0
        self._queue: deque[FakeBedrockBehaviour] = deque()
        self._change: trio.Event | None = None

    @property
    def port(self) -> int:
        port = self._port or self._wanted_port
        if not port:
            raise RuntimeError("FakeBedrock is not serving yet: await nursery.start(fake.serve)")
        return port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What a Bedrock provider's ``base_url`` takes."""
        return self.url

    def behave(self, *behaviours: FakeBedrockBehaviour) -> None:
        """Queue behaviours for the next requests (then the normal answer again)."""
        self._queue.extend(behaviours)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            if self._change is None:
                self._change = trio.Event()
            await self._change.wait()

    async def serve(
        self, *, task_status: trio.TaskStatus[FakeBedrock] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners, self._port = await open_listeners(self.host, self._wanted_port)
        task_status.started(self)
        await serve_listeners(self._handle, listeners)

    # --- checks -----------------------------------------------------------------------------

    def _verify(self, request: Request) -> tuple[str | None, str | None, str | None]:
        """(access key, signature, error type or None when the signature is right)."""
        headers = request.headers
        auth = _header(headers, "authorization")
        if auth is None:
            return None, None, "MissingAuthenticationTokenException"
        if auth.startswith("Bearer "):
            ok = auth[7:].strip() in self.api_keys
            return None, None, None if ok else "UnrecognizedClientException"
        m = _AUTH.match(auth)
        if m is None:
            return None, None, "IncompleteSignatureException"
        access_key, day, region, service, signed, signature = m.groups()
        known = self.credentials.get(access_key)
        if known is None:
            return access_key, signature, "UnrecognizedClientException"
        secret, token = known
        if token is not None and _header(headers, "x-amz-security-token") != token:
            return access_key, signature, "UnrecognizedClientException"
        amz_date = _header(headers, "x-amz-date") or ""
        if region != self.region or service != "bedrock" or not amz_date.startswith(day):
            return access_key, signature, "InvalidSignatureException"
        expected = _expected_signature(request, signed.split(";"), amz_date, secret, token, region)
        if not hmac.compare_digest(expected, signature):
            return access_key, signature, "InvalidSignatureException"
        return access_key, signature, None

    async def _handle(self, request: Request, resp: Responder) -> None:
        path = request.target.split("?", 1)[0]
        m = _PATH.match(path)
        access_key, signature, auth_error = self._verify(request)
        rec = BedrockRequest(
            request.method,
            request.target,
            request.headers,
            request.body,
            access_key,
            model_id=unquote(m.group(1)) if m else None,
            streaming=bool(m and m.group(2) == "invoke-with-response-stream"),
            signature_ok=auth_error is None,
            access_key=access_key,
            signature=signature,
        )
        self.requests.append(rec)
        if self._change is not None:
            self._change.set()
            self._change = None
        if auth_error is not None:
            messages = {
                "InvalidSignatureException": "The request signature we calculated does not "
                "match the signature you provided. Check your AWS Secret Access Key and "
                "signing method.",
                "UnrecognizedClientException": "The security token included in the request "
                "is invalid.",
            }
            await _error(resp, 403, auth_error, messages.get(auth_error, "Access denied."))
            return
        if request.method != "POST" or m is None:
            await _error(resp, 404, "UnknownOperationException", "Unknown operation")
            return
        payload = rec.json
        problem = self._body_problem(payload)
        if problem is not None:
            await _error(resp, 400, "ValidationException", problem)
            return
        behaviour = self._queue.popleft() if self._queue else None
        if isinstance(behaviour, Throttled):
            await _error(resp, 429, "ThrottlingException", behaviour.message)
            return
        if isinstance(behaviour, BedrockError):
            await _error(resp, behaviour.status, behaviour.error_type, behaviour.message)
            return
        assert isinstance(payload, dict)
        c = wire.make_completion(
            "anthropic",
            "claude-sonnet-4-5-20250929",
            payload,
            chunks=self.default_chunks if rec.streaming else wire.BLOCKING_PIECES,
        )
        rid = [("x-amzn-requestid", wire.new_id(""))]
        if not rec.streaming:
            body = wire.dumps(wire.anthropic_message(c))
            await resp.respond(200, [("content-type", "application/json"), *rid], body)
            return
        events = _sse_to_events(wire.anthropic_events(c))
        events[-1]["amazon-bedrock-invocationMetrics"] = {
            "inputTokenCount": c.usage.input_tokens,
            "outputTokenCount": c.usage.output_tokens,
            "invocationLatency": 1,
            "firstByteLatency": 1,
        }
        frames = [chunk_frame(e) for e in events]
        if isinstance(behaviour, StreamException):
            frames = frames[: behaviour.after_events]
            frames.append(exception_frame(behaviour.exception_type, behaviour.message))

        async def run() -> None:
            await resp.start(
                200,
                [
                    ("content-type", "application/vnd.amazon.eventstream"),
                    ("x-amzn-bedrock-content-type", "application/json"),
                    *rid,
                ],
            )
            for i, frame in enumerate(frames):
                if i and self.default_pace:
                    await trio.sleep(self.default_pace)
                await resp.send(frame)
            await resp.end()

        await resp.run_watching_peer(run)

    def _body_problem(self, payload: Any) -> str | None:
        if not isinstance(payload, dict):
            return "Malformed input request, please reformat your input and try again."
        for extra in ("model", "stream"):
            if extra in payload:
                return f"Malformed input request: #: extraneous key [{extra}] is not permitted"
        if payload.get("anthropic_version") != BEDROCK_VERSION:
            return "Malformed input request: #: required key [anthropic_version] not found"
        betas = payload.get("anthropic_beta", [])
        if not isinstance(betas, list) or any(b not in self.accepted_betas for b in betas):
            return "invalid beta flag"
        return None


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return v
    return None


def _expected_signature(
    request: Request,
    signed: list[str],
    amz_date: str,
    secret: str,
    token: str | None,
    region: str,
) -> str:
    """The SigV4 signature AWS would compute for this request, by botocore."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    values = {name: ",".join(v for k, v in request.headers if k == name) for name in signed}
    host = values.get("host") or ""
    aws = AWSRequest(
        method=request.method,
        url=f"http://{host}{request.target}",
        headers=values,
        data=request.body,
    )
    aws.context["timestamp"] = amz_date
    auth = SigV4Auth(Credentials("unused", secret, token), "bedrock", region)
    canonical = auth.canonical_request(aws)
    return auth.signature(auth.string_to_sign(aws, canonical), aws)


async def _error(resp: Responder, status: int, error_type: str, message: str) -> None:
    headers = [
        ("content-type", "application/json"),
        ("x-amzn-errortype", f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        ("x-amzn-requestid", wire.new_id("")),
    ]
    await resp.respond(status, headers, wire.dumps({"message": message}))
