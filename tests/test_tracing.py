"""OpenTelemetry traces: a SERVER span per request and a CLIENT span per upstream attempt
with the GenAI attributes, the client's trace continued and propagated upstream, exported
to an in-memory exporter; never a prompt, key or token in a span."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.support import client, start_bridge, write_yaml
from tests.support.recording import ANTHROPIC_KEY, AUTH, OPENAI_KEY, OPENAI_KEY_2, TOKEN, config
from trio_bridge import tracing
from trio_bridge.config.model import BridgeSettings, RecordingSettings
from trio_bridge.recording.tap import new_tap
from trio_bridge.testing import Answer, RateLimited, ToolCall, Usage

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
PROMPT = "a very private prompt about the merger"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


async def traced_bridge(nursery, tmp_path, fo, fa, exporter, keys: int = 1):
    write_yaml(tmp_path, "b.yaml", config(fo, fa, "enabled: false", keys=keys))
    bridge = await start_bridge(nursery, tmp_path)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    bridge.daemon.state.tracing = tracing.Tracing(provider)
    return bridge


def by_kind(spans, kind):
    return [s for s in spans if s.kind == kind]


async def wait_spans(exporter: InMemorySpanExporter, n: int) -> list:
    # the spans end just after the response does
    with trio.fail_after(10):
        while len(exporter.get_finished_spans()) < n:
            await trio.sleep(0.01)
    return list(exporter.get_finished_spans())


def assert_no_secret(spans) -> None:
    for span in spans:
        text = repr(dict(span.attributes)) + span.name
        for secret in (PROMPT, OPENAI_KEY, OPENAI_KEY_2, ANTHROPIC_KEY, TOKEN):
            assert secret not in text, span.name


async def test_streamed_chat_spans_carry_genai_attributes_and_continue_the_client_trace(
    nursery, tmp_path, fake_openai, fake_anthropic, exporter
) -> None:
    bridge = await traced_bridge(nursery, tmp_path, fake_openai, fake_anthropic, exporter)
    fake_openai.behave(
        Answer(usage=Usage(100, 7, cache_read_tokens=40), chunks=5, tool_call=ToolCall())
    )
    async with client() as c:
        r = await c.post(
            bridge.url + "/openai/v1/chat/completions",
            headers={**AUTH, "traceparent": TRACEPARENT},
            json={
                "model": "gpt-4o-mini",
                "stream": True,
                "messages": [{"role": "user", "content": PROMPT}],
            },
        )
    assert r.status_code == 200
    spans = await wait_spans(exporter, 2)
    (server,) = by_kind(spans, SpanKind.SERVER)
    (attempt,) = by_kind(spans, SpanKind.CLIENT)
    # the client's trace is continued ...
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == CLIENT_SPAN
    assert attempt.parent.span_id == server.context.span_id
    # ... and sent upstream as the attempt's context
    sent = fake_openai.last_request.header_values("traceparent")
    assert sent == [f"00-{TRACE_ID}-{format(attempt.context.span_id, '016x')}-01"]

    assert server.name == "POST /v1/chat/completions"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["gen_ai.provider.name"] == "openai"
    assert attempt.name == "chat gpt-4o-mini"
    a = attempt.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == "gpt-4o-mini"
    assert a["gen_ai.usage.input_tokens"] == 100  # cache included, as the conventions say
    assert a["gen_ai.usage.output_tokens"] == 7
    assert a["gen_ai.usage.cache_read.input_tokens"] == 40
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == fake_openai.port
    assert a["trio_bridge.attempt"] == 1 and a["trio_bridge.fallback"] is False
    assert a["trio_bridge.key_hint"] == "sk-o...1111"
    assert "error.type" not in a
    assert_no_secret(spans)


async def test_each_attempt_gets_its_own_client_span(
    nursery, tmp_path, fake_openai, fake_anthropic, exporter
) -> None:
    bridge = await traced_bridge(nursery, tmp_path, fake_openai, fake_anthropic, exporter, keys=2)
    fake_openai.behave(RateLimited(retry_after="30"), Answer(usage=Usage(5, 2)))
    async with client() as c:
        r = await c.post(
            bridge.url + "/openai/v1/chat/completions",
            headers=AUTH,
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]},
        )
    assert r.status_code == 200
    spans = await wait_spans(exporter, 3)
    (server,) = by_kind(spans, SpanKind.SERVER)
    attempts = sorted(
        by_kind(spans, SpanKind.CLIENT), key=lambda s: s.attributes["trio_bridge.attempt"]
    )
    assert [s.attributes["trio_bridge.attempt"] for s in attempts] == [1, 2]
    assert [s.attributes["trio_bridge.key_hint"] for s in attempts] == [
        "sk-o...1111",
        "sk-o...3333",
    ]
    assert attempts[0].attributes["error.type"] == "429"
    assert "error.type" not in attempts[1].attributes
    assert all(s.parent.span_id == server.context.span_id for s in attempts)
    assert server.attributes["trio_bridge.attempts"] == 2
    # a new trace (the client sent none), each attempt's context sent upstream
    sent = [r.header("traceparent") for r in fake_openai.requests]
    assert [t.split("-")[2] for t in sent] == [format(s.context.span_id, "016x") for s in attempts]
    assert_no_secret(spans)


async def test_anthropic_and_upstream_errors(
    nursery, tmp_path, fake_openai, fake_anthropic, exporter
) -> None:
    bridge = await traced_bridge(nursery, tmp_path, fake_openai, fake_anthropic, exporter)
    fake_anthropic.behave(Answer(usage=Usage(11, 9, cache_read_tokens=30, cache_write_tokens=20)))
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    async with client() as c:
        ok = await c.post(bridge.url + "/anthropic/v1/messages", headers=AUTH, json=body)
        from trio_bridge.testing import Fail

        fake_anthropic.behave(Fail(529), Fail(529), Fail(529))  # the whole retry budget
        failed = await c.post(bridge.url + "/anthropic/v1/messages", headers=AUTH, json=body)
    assert (ok.status_code, failed.status_code) == (200, 529)
    spans = await wait_spans(exporter, 6)  # 2 requests; 1 + 3 attempts (529 is retried)
    first, *retried = sorted(by_kind(spans, SpanKind.CLIENT), key=lambda s: s.start_time)
    assert len(retried) == 3
    assert first.name == "chat claude-sonnet-4-5"
    assert first.attributes["gen_ai.provider.name"] == "anthropic"
    assert first.attributes["gen_ai.usage.input_tokens"] == 61  # 11 + 30 read + 20 written
    assert first.attributes["gen_ai.usage.cache_read.input_tokens"] == 30
    assert first.attributes["gen_ai.usage.output_tokens"] == 9
    assert all(span.attributes["error.type"] == "529" for span in retried)
    servers = sorted(by_kind(spans, SpanKind.SERVER), key=lambda s: s.start_time)
    assert servers[1].attributes["error.type"] == "529"
    assert_no_secret(spans)


async def test_tracing_off_leaves_the_client_traceparent_alone(
    nursery, tmp_path, fake_openai, fake_anthropic
) -> None:
    write_yaml(tmp_path, "b.yaml", config(fake_openai, fake_anthropic))
    bridge = await start_bridge(nursery, tmp_path)
    assert bridge.daemon.state.tracing is None
    async with client() as c:
        r = await c.post(
            bridge.url + "/openai/v1/chat/completions",
            headers={**AUTH, "traceparent": TRACEPARENT},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert r.status_code == 200
    assert fake_openai.last_request.header_values("traceparent") == [TRACEPARENT]


def test_nothing_runs_on_the_request_path_when_recording_and_tracing_are_off() -> None:
    state = SimpleNamespace(recorder=object(), tracing=None)
    off = SimpleNamespace(
        snapshot=SimpleNamespace(bridge=BridgeSettings(recording=RecordingSettings(enabled=False)))
    )
    assert new_tap(state, off) is None


def test_traces_are_off_unless_the_otel_variables_ask() -> None:
    assert tracing.from_environ({}) is None
    assert tracing.from_environ({"OTEL_TRACES_EXPORTER": "none"}) is None
    assert tracing.from_environ({"OTEL_SERVICE_NAME": "x"}) is None
    on = tracing.from_environ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert on is not None
    on.shutdown()
    console = tracing.from_environ({"OTEL_TRACES_EXPORTER": "console"})
    assert console is not None
    console.shutdown()
