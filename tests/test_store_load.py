"""load_contents: one read-only snapshot, schema validation per row, safe errors."""

from __future__ import annotations

import logging

import psycopg
import pytest
from psycopg.types.json import Jsonb

from trio_bridge.config.model import BedrockSettings, ClientSpec, KeyRef
from trio_bridge.store import load as load_module
from trio_bridge.store.errors import StoreError, scrub
from trio_bridge.store.load import load_contents

A_SHA = "a" * 64


def _provider(
    conn: psycopg.Connection,
    name: str,
    *,
    type: str = "openai",
    base_url: str = "https://api.example.com/v1",
    settings: object = None,
    enabled: bool = True,
    keys: tuple[str, ...] = (),
) -> None:
    row = conn.execute(
        "INSERT INTO ai_providers (name, type, base_url, settings, enabled)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (name, type, base_url, Jsonb(settings if settings is not None else {}), enabled),
    ).fetchone()
    assert row is not None
    for key in keys:
        conn.execute(
            "INSERT INTO ai_provider_keys (provider_id, api_key, created_at)"
            " VALUES (%s, %s, clock_timestamp())",
            (row[0], key),
        )


def test_empty_database(pg_migrated_dsn: str) -> None:
    contents = load_contents(pg_migrated_dsn)
    assert contents.providers == () and contents.invalid_providers == () and contents.clients == ()


def test_providers_keys_and_clients(pg_conn: psycopg.Connection, pg_migrated_dsn: str) -> None:
    _provider(pg_conn, "zeta", keys=("sk-z1",))
    _provider(
        pg_conn,
        "alpha",
        type="anthropic",
        base_url="https://bedrock-runtime.us-east-1.amazonaws.com",
        settings={
            "headers": {"Anthropic-Beta": "x"},
            "bedrock": {"region": "us-east-1", "model": "m", "access_key": {"env": "AWS_KEY"}},
        },
        enabled=False,
        keys=("sk-a-second",),
    )
    # Same created_at: ties break on id.
    pg_conn.execute(
        "INSERT INTO ai_provider_keys (id, provider_id, api_key, created_at)"
        " SELECT '00000000-0000-0000-0000-000000000002'::uuid, id, 'sk-z3',"
        " 'infinity'::timestamptz FROM ai_providers WHERE name = 'zeta'"
        " UNION ALL SELECT '00000000-0000-0000-0000-000000000001'::uuid, id, 'sk-z2',"
        " 'infinity'::timestamptz FROM ai_providers WHERE name = 'zeta'"
    )
    pg_conn.execute(
        "INSERT INTO ai_provider_keys (provider_id, api_key, created_at)"
        " SELECT id, 'sk-a-first', '-infinity' FROM ai_providers WHERE name = 'alpha'"
    )
    pg_conn.execute(
        "INSERT INTO ai_bridge_clients (id, token_sha256, metadata) VALUES"
        " ('alice', %s, %s), ('bob', %s, '{}')",
        (A_SHA, Jsonb({"Team": "infra", "Level": 3, "Admin": True, "Extra": None}), "b" * 64),
    )
    pg_conn.execute(
        "INSERT INTO ai_bridge_clients (id, token_sha256, revoked_at) VALUES ('gone', %s, now())",
        ("c" * 64,),
    )

    contents = load_contents(pg_migrated_dsn)

    assert contents.invalid_providers == ()
    assert [p.name for p in contents.providers] == ["alpha", "zeta"]
    alpha, zeta = contents.providers
    assert [k.value for k in zeta.keys] == ["sk-z1", "sk-z2", "sk-z3"]
    assert [k.value for k in alpha.keys] == ["sk-a-first", "sk-a-second"]
    assert alpha.type == "anthropic" and alpha.enabled is False
    assert alpha.headers == {"Anthropic-Beta": "x"}
    assert alpha.bedrock == BedrockSettings(
        region="us-east-1", model="m", access_key=KeyRef(env="AWS_KEY")
    )
    assert zeta.keys[0] == KeyRef(value="sk-z1")
    assert contents.clients == (
        ClientSpec(
            id="alice",
            token_sha256=A_SHA,
            metadata={"Team": "infra", "Level": "3", "Admin": "true", "Extra": "null"},
        ),
        ClientSpec(id="bob", token_sha256="b" * 64),
    )
    assert not hasattr(contents, "bridge")  # database rows never carry bridge settings


def test_invalid_rows_are_reported_not_dropped(
    pg_conn: psycopg.Connection, pg_migrated_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-very-secret-value-123456"
    _provider(pg_conn, "good", keys=(secret,))
    _provider(pg_conn, "bad-url", base_url="ftp://files.example.com")
    _provider(pg_conn, "bad-settings", settings={"headers": {}, "colour": "blue"})
    _provider(pg_conn, "settings-array", settings=[1, 2])
    _provider(pg_conn, "bad-header", settings={"headers": {"X-Token": 5}})
    _provider(pg_conn, "bad-bedrock", settings={"bedrock": {"region": "US EAST"}})
    _provider(pg_conn, "copilot", type="copilot", keys=(secret,))
    _provider(pg_conn, "too-many", keys=tuple(f"{secret}-{i}" for i in range(9)))
    _provider(pg_conn, "empty-key", keys=("",))
    pg_conn.execute(
        "INSERT INTO ai_bridge_clients (id, token_sha256) VALUES ('ok', %s),"
        " ('has space', %s), ('short', 'abc')",
        (A_SHA.upper(), "d" * 64),
    )

    with caplog.at_level(logging.WARNING):
        contents = load_contents(pg_migrated_dsn)

    assert [p.name for p in contents.providers] == ["good"]
    reasons = dict(contents.invalid_providers)
    assert sorted(reasons) == sorted(
        [
            "bad-url",
            "bad-settings",
            "settings-array",
            "bad-header",
            "bad-bedrock",
            "copilot",
            "too-many",
            "empty-key",
        ]
    )
    assert reasons["bad-url"].startswith("$.base_url: expected a string matching")
    assert reasons["bad-settings"] == (
        "$.settings: unknown field `colour` (expected only headers, bedrock, fallbacks, first_token_timeout)"
    )
    assert reasons["settings-array"] == "$.settings: expected an object"
    assert reasons["bad-header"].startswith("$.settings.headers")
    assert reasons["bad-bedrock"].startswith("$.settings.bedrock")
    assert "copilot" in reasons["copilot"]
    assert reasons["too-many"].startswith("$.keys: expected a list of length <= 8")
    assert reasons["empty-key"].startswith("$.keys[0]:")
    for reason in reasons.values():
        assert secret not in reason and "ftp" not in reason and "blue" not in reason
    # Clients: upper-case hex is normalised; rows the schema rejects are skipped, logged.
    assert [c.id for c in contents.clients] == ["ok"]
    assert contents.clients[0].token_sha256 == A_SHA
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 2


def test_read_only_repeatable_read_with_timeout(
    pg_migrated_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A probe row whose base_url reports the transaction's settings.
    monkeypatch.setattr(
        load_module,
        "PROVIDERS_SQL",
        "SELECT gen_random_uuid(), 'probe', 'openai', 'https://' || concat_ws('/',"
        " current_setting('transaction_isolation'), current_setting('transaction_read_only'),"
        " current_setting('statement_timeout')), '{}'::jsonb, true",
    )
    contents = load_contents(pg_migrated_dsn, statement_timeout=1.5)
    assert contents.providers[0].base_url == "https://repeatable read/on/1500ms"


def test_writes_fail_inside_the_load_transaction(
    pg_migrated_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        load_module,
        "CLIENTS_SQL",
        "INSERT INTO ai_bridge_clients (id, token_sha256) VALUES ('x', 'y') RETURNING 1, 2, 3",
    )
    with pytest.raises(StoreError, match="read-only transaction"):
        load_contents(pg_migrated_dsn)


def test_statement_timeout_applies(pg_migrated_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "KEYS_SQL", "SELECT NULL, pg_sleep(5)::text")
    with pytest.raises(StoreError, match="statement timeout"):
        load_contents(pg_migrated_dsn, statement_timeout=0.2)


def test_missing_schema_suggests_migrate(pg_dsn: str) -> None:
    with pytest.raises(StoreError, match="db migrate"):
        load_contents(pg_dsn)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://postgres:hunter2@127.0.0.1:1/test",
        "postgresql://postgres:hun%20ter2@127.0.0.1:1/test",
        "postgresql://postgres:hun ter2@127.0.0.1:5432/test",
        "postgresql://postgres@127.0.0.1:1/test?password=hunter2",
        "host=127.0.0.1 port=1 user=postgres password=hunter2 dbname=test",
        "host=127.0.0.1 port=1 password='hun ter2' dbname=test",
        "postgresql://postgres:hunter2@127.0.0.1:5432/test?sslmode=bogus",
        "postgresql://postgres:hunter2@[::1:5432/test",
        "host=127.0.0.1 password=hunter2 port=notaport",
    ],
)
def test_errors_never_contain_the_password(dsn: str) -> None:
    with pytest.raises(StoreError) as info:
        load_contents(dsn, connect_timeout=2)
    message = str(info.value)
    assert "hunter2" not in message and "hun ter2" not in message and "hun%20ter2" not in message
    assert message  # still says something


def test_scrub() -> None:
    dsn = "postgresql://u:s3cr%2Ft@h/db"
    assert scrub("failed for s3cr/t and s3cr%2Ft", dsn) == "failed for *** and ***"
    assert "pw" not in scrub("see postgresql://x:pw@host/db", "")
    assert scrub("password=abc host=h", "") == "password=*** host=h"
