"""Reading providers, keys and clients: one consistent, read-only view of the database."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from psycopg import IsolationLevel

from ..config.model import ClientSpec, ProviderSpec
from .connect import connect
from .errors import database_errors
from .rows import InvalidRow, client_from_row, provider_from_row

log = logging.getLogger("trio_bridge.store.load")

PROVIDERS_SQL = """
    SELECT id, name, type, base_url, settings, enabled FROM ai_providers ORDER BY name
"""
KEYS_SQL = "SELECT provider_id, api_key FROM ai_provider_keys ORDER BY created_at, id"
CLIENTS_SQL = """
    SELECT id, token_sha256, metadata FROM ai_bridge_clients
    WHERE revoked_at IS NULL ORDER BY created_at, id
"""


@dataclass(frozen=True)
class StoredConfig:
    """What the database holds: valid providers, rejected ones (name, value-free reason),
    and the clients that can authenticate."""

    providers: tuple[ProviderSpec, ...] = ()
    invalid_providers: tuple[tuple[str, str], ...] = ()
    clients: tuple[ClientSpec, ...] = ()


def load_contents(
    dsn: str, *, statement_timeout: float = 5.0, connect_timeout: float = 5.0
) -> StoredConfig:
    """Providers (by name), their keys (by created_at, id) and the non-revoked clients.

    All three are read in one ``READ ONLY``, ``REPEATABLE READ`` transaction under a local
    ``statement_timeout``, so they are mutually consistent. A provider row the schema
    rejects is reported in ``invalid_providers`` (name, value-free reason), never dropped;
    a client row the schema rejects is skipped with a warning (it cannot authenticate).
    Raises StoreError with a password-free message.
    """
    with connect(dsn, autocommit=True, connect_timeout=connect_timeout) as conn:
        with database_errors(dsn, "loading providers"):
            conn.read_only = True
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            with conn.transaction():
                conn.execute(
                    "SELECT set_config('statement_timeout', %s, true)",
                    (f"{max(1, round(statement_timeout * 1000))}ms",),
                )
                provider_rows = conn.execute(PROVIDERS_SQL).fetchall()
                key_rows = conn.execute(KEYS_SQL).fetchall()
                client_rows = conn.execute(CLIENTS_SQL).fetchall()

    keys: dict[object, list[str]] = defaultdict(list)
    for provider_id, api_key in key_rows:
        keys[provider_id].append(api_key)

    providers: list[ProviderSpec] = []
    invalid: list[tuple[str, str]] = []
    for provider_id, name, type_, base_url, settings, enabled in provider_rows:
        try:
            providers.append(
                provider_from_row(
                    name=name,
                    type=type_,
                    base_url=base_url,
                    enabled=enabled,
                    settings=settings,
                    keys=keys.get(provider_id, ()),
                )
            )
        except InvalidRow as exc:
            invalid.append((name, str(exc)))

    clients: list[ClientSpec] = []
    for client_id, token_sha256, metadata in client_rows:
        try:
            clients.append(
                client_from_row(id=client_id, token_sha256=token_sha256, metadata=metadata)
            )
        except InvalidRow as exc:
            log.warning("database client %r skipped: %s", client_id, exc)

    return StoredConfig(
        providers=tuple(providers), invalid_providers=tuple(invalid), clients=tuple(clients)
    )
