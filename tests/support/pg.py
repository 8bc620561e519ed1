"""Postgres isolation for tests: a fresh database per test, dropped afterwards.

Use as a pytest plugin (``pytest_plugins = ["tests.support.pg"]`` in tests/conftest.py) to get the
fixtures ``pg_dsn`` (an empty database) and ``pg_migrated_dsn`` (schema installed). The
server comes from ``TRIO_BRIDGE_TEST_DATABASE_URL`` (default: local trust-auth postgres);
when it is unreachable the tests are skipped, unless that variable is set explicitly, in
which case they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

DEFAULT_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/test"
ENV_TEST_DSN = "TRIO_BRIDGE_TEST_DATABASE_URL"


def admin_dsn() -> str:
    """The DSN of the server's maintenance database used to create/drop test databases."""
    return os.environ.get(ENV_TEST_DSN) or DEFAULT_TEST_DSN


def dsn_for(database: str, base: str | None = None) -> str:
    """``base`` (URL or key=value form) pointing at ``database`` instead."""
    base = base or admin_dsn()
    if "://" in base:
        parts = urlsplit(base)
        return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))
    return psycopg.conninfo.make_conninfo(base, dbname=database)


def _admin() -> psycopg.Connection:
    return psycopg.connect(admin_dsn(), autocommit=True, connect_timeout=5)


def create_database(prefix: str = "tb_test_") -> str:
    """Create an empty database with a random name; returns its name."""
    name = f"{prefix}{uuid.uuid4().hex[:16]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    """Drop a test database, disconnecting whoever still uses it."""
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _require_server() -> None:
    try:
        with _admin():
            pass
    except psycopg.OperationalError as exc:
        if os.environ.get(ENV_TEST_DSN):
            raise
        pytest.skip(f"no Postgres for tests ({ENV_TEST_DSN} unset, default unreachable): {exc}")


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """DSN of a fresh, empty database, dropped after the test."""
    _require_server()
    name = create_database()
    try:
        yield dsn_for(name)
    finally:
        drop_database(name)


@pytest.fixture
def pg_migrated_dsn(pg_dsn: str) -> str:
    """DSN of a fresh database with the trio-bridge schema installed."""
    from trio_bridge.store.migrations import migrate

    migrate(pg_dsn)
    return pg_dsn


@pytest.fixture
def pg_conn(pg_migrated_dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the migrated test database, closed after the test."""
    with psycopg.connect(pg_migrated_dsn, autocommit=True) as conn:
        yield conn
