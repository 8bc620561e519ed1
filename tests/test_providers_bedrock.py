"""The Bedrock dialect without sockets: model mapping, body rewrite, beta filtering, error
mapping, event-stream translation; and the default-chain credential source's threading."""

from __future__ import annotations

import datetime
import json
import threading

import msgspec
import pytest
import trio

from trio_bridge.aws_credentials import DefaultChainCredentials, NoCredentials
from trio_bridge.providers.base import AttemptError
from trio_bridge.providers.bedrock import (
    EventStreamToSSE,
    accepted_betas,
    error_type_of,
    invoke_path,
    map_error,
    map_model,
    rewrite_body,
)
from trio_bridge.testing.fake_bedrock import chunk_frame, encode_frame, exception_frame


def test_model_mapping() -> None:
    assert map_model("claude-sonnet-4-5", "S", "H") == "S"
    assert map_model("claude-3-5-HAIKU-latest", "S", "H") == "H"
    assert map_model("claude-haiku-4-5", "S", None) == "S"


def test_invoke_path_encodes_ids_and_arns() -> None:
    assert invoke_path("anthropic.claude-v2:1", False) == b"/model/anthropic.claude-v2%3A1/invoke"
    arn = "arn:aws:bedrock:us-east-1:1:application-inference-profile/x"
    assert invoke_path(arn, True) == (
        b"/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Aapplication-inference-profile%2Fx"
        b"/invoke-with-response-stream"
    )


def test_betas_keep_only_what_bedrock_accepts_once_in_order() -> None:
    got = accepted_betas(
        [
            b"claude-code-20250219, interleaved-thinking-2025-05-14",
            "context-1m-2025-08-07,interleaved-thinking-2025-05-14,oauth-2025-04-20",
        ]
    )
    assert got == ["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"]


def test_body_rewrite() -> None:
    body = json.dumps(
        {
            "model": "claude-x",
            "stream": True,
            "max_tokens": 5,
            "messages": [],
            "anthropic_beta": ["files-api-2025-04-14", "effort-2025-11-24"],
            "anthropic_version": "2023-06-01",
        }
    ).encode()
    out, model, stream = rewrite_body(body, ["context-1m-2025-08-07"])
    data = msgspec.json.decode(out)
    assert model == "claude-x" and stream is True
    assert data == {
        "max_tokens": 5,
        "messages": [],
        "anthropic_version": "bedrock-2023-05-31",
        "anthropic_beta": ["context-1m-2025-08-07", "effort-2025-11-24"],
    }
    assert rewrite_body(b'{"model":"m","max_tokens":1}', [])[2] is False
    with pytest.raises(AttemptError):
        rewrite_body(b"[]", [])


def test_error_mapping() -> None:
    assert error_type_of("ThrottlingException:http://internal.amazon.com/coral/") == (
        "throttlingexception"
    )
    assert map_error(400, "throttlingexception") == (429, "rate_limit_error")
    assert map_error(429, "modelnotreadyexception") == (503, "overloaded_error")
    assert map_error(403, "unrecognizedclientexception") == (403, "authentication_error")
    assert map_error(400, "validationexception") == (400, "invalid_request_error")
    assert map_error(418, None) == (418, "api_error")


def _frames() -> bytes:
    return b"".join(
        chunk_frame(e)
        for e in (
            {"type": "message_start", "message": {"usage": {"input_tokens": 7}}},
            {"type": "content_block_delta", "index": 0, "delta": {"text": "a\nb"}},
            {"type": "message_stop"},
        )
    )


def test_event_stream_frames_become_sse_whatever_the_chunking() -> None:
    data = _frames()
    whole = EventStreamToSSE().feed(data)
    assert whole.count(b"\n\n") == 3
    assert whole.startswith(b"event: message_start\ndata: {")
    assert b"event: message_stop\ndata: " in whole
    for size in (1, 7, 50):
        t = EventStreamToSSE()
        pieces = b"".join(t.feed(data[i : i + size]) for i in range(0, len(data), size))
        t.finish()
        assert pieces == whole and t.failure is None
    for event in whole.split(b"\n\n")[:-1]:
        json.loads(event.split(b"data: ", 1)[1])  # one line of data each


def test_an_exception_frame_is_one_error_event_and_ends_translation() -> None:
    t = EventStreamToSSE()
    out = t.feed(chunk_frame({"type": "ping"}) + exception_frame("throttlingException", "slow"))
    assert out == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert t.failure is not None
    error = json.loads(t.failure.split(b"data: ", 1)[1])
    assert error == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "throttlingException: slow"},
    }
    assert t.feed(chunk_frame({"type": "message_stop"})) == b""


def test_error_frames_bad_checksums_and_half_frames_fail_the_stream() -> None:
    t = EventStreamToSSE()
    t.feed(encode_frame({":message-type": "error", ":error-code": "InternalFailure"}, b""))
    assert t.failure is not None and b"InternalFailure" in t.failure

    frame = bytearray(chunk_frame({"type": "ping"}))
    frame[-1] ^= 0xFF
    t = EventStreamToSSE()
    assert t.feed(bytes(frame)) == b"" and t.failure is not None

    t = EventStreamToSSE()
    t.feed(chunk_frame({"type": "ping"})[:-3])
    assert t.failure is None
    t.finish()
    assert t.failure is not None and b"inside a frame" in t.failure


class _Session:
    """A botocore session stand-in whose chain yields refreshable credentials."""

    def __init__(self, refresh) -> None:
        self.refresh = refresh

    def get_credentials(self):
        from botocore.credentials import RefreshableCredentials

        return RefreshableCredentials.create_from_metadata(
            self.refresh(), self.refresh, method="test"
        )


async def test_default_chain_loads_and_refreshes_in_a_thread_once_for_concurrent_callers(
    autojump_clock,
) -> None:
    loads: list[str] = []
    expiry = [datetime.timedelta(hours=1)]

    def refresh() -> dict:
        loads.append(threading.current_thread().name)
        when = datetime.datetime.now(datetime.UTC) + expiry[0]
        return {
            "access_key": f"ASIA{len(loads):016d}",
            "secret_key": "secret-value-xyz",
            "token": "t",
            "expiry_time": when.isoformat(),
        }

    source = DefaultChainCredentials(session_factory=lambda: _Session(refresh))
    results = []

    async def get() -> None:
        results.append(await source.get())

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(get)
    assert len({k.access_key for k in results}) == 1 and results[0].token == "t"
    assert loads and threading.main_thread().name not in loads
    count = len(loads)
    await source.get()
    assert len(loads) == count  # cached: no refresh while far from expiry
    assert "secret-value-xyz" not in repr(results[0])

    # Close to expiry (inside botocore's advisory window): refreshed, again in a thread.
    expiry[0] = datetime.timedelta(minutes=5)
    fresh = DefaultChainCredentials(session_factory=lambda: _Session(refresh))
    first = await fresh.get()
    count = len(loads)
    second = await fresh.get()
    assert len(loads) > count and second.access_key != first.access_key
    assert threading.main_thread().name not in loads


async def test_default_chain_without_credentials_raises_no_credentials() -> None:
    class Empty:
        def get_credentials(self):
            return None

    with pytest.raises(NoCredentials):
        await DefaultChainCredentials(session_factory=Empty).get()
