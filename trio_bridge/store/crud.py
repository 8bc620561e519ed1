"""Provider, key and client CRUD over a sync connection.

Every function runs in its own transaction (the triggers notify running bridges on
commit) and validates through the config schema, so errors read like the YAML ones.
Key values and client tokens are never returned except the token, once, by
:func:`create_client`. Errors are :class:`CrudError` with a clear, secret-free message.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # psycopg loads only when a command talks to the database
    import psycopg

from ..config.model import MAX_KEYS
from ..masking import mask_secret, strip_userinfo
from .errors import StoreError
from .rows import SETTINGS_FIELDS, InvalidRow, client_from_row, provider_dict, validate_provider

TOKEN_PREFIX = "tb-"  # noqa: S105 - a name, not a secret
TOKEN_BYTES = 32

Settings = dict[str, Any]


class CrudError(StoreError):
    """A refused change (unknown name, duplicate, invalid field); safe to print."""


@dataclass(frozen=True)
class ProviderRow:
    id: str
    name: str
    type: str
    base_url: str
    enabled: bool
    settings: Settings
    key_count: int
    created_at: datetime
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view; header values and inline bedrock secrets are masked."""
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "base_url": strip_userinfo(self.base_url),
            "enabled": self.enabled,
            "settings": masked_settings(self.settings),
            "keys": self.key_count,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class KeyRow:
    id: str
    index: int
    hint: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "index": self.index,
            "hint": self.hint,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class ClientRow:
    id: str
    token_sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)
    revoked_at: datetime | None = None
    created_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "token_sha256": self.token_sha256,
            "metadata": self.metadata,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


def masked_settings(settings: Settings) -> Settings:
    """``settings`` with header values and inline (``value``) bedrock credentials masked."""
    out: Settings = dict(settings)
    headers = settings.get("headers")
    if isinstance(headers, dict):
        out["headers"] = {
            k: mask_secret(v) if isinstance(v, str) else "****" for k, v in headers.items()
        }
    bedrock = settings.get("bedrock")
    if isinstance(bedrock, dict):
        masked = dict(bedrock)
        for name, ref in bedrock.items():
            if isinstance(ref, dict) and "value" in ref:
                value = ref["value"]
                masked[name] = {
                    **ref,
                    "value": mask_secret(value) if isinstance(value, str) else "****",
                }
        out["bedrock"] = masked
    return out


def token_sha256(token: str) -> str:
    """The lower-case hex sha256 of a client token, as stored and as configured in YAML."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh client token: ``tb-`` + 32 random bytes, URL-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


# -- providers ---------------------------------------------------------------------------

_PROVIDER_COLUMNS = """
    p.id, p.name, p.type, p.base_url, p.enabled, p.settings,
    (SELECT count(*) FROM ai_provider_keys k WHERE k.provider_id = p.id),
    p.created_at, p.updated_at
"""


def _provider_row(row: tuple[Any, ...]) -> ProviderRow:
    id_, name, type_, base_url, enabled, settings, key_count, created_at, updated_at = row
    return ProviderRow(
        id=str(id_),
        name=name,
        type=type_,
        base_url=base_url,
        enabled=enabled,
        settings=settings if isinstance(settings, dict) else {},
        key_count=int(key_count),
        created_at=created_at,
        updated_at=updated_at,
    )


def _unknown_provider(name: str) -> CrudError:
    return CrudError(f'unknown provider "{name}"')


def _validate(
    *,
    name: str,
    type: str,
    base_url: str,
    enabled: bool,
    settings: Any,
    keys: list[str],
) -> None:
    try:
        validate_provider(
            provider_dict(
                name=name,
                type=type,
                base_url=base_url,
                enabled=enabled,
                settings=settings,
                keys=keys,
            )
        )
    except InvalidRow as exc:
        raise CrudError(f'invalid provider "{name}": {exc}') from None


def list_providers(conn: psycopg.Connection) -> list[ProviderRow]:
    """Every provider, by name."""
    with conn.transaction():
        rows = conn.execute(f"SELECT {_PROVIDER_COLUMNS} FROM ai_providers p ORDER BY p.name")
        return [_provider_row(r) for r in rows.fetchall()]


def get_provider(conn: psycopg.Connection, name: str) -> ProviderRow:
    """The provider called ``name``; CrudError if there is none."""
    with conn.transaction():
        row = conn.execute(
            f"SELECT {_PROVIDER_COLUMNS} FROM ai_providers p WHERE p.name = %s",
            (name,),
        ).fetchone()
    if row is None:
        raise _unknown_provider(name)
    return _provider_row(row)


def create_provider(
    conn: psycopg.Connection,
    *,
    name: str,
    type: str,
    base_url: str,
    enabled: bool = True,
    settings: Settings | None = None,
) -> ProviderRow:
    """Insert a provider (no keys yet); CrudError if invalid or the name is taken."""
    settings = settings or {}
    _validate(name=name, type=type, base_url=base_url, enabled=enabled, settings=settings, keys=[])
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO ai_providers (name, type, base_url, enabled, settings)"
                " VALUES (%s, %s, %s, %s, %s)",
                (name, type, base_url, enabled, _jsonb(settings)),
            )
    except _unique_violation():
        raise CrudError(f'provider "{name}" already exists') from None
    return get_provider(conn, name)


def update_provider(
    conn: psycopg.Connection,
    name: str,
    *,
    rename: str | None = None,
    type: str | None = None,
    base_url: str | None = None,
    enabled: bool | None = None,
    settings: Settings | Callable[[Settings], Settings] | None = None,
) -> ProviderRow:
    """Change the given fields (``settings`` may be a function of the current settings).

    The whole row, keys included, is re-validated: e.g. turning a provider with keys into
    a ``copilot`` one is refused.
    """
    new_name = rename or name
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT id, type, base_url, enabled, settings FROM ai_providers"
                " WHERE name = %s FOR UPDATE",
                (name,),
            ).fetchone()
            if row is None:
                raise _unknown_provider(name)
            id_, cur_type, cur_base_url, cur_enabled, cur_settings = row
            if callable(settings):
                new_settings = settings(dict(cur_settings))
            elif settings is not None:
                new_settings = settings
            else:
                new_settings = cur_settings
            keys = _key_values(conn, id_)
            new_type: str = type or cur_type
            new_base_url: str = base_url or cur_base_url
            new_enabled: bool = cur_enabled if enabled is None else enabled
            _validate(
                name=new_name,
                type=new_type,
                base_url=new_base_url,
                enabled=new_enabled,
                settings=new_settings,
                keys=keys,
            )
            conn.execute(
                "UPDATE ai_providers SET name = %s, type = %s, base_url = %s, enabled = %s,"
                " settings = %s WHERE id = %s",
                (new_name, new_type, new_base_url, new_enabled, _jsonb(new_settings), id_),
            )
    except _unique_violation():
        raise CrudError(f'provider "{new_name}" already exists') from None
    return get_provider(conn, new_name)


def set_provider_enabled(conn: psycopg.Connection, name: str, enabled: bool) -> ProviderRow:
    """Enable or disable a provider."""
    return update_provider(conn, name, enabled=enabled)


def delete_provider(conn: psycopg.Connection, name: str) -> None:
    """Delete a provider and its keys."""
    with conn.transaction():
        cur = conn.execute("DELETE FROM ai_providers WHERE name = %s", (name,))
        if cur.rowcount == 0:
            raise _unknown_provider(name)


# -- keys --------------------------------------------------------------------------------

_KEY_TEXT = re.compile(r"^[\x21-\x7e]+$")


def _key_values(conn: psycopg.Connection, provider_id: Any) -> list[str]:
    rows = conn.execute(
        "SELECT api_key FROM ai_provider_keys WHERE provider_id = %s ORDER BY created_at, id",
        (provider_id,),
    )
    return [r[0] for r in rows.fetchall()]


def _lock_provider(conn: psycopg.Connection, name: str) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT id, type, base_url, enabled, settings FROM ai_providers WHERE name = %s FOR UPDATE",
        (name,),
    ).fetchone()
    if row is None:
        raise _unknown_provider(name)
    return tuple(row)


def _key_rows(conn: psycopg.Connection, provider_id: Any) -> list[KeyRow]:
    rows = conn.execute(
        "SELECT id, api_key, created_at FROM ai_provider_keys WHERE provider_id = %s"
        " ORDER BY created_at, id",
        (provider_id,),
    )
    return [
        KeyRow(id=str(id_), index=i, hint=mask_secret(api_key), created_at=created_at)
        for i, (id_, api_key, created_at) in enumerate(rows.fetchall())
    ]


def list_keys(conn: psycopg.Connection, provider: str) -> list[KeyRow]:
    """The provider's keys in pool order (index 0 is tried first), as masked hints."""
    with conn.transaction():
        row = conn.execute("SELECT id FROM ai_providers WHERE name = %s", (provider,)).fetchone()
        if row is None:
            raise _unknown_provider(provider)
        return _key_rows(conn, row[0])


def add_key(conn: psycopg.Connection, provider: str, value: str) -> KeyRow:
    """Append a key to the provider's pool; returns its masked row.

    Refused for copilot providers, beyond the key limit, and for values that are empty or
    contain whitespace or control characters (they could never be sent in a header).
    """
    value = value.strip()
    if not value:
        raise CrudError("the key is empty")
    if not _KEY_TEXT.match(value):
        raise CrudError("the key contains whitespace or non-printable characters")
    with conn.transaction():
        id_, type_, base_url, enabled, settings = _lock_provider(conn, provider)
        if type_ == "copilot":
            raise CrudError(
                f'provider "{provider}" is a copilot provider: it takes no keys'
                " (clients bring their own)"
            )
        keys = _key_values(conn, id_)
        if len(keys) >= MAX_KEYS:
            raise CrudError(f'provider "{provider}" already has {MAX_KEYS} keys, the maximum')
        if value in keys:
            raise CrudError(f'provider "{provider}" already has this key')
        _validate(
            name=provider,
            type=type_,
            base_url=base_url,
            enabled=enabled,
            settings=settings,
            keys=[*keys, value],
        )
        # clock_timestamp(): several keys added in one transaction keep their order.
        conn.execute(
            "INSERT INTO ai_provider_keys (provider_id, api_key, created_at)"
            " VALUES (%s, %s, clock_timestamp())",
            (id_, value),
        )
        return _key_rows(conn, id_)[-1]


def remove_key(conn: psycopg.Connection, provider: str, key: str) -> KeyRow:
    """Remove one key, named by its id or by its index (as ``keys list`` shows them)."""
    with conn.transaction():
        id_ = _lock_provider(conn, provider)[0]
        rows = _key_rows(conn, id_)
        found: KeyRow | None = None
        if key.isdigit():
            index = int(key)
            found = rows[index] if index < len(rows) else None
        else:
            try:
                wanted = str(uuid.UUID(key))
            except ValueError:
                raise CrudError("expected a key id or index as shown by `keys list`") from None
            found = next((r for r in rows if r.id == wanted), None)
        if found is None:
            raise CrudError(f'provider "{provider}" has no key {key}')
        conn.execute("DELETE FROM ai_provider_keys WHERE id = %s", (found.id,))
        return found


# -- clients -----------------------------------------------------------------------------


def _client_row(row: tuple[Any, ...]) -> ClientRow:
    id_, sha, metadata, revoked_at, created_at = row
    return ClientRow(
        id=id_,
        token_sha256=sha,
        metadata=metadata if isinstance(metadata, dict) else {},
        revoked_at=revoked_at,
        created_at=created_at,
    )


_CLIENT_COLUMNS = "id, token_sha256, metadata, revoked_at, created_at"


def list_clients(conn: psycopg.Connection, *, include_revoked: bool = True) -> list[ClientRow]:
    """Clients by creation time; revoked ones only with ``include_revoked``."""
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    with conn.transaction():
        rows = conn.execute(
            f"SELECT {_CLIENT_COLUMNS} FROM ai_bridge_clients{where} ORDER BY created_at, id"
        )
        return [_client_row(r) for r in rows.fetchall()]


def create_client(
    conn: psycopg.Connection, client_id: str, metadata: dict[str, str] | None = None
) -> tuple[ClientRow, str]:
    """A new client and its token. Only the token's sha256 is stored; show the token once."""
    token = new_token()
    sha = token_sha256(token)
    metadata = metadata or {}
    try:
        client_from_row(id=client_id, token_sha256=sha, metadata=metadata)
    except InvalidRow as exc:
        raise CrudError(f"invalid client: {exc}") from None
    try:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO ai_bridge_clients (id, token_sha256, metadata) VALUES (%s, %s, %s)"
                f" RETURNING {_CLIENT_COLUMNS}",
                (client_id, sha, _jsonb(metadata)),
            ).fetchone()
    except _unique_violation():
        existing = conn.execute(
            "SELECT revoked_at FROM ai_bridge_clients WHERE id = %s", (client_id,)
        ).fetchone()
        if existing is not None and existing[0] is not None:
            raise CrudError(
                f'client "{client_id}" exists, revoked; delete it first '
                f"(trio-bridge clients delete {client_id})"
            ) from None
        raise CrudError(f'client "{client_id}" already exists') from None
    assert row is not None
    return _client_row(row), token


def rotate_client(conn: psycopg.Connection, client_id: str) -> tuple[ClientRow, str]:
    """Give an active client a new token; the old one stops working with this transaction.

    A revoked client is refused (delete and re-create it). Show the token once.
    """
    token = new_token()
    with conn.transaction():
        row = conn.execute(
            "UPDATE ai_bridge_clients SET token_sha256 = %s"
            f" WHERE id = %s AND revoked_at IS NULL RETURNING {_CLIENT_COLUMNS}",
            (token_sha256(token), client_id),
        ).fetchone()
        if row is None:
            revoked = conn.execute(
                "SELECT 1 FROM ai_bridge_clients WHERE id = %s", (client_id,)
            ).fetchone()
            if revoked is None:
                raise CrudError(f'unknown client "{client_id}"')
            raise CrudError(
                f'client "{client_id}" is revoked; delete it and create it again '
                "to give it a new token"
            )
    return _client_row(row), token


def delete_client(conn: psycopg.Connection, client_id: str) -> ClientRow:
    """Delete a client (revoked or not); its id may then be created again.

    Recorded usage keeps its ``client_id``: interceptions are history, not references.
    """
    with conn.transaction():
        row = conn.execute(
            f"DELETE FROM ai_bridge_clients WHERE id = %s RETURNING {_CLIENT_COLUMNS}",
            (client_id,),
        ).fetchone()
    if row is None:
        raise CrudError(f'unknown client "{client_id}"')
    return _client_row(row)


def revoke_client(conn: psycopg.Connection, client_id: str) -> tuple[ClientRow, bool]:
    """Revoke a client's token; returns the row and whether this call revoked it."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE ai_bridge_clients SET revoked_at = now()"
            f" WHERE id = %s AND revoked_at IS NULL RETURNING {_CLIENT_COLUMNS}",
            (client_id,),
        ).fetchone()
        if row is not None:
            return _client_row(row), True
        row = conn.execute(
            f"SELECT {_CLIENT_COLUMNS} FROM ai_bridge_clients WHERE id = %s",
            (client_id,),
        ).fetchone()
    if row is None:
        raise CrudError(f'unknown client "{client_id}"')
    return _client_row(row), False


__all__ = [
    "SETTINGS_FIELDS",
    "ClientRow",
    "CrudError",
    "KeyRow",
    "ProviderRow",
    "add_key",
    "create_client",
    "create_provider",
    "delete_client",
    "delete_provider",
    "get_provider",
    "list_clients",
    "list_keys",
    "list_providers",
    "masked_settings",
    "new_token",
    "remove_key",
    "revoke_client",
    "rotate_client",
    "set_provider_enabled",
    "token_sha256",
    "update_provider",
]


def _jsonb(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value)


def _unique_violation() -> type[Exception]:
    import psycopg

    return psycopg.errors.UniqueViolation
