"""``trio-bridge usage``: sums of what the recorder wrote, grouped as asked, from Postgres."""

from __future__ import annotations

import json
import time

import pytest

from trio_bridge.cli import main
from trio_bridge.providers.base import TokenUsage
from trio_bridge.recording.records import Interception
from trio_bridge.recording.sinks import PostgresSink

DAY = 86400.0


def record(
    request_id: str,
    *,
    client: str,
    provider: str,
    model: str,
    age: float,
    usage: TokenUsage | None,
    attempt: int = 1,
) -> Interception:
    started = time.time() - age
    return Interception(
        request_id=request_id,
        attempt=attempt,
        client_id=client,
        provider_name=provider,
        provider_type="anthropic" if provider == "anthropic" else "openai",
        route="/v1/messages" if provider == "anthropic" else "/v1/chat/completions",
        model=model,
        streaming=False,
        status=200 if usage else 429,
        credential_kind="pool",
        key_hint="sk-a...1111",
        started_at=started,
        first_byte_at=started + 0.1,
        ended_at=started + 0.2,
        error=None,
        user_agent="OpenAI/Python 3.1",
        client="openai-python",
        usage=usage,
    )


@pytest.fixture
def recorded(pg_migrated_dsn: str) -> str:
    """Records written through the recorder's own sink: two clients, two providers,
    a failed-over request (two attempts), and one record older than a week."""
    PostgresSink(pg_migrated_dsn).write(
        [
            record(
                "r1",
                client="alice",
                provider="openai",
                model="gpt-4.1",
                age=60,
                usage=TokenUsage(10, 5, 2, 0),
            ),
            record(
                "r2",
                client="alice",
                provider="openai",
                model="gpt-4.1",
                age=2 * DAY,
                usage=TokenUsage(20, 6, 0, 0),
            ),
            record(
                "r3",
                client="bob",
                provider="anthropic",
                model="claude-sonnet-4-5",
                age=60,
                usage=None,
            ),
            record(
                "r3",
                client="bob",
                provider="anthropic",
                model="claude-sonnet-4-5",
                age=59,
                usage=TokenUsage(7, 3, 30, 40),
                attempt=2,
            ),
            record(
                "old",
                client="alice",
                provider="openai",
                model="gpt-4.1",
                age=10 * DAY,
                usage=TokenUsage(1000, 1000, 1000, 1000),
            ),
        ]
    )
    return pg_migrated_dsn


def run_json(capsys, *args: str) -> list[dict]:
    assert main(["usage", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_usage_by_provider_sums_tokens_and_counts_requests_once(recorded, capsys) -> None:
    rows = run_json(capsys, "--database-url", recorded, "--by", "provider")
    assert rows == [
        {
            "provider": "anthropic",
            "requests": 1,
            "input": 7,
            "output": 3,
            "cache_read": 30,
            "cache_write": 40,
        },
        {
            "provider": "openai",
            "requests": 2,
            "input": 30,
            "output": 11,
            "cache_read": 2,
            "cache_write": 0,
        },
    ]


def test_usage_since_and_several_groupings(recorded, capsys) -> None:
    rows = run_json(capsys, "--database-url", recorded, "--since", "1d", "--by", "client,model")
    assert [(r["client"], r["model"], r["requests"], r["input"]) for r in rows] == [
        ("alice", "gpt-4.1", 1, 10),
        ("bob", "claude-sonnet-4-5", 1, 7),
    ]
    rows = run_json(capsys, "--database-url", recorded, "--since", "30d", "--by", "client")
    assert [(r["client"], r["input"]) for r in rows] == [("alice", 1030), ("bob", 7)]


def test_usage_default_groups_by_client_provider_model_and_day(recorded, capsys) -> None:
    rows = run_json(capsys, "--database-url", recorded)
    assert all(list(r)[:4] == ["client", "provider", "model", "day"] for r in rows)
    assert len(rows) == 3 and all(len(r["day"]) == 10 for r in rows)


def test_usage_table_output(recorded, capsys, monkeypatch) -> None:
    monkeypatch.setenv("TRIO_BRIDGE_DATABASE_URL", recorded)
    assert main(["usage", "--by", "provider"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "provider",
        "requests",
        "input",
        "output",
        "cache_read",
        "cache_write",
    ]
    assert lines[1].split() == ["anthropic", "1", "7", "3", "30", "40"]


def test_usage_rejects_an_unknown_grouping(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["usage", "--by", "colour", "--database-url", "postgresql://x@127.0.0.1:1/db"])
    assert exc.value.code == 2
    assert "unknown grouping 'colour'" in capsys.readouterr().err


def test_usage_without_a_reachable_database_is_a_one_line_error(capsys) -> None:
    code = main(
        ["usage", "--database-url", "postgresql://u:hunter2-secret@127.0.0.1:1/db", "--json"]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "hunter2-secret" not in err
