"""What every dialect provides: its route table, key injection, error shapes and usage reading."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

_json = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Route:
    """A matched route. ``template`` is the metric label; ``bridged`` routes are parsed."""

    endpoint: str
    template: str
    bridged: bool


@dataclass(slots=True)
class TokenUsage:
    """Token counts read from an upstream answer (None: not reported).

    ``input`` excludes cached tokens in every dialect; ``extra`` keeps the provider's other
    usage fields under their own names (``reasoning_tokens`` lifted to the top level)."""

    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    extra: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, int]:
        return {
            k: v
            for k, v in (
                ("input", self.input),
                ("output", self.output),
                ("cache_read", self.cache_read),
                ("cache_write", self.cache_write),
            )
            if v is not None
        }


class Peek(msgspec.Struct):
    """The few fields of a request body the bridge needs; everything else is ignored."""

    model: str | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None


@dataclass(slots=True)
class UpstreamAttempt:
    """One attempt's request as it will go upstream: ``raw_path`` (path + query) is appended
    to the provider's base_url; ``byok`` when the caller's own key travels (no pool key)."""

    method: str
    raw_path: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    byok: bool = False


class AttemptError(Exception):
    """A request the dialect cannot send (e.g. no AWS credentials): answered with ``status``,
    never a breaker failure."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class BodyError(Exception):
    """A bridged request body the bridge cannot route (400)."""


_peek_decoder = msgspec.json.Decoder(Peek)


def peek_body(body: bytes) -> Peek:
    """``model`` and ``stream`` from a JSON object body; BodyError if unusable.

    Never raises anything else, whatever the bytes: invalid JSON, a value of the wrong type,
    a number out of range in a peeked field, or nesting deeper than the decoder's recursion
    limit (msgspec raises RecursionError before the C stack is at risk) all become BodyError.
    """
    try:
        peek = _peek_decoder.decode(body)
    except msgspec.ValidationError:
        raise BodyError('request body must be a JSON object with a string "model"') from None
    except msgspec.DecodeError:
        raise BodyError("request body is not valid JSON") from None
    except RecursionError:
        raise BodyError("request body is nested too deeply") from None
    if not peek.model:
        raise BodyError('request body has no "model"')
    return peek


class RouteTable:
    """Exact routes and prefix routes over a raw path (already checked for safety)."""

    def __init__(
        self, exact: dict[tuple[str, str], Route], prefixes: list[tuple[str, Route, bool]]
    ):
        # exact: (METHOD or "*", path) -> Route; prefixes: (path, route, also_exact)
        self._exact = exact
        self._prefixes = prefixes

    def match(self, method: str, path: str) -> Route | None:
        route = self._exact.get((method, path)) or self._exact.get(("*", path))
        if route is not None:
            return route
        for prefix, prefix_route, also_exact in self._prefixes:
            if path.startswith(prefix + "/") or (also_exact and path == prefix):
                return prefix_route
        return None


class Dialect:
    """One upstream API family. Subclasses fill in the tables; instances are stateless."""

    type: str = ""
    # The part of the path after /{name} that base_url already ends with ("/v1" for openai).
    base_path: str = ""
    routes: RouteTable

    def match(self, method: str, path: str) -> Route | None:
        return self.routes.match(method, path)

    def upstream_path(self, path_and_query: str) -> str:
        """The raw path+query to append to base_url."""
        return path_and_query[len(self.base_path) :]

    def key_header(self, key: str) -> tuple[bytes, bytes]:
        raise NotImplementedError

    def error_body(self, status: int, message: str, kind: str | None = None) -> bytes:
        raise NotImplementedError

    def stream_error_event(self, route: Route, message: str, last_event: bytes) -> bytes:
        raise NotImplementedError

    def prepare_body(self, route: Route, body: bytes, peek: Peek) -> tuple[bytes, bool]:
        """The body to send upstream, and whether the client asked for usage chunks."""
        return body, True

    def usage_from_body(self, route: Route, body: bytes) -> TokenUsage | None:
        return None

    # --- per-attempt hooks (no-ops here; Bedrock rewrites, signs and translates) ---------

    async def prepare_attempt(self, route: Route, attempt: UpstreamAttempt) -> UpstreamAttempt:
        """The request to send for one attempt (called again on every retry, so a signature
        is always fresh). Raises AttemptError when it cannot be sent."""
        return attempt

    def adapt_response(self, route: Route, response: Any) -> Any:
        """The upstream response as the client's dialect speaks it (status, headers, body
        bytes), applied before key marking, breaker verdict and relay."""
        return response

    def usage_from_event(self, route: Route, event: bytes, usage: TokenUsage) -> bool:
        """Fold one SSE event into ``usage``; True when the event is a usage-only chunk
        the client did not ask for and must not be relayed (OpenAI chat only)."""
        return False

    def stream_event_kind(self, route: Route, event: bytes) -> str | None:
        """``"content"`` for an event that carries the answer (or ends it), ``"error"`` for
        an error event, None for anything else (role-only chunks, pings, created events).
        Used by ``first_token_timeout``: the response head waits for the first content."""
        return "content"

    def is_context_length_error(self, status: int, body: bytes) -> bool:
        """Whether an error answer says the prompt exceeds the model's context."""
        return False


def encode(obj: object) -> bytes:
    return _json.encode(obj)


_SEQ = re.compile(rb'"sequence_number"\s*:\s*(\d+)')


def last_sequence_number(data: bytes) -> int | None:
    found = _SEQ.findall(data)
    return int(found[-1]) if found else None


def error_kind(status: int) -> str:
    """A short machine-readable kind for an HTTP status (used in both error shapes)."""
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        502: "upstream_error",
        503: "service_unavailable",
        504: "timeout_error",
    }.get(status, "api_error")


def generic_error_body(status: int, message: str) -> bytes:
    """``{"error":{"message","type"}}``: for callers whose provider is not (yet) known."""
    return encode({"error": {"message": message, "type": error_kind(status)}})
