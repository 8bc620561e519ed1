"""Usage recording end to end: every kind of request through a real bridge to fake upstreams
reporting known usage, records written to real Postgres (and to a JSON-lines file)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import trio

from tests.support import RunningBridge, client, start_bridge, write_yaml
from tests.support.recording import (
    ANTHROPIC_KEY,
    AUTH,
    OPENAI_KEY,
    TOKEN,
    config,
)
from trio_bridge.testing import Answer, FakeUpstream, RateLimited, ToolCall, Usage

OWN_KEY = "sk-own-upstream-key-zzzzzzzzzzzz9xyz"


def conversation(last: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "an earlier question"},
        {"role": "assistant", "content": "an earlier answer"},
        {"role": "user", "content": [{"type": "text", "text": last}]},
    ]


WEATHER = {"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}


@dataclass
class Expected:
    """One interception the bridge must record."""

    provider: str
    route: str
    model: str | None
    streaming: bool
    usage: dict[str, int] | None
    prompt: str | None
    tools: list[dict[str, Any]]
    credential_kind: str = "pool"
    key_hint: str | None = None
    status: int = 200
    extra: dict[str, Any] | None = None


async def run_every_kind(
    bridge: RunningBridge, fo: FakeUpstream, fa: FakeUpstream
) -> list[Expected]:
    """One request of each kind; returns what each must have recorded."""
    expected: list[Expected] = []
    oa_usage = Usage(100, 7, cache_read_tokens=40, reasoning_tokens=3)
    an_usage = Usage(11, 9, cache_read_tokens=30, cache_write_tokens=20)
    oa_tokens = {"input": 60, "output": 7, "cache_read": 40, "cache_write": 0}
    an_tokens = {"input": 11, "output": 9, "cache_read": 30, "cache_write": 20}
    pool_oa, pool_an = "sk-o...1111", "sk-a...2222"
    async with client() as c:
        # OpenAI chat, blocking, with a tool call.
        fo.behave(Answer(usage=oa_usage, tool_call=ToolCall("get_weather", WEATHER, "call_b1")))
        r = await c.post(
            bridge.url + "/openai/v1/chat/completions",
            headers=AUTH,
            json={"model": "gpt-4o-mini", "messages": conversation("chat blocking prompt")},
        )
        assert r.status_code == 200
        expected.append(
            Expected(
                "openai",
                "/v1/chat/completions",
                "gpt-4o-mini",
                False,
                oa_tokens,
                "chat blocking prompt",
                [{"tool": "get_weather", "tool_call_id": "call_b1", "args": WEATHER}],
                key_hint=pool_oa,
                extra={"reasoning_tokens": 3},
            )
        )
        # OpenAI chat, streaming, the client not asking for usage: a tool call in 5 deltas.
        fo.behave(
            Answer(usage=oa_usage, chunks=5, tool_call=ToolCall("get_weather", WEATHER, "call_s1"))
        )
        r = await c.post(
            bridge.url + "/openai/v1/chat/completions",
            headers=AUTH,
            json={"model": "gpt-4o-mini", "stream": True, "messages": conversation("chat stream")},
        )
        assert r.status_code == 200 and r.text.count('"arguments"') == 6  # first + 5 deltas
        assert '"choices":[]' not in r.text  # the forced usage chunk was not relayed
        expected.append(
            Expected(
                "openai",
                "/v1/chat/completions",
                "gpt-4o-mini",
                True,
                oa_tokens,
                "chat stream",
                [{"tool": "get_weather", "tool_call_id": "call_s1", "args": WEATHER}],
                key_hint=pool_oa,
            )
        )
        # OpenAI chat, streaming, the client asking for usage; text only.
        fo.behave(Answer(usage=oa_usage, chunks=4))
        r = await c.post(
            bridge.url + "/openai/v1/chat/completions",
            headers=AUTH,
            json={
                "model": "gpt-4.1",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": conversation("chat stream with usage"),
            },
        )
        assert r.status_code == 200 and '"choices":[]' in r.text
        expected.append(
            Expected(
                "openai",
                "/v1/chat/completions",
                "gpt-4.1",
                True,
                oa_tokens,
                "chat stream with usage",
                [],
                key_hint=pool_oa,
            )
        )
        # Responses, blocking, a function call.
        fo.behave(Answer(usage=oa_usage, tool_call=ToolCall("lookup", {"q": "x"}, "call_r1")))
        r = await c.post(
            bridge.url + "/openai/v1/responses",
            headers=AUTH,
            json={"model": "gpt-4.1", "input": "responses blocking prompt"},
        )
        assert r.status_code == 200
        expected.append(
            Expected(
                "openai",
                "/v1/responses",
                "gpt-4.1",
                False,
                oa_tokens,
                "responses blocking prompt",
                [{"tool": "lookup", "tool_call_id": "call_r1", "args": {"q": "x"}}],
                key_hint=pool_oa,
            )
        )
        # Responses, streaming, a function call whose arguments arrive in 5 deltas.
        fo.behave(
            Answer(usage=oa_usage, chunks=5, tool_call=ToolCall("get_weather", WEATHER, "call_r2"))
        )
        r = await c.post(
            bridge.url + "/openai/v1/responses",
            headers=AUTH,
            json={
                "model": "gpt-4.1",
                "stream": True,
                "input": [
                    {"role": "user", "content": "first"},
                    {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "responses stream"}],
                    },
                ],
            },
        )
        assert r.status_code == 200
        assert r.text.count("event: response.function_call_arguments.delta") == 5
        expected.append(
            Expected(
                "openai",
                "/v1/responses",
                "gpt-4.1",
                True,
                oa_tokens,
                "responses stream",
                [{"tool": "get_weather", "tool_call_id": "call_r2", "args": WEATHER}],
                key_hint=pool_oa,
            )
        )
        # Anthropic, blocking, a tool use.
        fa.behave(Answer(usage=an_usage, tool_call=ToolCall("get_weather", WEATHER, "toolu_b")))
        r = await c.post(
            bridge.url + "/anthropic/v1/messages",
            headers=AUTH,
            json={
                "model": "claude-sonnet-4-5",
                "max_tokens": 64,
                "messages": conversation("anthropic blocking"),
            },
        )
        assert r.status_code == 200
        expected.append(
            Expected(
                "anthropic",
                "/v1/messages",
                "claude-sonnet-4-5",
                False,
                an_tokens,
                "anthropic blocking",
                [{"tool": "get_weather", "tool_call_id": "toolu_b", "args": WEATHER}],
                key_hint=pool_an,
            )
        )
        # Anthropic, streaming, a tool use in 5 input_json_delta events.
        fa.behave(
            Answer(usage=an_usage, chunks=5, tool_call=ToolCall("get_weather", WEATHER, "toolu_s"))
        )
        r = await c.post(
            bridge.url + "/anthropic/v1/messages",
            headers=AUTH,
            json={
                "model": "claude-sonnet-4-5",
                "max_tokens": 64,
                "stream": True,
                "messages": conversation("anthropic stream"),
            },
        )
        assert r.status_code == 200 and r.text.count('"type":"input_json_delta"') == 5
        expected.append(
            Expected(
                "anthropic",
                "/v1/messages",
                "claude-sonnet-4-5",
                True,
                an_tokens,
                "anthropic stream",
                [{"tool": "get_weather", "tool_call_id": "toolu_s", "args": WEATHER}],
                key_hint=pool_an,
            )
        )
        # A passthrough route: an interception, no usage, no prompt.
        r = await c.get(bridge.url + "/openai/v1/models", headers=AUTH)
        assert r.status_code == 200
        expected.append(
            Expected("openai", "/v1/models", None, False, None, None, [], key_hint=pool_oa)
        )
        # BYOK: the client's own key, masked in the record.
        fa.behave(Answer(usage=an_usage))
        r = await c.post(
            bridge.url + "/anthropic/v1/messages",
            headers={"X-Trio-Bridge-Token": TOKEN, "X-Api-Key": OWN_KEY},
            json={
                "model": "claude-haiku-4-5",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "byok prompt"}],
            },
        )
        assert r.status_code == 200
        assert fa.last_request.key == OWN_KEY
        expected.append(
            Expected(
                "anthropic",
                "/v1/messages",
                "claude-haiku-4-5",
                False,
                an_tokens,
                "byok prompt",
                [],
                credential_kind="byok",
                key_hint="sk-o...9xyz",
            )
        )
    return expected


def check(documents: list[dict[str, Any]], expected: list[Expected]) -> None:
    """``documents`` (JSON-lines objects, in order) are exactly the expected records."""
    assert len(documents) == len(expected)
    for doc, want in zip(documents, expected, strict=True):
        where = (want.route, want.streaming, want.prompt)
        assert doc["provider_name"] == want.provider, where
        assert doc["provider_type"] == want.provider, where
        assert doc["route"] == want.route, where
        assert doc["model"] == want.model, where
        assert doc["streaming"] is want.streaming, where
        assert doc["status"] == want.status, where
        assert doc["client_id"] == "alice", where
        assert doc["credential_kind"] == want.credential_kind, where
        assert doc["key_hint"] == want.key_hint, where
        assert doc["attempt"] == 1 and doc["request_id"], where
        assert doc["started_at"] <= doc["first_byte_at"] <= doc["ended_at"], where
        assert doc["error"] is None, where
        if want.usage is None:
            assert doc["usage"] is None, where
        else:
            got = {k: doc["usage"][k] for k in ("input", "output", "cache_read", "cache_write")}
            assert got == want.usage, where
            for key, value in (want.extra or {}).items():
                assert doc["usage"]["extra"][key] == value, where
        assert doc["prompt"] == want.prompt, where
        assert doc["tools"] == want.tools, where
    assert {d["client"] for d in documents} >= {"openai-python"}


def database_documents(dsn: str) -> list[dict[str, Any]]:
    """Every interception with its usage, prompt and tools, rebuilt from the four tables."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """
            SELECT i.id, i.request_id, i.attempt, i.client_id, i.provider_name,
                   i.provider_type, i.route, i.model, i.streaming, i.status,
                   i.credential_kind, i.key_hint, i.started_at, i.first_byte_at, i.ended_at,
                   i.error, i.user_agent, i.client
            FROM ai_bridge_interceptions i ORDER BY i.started_at, i.attempt
            """
        ).fetchall()
        docs = []
        for row in rows:
            (
                iid,
                rid,
                attempt,
                cid,
                pname,
                ptype,
                route,
                model,
                streaming,
                status,
                kind,
                hint,
                started,
                first,
                ended,
                error,
                ua,
                client_kind,
            ) = row
            usages = conn.execute(
                "SELECT input, output, cache_read, cache_write, extra "
                "FROM ai_bridge_token_usages WHERE interception_id = %s",
                (iid,),
            ).fetchall()
            prompts = conn.execute(
                "SELECT prompt FROM ai_bridge_prompts WHERE interception_id = %s", (iid,)
            ).fetchall()
            tools = conn.execute(
                "SELECT tool, tool_call_id, args FROM ai_bridge_tool_usages "
                "WHERE interception_id = %s ORDER BY ctid",
                (iid,),
            ).fetchall()
            assert len(usages) <= 1 and len(prompts) <= 1
            docs.append(
                {
                    "id": str(iid),
                    "request_id": rid,
                    "attempt": attempt,
                    "client_id": cid,
                    "provider_name": pname,
                    "provider_type": ptype,
                    "route": route,
                    "model": model,
                    "streaming": streaming,
                    "status": status,
                    "credential_kind": kind,
                    "key_hint": hint,
                    "started_at": started,
                    "first_byte_at": first,
                    "ended_at": ended,
                    "error": error,
                    "user_agent": ua,
                    "client": client_kind,
                    "usage": None
                    if not usages
                    else dict(
                        zip(
                            ("input", "output", "cache_read", "cache_write", "extra"),
                            usages[0],
                            strict=True,
                        )
                    ),
                    "prompt": prompts[0][0] if prompts else None,
                    "tools": [
                        {"tool": t, "tool_call_id": tid, "args": args} for t, tid, args in tools
                    ],
                }
            )
    return docs


def file_documents(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_every_kind_of_request_records_exact_usage_prompt_and_tools(
    nursery, tmp_path, fake_openai, fake_anthropic, pg_migrated_dsn
) -> None:
    write_yaml(tmp_path, "b.yaml", config(fake_openai, fake_anthropic))
    bridge = await start_bridge(nursery, tmp_path, database_url=pg_migrated_dsn)
    expected = await run_every_kind(bridge, fake_openai, fake_anthropic)
    recorder = bridge.daemon.state.recorder
    with trio.fail_after(10):
        await recorder.wait_written(len(expected))
    docs = database_documents(pg_migrated_dsn)
    check(docs, expected)
    # No secret in any record: pool and client keys appear only masked.
    text = repr(docs)
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, OWN_KEY, TOKEN):
        assert secret not in text
    assert recorder.dropped == 0


async def test_json_lines_file_gets_the_same_records(
    nursery, tmp_path, fake_openai, fake_anthropic
) -> None:
    out = tmp_path / "records" / "usage.jsonl"
    out.parent.mkdir()
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    write_yaml(
        config_dir,
        "b.yaml",
        config(fake_openai, fake_anthropic, f"flush_every: 20ms, file: {out}"),
    )
    bridge = await start_bridge(nursery, config_dir)
    expected = await run_every_kind(bridge, fake_openai, fake_anthropic)
    with trio.fail_after(10):
        await bridge.daemon.state.recorder.wait_written(len(expected))
    docs = file_documents(out)
    check(docs, expected)
    # Every column of the table is in each line, plus usage, prompt and tools.
    assert set(docs[0]) == {
        "id",
        "request_id",
        "attempt",
        "client_id",
        "provider_name",
        "provider_type",
        "route",
        "model",
        "streaming",
        "status",
        "credential_kind",
        "key_hint",
        "started_at",
        "first_byte_at",
        "ended_at",
        "error",
        "user_agent",
        "client",
        "usage",
        "prompt",
        "tools",
    }


async def test_key_failover_records_one_row_per_attempt_linked_by_request_id(
    nursery, tmp_path, fake_openai, fake_anthropic, pg_migrated_dsn
) -> None:
    write_yaml(tmp_path, "b.yaml", config(fake_openai, fake_anthropic, keys=2))
    bridge = await start_bridge(nursery, tmp_path, database_url=pg_migrated_dsn)
    fake_openai.behave(RateLimited(retry_after="30"), Answer(usage=Usage(5, 2)))
    async with client() as c:
        r = await c.post(
            bridge.url + "/openai/v1/chat/completions",
            headers={**AUTH, "X-Request-Id": "req-failover-1"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert r.status_code == 200
    with trio.fail_after(10):
        await bridge.daemon.state.recorder.wait_written(2)
    docs = database_documents(pg_migrated_dsn)
    assert [(d["request_id"], d["attempt"], d["status"], d["key_hint"]) for d in docs] == [
        ("req-failover-1", 1, 429, "sk-o...1111"),
        ("req-failover-1", 2, 200, "sk-o...3333"),
    ]
    assert docs[0]["usage"] is None and docs[0]["prompt"] is None
    assert docs[1]["usage"]["input"] == 5 and docs[1]["prompt"] == "hi"


async def test_prompts_false_records_no_prompt_and_disabled_records_nothing(
    nursery, tmp_path, fake_openai, fake_anthropic
) -> None:
    out = tmp_path / "usage.jsonl"
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    write_yaml(
        config_dir,
        "b.yaml",
        config(fake_openai, fake_anthropic, f"flush_every: 20ms, prompts: false, file: {out}"),
    )
    bridge = await start_bridge(nursery, config_dir)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "secret plan"}]}
    async with client() as c:
        assert (
            await c.post(bridge.url + "/openai/v1/chat/completions", headers=AUTH, json=body)
        ).status_code == 200
    with trio.fail_after(10):
        await bridge.daemon.state.recorder.wait_written(1)
    (doc,) = file_documents(out)
    assert doc["prompt"] is None and doc["usage"]["output"] > 0
    assert "secret plan" not in out.read_text()

    await bridge.reload_after(
        lambda: trio.to_thread.run_sync(
            write_yaml,
            config_dir,
            "b.yaml",
            config(fake_openai, fake_anthropic, f"enabled: false, file: {out}"),
        )
    )
    recorder = bridge.daemon.state.recorder
    before = recorder.written + recorder.depth + recorder.dropped
    async with client() as c:
        assert (
            await c.post(bridge.url + "/openai/v1/chat/completions", headers=AUTH, json=body)
        ).status_code == 200
    await trio.sleep(0.2)  # a record would have been submitted by now
    assert recorder.written + recorder.depth + recorder.dropped == before


async def test_a_refused_request_on_a_provider_route_is_recorded_with_its_status(
    nursery, tmp_path, fake_openai, fake_anthropic
) -> None:
    """Every request that reached a provider route yields a row, even one that never
    reached the upstream (all keys cooling down)."""
    out = tmp_path / "usage.jsonl"
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    write_yaml(
        config_dir, "b.yaml", config(fake_openai, fake_anthropic, f"flush_every: 20ms, file: {out}")
    )
    bridge = await start_bridge(nursery, config_dir)
    fake_openai.behave(RateLimited(retry_after="60"))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with client() as c:
        first = await c.post(bridge.url + "/openai/v1/chat/completions", headers=AUTH, json=body)
        second = await c.post(bridge.url + "/openai/v1/chat/completions", headers=AUTH, json=body)
    assert (first.status_code, second.status_code) == (429, 429)
    with trio.fail_after(10):
        await bridge.daemon.state.recorder.wait_written(3)
    docs = file_documents(out)
    # first request: the upstream's 429 (attempt 1), then the bridge's own 429 (no key left)
    assert [(d["attempt"], d["status"], d["key_hint"]) for d in docs] == [
        (1, 429, "sk-o...1111"),
        (1, 429, "sk-o...1111"),
        (1, 429, None),
    ]
    assert docs[1]["error"] == "all configured keys are rate limited; retry later"
    assert docs[2]["first_byte_at"] is None
    assert len(fake_openai.requests) == 1


async def test_unwritable_file_is_reported_and_counted_never_fatal(
    nursery, tmp_path, fake_openai, fake_anthropic, caplog
) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    missing = tmp_path / "no-such-dir" / "usage.jsonl"
    write_yaml(
        config_dir,
        "b.yaml",
        config(fake_openai, fake_anthropic, f"flush_every: 20ms, queue: 2, file: {missing}"),
    )
    bridge = await start_bridge(nursery, config_dir)
    recorder = bridge.daemon.state.recorder
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with client() as c:
        for _ in range(4):
            r = await c.post(bridge.url + "/openai/v1/chat/completions", headers=AUTH, json=body)
            assert r.status_code == 200
        # the last record is submitted just after its response ends
        while recorder.failures == 0 or recorder.depth + recorder.dropped < 4:
            await trio.sleep(0.01)
    assert recorder.written == 0 and recorder.depth == 2 and recorder.dropped == 2
    assert any("cannot write" in r.getMessage() for r in caplog.records)
    # The directory appears: the queued records are written, nothing else was lost.
    missing.parent.mkdir()
    with trio.fail_after(30):
        await recorder.wait_written(2)
    assert len(file_documents(missing)) == 2


async def test_client_kind_is_guessed_from_the_user_agent() -> None:
    from trio_bridge.recording import client_kind

    assert client_kind("claude-cli/1.0.88 (external, cli)") == "claude-code"
    assert client_kind("codex_cli_rs/0.21.0 (Mac OS 14.5.0; arm64)") == "codex"
    assert client_kind("OpenAI/Python 1.99.0") == "openai-python"
    assert client_kind("Anthropic/Python 0.64.0") == "anthropic-python"
    assert client_kind("GitHubCopilotChat/0.30.0") == "copilot"
    assert client_kind("curl/8.5.0") == "curl"
    assert client_kind(None) == "unknown"
    assert client_kind("something-else/1") == "unknown"


async def test_metrics_count_tokens_apart_and_show_the_recorder_and_process(
    nursery, tmp_path, fake_openai, fake_anthropic, pg_migrated_dsn
) -> None:
    from trio_bridge import metrics

    write_yaml(tmp_path, "b.yaml", config(fake_openai, fake_anthropic))
    bridge = await start_bridge(nursery, tmp_path, database_url=pg_migrated_dsn)
    child = metrics.tokens_child("openai", "gpt-4.1", "input")
    cache = metrics.tokens_child("openai", "gpt-4.1", "cache_read")
    written = metrics.recorder_written._value.get()
    before = (child._value.get(), cache._value.get())
    fake_openai.behave(Answer(usage=Usage(100, 7, cache_read_tokens=40)))
    async with client() as c:
        r = await c.post(
            bridge.url + "/openai/v1/chat/completions",
            headers=AUTH,
            json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200
        with trio.fail_after(10):
            await bridge.daemon.state.recorder.wait_written(1)
        text = (await c.get(bridge.admin + "/metrics")).text
    # OpenAI's prompt_tokens (100) include the 40 cached: input counts the other 60
    assert (child._value.get() - before[0], cache._value.get() - before[1]) == (60, 40)
    assert metrics.recorder_written._value.get() - written == 1
    for name in (
        "trio_bridge_recorder_queue_depth 0.0",
        "trio_bridge_recorder_written_total",
        "trio_bridge_recorder_dropped_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "python_info",
        "python_gc_collections_total",
    ):
        assert name in text, name
