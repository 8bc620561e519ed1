"""A response whose head has arrived and whose body is streamed as it arrives.

Attribute names follow httpx (``status_code``, ``headers``, ``aiter_raw``, ``aclose``) so
callers written for httpx need no change."""

from __future__ import annotations

from collections.abc import Iterator

import h11
import trio

from .errors import ReadError, ReadTimeout, RemoteProtocolError
from .pool import Connection, Pool

RECEIVE_SIZE = 65536


class ResponseHeaders:
    """Response headers in arrival order; names lower-case; lookups case-insensitive."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``."""
        key = name.lower().encode("latin-1")
        for k, v in self.raw:
            if k == key:
                return v.decode("latin-1")
        return default

    def get_list(self, name: str) -> list[str]:
        key = name.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in self.raw if k == key]

    def multi_items(self) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self.raw]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return (k.decode("latin-1") for k, _ in self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __repr__(self) -> str:
        return f"ResponseHeaders({[k for k in self]})"  # names only: values may be secrets


async def receive(conn: Connection, timeout: float) -> bytes:  # noqa: ASYNC109 - bounds one phase inside
    """One read from the connection within ``timeout`` (b"" at EOF)."""
    try:
        with trio.fail_after(timeout):
            return await conn.stream.receive_some(RECEIVE_SIZE)  # type: ignore[return-value]  # trio's socket and TLS streams return bytes
    except trio.TooSlowError:
        raise ReadTimeout(f"no data from {conn.origin} for {timeout:g}s") from None
    except (trio.BrokenResourceError, OSError) as exc:
        raise ReadError(f"connection to {conn.origin} broke while reading ({_why(exc)})") from None


def _why(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return type(cause).__name__


class Response:
    """Close it (``aclose``) exactly once when done: a wholly read body returns the connection
    to the pool; anything else (partly read, failed, cancelled) discards it."""

    __slots__ = (
        "status_code",
        "reason_phrase",
        "http_version",
        "headers",
        "_conn",
        "_pool",
        "_read_timeout",
        "_complete",
        "_eof",
        "_closed",
    )

    def __init__(
        self, event: h11.Response, conn: Connection, pool: Pool, read_timeout: float
    ) -> None:
        self.status_code = event.status_code
        self.reason_phrase = event.reason.decode("latin-1")
        self.http_version = "HTTP/" + event.http_version.decode("ascii")
        self.headers = ResponseHeaders(list(event.headers))
        self._conn = conn
        self._pool = pool
        self._read_timeout = read_timeout
        self._complete = False
        self._eof = False  # the server closed its side (a close-delimited body)
        self._closed = False

    @property
    def is_complete(self) -> bool:
        """The whole body has been read."""
        return self._complete

    def aiter_raw(self) -> _RawBody:
        """The body bytes as they arrive (de-chunked, never decoded). Raises ReadTimeout
        after a gap longer than the read timeout, ReadError / RemoteProtocolError when the
        connection breaks or closes before the body is whole."""
        return _RawBody(self)

    async def aread(self) -> bytes:
        """The whole remaining body."""
        return b"".join([chunk async for chunk in self.aiter_raw()])

    async def aclose(self) -> None:
        """Give the connection back; never blocks, safe under cancellation."""
        if self._closed:
            return
        self._closed = True
        conn, pool = self._conn, self._pool
        h = conn.h11
        if (
            self._complete
            and not self._eof
            and h.our_state is h11.DONE
            and h.their_state is h11.DONE
        ):
            conn.served += 1
            h.start_next_cycle()
            pool.put_idle(conn)
        else:
            pool.discard(conn)


class _RawBody:
    __slots__ = ("_response",)

    def __init__(self, response: Response) -> None:
        self._response = response

    def __aiter__(self) -> _RawBody:
        return self

    async def __anext__(self) -> bytes:
        response = self._response
        if response._complete or response._closed:
            raise StopAsyncIteration
        conn = response._conn
        h = conn.h11
        parts: list[bytes] = []
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise RemoteProtocolError(_protocol_message(conn, exc)) from None
            if event is h11.NEED_DATA:
                if parts:
                    break
                data = await receive(conn, response._read_timeout)
                if not data:
                    response._eof = True
                h.receive_data(data)
            elif type(event) is h11.Data:
                parts.append(bytes(event.data))
            elif type(event) is h11.EndOfMessage:
                response._complete = True
                if parts:
                    break
                raise StopAsyncIteration
            else:
                raise RemoteProtocolError(f"{conn.origin} closed the connection mid-body")
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _protocol_message(conn: Connection, exc: h11.RemoteProtocolError) -> str:
    text = str(exc)
    if "closed" in text:
        return f"{conn.origin} closed the connection before the body was complete"
    # h11's own wording can quote the offending bytes: not repeated here.
    return f"{conn.origin} sent an invalid HTTP/1.1 response"
