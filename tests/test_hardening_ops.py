"""Operators' rough edges (issue 9, items 14-17 and 23): the error type of a provider that is
not available, one 503 shape whatever the source, the same health answers on both
listeners, the failover counter's name, and JSON log field names."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import psycopg
import pytest
import trio
from psycopg.types.json import Jsonb

from tests.support import RunningBridge, client, start_bridge, write_yaml
from trio_bridge import metrics
from trio_bridge.http import errors
from trio_bridge.logsetup import JsonFormatter
from trio_bridge.providers.registry import dialect_for
from trio_bridge.testing import FakeUpstream

KEY = "sk-openai-pool-key-aaaaaaaaaaaa1111"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "claude-fake-1", "max_tokens": 5, "messages": []}


async def bridge_over(
    nursery, config_dir: Path, fo: FakeUpstream, fa: FakeUpstream, **kw
) -> RunningBridge:
    write_yaml(
        config_dir,
        "b.yaml",
        f"""
        bridge: {{auth: none, reload: {{debounce: 20ms}}}}
        providers:
          - {{name: openai, type: openai, base_url: "{fo.base_url}", keys: [{{value: {KEY}}}]}}
          - {{name: off-openai, type: openai, base_url: "{fo.base_url}", enabled: false}}
          - {{name: off-claude, type: anthropic, base_url: "{fa.base_url}", enabled: false}}
          - name: broken-openai
            type: openai
            base_url: "{fo.base_url}"
            keys: [{{env: UNSET_VARIABLE_FOR_TEST}}]
          - name: broken-claude
            type: anthropic
            base_url: "{fa.base_url}"
            keys: [{{env: UNSET_VARIABLE_FOR_TEST}}]
        """,
    )
    return await start_bridge(nursery, config_dir, **kw)


# 14. A provider that is not available answers Anthropic clients with api_error


@pytest.mark.parametrize(
    ("name", "reason"), [("off-claude", "disabled"), ("broken-claude", "misconfigured")]
)
async def test_unavailable_anthropic_provider_answers_api_error_503(
    nursery, tmp_path, fake_openai, fake_anthropic, name: str, reason: str
) -> None:
    bridge = await bridge_over(nursery, tmp_path, fake_openai, fake_anthropic)
    async with client() as c:
        r = await c.post(f"{bridge.url}/{name}/v1/messages", json=MESSAGES)
    assert r.status_code == 503
    assert r.json() == {
        "type": "error",
        "error": {"type": "api_error", "message": f'provider "{name}" is {reason}'},
    }
    assert r.headers["x-request-id"]
    assert fake_anthropic.requests == []


async def test_anthropic_sdk_sees_an_unavailable_provider_as_a_server_error(
    nursery, tmp_path, fake_openai, fake_anthropic
) -> None:
    from anthropic import Anthropic, InternalServerError

    bridge = await bridge_over(nursery, tmp_path, fake_openai, fake_anthropic)

    def run() -> InternalServerError:
        sdk = Anthropic(base_url=bridge.url + "/off-claude", api_key="x", max_retries=0)
        try:
            sdk.messages.create(**MESSAGES)
        except InternalServerError as exc:
            return exc
        raise AssertionError("no error")

    exc = await trio.to_thread.run_sync(run)
    assert exc.status_code == 503 and exc.body["error"]["type"] == "api_error"


# 23. The "misconfigured" 503 has one shape whatever the source


def test_unavailable_body_of_an_unknown_type_matches_the_openai_shape() -> None:
    unknown = json.loads(errors.unavailable_body("p", "misconfigured", None))
    openai = json.loads(errors.unavailable_body("p", "misconfigured", dialect_for("openai")))
    assert (
        unknown
        == openai
        == {
            "error": {
                "message": 'provider "p" is misconfigured',
                "type": "service_unavailable",
                "code": None,
            }
        }
    )


async def test_misconfigured_503_has_one_shape_from_yaml_and_from_the_database(
    nursery, tmp_path, fake_openai, fake_anthropic, pg_migrated_dsn
) -> None:
    with psycopg.connect(pg_migrated_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ai_providers (name, type, base_url, settings) VALUES (%s, %s, %s, %s)",
            ("db-broken", "openai", fake_openai.base_url, Jsonb({"colour": "blue"})),
        )
    bridge = await bridge_over(
        nursery, tmp_path, fake_openai, fake_anthropic, database_url=pg_migrated_dsn
    )
    with trio.fail_after(10):
        while "db-broken" not in bridge.snapshot.providers:
            await bridge.next_swap()
    async with client() as c:
        from_db = await c.post(bridge.url + "/db-broken/v1/chat/completions", json=CHAT)
        from_yaml = await c.post(bridge.url + "/broken-openai/v1/chat/completions", json=CHAT)
    assert from_db.status_code == from_yaml.status_code == 503
    db_doc, yaml_doc = from_db.json(), from_yaml.json()
    assert set(db_doc["error"]) == set(yaml_doc["error"]) == {"message", "type", "code"}
    assert db_doc["error"]["type"] == yaml_doc["error"]["type"] == "service_unavailable"
    assert db_doc["error"]["code"] is yaml_doc["error"]["code"] is None
    assert db_doc["error"]["message"] == 'provider "db-broken" is misconfigured'


# 15. /healthz and /readyz answer the same on both listeners


async def both(bridge: RunningBridge, path: str) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    async with client() as c:
        main = await c.get(bridge.url + path)
        admin = await c.get(bridge.admin + path)
    return (main.status_code, main.content), (admin.status_code, admin.content)


async def test_health_and_readiness_bodies_agree_across_listeners(
    nursery, tmp_path, fake_openai, fake_anthropic
) -> None:
    bridge = await bridge_over(nursery, tmp_path, fake_openai, fake_anthropic)
    state = bridge.daemon.state
    assert state is not None
    main, admin = await both(bridge, "/healthz")
    assert main == admin == (200, b'{"status":"ok"}')
    main, admin = await both(bridge, "/readyz")
    assert main == admin == (200, b'{"status":"ready"}')

    settled = state.database_settled
    state.database_settled = trio.Event()  # as before the first database load ended
    main, admin = await both(bridge, "/readyz")
    assert main == admin == (503, b'{"status":"starting"}')
    state.database_settled = settled

    state.draining = True  # what SIGTERM sets first
    main, admin = await both(bridge, "/readyz")
    assert main == admin == (503, b'{"status":"draining"}')
    main, admin = await both(bridge, "/healthz")
    assert main == admin == (200, b'{"status":"ok"}')
    state.draining = False


# 16. The failover counter follows Prometheus naming


async def test_key_pool_failover_is_a_counter_named_with_total() -> None:
    metrics.key_pool_failover.labels("naming-check").inc()
    text = (await metrics.render()).decode()
    assert re.search(
        r"^# TYPE trio_bridge_key_pool_failover_attempts(_total)? counter$", text, re.M
    )
    assert 'trio_bridge_key_pool_failover_attempts_total{provider="naming-check"} 1.0' in text
    assert not re.search(r"^trio_bridge_key_pool_failover_attempts\{", text, re.M)


# 17. JSON logs carry the field names of the common log shippers


def record(created: float, **fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("trio_bridge.access", logging.INFO, __file__, 1, "a %s", ("b",), None)
    rec.created = created
    rec.fields = fields  # type: ignore[attr-defined]
    return rec


def test_json_log_lines_have_ts_level_logger_msg() -> None:
    # 2026-12-01T09:30:05.999Z: milliseconds truncated, never rounded into the next second.
    line = JsonFormatter().format(record(1796117405.9996, status=200, request_id="r1"))
    doc = json.loads(line)
    assert doc == {
        "ts": "2026-12-01T09:30:05.999Z",
        "level": "info",
        "logger": "trio_bridge.access",
        "msg": "a b",
        "status": 200,
        "request_id": "r1",
    }


def test_json_log_fields_never_replace_the_core_keys() -> None:
    doc = json.loads(JsonFormatter().format(record(0.0, msg="x", ts="y", level="z", path="/p")))
    assert doc["ts"] == "1970-01-01T00:00:00.000Z"
    assert (doc["msg"], doc["level"], doc["path"]) == ("a b", "info", "/p")


def test_json_log_line_of_an_exception_keeps_the_traceback_in_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    doc = json.loads(JsonFormatter().format(rec))
    assert doc["level"] == "error" and "ValueError: boom" in doc["exception"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts"])
