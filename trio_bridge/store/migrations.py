"""Versioned schema migrations (contract section 8).

Each version is applied in its own transaction that first takes a transaction-level
advisory lock on a fixed key, then re-checks ``schema_migrations``; so several processes
may run :func:`migrate` at once: exactly one applies each version, the others wait and
find it done. Migrations never change once released: add a new version instead.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # psycopg loads only when a command talks to the database
    import psycopg

from .connect import connect
from .errors import database_errors

log = logging.getLogger("trio_bridge.store.migrations")

# pg_advisory_xact_lock key: "trio-bridge migrations" (an arbitrary, fixed 64-bit value).
LOCK_KEY = 0x7472_696F_6D69_6772

NOTIFY_CHANNEL = "ai_providers_changed"

_V1 = [
    """
    CREATE TABLE ai_providers (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
        type text NOT NULL CHECK (type IN ('openai', 'anthropic', 'copilot')),
        base_url text NOT NULL,
        settings jsonb NOT NULL DEFAULT '{}',
        enabled bool NOT NULL DEFAULT true,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE ai_provider_keys (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        provider_id uuid NOT NULL REFERENCES ai_providers ON DELETE CASCADE,
        api_key text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX ai_provider_keys_order_idx ON ai_provider_keys (provider_id, created_at, id)",
    """
    CREATE TABLE ai_bridge_clients (
        id text PRIMARY KEY,
        token_sha256 text UNIQUE NOT NULL,
        metadata jsonb NOT NULL DEFAULT '{}',
        revoked_at timestamptz NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE ai_bridge_interceptions (
        id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        client_id text,
        provider_name text,
        provider_type text,
        route text,
        model text,
        streaming bool,
        status int,
        credential_kind text CHECK (credential_kind IN ('pool', 'byok')),
        key_hint text,
        started_at timestamptz,
        first_byte_at timestamptz,
        ended_at timestamptz,
        error text NULL,
        user_agent text,
        client text
    )
    """,
    "CREATE INDEX ai_bridge_interceptions_started_idx ON ai_bridge_interceptions (started_at)",
    """
    CREATE INDEX ai_bridge_interceptions_client_idx
        ON ai_bridge_interceptions (client_id, started_at)
    """,
    """
    CREATE TABLE ai_bridge_token_usages (
        interception_id uuid REFERENCES ai_bridge_interceptions,
        input bigint,
        output bigint,
        cache_read bigint,
        cache_write bigint,
        extra jsonb
    )
    """,
    """
    CREATE INDEX ai_bridge_token_usages_interception_idx
        ON ai_bridge_token_usages (interception_id)
    """,
    "CREATE TABLE ai_bridge_prompts (interception_id uuid, prompt text)",
    "CREATE INDEX ai_bridge_prompts_interception_idx ON ai_bridge_prompts (interception_id)",
    """
    CREATE TABLE ai_bridge_tool_usages (
        interception_id uuid, tool text, tool_call_id text, args jsonb
    )
    """,
    """
    CREATE INDEX ai_bridge_tool_usages_interception_idx
        ON ai_bridge_tool_usages (interception_id)
    """,
    f"""
    CREATE FUNCTION ai_providers_notify_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION ai_providers_touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        NEW.updated_at := now();
        RETURN NEW;
    END
    $$
    """,
    """
    CREATE TRIGGER ai_providers_touch_updated_at BEFORE UPDATE ON ai_providers
        FOR EACH ROW EXECUTE FUNCTION ai_providers_touch_updated_at()
    """,
    *(
        f"""
        CREATE TRIGGER {table}_notify
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION ai_providers_notify_changed()
        """
        for table in ("ai_providers", "ai_provider_keys", "ai_bridge_clients")
    ),
]

# Version 2: the attempts of one request (key failover, retries, fallbacks) are separate
# interceptions linked by the request id, numbered from 1.
_V2 = [
    "ALTER TABLE ai_bridge_interceptions ADD COLUMN request_id text",
    "ALTER TABLE ai_bridge_interceptions ADD COLUMN attempt int",
    """
    CREATE INDEX ai_bridge_interceptions_request_idx
        ON ai_bridge_interceptions (request_id)
    """,
]

MIGRATIONS: dict[int, list[str]] = {1: _V1, 2: _V2}
LATEST_VERSION = max(MIGRATIONS)

_BOOKKEEPING = """
    CREATE TABLE IF NOT EXISTS schema_migrations (
        version int PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
    )
"""


def _lock(conn: psycopg.Connection) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))


def applied_versions(conn: psycopg.Connection) -> list[int]:
    """Versions recorded in ``schema_migrations`` (empty when the table does not exist)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    return [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def migrate_connection(conn: psycopg.Connection) -> list[int]:
    """Apply the missing versions over an autocommit connection; returns those it applied."""
    with conn.transaction():
        _lock(conn)
        conn.execute(_BOOKKEEPING)
    applied: list[int] = []
    for version in sorted(MIGRATIONS):
        with conn.transaction():
            _lock(conn)
            done = conn.execute(
                "SELECT 1 FROM schema_migrations WHERE version = %s", (version,)
            ).fetchone()
            if done:
                continue
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        applied.append(version)
    newer = [v for v in applied_versions(conn) if v > LATEST_VERSION]
    if newer:
        log.warning(
            "the database schema is at version %d, newer than this trio-bridge knows (%d)",
            max(newer),
            LATEST_VERSION,
        )
    return applied


def migrate(dsn: str) -> list[int]:
    """Create or upgrade the schema at ``dsn``; returns the versions applied by this call.

    Idempotent and safe to run concurrently. Raises StoreError (password-free).
    """
    with connect(dsn, autocommit=True) as conn, database_errors(dsn, "migration"):
        return migrate_connection(conn)
