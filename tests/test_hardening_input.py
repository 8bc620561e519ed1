"""Bad input a client can send never reaches a 500 or a traceback (issue 9, items 1-3).

Each case runs twice: the sans-IO piece that used to raise, and the whole bridge on loopback
(the answer's status, nothing sent upstream when it must not be, and no ERROR in the log).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import msgspec
import pytest
import trio

from tests.support import RunningBridge, client, start_bridge, write_yaml
from trio_bridge.http import paths
from trio_bridge.providers.base import BodyError, peek_body
from trio_bridge.providers.openai import CHAT, OpenAIDialect
from trio_bridge.testing import FakeUpstream

KEY = "sk-openai-pool-key-aaaaaaaaaaaa1111"


def deep(depth: int) -> bytes:
    return b'{"model":"gpt-4o","messages":' + b"[" * depth + b"]" * depth + b"}"


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert bad == [], [r.getMessage() for r in bad]


@pytest.fixture
async def bridge(nursery, tmp_path: Path, fake_openai: FakeUpstream) -> RunningBridge:
    write_yaml(
        tmp_path,
        "b.yaml",
        f"""
        bridge: {{auth: none}}
        providers:
          - {{name: openai, type: openai, base_url: "{fake_openai.base_url}", keys: [{{value: {KEY}}}]}}
        """,
    )
    return await start_bridge(nursery, tmp_path)


# 1. JSON nested ~1,000 deep


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_peek_of_deeply_nested_json_is_a_body_error(depth: int) -> None:
    with pytest.raises(BodyError, match="nested too deeply"):
        peek_body(deep(depth))


def test_peek_of_deeply_nested_stream_options_is_a_body_error() -> None:
    body = b'{"model":"m","stream_options":' + b'{"a":' * 5_000 + b"1" + b"}" * 5_001
    with pytest.raises(BodyError):
        peek_body(body)


async def test_deeply_nested_body_on_a_bridged_route_is_400(bridge, fake_openai, caplog) -> None:
    caplog.set_level(logging.INFO)
    async with client() as c:
        r = await c.post(bridge.url + "/openai/v1/chat/completions", content=deep(1_000))
    assert r.status_code == 400
    assert "nested too deeply" in r.json()["error"]["message"]
    assert fake_openai.requests == []
    no_errors_logged(caplog)


# 2. Out-of-range numbers on a streaming chat completion


@pytest.mark.parametrize(
    "options",
    [None, b"null", b"{}", b'{"include_usage":false}', b'{"include_usage":false,"x":1e999}'],
)
def test_prepare_body_keeps_out_of_range_numbers_byte_for_byte(options: bytes | None) -> None:
    dialect = OpenAIDialect()
    body = b'{"model":"gpt-4o","stream":true,"temperature":1e999,"top_p":1e-999,"n":123456789012345678901234567890'
    if options is not None:
        body += b',"stream_options":' + options
    body += b"}"
    try:
        peek = peek_body(body)
    except BodyError:
        # The bridge may refuse a number it cannot read in a field it peeks (a 400) ...
        assert options is not None and b"1e999" in options
        return
    out, wants_usage = dialect.prepare_body(CHAT, body, peek)
    # ... but everything it forwards is the client's own bytes, plus include_usage.
    for kept in (b"1e999", b"1e-999", b"123456789012345678901234567890"):
        assert kept in out
    assert wants_usage is False
    assert json.loads(out)["stream_options"]["include_usage"] is True


def test_prepare_body_never_raises_on_a_body_peek_accepted() -> None:
    body = b'{"model":"m","stream":true,"stream_options":{"include_usage":0},"t":-1E+999}'
    out, _ = OpenAIDialect().prepare_body(CHAT, body, peek_body(body))
    assert b"-1E+999" in out


async def test_out_of_range_number_on_a_streaming_chat_is_relayed(
    bridge, fake_openai, caplog
) -> None:
    caplog.set_level(logging.INFO)
    body = (
        b'{"model":"gpt-4o","stream":true,"temperature":1e999,'
        b'"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"hi"}]}'
    )
    async with client() as c:
        r = await c.post(bridge.url + "/openai/v1/chat/completions", content=body)
    assert r.status_code == 200
    sent = fake_openai.last_request.body
    assert b'"temperature":1e999' in sent and b'"include_usage":true' in sent
    no_errors_logged(caplog)


# 3. Characters an HTTP client cannot send in a passthrough path


@pytest.mark.parametrize(
    "path", ["/openai/v1/models/a#b", "/openai/v1/models#", "/o/\x7f", "/o/\xe9"]
)
def test_paths_an_upstream_client_would_reject_are_unsafe(path: str) -> None:
    assert not paths.is_safe_path(path)


@pytest.mark.parametrize("query", [b"a=#", b"#frag", b"x=\x00", b"x=\xff"])
def test_queries_an_upstream_client_would_reject_are_unsafe(query: bytes) -> None:
    assert not paths.is_safe_query(query)


def test_ordinary_paths_and_queries_stay_safe() -> None:
    assert paths.is_safe_path("/openai/v1/models/ft:gpt-4o:org~x!$&'()*+,;=@%20")
    assert paths.is_safe_query(b"x=1&y=%20a&z=[]|^`{}")
    assert paths.is_safe_query(b"")


@pytest.mark.parametrize(
    "target", ["/openai/v1/models/a#b", "/openai/v1/models#", "/openai/v1/models?x=#y"]
)
async def test_fragment_in_a_passthrough_target_is_404_before_upstream(
    bridge, fake_openai, caplog, target: str
) -> None:
    caplog.set_level(logging.INFO)
    port = int(bridge.url.rsplit(":", 1)[1])
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(
            f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
        await stream.aclose()
    assert data.startswith(b"HTTP/1.1 404"), data[:200]
    assert fake_openai.requests == []
    no_errors_logged(caplog)


def test_msgspec_still_refuses_out_of_range_numbers() -> None:
    """Why prepare_body must not decode values: this is the error that used to escape."""
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b"1e999")
