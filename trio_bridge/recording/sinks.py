"""Where records go: Postgres (one statement, one transaction per batch) or a JSON-lines
file. Sinks are synchronous and run in a worker thread; each raises SinkError (safe to
log: no password, no record content) when a batch could not be written."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:  # loaded by the first write: a bridge without a database never needs it
    import psycopg

from ..store.connect import connect
from ..store.errors import StoreError, describe
from .records import Interception

log = logging.getLogger("trio_bridge.recording")
_encoder = msgspec.json.Encoder()

RECORDER_APPLICATION_NAME = "trio-bridge-recorder"
STATEMENT_TIMEOUT_MS = 30_000


class SinkError(Exception):
    """A batch was not written; it stays queued and is tried again."""


# One statement: the batch arrives as one JSON array (the JSON-lines objects); the
# interceptions are inserted first (ON CONFLICT: a batch retried after a lost reply is not
# written twice), then the usage, prompt and tool rows of the interceptions just inserted.
INSERT_BATCH = """
WITH batch AS (
    SELECT * FROM jsonb_to_recordset(%s::jsonb) AS r(
        id uuid, request_id text, attempt int, client_id text, provider_name text,
        provider_type text, route text, model text, streaming bool, status int,
        credential_kind text, key_hint text, started_at timestamptz,
        first_byte_at timestamptz, ended_at timestamptz, error text, user_agent text,
        client text, usage jsonb, prompt text, tools jsonb)
), inserted AS (
    INSERT INTO ai_bridge_interceptions (
        id, request_id, attempt, client_id, provider_name, provider_type, route, model,
        streaming, status, credential_kind, key_hint, started_at, first_byte_at, ended_at,
        error, user_agent, client)
    SELECT id, request_id, attempt, client_id, provider_name, provider_type, route, model,
        streaming, status, credential_kind, key_hint, started_at, first_byte_at, ended_at,
        error, user_agent, client
    FROM batch
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), usages AS (
    INSERT INTO ai_bridge_token_usages (
        interception_id, input, output, cache_read, cache_write, extra)
    SELECT b.id, (b.usage->>'input')::bigint, (b.usage->>'output')::bigint,
        (b.usage->>'cache_read')::bigint, (b.usage->>'cache_write')::bigint,
        coalesce(b.usage->'extra', '{}'::jsonb)
    FROM batch b JOIN inserted USING (id)
    WHERE b.usage IS NOT NULL AND jsonb_typeof(b.usage) = 'object'
), prompts AS (
    INSERT INTO ai_bridge_prompts (interception_id, prompt)
    SELECT b.id, b.prompt FROM batch b JOIN inserted USING (id) WHERE b.prompt IS NOT NULL
), tools AS (
    INSERT INTO ai_bridge_tool_usages (interception_id, tool, tool_call_id, args)
    SELECT b.id, t->>'tool', t->>'tool_call_id', t->'args'
    FROM batch b JOIN inserted USING (id), jsonb_array_elements(b.tools) AS t
    WHERE jsonb_typeof(b.tools) = 'array'
)
SELECT count(*) FROM inserted
"""


class PostgresSink:
    """Writes batches over one connection of its own, reopened after any failure."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: psycopg.Connection | None = None

    def write(self, records: Sequence[Interception]) -> None:
        import psycopg

        payload = _encoder.encode([r.document() for r in records]).decode()
        try:
            conn = self._connection()
            conn.execute(INSERT_BATCH, (payload,))
        except StoreError as exc:
            self.close()
            raise SinkError(str(exc)) from None
        except (psycopg.Error, OSError) as exc:
            self.close()
            raise SinkError(f"database write failed: {describe(exc, self.dsn)}") from None

    def _connection(self) -> psycopg.Connection:
        import psycopg

        if self._conn is None or self._conn.closed:
            conn = connect(self.dsn, autocommit=True, application_name=RECORDER_APPLICATION_NAME)
            try:
                conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            except psycopg.Error:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        import psycopg

        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except (psycopg.Error, OSError):
                pass

    def describe(self) -> str:
        return "database"


class FileSink:
    """Appends one JSON object per line; the file is opened per batch, so it may be
    rotated (moved away) at any time."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def write(self, records: Sequence[Interception]) -> None:
        data = b"".join(_encoder.encode(r.document()) + b"\n" for r in records)
        try:
            with open(self.path, "ab") as f:
                f.write(data)
        except OSError as exc:
            raise SinkError(
                f"cannot write {self.path}: {exc.strerror or type(exc).__name__}"
            ) from None

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"file {self.path}"
