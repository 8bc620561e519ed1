"""SSE framing follows the spec's line endings: CRLF, LF, lone CR, mixed (issue 9, item 8).
An upstream that frames with CR alone still has its usage read and its usage-only chunk
held back from a client that did not ask for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from tests.support import client, start_bridge, write_yaml
from trio_bridge.metrics import REGISTRY
from trio_bridge.providers.base import TokenUsage
from trio_bridge.providers.openai import CHAT, OpenAIDialect
from trio_bridge.providers.sse import EventSplitter, event_data, iter_events
from trio_bridge.testing import FakeUpstream, RawStream

KEY = "sk-openai-pool-key-aaaaaaaaaaaa1111"

EVENTS = [
    b'data: {"choices":[{"delta":{"content":"Hel"}}]}',
    b'data: {"choices":[{"delta":{"content":"lo"}}]}',
    b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}',
    b"data: [DONE]",
]
ENDINGS = {
    "lf": (b"\n", b"\n"),
    "crlf": (b"\r\n", b"\r\n"),
    "cr": (b"\r", b"\r"),
    "lf-then-crlf": (b"\n", b"\r\n"),
    "crlf-then-lf": (b"\r\n", b"\n"),
    "lf-then-cr": (b"\n", b"\r"),
    "cr-then-crlf": (b"\r", b"\r\n"),
}


def framed(line_end: bytes, blank: bytes) -> list[bytes]:
    return [e + line_end + blank for e in EVENTS]


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_whole_stream_splits_into_the_four_events(ending: str) -> None:
    events = framed(*ENDINGS[ending])
    stream = b"".join(events)
    splitter = EventSplitter()
    block = splitter.feed(stream)
    assert block == stream and splitter.tail == b""
    assert list(iter_events(block)) == events
    assert [event_data(e) for e in events] == [e[6:] for e in EVENTS]


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_byte_by_byte_feeding_relays_every_byte_and_holds_only_the_tail(ending: str) -> None:
    stream = b"".join(framed(*ENDINGS[ending]))
    splitter = EventSplitter()
    out = b""
    datas = []
    for i in range(len(stream)):
        block = splitter.feed(stream[i : i + 1])
        out += block
        datas.extend(d for e in iter_events(block) if (d := event_data(e)))
    assert out + splitter.tail == stream
    assert splitter.tail.strip() == b""
    assert datas == [e[6:] for e in EVENTS]


def test_an_incomplete_cr_event_is_held_back() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: a\r\rdata: b\r") == b"data: a\r\r"
    assert splitter.tail == b"data: b\r"
    assert splitter.feed(b"\r") == b"data: b\r\r"


def test_multi_line_data_with_cr_and_a_bare_data_line() -> None:
    assert event_data(b"data: a\rdata\rdata:b\r\r") == b"a\n\nb"


def test_usage_read_from_a_cr_framed_event() -> None:
    usage = TokenUsage()
    event = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}\r\r'
    assert OpenAIDialect().usage_from_event(CHAT, event, usage) is True
    assert (usage.input, usage.output) == (7, 2)


@pytest.mark.parametrize("ending", ["cr", "lf-then-cr", "crlf-then-lf"])
async def test_usage_is_read_from_a_cr_framed_upstream_stream(
    nursery, tmp_path: Path, fake_openai: FakeUpstream, ending: str
) -> None:
    name = f"sse-{ending}"
    write_yaml(
        tmp_path,
        "b.yaml",
        f"""
        bridge: {{auth: none}}
        providers:
          - {{name: {name}, type: openai, base_url: "{fake_openai.base_url}", keys: [{{value: {KEY}}}]}}
        """,
    )
    bridge = await start_bridge(nursery, tmp_path)
    fake_openai.behave(RawStream(tuple(framed(*ENDINGS[ending])), pace=0))
    async with client() as c:
        r = await c.post(
            f"{bridge.url}/{name}/v1/chat/completions",
            json={"model": "gpt-4o", "stream": True, "messages": []},
        )
    assert r.status_code == 200
    # The client did not ask for usage: the usage-only chunk is not relayed ...
    assert b'"usage"' not in r.content
    assert b"Hel" in r.content and b"[DONE]" in r.content
    assert json.loads(fake_openai.last_request.body)["stream_options"] == {"include_usage": True}
    # ... but it was read (counted once the request's bookkeeping ends, just after the
    # response: nothing to wait on but the metric itself).
    labels = {"provider": name, "model": "gpt-4o"}

    def tokens(kind: str) -> float | None:
        return REGISTRY.get_sample_value("trio_bridge_tokens_total", {**labels, "type": kind})

    with trio.fail_after(5):
        while tokens("output") is None:
            await trio.sleep(0.01)
    assert (tokens("input"), tokens("output")) == (7, 2)
