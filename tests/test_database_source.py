"""Postgres as a provider source under a running bridge: CRUD, SQL, outages, precedence."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import trio

from tests.support import RunningBridge, client, start_bridge, write_yaml
from tests.support.relay import Relay
from trio_bridge.commands.store import main as store_cli
from trio_bridge.testing import FakeUpstream

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
KEY = "sk-database-key-aaaaaaaaaaaaaaaa"


async def cli(dsn: str, *argv: str) -> int:
    return await trio.to_thread.run_sync(store_cli, [*argv[:2], "--database-url", dsn, *argv[2:]])


async def add_key(dsn: str, provider: str, value: str, tmp_path: Path) -> None:
    path = tmp_path / f"{provider}.key"
    path.write_text(value)
    assert await cli(dsn, "keys", "add", provider, "--value-file", str(path)) == 0


async def chat(bridge: RunningBridge, provider: str, headers: dict | None = None):
    async with client() as c:
        return await c.post(
            f"{bridge.url}/{provider}/v1/chat/completions", json=CHAT, headers=headers
        )


async def wait_status(
    bridge: RunningBridge, provider: str, status: int, headers: dict | None = None
):
    """Wait (through snapshot swaps, never sleeping) until ``provider`` answers ``status``."""
    with trio.fail_after(10):
        while True:
            version = bridge.snapshot.version
            response = await chat(bridge, provider, headers)
            if response.status_code == status:
                return response
            await bridge.next_swap(version)


def insert_provider(conn, name: str, base_url: str, key: str | None = KEY) -> None:
    """A provider row (and one key) written with plain SQL, as any tool could."""
    conn.execute(
        "INSERT INTO ai_providers (name, type, base_url) VALUES (%s, 'openai', %s)",
        (name, base_url),
    )
    if key is not None:
        conn.execute(
            "INSERT INTO ai_provider_keys (provider_id, api_key) "
            "SELECT id, %s FROM ai_providers WHERE name = %s",
            (key, name),
        )


@pytest.fixture
def yaml_dir(tmp_path: Path) -> Path:
    config = tmp_path / "config"
    config.mkdir()
    write_yaml(config, "00-bridge.yaml", "bridge: {auth: none, reload: {debounce: 20ms}}\n")
    return config


@pytest.fixture
async def second_openai(nursery) -> FakeUpstream:
    fake = FakeUpstream(dialect="openai")
    await nursery.start(fake.serve)
    return fake


async def test_cli_changes_reach_a_running_bridge(
    nursery, tmp_path, yaml_dir, pg_migrated_dsn, fake_openai, second_openai
) -> None:
    bridge = await start_bridge(nursery, yaml_dir, database_url=pg_migrated_dsn)
    assert (await chat(bridge, "dbai")).status_code == 404
    assert (
        await cli(
            pg_migrated_dsn,
            "providers",
            "create",
            "dbai",
            "--type",
            "openai",
            "--base-url",
            fake_openai.base_url,
        )
        == 0
    )
    await add_key(pg_migrated_dsn, "dbai", KEY, tmp_path)
    await wait_status(bridge, "dbai", 200)
    assert fake_openai.last_request.key == KEY

    assert (
        await cli(
            pg_migrated_dsn, "providers", "update", "dbai", "--base-url", second_openai.base_url
        )
        == 0
    )
    with trio.fail_after(10):
        while not second_openai.requests:
            await wait_status(bridge, "dbai", 200)
            if not second_openai.requests:
                await bridge.next_swap()

    assert await cli(pg_migrated_dsn, "providers", "disable", "dbai") == 0
    await wait_status(bridge, "dbai", 503)
    assert await cli(pg_migrated_dsn, "providers", "enable", "dbai") == 0
    await wait_status(bridge, "dbai", 200)
    assert await cli(pg_migrated_dsn, "providers", "delete", "dbai") == 0
    await wait_status(bridge, "dbai", 404)


async def test_plain_sql_update_is_picked_up(
    nursery, yaml_dir, pg_conn, pg_migrated_dsn, fake_openai, second_openai
) -> None:
    insert_provider(pg_conn, "sql", fake_openai.base_url)
    bridge = await start_bridge(nursery, yaml_dir, database_url=pg_migrated_dsn)
    await wait_status(bridge, "sql", 200)
    pg_conn.execute("UPDATE ai_providers SET enabled = false WHERE name = 'sql'")
    await wait_status(bridge, "sql", 503)


async def test_yaml_entry_wins_and_switch_off_disables_the_row(
    nursery, tmp_path, yaml_dir, pg_migrated_dsn, fake_openai, second_openai
) -> None:
    assert (
        await cli(
            pg_migrated_dsn,
            "providers",
            "create",
            "shared",
            "--type",
            "openai",
            "--base-url",
            fake_openai.base_url,
        )
        == 0
    )
    await add_key(pg_migrated_dsn, "shared", KEY, tmp_path)
    bridge = await start_bridge(nursery, yaml_dir, database_url=pg_migrated_dsn)
    await wait_status(bridge, "shared", 200)
    assert fake_openai.requests

    write_yaml(
        yaml_dir,
        "10-override.yaml",
        f"""
providers:
  - name: shared
    type: openai
    base_url: {second_openai.base_url}
    keys: [{{value: sk-yaml-key-bbbbbbbbbbbbbbbb}}]
""",
    )
    with trio.fail_after(10):
        while not bridge.snapshot.providers["shared"].source.startswith("yaml"):
            await bridge.next_swap()
    assert (await chat(bridge, "shared")).status_code == 200
    assert second_openai.last_request.key == "sk-yaml-key-bbbbbbbbbbbbbbbb"

    write_yaml(yaml_dir, "10-override.yaml", "providers: [{name: shared, enabled: false}]\n")
    await wait_status(bridge, "shared", 503)
    assert bridge.snapshot.providers["shared"].source == "database+yaml:10-override.yaml"

    (yaml_dir / "10-override.yaml").unlink()
    await wait_status(bridge, "shared", 200)
    assert bridge.snapshot.providers["shared"].source == "database"


async def test_listener_reconnects_after_its_backend_is_killed(
    nursery, tmp_path, yaml_dir, pg_conn, pg_migrated_dsn, fake_openai
) -> None:
    bridge = await start_bridge(nursery, yaml_dir, database_url=pg_migrated_dsn)
    with trio.fail_after(10):
        while not pg_conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = "
            "'trio-bridge-listener' AND datname = current_database()"
        ).fetchone():
            await trio.sleep(0.05)
    version = bridge.snapshot.version
    # Kill the listener and commit a change in the same breath: it must not be lost.
    pg_conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
        "application_name = 'trio-bridge-listener' AND datname = current_database()"
    )
    insert_provider(pg_conn, "after", fake_openai.base_url)
    await wait_status(bridge, "after", 200)
    assert bridge.snapshot.version > version


def through(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(
        (
            parts.scheme,
            f"{netloc[0]}@{host}" if len(netloc) == 2 else host,
            parts.path,
            parts.query,
            "",
        )
    )


async def test_bridge_started_without_database_serves_yaml_then_picks_up_rows(
    nursery, tmp_path, yaml_dir, pg_conn, pg_migrated_dsn, fake_openai
) -> None:
    insert_provider(pg_conn, "fromdb", fake_openai.base_url)
    write_yaml(
        yaml_dir,
        "10-yaml.yaml",
        f"providers: [{{name: fromyaml, type: openai, base_url: "
        f"'{fake_openai.base_url}', keys: [{{value: {KEY}}}]}}]\n",
    )
    target = urlsplit(pg_migrated_dsn)
    relay = await nursery.start(Relay(target.hostname, target.port or 5432).serve)
    bridge = await start_bridge(
        nursery, yaml_dir, database_url=through(pg_migrated_dsn, relay.port)
    )
    assert (await chat(bridge, "fromyaml")).status_code == 200
    assert (await chat(bridge, "fromdb")).status_code == 404
    with trio.fail_after(10):
        await bridge.daemon.state.database_settled.wait()
    async with client() as c:
        assert (await c.get(bridge.url + "/readyz")).status_code == 200
        doc = (await c.get(bridge.admin + "/-/snapshot")).json()
    db = next(s for s in doc["sources"] if s["name"] == "database")
    assert db["error"] and db["loaded_at"] is None
    relay.open()
    await wait_status(bridge, "fromdb", 200)


async def test_failed_database_read_keeps_previous_rows_and_reports(
    nursery, tmp_path, yaml_dir, pg_conn, pg_migrated_dsn, fake_openai
) -> None:
    insert_provider(pg_conn, "kept", fake_openai.base_url)
    bridge = await start_bridge(nursery, yaml_dir, database_url=pg_migrated_dsn)
    await wait_status(bridge, "kept", 200)
    pg_conn.execute("ALTER TABLE ai_bridge_clients RENAME TO ai_bridge_clients_away")
    try:
        version = bridge.snapshot.version
        pg_conn.execute("NOTIFY ai_providers_changed")
        with trio.fail_after(10):
            snapshot = await bridge.next_swap(version)
        db = next(s for s in snapshot.sources if s.name == "database")
        assert db.error and "ai_bridge_clients" in db.error
        assert (await chat(bridge, "kept")).status_code == 200
    finally:
        pg_conn.execute("ALTER TABLE ai_bridge_clients_away RENAME TO ai_bridge_clients")


async def test_rows_that_cannot_build_answer_503_while_others_serve(
    nursery, tmp_path, pg_conn, pg_migrated_dsn, fake_openai
) -> None:
    config = tmp_path / "c"
    config.mkdir()
    write_yaml(
        config, "b.yaml", "bridge: {auth: none, allow_byok: false, reload: {debounce: 20ms}}\n"
    )
    insert_provider(pg_conn, "good", fake_openai.base_url)
    insert_provider(pg_conn, "badurl", "ftp://nowhere")
    insert_provider(pg_conn, "nokeys", fake_openai.base_url, key=None)
    bridge = await start_bridge(nursery, config, database_url=pg_migrated_dsn)
    await wait_status(bridge, "good", 200)
    for name in ("badurl", "nokeys"):
        response = await chat(bridge, name)
        assert response.status_code == 503
        provider = bridge.snapshot.providers[name]
        assert provider.status == "error" and provider.error
    assert "base_url" in bridge.snapshot.providers["badurl"].error
    assert "allow_byok" in bridge.snapshot.providers["nokeys"].error


async def test_revoked_client_is_refused(
    nursery, tmp_path, pg_conn, pg_migrated_dsn, fake_openai
) -> None:
    config = tmp_path / "c"
    config.mkdir()
    write_yaml(
        config,
        "b.yaml",
        f"""
bridge: {{auth: tokens, reload: {{debounce: 20ms}}}}
providers: [{{name: openai, type: openai, base_url: '{fake_openai.base_url}', keys: [{{value: {KEY}}}]}}]
""",
    )
    token = "tb-database-client-token-0123456789abcdefghij"
    pg_conn.execute(
        "INSERT INTO ai_bridge_clients (id, token_sha256) VALUES ('bob', %s)",
        (hashlib.sha256(token.encode()).hexdigest(),),
    )
    bridge = await start_bridge(nursery, config, database_url=pg_migrated_dsn)
    headers = {"Authorization": f"Bearer {token}"}
    await wait_status(bridge, "openai", 200, headers)
    assert await cli(pg_migrated_dsn, "clients", "revoke", "bob") == 0
    await wait_status(bridge, "openai", 401, headers)


async def test_two_bridges_converge_after_a_change(
    nursery, tmp_path, yaml_dir, pg_conn, pg_migrated_dsn, fake_openai
) -> None:
    first = await start_bridge(nursery, yaml_dir, database_url=pg_migrated_dsn)
    second = await start_bridge(nursery, yaml_dir, database_url=pg_migrated_dsn)
    assert (
        await cli(
            pg_migrated_dsn,
            "providers",
            "create",
            "both",
            "--type",
            "openai",
            "--base-url",
            fake_openai.base_url,
        )
        == 0
    )
    await add_key(pg_migrated_dsn, "both", KEY, tmp_path)
    await wait_status(first, "both", 200)
    await wait_status(second, "both", 200)
