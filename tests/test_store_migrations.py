"""Schema migrations: idempotent, concurrent-safe, and the notify/updated_at triggers."""

from __future__ import annotations

import subprocess
import sys
import threading

import psycopg
import pytest

from trio_bridge.store.migrations import LATEST_VERSION, MIGRATIONS, migrate

TABLES = {
    "ai_providers",
    "ai_provider_keys",
    "ai_bridge_clients",
    "ai_bridge_interceptions",
    "ai_bridge_token_usages",
    "ai_bridge_prompts",
    "ai_bridge_tool_usages",
    "schema_migrations",
}


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def _versions(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def test_migrate_twice_is_idempotent(pg_dsn: str) -> None:
    assert migrate(pg_dsn) == sorted(MIGRATIONS)
    assert migrate(pg_dsn) == []
    assert _tables(pg_dsn) == TABLES
    assert _versions(pg_dsn) == sorted(MIGRATIONS)
    assert max(MIGRATIONS) == LATEST_VERSION


def test_concurrent_migrations_in_threads(pg_dsn: str) -> None:
    n = 4
    barrier = threading.Barrier(n)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate(pg_dsn))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    # Each version applied exactly once, by whichever process got there first.
    assert sorted(v for applied in results for v in applied) == sorted(MIGRATIONS)
    assert _tables(pg_dsn) == TABLES
    assert _versions(pg_dsn) == sorted(MIGRATIONS)


def test_concurrent_migrations_in_processes(pg_dsn: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "trio_bridge.commands.store",
        "db",
        "migrate",
        "--database-url",
        pg_dsn,
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    stdouts = sorted(out for out, _ in outputs)
    applied = [
        int(v)
        for s in stdouts
        if "applied migrations: " in s
        for v in s.split("applied migrations: ")[1].splitlines()[0].split(", ")
    ]
    assert sorted(applied) == sorted(MIGRATIONS)
    assert sum("schema up to date" in s for s in stdouts) >= 1
    assert _versions(pg_dsn) == sorted(MIGRATIONS)


def test_constraints(pg_conn: psycopg.Connection) -> None:
    bad = [
        "INSERT INTO ai_providers (name, type, base_url) VALUES ('Bad', 'openai', 'https://x')",
        "INSERT INTO ai_providers (name, type, base_url) VALUES ('ok', 'other', 'https://x')",
        "INSERT INTO ai_providers (name, type) VALUES ('ok', 'openai')",
    ]
    for sql in bad:
        with pytest.raises(psycopg.errors.IntegrityError):
            pg_conn.execute(sql)
    row = pg_conn.execute(
        "INSERT INTO ai_providers (name, type, base_url) VALUES ('ok', 'openai', 'https://x')"
        " RETURNING id, settings, enabled"
    ).fetchone()
    assert row is not None and row[1] == {} and row[2] is True
    pg_conn.execute(
        "INSERT INTO ai_provider_keys (provider_id, api_key) VALUES (%s, 'k')", (row[0],)
    )
    pg_conn.execute("DELETE FROM ai_providers WHERE id = %s", (row[0],))
    assert pg_conn.execute("SELECT count(*) FROM ai_provider_keys").fetchone() == (0,)
    with pytest.raises(psycopg.errors.CheckViolation):
        pg_conn.execute("INSERT INTO ai_bridge_interceptions (credential_kind) VALUES ('x')")


def test_updated_at_is_touched(pg_conn: psycopg.Connection) -> None:
    pg_conn.execute(
        "INSERT INTO ai_providers (name, type, base_url, created_at, updated_at)"
        " VALUES ('p', 'openai', 'https://x', now() - interval '1 day', now() - interval '1 day')"
    )
    pg_conn.execute("UPDATE ai_providers SET enabled = false")
    created, updated = pg_conn.execute("SELECT created_at, updated_at FROM ai_providers").fetchone()
    assert updated > created


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO ai_providers (name, type, base_url) VALUES ('q', 'openai', 'https://y')",
        "UPDATE ai_providers SET enabled = false",
        "UPDATE ai_providers SET enabled = false WHERE false",
        "DELETE FROM ai_providers",
        "TRUNCATE ai_providers CASCADE",
        "INSERT INTO ai_provider_keys (provider_id, api_key)"
        " SELECT id, 'sk-new' FROM ai_providers WHERE name = 'p'",
        "UPDATE ai_provider_keys SET api_key = 'sk-other'",
        "DELETE FROM ai_provider_keys",
        "TRUNCATE ai_provider_keys",
        "INSERT INTO ai_bridge_clients (id, token_sha256) VALUES ('bob', repeat('b', 64))",
        "UPDATE ai_bridge_clients SET revoked_at = now()",
        "DELETE FROM ai_bridge_clients",
        "TRUNCATE ai_bridge_clients",
    ],
)
def test_every_change_notifies(pg_migrated_dsn: str, sql: str) -> None:
    with psycopg.connect(pg_migrated_dsn, autocommit=True) as writer:
        writer.execute(
            "INSERT INTO ai_providers (name, type, base_url) VALUES ('p', 'openai', 'https://x')"
        )
        writer.execute(
            "INSERT INTO ai_provider_keys (provider_id, api_key)"
            " SELECT id, 'sk-1' FROM ai_providers"
        )
        writer.execute(
            "INSERT INTO ai_bridge_clients (id, token_sha256) VALUES ('alice', repeat('a', 64))"
        )
        with psycopg.connect(pg_migrated_dsn, autocommit=True) as listener:
            listener.execute("LISTEN ai_providers_changed")
            writer.execute(sql)
            got = list(listener.notifies(timeout=5, stop_after=1))
    assert len(got) == 1
    assert got[0].channel == "ai_providers_changed"
    assert got[0].payload == ""


def test_rolled_back_change_does_not_notify(pg_migrated_dsn: str) -> None:
    with (
        psycopg.connect(pg_migrated_dsn, autocommit=True) as listener,
        psycopg.connect(pg_migrated_dsn) as writer,
    ):
        listener.execute("LISTEN ai_providers_changed")
        writer.execute(
            "INSERT INTO ai_providers (name, type, base_url) VALUES ('p', 'openai', 'https://x')"
        )
        writer.rollback()
        # A committed change afterwards is the first (and only) notification seen.
        writer.execute("INSERT INTO ai_bridge_clients (id, token_sha256) VALUES ('a', 'x')")
        writer.commit()
        got = list(listener.notifies(timeout=5, stop_after=1))
        assert len(got) == 1
        assert list(listener.notifies(timeout=0)) == []
    with psycopg.connect(pg_migrated_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM ai_providers").fetchone() == (0,)
