"""Sums of recorded usage (``trio-bridge usage``): requests and tokens by client, provider,
model and day, read in one read-only transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # psycopg loads only when a command talks to the database
    import psycopg

# Grouping key -> SQL expression over ai_bridge_interceptions i.
GROUPS: dict[str, str] = {
    "client": "i.client_id",
    "provider": "i.provider_name",
    "model": "i.model",
    "day": "to_char(i.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "client_kind": "i.client",
    "route": "i.route",
}
TOKENS = ("input", "output", "cache_read", "cache_write")


def usage_summary(
    conn: psycopg.Connection, *, since_seconds: float, by: Sequence[str]
) -> list[dict[str, Any]]:
    """One object per group: the grouping keys (in ``by`` order), ``requests`` (distinct
    request ids: a failed-over request counts once per group it touched) and the token
    sums. Rows are ordered by the keys."""
    unknown = [key for key in by if key not in GROUPS]
    if unknown:
        raise ValueError(f"unknown grouping key {unknown[0]!r}")
    keys = [f"{GROUPS[key]} AS {key}" for key in by]
    sums = [f"coalesce(sum(u.{t}), 0)::bigint AS {t}" for t in TOKENS]
    select = ", ".join(
        [*keys, "count(DISTINCT coalesce(i.request_id, i.id::text)) AS requests", *sums]
    )
    group = f"GROUP BY {', '.join(str(n + 1) for n in range(len(by)))} " if by else ""
    order = f"ORDER BY {', '.join(str(n + 1) for n in range(len(by)))}" if by else ""
    query = (
        f"SELECT {select} FROM ai_bridge_interceptions i "
        "LEFT JOIN ai_bridge_token_usages u ON u.interception_id = i.id "
        "WHERE i.started_at >= now() - make_interval(secs => %s) "
        f"{group}{order}"
    )
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        cur = conn.execute(query, (since_seconds,))
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
