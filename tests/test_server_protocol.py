"""The serving core's sans-IO decisions (trio_bridge/server/protocol.py), without sockets."""

from __future__ import annotations

import h11
import pytest

from trio_bridge.server.protocol import (
    AfterResponse,
    Limits,
    after_response,
    allow_http10_keep_alive,
    client_error_status,
    decoded_path,
    reason,
    response_has_length,
    split_target,
    wants_http10_keep_alive,
)

LIMITS = Limits()


def server_after(request: bytes, response_headers: list[tuple[bytes, bytes]]) -> h11.Connection:
    """An h11 server that received ``request`` and sent a whole 200 answer."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    while type(conn.next_event()) is not h11.Request:
        pass
    conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"0"), *response_headers]))
    conn.send(h11.EndOfMessage())
    return conn


def decide(conn: h11.Connection, **kw) -> AfterResponse:
    args = {
        "complete": True,
        "peer_gone": False,
        "closing": False,
        "remaining": 0,
        "limits": LIMITS,
    }
    return after_response(conn, **{**args, **kw})


def test_a_whole_exchange_keeps_the_connection() -> None:
    conn = server_after(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", [])
    conn.next_event()  # EndOfMessage
    assert decide(conn) is AfterResponse.KEEP_ALIVE


@pytest.mark.parametrize(
    "kw", [{"complete": False}, {"peer_gone": True}, {"closing": True}], ids=str
)
def test_unfinished_response_gone_peer_or_closing_server_close(kw) -> None:
    conn = server_after(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", [])
    conn.next_event()
    assert decide(conn, **kw) is AfterResponse.CLOSE


def test_an_early_answer_drains_a_small_body_and_closes_on_a_large_one() -> None:
    conn = server_after(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", [])
    assert conn.their_state is h11.SEND_BODY
    assert decide(conn, remaining=100) is AfterResponse.DRAIN
    assert decide(conn, remaining=None) is AfterResponse.DRAIN  # chunked: try, bounded
    assert decide(conn, remaining=LIMITS.early_drain_bytes + 1) is AfterResponse.CLOSE


def test_connection_close_from_either_side_closes() -> None:
    conn = server_after(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", [])
    conn.next_event()
    assert decide(conn) is AfterResponse.CLOSE
    conn = server_after(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", [(b"connection", b"close")])
    conn.next_event()
    assert decide(conn) is AfterResponse.CLOSE


def test_http10_keep_alive_needs_the_flag_h11_keys_on() -> None:
    """Pins the one h11 internal the core sets: without it h11 closes every 1.0 peer."""
    request = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    plain = server_after(request, [])
    plain.next_event()
    assert plain.our_state is h11.MUST_CLOSE

    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    event = conn.next_event()
    assert wants_http10_keep_alive(event)
    allow_http10_keep_alive(conn)
    data = conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"0")]))
    assert b"close" not in data.lower()
    conn.send(h11.EndOfMessage())
    conn.next_event()
    assert decide(conn) is AfterResponse.KEEP_ALIVE
    conn.start_next_cycle()


def test_http10_without_keep_alive_is_not_kept() -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.0\r\n\r\n")
    assert not wants_http10_keep_alive(conn.next_event())


def test_a_head_over_the_limit_is_431() -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=LIMITS.max_head_bytes)
    conn.receive_data(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * LIMITS.max_head_bytes)
    with pytest.raises(h11.RemoteProtocolError) as info:
        conn.next_event()
    assert client_error_status(info.value) == 431


def test_targets_and_paths_stay_raw() -> None:
    assert split_target(b"/a%2Fb/../c?x=1&y") == (b"/a%2Fb/../c", b"x=1&y")
    assert decoded_path(b"/a%2Fb") == "/a/b"
    assert decoded_path(b"/plain") == "/plain"


def test_reasons_and_lengths() -> None:
    assert reason(431) == b"Request Header Fields Too Large"
    assert reason(529) == b"Site Overloaded"
    assert reason(599) == b""
    assert response_has_length(200, b"GET", [(b"content-length", b"3")])
    assert not response_has_length(200, b"GET", [(b"content-type", b"text/event-stream")])
    assert response_has_length(200, b"HEAD", [])
    assert response_has_length(204, b"GET", [])
