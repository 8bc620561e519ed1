"""Opening sync psycopg connections with the bridge's network settings."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

from .errors import StoreError, describe

APPLICATION_NAME = "trio-bridge"
LISTENER_APPLICATION_NAME = "trio-bridge-listener"

# Applied unless the DSN sets them itself.
_DEFAULTS: dict[str, str] = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}


def connect(
    dsn: str,
    *,
    autocommit: bool = False,
    connect_timeout: float = 5.0,
    application_name: str = APPLICATION_NAME,
) -> psycopg.Connection:
    """A new connection; raises StoreError (password-free message) when it cannot be opened.

    TCP keepalives are on (a dead peer is noticed in about a minute), ``connect_timeout``
    bounds the whole attempt (libpq rounds it up to whole seconds, at least 2), and the
    backend shows ``application_name`` in ``pg_stat_activity``.
    """
    import psycopg  # here, not at import time: serve without a database never loads it

    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        for key, value in _DEFAULTS.items():
            params.setdefault(key, value)
        params.setdefault("connect_timeout", str(max(2, math.ceil(connect_timeout))))
        params["application_name"] = application_name
        return psycopg.Connection.connect(
            psycopg.conninfo.make_conninfo("", **params), autocommit=autocommit
        )
    except (psycopg.Error, OSError, ValueError) as exc:
        raise StoreError(f"cannot connect to the database: {describe(exc, dsn)}") from None
