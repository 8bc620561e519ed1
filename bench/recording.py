"""Recording's cost: a second bridge, ``bridge-rec``, with ``bridge.recording`` on and a
scratch Postgres database ``tb_bench_rec`` (schema from ``trio-bridge db migrate``, dropped
after). After the run: the recorder's counters from ``/metrics`` and the rows written, to
show the records were really written while the load was measured."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

from .dbreload import ADMIN_DSN, unavailable_reason

REC_DB = "tb_bench_rec"
REC_DSN = f"postgresql://postgres@127.0.0.1:5432/{REC_DB}"
TABLES = (
    "ai_bridge_interceptions",
    "ai_bridge_token_usages",
    "ai_bridge_prompts",
    "ai_bridge_tool_usages",
)
_COUNTERS = {
    "trio_bridge_recorder_records_total": "records",
    "trio_bridge_recorder_written_total": "written",
    "trio_bridge_recorder_dropped_total": "dropped",
    "trio_bridge_recorder_write_errors_total": "write_errors",
    "trio_bridge_recorder_queue_depth": "queue_depth",
}


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def drop() -> None:
    _admin(f"DROP DATABASE IF EXISTS {REC_DB} WITH (FORCE)")


def prepare() -> tuple[str | None, str | None]:
    """(DSN of a fresh, migrated ``tb_bench_rec``, None) or (None, why not)."""
    reason = unavailable_reason()
    if reason is not None:
        return None, reason
    drop()
    _admin(f"CREATE DATABASE {REC_DB}")
    done = subprocess.run(
        [sys.executable, "-m", "trio_bridge", "db", "migrate", "--database-url", REC_DSN],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        drop()
        return None, f"db migrate failed: {done.stderr[-300:]}"
    return REC_DSN, None


def rows(dsn: str = REC_DSN) -> dict[str, int]:
    """Rows in each recording table."""
    import psycopg

    with psycopg.connect(dsn, connect_timeout=5) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def recorder_metrics(admin_port: int) -> dict[str, float]:
    """The recorder's counters from the admin listener's ``/metrics``."""
    url = f"http://127.0.0.1:{admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback only
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in _COUNTERS:
            out[_COUNTERS[name]] = float(value)
    return out
