"""Reload latency from a database change: a scratch database ``tb_bench`` on the local
Postgres, the schema from ``trio-bridge db migrate``, a second bridge with
``--database-url``, then rows inserted by plain SQL (as any tool would; the contract's
triggers notify) until the new provider's route answers. The database is dropped after."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

from .bridge import MOCK_KEYS, BridgeSetup, start_bridge
from .reload import _trials

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
BENCH_DB = "tb_bench"
BENCH_DSN = f"postgresql://postgres@127.0.0.1:5432/{BENCH_DB}"


def unavailable_reason() -> str | None:
    """Why the scenario cannot run here, or None."""
    for args in (["db", "migrate", "--help"], ["providers", "create", "--help"]):
        done = subprocess.run(
            [sys.executable, "-m", "trio_bridge", *args], capture_output=True, text=True
        )
        if done.returncode != 0:
            return f"`trio-bridge {' '.join(args[:2])}` is not available"
    try:
        import psycopg

        psycopg.connect(ADMIN_DSN, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means: not measurable here
        return f"no local Postgres at 127.0.0.1:5432 ({type(exc).__name__})"
    return None


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def _drop() -> None:
    _admin(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


def db_reload(
    setup: BridgeSetup, logs: Path, upstream_port: int, trials: int, debounce_s: float
) -> dict:
    import psycopg

    reason = unavailable_reason()
    if reason is not None:
        return {"available": False, "reason": reason}
    _drop()
    _admin(f"CREATE DATABASE {BENCH_DB}")
    try:
        subprocess.run(
            [sys.executable, "-m", "trio_bridge", "db", "migrate", "--database-url", BENCH_DSN],
            check=True,
            capture_output=True,
            text=True,
        )
        target, _admin_port = start_bridge(setup, logs, name="bridge-db", database_url=BENCH_DSN)
        try:
            target.startup_s = target.proc.wait_ready(target.port, "/readyz", timeout=30)
            conn = psycopg.connect(BENCH_DSN)

            def change(i: int) -> tuple[str, float]:
                name = f"dbprobe-{i}"
                pid = uuid.uuid4()
                with conn.cursor() as cur:
                    cur.execute(
                        "INSERT INTO ai_providers (id, name, type, base_url) "
                        "VALUES (%s, %s, 'openai', %s)",
                        (pid, name, f"http://127.0.0.1:{upstream_port}/v1"),
                    )
                    cur.execute(
                        "INSERT INTO ai_provider_keys (id, provider_id, api_key) "
                        "VALUES (%s, %s, %s)",
                        (uuid.uuid4(), pid, MOCK_KEYS[0]),
                    )
                conn.commit()
                return f"/{name}/v1/models", time.perf_counter()

            try:
                out = _trials(target, trials, change)
            finally:
                conn.close()
        finally:
            target.proc.stop()
    except subprocess.CalledProcessError as exc:
        return {"available": False, "reason": f"db migrate failed: {exc.stderr[-300:]}"}
    finally:
        _drop()
    out.update(
        available=True,
        debounce_ms=debounce_s * 1000,
        startup_with_database_s=round(target.startup_s or 0, 3),
    )
    if out["median_ms"] is not None:
        out["median_minus_debounce_ms"] = round(out["median_ms"] - debounce_s * 1000, 1)
        out["max_minus_debounce_ms"] = round(out["max_ms"] - debounce_s * 1000, 1)
    return out
