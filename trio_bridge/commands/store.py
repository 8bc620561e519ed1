"""The ``db``, ``providers``, ``keys`` and ``clients`` commands (contract section 2).

:func:`add_commands` plugs them into the main ``trio-bridge`` parser; every leaf command
sets ``func(args) -> exit code``. ``python -m trio_bridge.commands.store`` runs them alone.
Exit codes: 0 done, 1 refused or failed (message on stderr), 2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any

from ..masking import strip_userinfo
from ..store import crud
from ..store.connect import connect
from ..store.errors import StoreError, database_errors
from ..store.migrations import LATEST_VERSION, migrate

ENV_URL = "TRIO_BRIDGE_DATABASE_URL"
ENV_URL_FILE = "TRIO_BRIDGE_DATABASE_URL_FILE"

Command = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A usage problem found after parsing (exit 1)."""


def database_url(args: argparse.Namespace) -> str:
    """The database URL: flag, then file flag, then environment variables; file content stripped."""
    candidates = [
        (getattr(args, "database_url", None), None),
        (None, getattr(args, "database_url_file", None)),
        (os.environ.get(ENV_URL) or None, None),
        (None, os.environ.get(ENV_URL_FILE) or None),
    ]
    for url, path in candidates:
        if url:
            return url.strip()
        if path:
            try:
                url = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise CliError(f"cannot read database URL file {path}: {exc.strerror}") from None
            if not url:
                raise CliError(f"database URL file {path} is empty")
            return url
    raise CliError(
        f"no database URL: pass --database-url or --database-url-file (or set {ENV_URL} "
        f"or {ENV_URL_FILE})"
    )


def _command(fn: Callable[[argparse.Namespace, Any], int]) -> Command:
    """Wrap a command body: connect, run it, turn errors into a message and exit code 1."""

    @wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            dsn = database_url(args)
            with connect(dsn, autocommit=True) as conn, database_errors(dsn):
                return fn(args, conn)
        except (StoreError, CliError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def _print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [list(header)] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _pairs(items: Sequence[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{what}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def _settings_json(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--settings-json: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise CliError("--settings-json: expected a JSON object")
    return value


# -- db ----------------------------------------------------------------------------------


def cmd_db_migrate(args: argparse.Namespace) -> int:
    try:
        applied = migrate(database_url(args))
    except (StoreError, CliError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if applied:
        print(f"applied migrations: {', '.join(map(str, applied))}")
    else:
        print(f"schema up to date (version {LATEST_VERSION})")
    return 0


# -- providers ---------------------------------------------------------------------------


def _provider_settings(args: argparse.Namespace, current: dict[str, Any]) -> dict[str, Any]:
    """Settings after applying the flags to ``current``."""
    settings = _settings_json(args.settings_json)
    if getattr(args, "settings_file", None):
        if settings is not None:
            raise CliError("give --settings-json or --settings-file, not both")
        settings = _settings_file(args.settings_file)
    settings = dict(current) if settings is None else settings
    headers = dict(settings.get("headers") or {})
    if getattr(args, "clear_headers", False):
        headers = {}
    for name in getattr(args, "remove_header", None) or ():
        headers.pop(name, None)
    headers.update(_pairs(args.header, "--header"))
    if headers:
        settings["headers"] = headers
    else:
        settings.pop("headers", None)
    if getattr(args, "no_bedrock", False):
        settings.pop("bedrock", None)
    bedrock = {
        k: v
        for k, v in (
            ("region", args.bedrock_region),
            ("model", args.bedrock_model),
            ("small_fast_model", args.bedrock_small_fast_model),
        )
        if v is not None
    }
    for flag, field in (
        ("bedrock_access_key", "access_key"),
        ("bedrock_access_key_secret", "access_key_secret"),
        ("bedrock_session_token", "session_token"),
    ):
        ref = getattr(args, flag, None)
        if ref is not None:
            bedrock[field] = _key_ref(ref, "--" + flag.replace("_", "-"))
    if bedrock:
        settings["bedrock"] = {**(settings.get("bedrock") or {}), **bedrock}
    return settings


def _settings_file(path: str) -> dict[str, Any]:
    """Settings from a JSON or YAML file (``{"headers": ..., "bedrock": ...}``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not readable as UTF-8 text"
        raise CliError(f"cannot read settings file {path}: {reason}") from None
    try:
        import yaml

        value = yaml.safe_load(text)
    except Exception:
        raise CliError(f"--settings-file {path}: not valid JSON or YAML") from None
    if not isinstance(value, dict):
        raise CliError(f"--settings-file {path}: expected an object")
    return value


def _key_ref(text: str, flag: str) -> dict[str, str]:
    """``env:NAME`` or ``file:PATH`` (a secret itself never goes on the command line)."""
    kind, sep, where = text.partition(":")
    if not sep or kind not in ("env", "file") or not where:
        raise CliError(f"{flag}: expected env:NAME or file:PATH (relative to --secrets-dir)")
    return {kind: where}


def _show_provider(row: crud.ProviderRow) -> None:
    data = row.to_json()
    print(f"name:       {row.name}")
    print(f"id:         {row.id}")
    print(f"type:       {row.type}")
    print(f"base_url:   {strip_userinfo(row.base_url)}")
    print(f"enabled:    {'yes' if row.enabled else 'no'}")
    print(f"keys:       {row.key_count}")
    for field in ("headers", "bedrock"):
        if field in data["settings"]:
            print(f"{field + ':':<11} {json.dumps(data['settings'][field], sort_keys=True)}")
    print(f"created_at: {data['created_at']}")
    print(f"updated_at: {data['updated_at']}")


@_command
def cmd_providers_list(args: argparse.Namespace, conn: Any) -> int:
    rows = crud.list_providers(conn)
    if args.json:
        _print_json([r.to_json() for r in rows])
    else:
        _print_table(
            ["NAME", "TYPE", "ENABLED", "KEYS", "BASE_URL"],
            [
                (
                    r.name,
                    r.type,
                    "yes" if r.enabled else "no",
                    r.key_count,
                    strip_userinfo(r.base_url),
                )
                for r in rows
            ],
        )
    return 0


@_command
def cmd_providers_show(args: argparse.Namespace, conn: Any) -> int:
    row = crud.get_provider(conn, args.name)
    if args.json:
        data = row.to_json()
        data["key_list"] = [k.to_json() for k in crud.list_keys(conn, args.name)]
        _print_json(data)
    else:
        _show_provider(row)
    return 0


@_command
def cmd_providers_create(args: argparse.Namespace, conn: Any) -> int:
    row = crud.create_provider(
        conn,
        name=args.name,
        type=args.type,
        base_url=args.base_url,
        enabled=not args.disabled,
        settings=_provider_settings(args, {}),
    )
    print(f'created provider "{row.name}" ({row.type}, {"enabled" if row.enabled else "disabled"})')
    return 0


@_command
def cmd_providers_update(args: argparse.Namespace, conn: Any) -> int:
    enabled = True if args.enable else False if args.disable else None
    row = crud.update_provider(
        conn,
        args.name,
        rename=args.rename,
        type=args.type,
        base_url=args.base_url,
        enabled=enabled,
        settings=lambda current: _provider_settings(args, current),
    )
    print(f'updated provider "{row.name}"')
    return 0


@_command
def cmd_providers_delete(args: argparse.Namespace, conn: Any) -> int:
    crud.delete_provider(conn, args.name)
    print(f'deleted provider "{args.name}" and its keys')
    return 0


def _set_enabled(enabled: bool) -> Command:
    @_command
    def run(args: argparse.Namespace, conn: Any) -> int:
        row = crud.set_provider_enabled(conn, args.name, enabled)
        print(f'provider "{row.name}" {"enabled" if enabled else "disabled"}')
        return 0

    return run


cmd_providers_enable = _set_enabled(True)
cmd_providers_disable = _set_enabled(False)


# -- keys --------------------------------------------------------------------------------


def _read_key(args: argparse.Namespace) -> str:
    if args.value_file and args.value_file != "-":
        try:
            return Path(args.value_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not readable as UTF-8 text"
            raise CliError(f"cannot read {args.value_file}: {reason}") from None
    if sys.stdin is None:
        raise CliError("no key given: pipe it on stdin or pass --value-file")
    if sys.stdin.isatty():
        return getpass.getpass(f'API key for "{args.provider}" (not echoed): ').strip()
    return sys.stdin.read().strip()


@_command
def cmd_keys_list(args: argparse.Namespace, conn: Any) -> int:
    rows = crud.list_keys(conn, args.provider)
    if args.json:
        _print_json([r.to_json() for r in rows])
    else:
        _print_table(
            ["INDEX", "ID", "HINT", "CREATED_AT"],
            [(r.index, r.id, r.hint, r.created_at.isoformat(timespec="seconds")) for r in rows],
        )
    return 0


@_command
def cmd_keys_add(args: argparse.Namespace, conn: Any) -> int:
    value = _read_key(args)
    row = crud.add_key(conn, args.provider, value)
    print(f'added key {row.id} to "{args.provider}" (index {row.index}, hint {row.hint})')
    return 0


@_command
def cmd_keys_remove(args: argparse.Namespace, conn: Any) -> int:
    row = crud.remove_key(conn, args.provider, args.key)
    print(f'removed key {row.id} (hint {row.hint}) from "{args.provider}"')
    return 0


# -- clients -----------------------------------------------------------------------------


@_command
def cmd_clients_list(args: argparse.Namespace, conn: Any) -> int:
    rows = crud.list_clients(conn, include_revoked=not args.active)
    if args.json:
        _print_json([r.to_json() for r in rows])
    else:
        _print_table(
            ["ID", "CREATED_AT", "REVOKED_AT", "METADATA"],
            [
                (
                    r.id,
                    r.created_at.isoformat(timespec="seconds") if r.created_at else "",
                    r.revoked_at.isoformat(timespec="seconds") if r.revoked_at else "-",
                    json.dumps(r.metadata, sort_keys=True) if r.metadata else "",
                )
                for r in rows
            ],
        )
    return 0


@_command
def cmd_clients_create(args: argparse.Namespace, conn: Any) -> int:
    row, token = crud.create_client(conn, args.id, _pairs(args.metadata, "--metadata"))
    if args.json:
        _print_json({**row.to_json(), "token": token})
    else:
        print(f'created client "{row.id}"; its token (shown only once, store it now):')
        print(token)
    return 0


@_command
def cmd_clients_revoke(args: argparse.Namespace, conn: Any) -> int:
    row, revoked = crud.revoke_client(conn, args.id)
    if revoked:
        print(f'revoked client "{row.id}"')
    else:
        print(f'client "{row.id}" was already revoked')
    return 0


@_command
def cmd_clients_rotate(args: argparse.Namespace, conn: Any) -> int:
    row, token = crud.rotate_client(conn, args.id)
    if args.json:
        _print_json({**row.to_json(), "token": token})
    else:
        print(f'rotated the token of client "{row.id}"; the old one no longer works.')
        print("Its new token (shown only once, store it now):")
        print(token)
    return 0


@_command
def cmd_clients_delete(args: argparse.Namespace, conn: Any) -> int:
    row = crud.delete_client(conn, args.id)
    print(f'deleted client "{row.id}"')
    return 0


# -- parser ------------------------------------------------------------------------------


def database_options() -> argparse.ArgumentParser:
    """A parent parser with ``--database-url`` / ``--database-url-file``."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_mutually_exclusive_group()
    group.add_argument(
        "--database-url",
        metavar="URL",
        help=f"Postgres URL (env {ENV_URL}); prefer the file form: argv is visible in ps",
    )
    group.add_argument(
        "--database-url-file",
        metavar="PATH",
        help=f"file holding the Postgres URL (env {ENV_URL_FILE})",
    )
    return parent


def _provider_options(parser: argparse.ArgumentParser, *, create: bool) -> None:
    parser.add_argument("name", metavar="NAME", help="provider name, the URL prefix")
    parser.add_argument(
        "--type",
        choices=["openai", "anthropic", "copilot"],
        required=create,
        default=None,
        help="API family",
    )
    parser.add_argument(
        "--base-url", metavar="URL", required=create, default=None, help="upstream base URL"
    )
    parser.add_argument(
        "--header",
        action="append",
        metavar="NAME=VALUE",
        help="extra upstream header (repeatable)",
    )
    parser.add_argument(
        "--settings-json",
        metavar="JSON",
        help='all settings at once, e.g. {"headers": {...}, "bedrock": {...}}',
    )
    parser.add_argument(
        "--settings-file",
        metavar="PATH",
        help="all settings from a JSON or YAML file (instead of --settings-json)",
    )
    parser.add_argument("--bedrock-region", metavar="REGION", help="Bedrock: AWS region")
    parser.add_argument("--bedrock-model", metavar="MODEL", help="Bedrock: model id or ARN")
    parser.add_argument(
        "--bedrock-small-fast-model", metavar="MODEL", help="Bedrock: model for haiku requests"
    )
    for flag in ("access-key", "access-key-secret", "session-token"):
        parser.add_argument(
            f"--bedrock-{flag}",
            metavar="REF",
            help="Bedrock credentials: env:NAME or file:PATH (else the AWS default chain)",
        )


def add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    """Add ``db``, ``providers``, ``keys`` and ``clients`` to the ``trio-bridge`` parser."""
    parents = [common, database_options()]

    def group(name: str, help: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        parser = subparsers.add_parser(name, help=help, description=help)
        return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")

    def leaf(
        sub: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        func: Command,
        help: str,
    ) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, parents=parents, help=help, description=help)
        parser.set_defaults(func=func)
        return parser

    def json_flag(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="machine-readable output")

    db = group("db", "database schema")
    leaf(db, "migrate", cmd_db_migrate, "create or upgrade the schema (idempotent)")

    providers = group("providers", "providers stored in the database")
    json_flag(leaf(providers, "list", cmd_providers_list, "list providers"))
    p = leaf(providers, "show", cmd_providers_show, "show one provider")
    p.add_argument("name", metavar="NAME")
    json_flag(p)
    p = leaf(providers, "create", cmd_providers_create, "create a provider")
    _provider_options(p, create=True)
    p.add_argument("--disabled", action="store_true", help="create it disabled")
    p = leaf(providers, "update", cmd_providers_update, "change a provider")
    _provider_options(p, create=False)
    p.add_argument("--rename", metavar="NEW_NAME", help="new provider name")
    p.add_argument(
        "--remove-header", action="append", metavar="NAME", help="drop a header (repeatable)"
    )
    p.add_argument("--clear-headers", action="store_true", help="drop every extra header")
    p.add_argument("--no-bedrock", action="store_true", help="remove the bedrock settings")
    toggle = p.add_mutually_exclusive_group()
    toggle.add_argument("--enable", action="store_true", help="enable it")
    toggle.add_argument("--disable", action="store_true", help="disable it")
    for name, func, help in (
        ("delete", cmd_providers_delete, "delete a provider and its keys"),
        ("enable", cmd_providers_enable, "enable a provider"),
        ("disable", cmd_providers_disable, "disable a provider"),
    ):
        leaf(providers, name, func, help).add_argument("name", metavar="NAME")

    keys = group("keys", "upstream keys of database providers")
    p = leaf(keys, "list", cmd_keys_list, "list a provider's keys (masked)")
    p.add_argument("provider", metavar="PROVIDER")
    json_flag(p)
    p = leaf(keys, "add", cmd_keys_add, "add a key, read from stdin or --value-file")
    p.add_argument("provider", metavar="PROVIDER")
    p.add_argument("--value-file", metavar="PATH", help="read the key from this file ('-': stdin)")
    p = leaf(keys, "remove", cmd_keys_remove, "remove a key by id or index")
    p.add_argument("provider", metavar="PROVIDER")
    p.add_argument("key", metavar="KEY", help="key id or index, as `keys list` shows")

    clients = group("clients", "client tokens")
    p = leaf(clients, "list", cmd_clients_list, "list clients")
    p.add_argument("--active", action="store_true", help="only clients not revoked")
    json_flag(p)
    p = leaf(clients, "create", cmd_clients_create, "create a client; prints its token once")
    p.add_argument("id", metavar="ID", help="client (actor) id")
    p.add_argument("--metadata", action="append", metavar="KEY=VALUE", help="repeatable")
    json_flag(p)
    p = leaf(clients, "revoke", cmd_clients_revoke, "revoke a client's token")
    p.add_argument("id", metavar="ID")
    p = leaf(clients, "rotate", cmd_clients_rotate, "give a client a new token; prints it once")
    p.add_argument("id", metavar="ID")
    json_flag(p)
    p = leaf(clients, "delete", cmd_clients_delete, "delete a client (its id can be reused)")
    p.add_argument("id", metavar="ID")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command standalone (the ``trio-bridge`` CLI adds the same commands)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="trio-bridge")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(subparsers, argparse.ArgumentParser(add_help=False))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The commands-room entry point: ``db``, ``providers``, ``keys`` and ``clients``."""
    add_commands(subparsers, argparse.ArgumentParser(add_help=False))
