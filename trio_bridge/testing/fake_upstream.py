"""FakeUpstream: a real HTTP/1.1 server on loopback that speaks the OpenAI or Anthropic API.

Use it from trio code (``await nursery.start(fake.serve)``) or run it on its own::

    python -m trio_bridge.testing.fake_upstream --port 8001 --dialect openai

Guarantees: every request is recorded in arrival order before it is answered;
queued behaviours are consumed in that order; a client that leaves mid-answer
ends only its own connection (counted in ``disconnects``); cancelling ``serve``
closes the listener and every connection.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import signal
import socket
import struct
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import trio

from . import wire
from .behaviours import (
    Answer,
    Behaviour,
    ContentPolicy,
    ContextLengthExceeded,
    CutStream,
    Fail,
    PrefillRejected,
    RateLimited,
    RawStream,
    RecordedRequest,
    Reply,
    Reset,
    SlowFirstByte,
    Unauthorized,
)
from .http11 import Request, Responder, open_listeners, serve_listeners
from .wire import DialectName

__all__ = ["FakeUpstream", "main"]

# Generation routes: what kind of answer a path produces.
_CHAT, _RESPONSES, _MESSAGES = "chat", "responses", "messages"


@dataclass
class _Rule:
    """A scripted behaviour: requests for which ``match(request, number)`` holds get
    ``behaviour``, ``remaining`` more times (None: forever)."""

    match: Callable[[RecordedRequest, int], bool]
    behaviour: Behaviour
    remaining: int | None


_REFUSALS: dict[type, str] = {
    ContextLengthExceeded: "context_length",
    ContentPolicy: "content_policy",
    PrefillRejected: "prefill",
}


MALFORMED_EVENT = b'data: {"choices": [{"delta": {"content": "unterminated\n\n'

_REFUSAL_TEXT = {
    "context_length": (
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 210000 tokens. Please reduce the length of the messages.",
        "prompt is too long: 210000 tokens > 200000 maximum",
        "context_length_exceeded",
    ),
    "content_policy": (
        "Your request was rejected as a result of our safety system.",
        "Output blocked by content filtering policy",
        "content_policy_violation",
    ),
    "prefill": (
        "This model does not support assistant message prefill.",
        "This model does not support assistant message prefill. The conversation must end "
        "with a user message.",
        "invalid_value",
    ),
}


def refusal_body(dialect: DialectName, kind: str) -> dict[str, Any]:
    """A 400 body refusing the request: ``kind`` is ``context_length``, ``content_policy``
    or ``prefill``, worded as each API words it."""
    openai_text, anthropic_text, code = _REFUSAL_TEXT[kind]
    if dialect == "anthropic":
        return wire.anthropic_error(400, anthropic_text, type="invalid_request_error")
    return wire.openai_error(400, openai_text, type="invalid_request_error", code=code)


def first_content_index(events: list[bytes], kind: str) -> int:
    """Index of the first event carrying the answer: after the role chunk (chat), after
    ``message_start``/``content_block_start``/``ping`` (messages), the first ``*.delta``
    (responses)."""
    if kind == "messages":
        return 3
    if kind == "responses":
        for i, event in enumerate(events):
            if event.startswith(b"event: ") and event.split(b"\n", 1)[0].endswith(b".delta"):
                return i
        return len(events) - 1
    return 1


def _reset(resp: Responder) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0) before any response byte."""
    sock = getattr(getattr(resp, "_stream", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    resp.abort()


def _carried_keys(headers: Sequence[tuple[str, str]]) -> tuple[str | None, str | None]:
    """The ``Authorization: Bearer`` token and the ``X-Api-Key`` value, each or None."""
    bearer = api_key = None
    for name, value in headers:
        if name == "authorization" and bearer is None:
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer":
                bearer = token.strip()
        elif name == "x-api-key" and api_key is None:
            api_key = value
    return bearer, api_key


class FakeUpstream:
    """A fake OpenAI (``dialect="openai"``), Anthropic (``"anthropic"``) or Copilot
    (``"copilot"``: OpenAI shapes without the ``/v1`` prefix) upstream.

    Without instructions it answers like the real API (see :mod:`.wire`). ``behave``
    queues behaviours for the next requests; ``behave_for_key`` makes one sticky for
    a key; ``behave_for_model``, ``behave_on`` and ``behave_when`` script requests by
    model, by call number or by any predicate. For each request the first of these that
    applies wins: ``valid_keys`` (when set, a request carrying none of them gets 401),
    the per-key behaviour, the scripted rules in the order given, the queue, the normal
    answer. Only the queue and rules with ``times`` are consumed.
    """

    def __init__(
        self,
        dialect: DialectName = "openai",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
    ) -> None:
        if dialect not in wire.DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; expected one of {wire.DIALECTS}")
        self.dialect: DialectName = dialect
        self.host = host
        self._wanted_port = port
        self._port: int | None = None
        # Keep every request in ``requests`` (turn off for long-running benchmarks).
        self.record = record
        self.requests: list[RecordedRequest] = []
        self.request_count = 0
        self.sent_events = 0
        self.disconnects = 0
        self.default_pace = 0.0
        self.default_chunks = 8
        self.default_first_byte_delay = 0.0
        self.valid_keys: Collection[str] | None = None
        self._queue: deque[Behaviour] = deque()
        self._per_key: dict[str, Behaviour] = {}
        self._rules: list[_Rule] = []
        self._change: trio.Event | None = None
        self._rid_header = "request-id" if dialect == "anthropic" else "x-request-id"

    # --- addresses --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after ``serve`` started, or the fixed port given)."""
        port = self._port or self._wanted_port
        if not port:
            raise RuntimeError("FakeUpstream is not serving yet: await nursery.start(fake.serve)")
        return port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, no trailing slash."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """A provider's or SDK's ``base_url``: openai ``url + "/v1"``, else ``url``."""
        return self.url + "/v1" if self.dialect == "openai" else self.url

    # --- instructions -----------------------------------------------------------------------

    def behave(self, *behaviours: Behaviour) -> None:
        """Queue behaviours: the next requests get them in order, then the default again."""
        self._queue.extend(behaviours)

    def behave_for_key(self, key: str, behaviour: Behaviour) -> None:
        """Every request carrying ``key`` (Bearer token or X-Api-Key) gets ``behaviour``."""
        self._per_key[key] = behaviour

    def behave_when(
        self,
        predicate: Callable[[RecordedRequest], bool],
        behaviour: Behaviour,
        *,
        times: int | None = None,
    ) -> None:
        """Requests for which ``predicate(request)`` is true get ``behaviour`` (only the next
        ``times`` such requests when given). The predicate sees the request as recorded."""
        self._add_rule(lambda rec, _n: predicate(rec), behaviour, times)

    def behave_for_model(
        self, model: str, behaviour: Behaviour, *, times: int | None = None
    ) -> None:
        """Requests whose body ``model`` matches ``model`` (a glob: ``"gpt-4o*"``) get
        ``behaviour`` (the next ``times`` of them when given)."""
        self._add_rule(
            lambda rec, _n: rec.model is not None and fnmatch.fnmatchcase(rec.model, model),
            behaviour,
            times,
        )

    def behave_on(self, number: int, behaviour: Behaviour) -> None:
        """The ``number``-th request this fake receives (1-based, counting every request
        since it was made, those already served included) gets ``behaviour``."""
        if number < 1:
            raise ValueError("request numbers start at 1")
        self._add_rule(lambda _rec, n: n == number, behaviour, 1)

    def _add_rule(
        self,
        match: Callable[[RecordedRequest, int], bool],
        behaviour: Behaviour,
        times: int | None,
    ) -> None:
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None: every matching request)")
        self._rules.append(_Rule(match, behaviour, times))

    def _scripted(self, rec: RecordedRequest, number: int) -> Behaviour | None:
        """The first rule matching request ``number``, consumed when it has ``times``."""
        for rule in self._rules:
            if rule.match(rec, number):
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                return rule.behaviour
        return None

    def requests_for_model(self, model: str) -> list[RecordedRequest]:
        """The recorded requests whose body names ``model``, in arrival order."""
        return [r for r in self.requests if r.model == model]

    def clear(self) -> None:
        """Forget queued, per-key and scripted behaviours (recorded requests stay)."""
        self._queue.clear()
        self._per_key.clear()
        self._rules.clear()

    @property
    def first_byte_delay(self) -> float:
        """Alias of ``default_first_byte_delay``."""
        return self.default_first_byte_delay

    @first_byte_delay.setter
    def first_byte_delay(self, value: float) -> None:
        self.default_first_byte_delay = value

    @property
    def last_request(self) -> RecordedRequest:
        """The most recent recorded request (IndexError when none)."""
        return self.requests[-1]

    # --- waiting ----------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true; re-checked after every request, event and
        disconnect the fake sees."""
        while not predicate():
            if self._change is None:
                self._change = trio.Event()
            await self._change.wait()

    async def wait_requests(self, n: int) -> None:
        """Return once ``n`` requests in total have arrived."""
        await self.wait_for(lambda: self.request_count >= n)

    async def wait_sent_events(self, n: int) -> None:
        """Return once ``n`` whole SSE events in total have been written to sockets."""
        await self.wait_for(lambda: self.sent_events >= n)

    def _changed(self) -> None:
        change = self._change
        if change is not None:
            self._change = None
            change.set()

    # --- serving ----------------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[FakeUpstream] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``host:port`` (port 0: a free one), report ``self`` through
        ``task_status`` once listening, serve until cancelled."""
        listeners, self._port = await open_listeners(self.host, self._wanted_port)
        task_status.started(self)
        await serve_listeners(self._handle, listeners)

    async def _handle(self, request: Request, resp: Responder) -> None:
        bearer, api_key = _carried_keys(request.headers)
        rec = RecordedRequest(
            request.method, request.target, request.headers, request.body, bearer or api_key
        )
        self.request_count += 1
        if self.record:
            self.requests.append(rec)
        self._changed()
        if self.valid_keys is not None and not (
            (bearer is not None and bearer in self.valid_keys)
            or (api_key is not None and api_key in self.valid_keys)
        ):
            await self._error(resp, 401)
            return
        behaviour = self._per_key.get(bearer or "") or self._per_key.get(api_key or "")
        if behaviour is None and self._rules:
            behaviour = self._scripted(rec, self.request_count)
        if behaviour is None and self._queue:
            behaviour = self._queue.popleft()
        await self._apply(behaviour, rec, resp)

    async def _apply(self, b: Behaviour | None, rec: RecordedRequest, resp: Responder) -> None:
        if b is None:
            await self._route(rec, resp, None)
        elif isinstance(b, Answer | CutStream):
            await self._route(rec, resp, b)
        elif isinstance(b, Reply):
            await self._reply(resp, b)
        elif isinstance(b, RateLimited):
            headers = []
            if b.retry_after is not None:
                headers.append(("retry-after", b.retry_after))
            if b.retry_after_ms is not None:
                headers.append(("retry-after-ms", str(b.retry_after_ms)))
            await self._error(resp, 429, headers=headers)
        elif isinstance(b, Unauthorized):
            await self._error(resp, 401)
        elif isinstance(b, Fail):
            await self._error(resp, b.status, b.message)
        elif isinstance(b, ContextLengthExceeded | ContentPolicy | PrefillRejected):
            await self._json(resp, refusal_body(self.dialect, _REFUSALS[type(b)]), 400)
        elif isinstance(b, Reset):
            _reset(resp)
        elif isinstance(b, SlowFirstByte):

            async def later() -> None:
                await trio.sleep(b.delay)
                await self._apply(b.then, rec, resp)

            await self._guarded(resp, later)
        elif isinstance(b, RawStream):
            stream_headers = {"content-type": "text/event-stream", **(b.headers or {})}
            await self._stream(
                resp,
                list(b.events),
                pace=self.default_pace if b.pace is None else b.pace,
                status=b.status,
                headers=list(stream_headers.items()),
            )
        else:
            raise TypeError(f"not a behaviour: {b!r}")

    # --- the default answers ------------------------------------------------------------------

    async def _route(
        self, rec: RecordedRequest, resp: Responder, forced: Answer | CutStream | None
    ) -> None:
        """Answer like the real API; ``forced`` makes any path a generation route."""
        path, method = rec.path, rec.method
        if self.dialect == "openai":
            sub = path[3:] if path.startswith("/v1/") else None
        elif self.dialect == "copilot":
            sub = path
        else:
            sub = path[3:] if path.startswith("/v1/") else None
        anthropic = self.dialect == "anthropic"

        kind: str | None = None
        if sub is not None and method == "POST":
            if anthropic and sub == "/messages":
                kind = _MESSAGES
            elif not anthropic and sub == "/chat/completions":
                kind = _CHAT
            elif not anthropic and sub == "/responses":
                kind = _RESPONSES
        if forced is not None:
            await self._generate(
                rec, resp, kind or (_MESSAGES if anthropic else _CHAT), forced, lenient=True
            )
            return
        if kind is not None:
            await self._generate(rec, resp, kind, Answer(), lenient=False)
            return

        if sub is not None:
            if method == "GET" and sub == "/models":
                await self._json(
                    resp, wire.anthropic_models() if anthropic else wire.openai_models()
                )
                return
            if method == "GET" and sub.startswith("/models/") and len(sub) > 8:
                model_id = unquote(sub[8:])
                body = wire.anthropic_model(model_id) if anthropic else wire.openai_model(model_id)
                await self._json(resp, body)
                return
            if method == "POST" and (
                (anthropic and sub == "/messages/count_tokens")
                or (not anthropic and sub == "/embeddings")
            ):
                payload = await self._payload(rec, resp)
                if payload is None:
                    return
                if anthropic:
                    await self._json(resp, wire.anthropic_count_tokens(payload))
                else:
                    model = payload.get("model") or "text-embedding-3-small"
                    fmt = payload.get("encoding_format")
                    await self._json(
                        resp,
                        wire.embeddings(str(model), payload.get("input", ""), encoding_format=fmt),
                    )
                return
            if (
                not anthropic
                and method == "GET"
                and sub.startswith("/responses/")
                and len(sub) > 11
            ):
                c = wire.make_completion(
                    self.dialect, "gpt-4o-mini", {}, chunks=wire.BLOCKING_PIECES
                )
                await self._json(resp, wire.response_object(c, response_id=unquote(sub[11:])))
                return
        if anthropic:
            await self._error(resp, 404, "Not Found")
        else:
            await self._error(resp, 404, f"Invalid URL ({method} {path})")

    async def _payload(self, rec: RecordedRequest, resp: Responder) -> dict[str, Any] | None:
        """The body as a JSON object, or None after answering 400."""
        payload = rec.json
        if isinstance(payload, dict):
            return payload
        if self.dialect == "anthropic":
            message = (
                "There was an error parsing the body of your request; "
                "please check that it is valid JSON."
            )
        else:
            message = (
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                "payload, but what was sent was not valid JSON."
            )
        await self._error(resp, 400, message)
        return None

    async def _generate(
        self,
        rec: RecordedRequest,
        resp: Responder,
        kind: str,
        answer: Answer | CutStream,
        *,
        lenient: bool,
    ) -> None:
        payload: dict[str, Any] | None
        if lenient:
            payload = rec.json if isinstance(rec.json, dict) else {}
        else:
            payload = await self._payload(rec, resp)
            if payload is None:
                return
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            if not lenient:
                message = (
                    "model: Field required"
                    if kind == _MESSAGES
                    else "you must provide a model parameter"
                )
                await self._error(resp, 400, message)
                return
            model = "claude-sonnet-4-5" if kind == _MESSAGES else "gpt-4o-mini"

        cut = answer if isinstance(answer, CutStream) else None
        token_delay, malformed_after, omit_terminal = 0.0, None, False
        if cut is not None:
            streaming, usage, tool_call, stall_after, delay = True, None, None, None, 0.0
        else:
            assert isinstance(answer, Answer)
            streaming = (
                answer.stream if answer.stream is not None else payload.get("stream") is True
            )
            usage, tool_call, stall_after = answer.usage, answer.tool_call, answer.stall_after
            delay = answer.first_byte_delay
            token_delay, malformed_after = answer.first_token_delay, answer.malformed_after
            omit_terminal = answer.omit_terminal
        chunks = answer.chunks or (self.default_chunks if streaming else wire.BLOCKING_PIECES)
        pace = self.default_pace if answer.pace is None else answer.pace
        delay = delay or self.default_first_byte_delay
        c = wire.make_completion(
            self.dialect, model, payload, chunks=chunks, usage=usage, tool_call=tool_call
        )
        text = getattr(answer, "text", None)
        if text is not None and tool_call is None:
            pieces = wire.split_text(text, chunks)
            c = dataclasses.replace(
                c,
                pieces=pieces,
                usage=usage or wire.Usage(wire.estimate_input_tokens(payload), len(pieces)),
            )

        if not streaming:
            if kind == _MESSAGES:
                body = wire.anthropic_message(c)
            elif kind == _RESPONSES:
                body = wire.response_object(c)
            else:
                body = wire.chat_completion(c)
            if delay > 0:

                async def later() -> None:
                    await trio.sleep(delay)
                    await self._json(resp, body)

                await self._guarded(resp, later)
            else:
                await self._json(resp, body)
            return

        if kind == _MESSAGES:
            events = wire.anthropic_events(c)
        elif kind == _RESPONSES:
            events = wire.response_events(c)
        else:
            options = payload.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            events = wire.chat_completion_events(c, include_usage=include_usage)
        first_content = first_content_index(events, kind)
        if omit_terminal:
            events = events[:-1]
        if malformed_after is not None:
            events.insert(malformed_after, MALFORMED_EVENT)
            if malformed_after <= first_content:
                first_content += 1
        await self._stream(
            resp,
            events,
            pace=pace,
            first_byte_delay=delay,
            cut=cut,
            stall_after=stall_after,
            token_delay=(first_content, token_delay) if token_delay > 0 else None,
        )

    # --- writing ----------------------------------------------------------------------------

    def _headers(self, content_type: str) -> list[tuple[str, str]]:
        return [("content-type", content_type), (self._rid_header, wire.new_id("req_"))]

    async def _json(
        self, resp: Responder, body: Any, status: int = 200, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        await resp.respond(status, [*self._headers("application/json"), *headers], wire.dumps(body))

    async def _error(
        self,
        resp: Responder,
        status: int,
        message: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        await self._json(resp, wire.error_body(self.dialect, status, message), status, headers)

    async def _reply(self, resp: Responder, r: Reply) -> None:
        headers = {k.lower(): v for k, v in (r.headers or {}).items()}
        if isinstance(r.body, dict):
            body = wire.dumps(r.body)
        else:
            body = r.body or b""
        headers.setdefault("content-type", "application/json")
        headers.pop("content-length", None)
        await resp.respond(r.status, list(headers.items()), body)

    async def _guarded(self, resp: Responder, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` until it ends or the client leaves (then count a disconnect)."""
        if not await resp.run_watching_peer(fn):
            self.disconnects += 1
            self._changed()

    async def _stream(
        self,
        resp: Responder,
        events: list[bytes],
        *,
        pace: float,
        first_byte_delay: float = 0.0,
        status: int = 200,
        headers: Sequence[tuple[str, str]] | None = None,
        cut: CutStream | None = None,
        stall_after: int | None = None,
        token_delay: tuple[int, float] | None = None,
    ) -> None:
        """Send ``events`` as a chunked response, one chunk each, ``pace`` seconds apart;
        ``token_delay=(i, s)`` waits ``s`` more seconds before event ``i``."""
        if headers is None:
            headers = [*self._headers("text/event-stream"), ("cache-control", "no-cache")]

        async def run() -> None:
            if first_byte_delay > 0:
                await trio.sleep(first_byte_delay)
            await resp.start(status, headers)
            for i, event in enumerate(events):
                if i and pace > 0:
                    await trio.sleep(pace)
                if token_delay is not None and i == token_delay[0]:
                    await trio.sleep(token_delay[1])
                if stall_after is not None and i >= stall_after:
                    await trio.sleep_forever()
                if cut is not None and i >= cut.after_chunks:
                    await self._cut(resp, event, cut)
                    return
                await resp.send(event)
                self.sent_events += 1
                self._changed()
            if cut is not None:
                await self._cut(resp, b"", cut)
                return
            await resp.end()

        await self._guarded(resp, run)

    @staticmethod
    async def _cut(resp: Responder, event: bytes, cut: CutStream) -> None:
        if cut.partial and event:
            await resp.send(event[: max(1, len(event) // 2)])
        if cut.abort:
            resp.abort()
        else:
            await resp.end()


# --- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Serve one fake upstream until SIGINT/SIGTERM; prints ``listening on URL`` when ready."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_bridge.testing.fake_upstream",
        description="A fake OpenAI/Anthropic upstream speaking the real wire formats.",
    )
    parser.add_argument("--dialect", choices=wire.DIALECTS, default="openai")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between SSE events")
    parser.add_argument("--chunks", type=int, default=8, help="content deltas per stream")
    parser.add_argument(
        "--first-byte-delay", type=float, default=0.0, help="seconds before each answer"
    )
    parser.add_argument(
        "--record", action="store_true", help="keep requests in memory (grows forever)"
    )
    args = parser.parse_args(argv)

    fake = FakeUpstream(args.dialect, host=args.host, port=args.port, record=args.record)
    fake.default_pace = args.pace
    fake.default_chunks = args.chunks
    fake.default_first_byte_delay = args.first_byte_delay

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(fake.serve)
                print(f"listening on {fake.url}", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
