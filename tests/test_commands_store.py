"""The db/providers/keys/clients commands, run in-process through main() and as a subprocess."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from trio_bridge.commands.store import main
from trio_bridge.config.model import BedrockSettings, KeyRef
from trio_bridge.store.load import load_contents

KEY = "sk-proj-THIS-IS-THE-SECRET-abcdef0123456789"
KEY2 = "sk-ant-api03-ANOTHER-SECRET-zyxw98765"


@pytest.fixture
def dsn(pg_migrated_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TRIO_BRIDGE_DATABASE_URL", pg_migrated_dsn)
    monkeypatch.delenv("TRIO_BRIDGE_DATABASE_URL_FILE", raising=False)
    return pg_migrated_dsn


def run(
    capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None
) -> tuple[int, str, str]:
    """main(argv) -> (exit code, stdout, stderr); argparse usage errors give 2."""
    old_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.stdin = old_stdin
    out, err = capsys.readouterr()
    return code, out, err


def test_db_migrate(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "db", "migrate", "--database-url", pg_dsn)
    from trio_bridge.store.migrations import LATEST_VERSION, MIGRATIONS

    applied = ", ".join(map(str, sorted(MIGRATIONS)))
    assert (code, out.strip()) == (0, f"applied migrations: {applied}")
    code, out, _ = run(capsys, "db", "migrate", "--database-url", pg_dsn)
    assert (code, out.strip()) == (0, f"schema up to date (version {LATEST_VERSION})")


def test_provider_lifecycle(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "providers",
        "create",
        "openai",
        "--type",
        "openai",
        "--base-url",
        "https://api.openai.com/v1",
        "--header",
        "OpenAI-Beta=assistants=v2",
    )
    assert code == 0, err
    assert 'created provider "openai"' in out
    code, out, _ = run(capsys, "providers", "list")
    assert code == 0
    assert out.splitlines()[0].split() == ["NAME", "TYPE", "ENABLED", "KEYS", "BASE_URL"]
    assert out.splitlines()[1].split() == [
        "openai",
        "openai",
        "yes",
        "0",
        "https://api.openai.com/v1",
    ]

    code, out, _ = run(capsys, "providers", "disable", "openai")
    assert code == 0 and "disabled" in out
    code, out, _ = run(capsys, "providers", "list", "--json")
    (row,) = json.loads(out)
    assert row["enabled"] is False and row["name"] == "openai" and row["keys"] == 0
    assert row["settings"]["headers"] == {"OpenAI-Beta": "****"}  # header values masked
    code, _, _ = run(capsys, "providers", "enable", "openai")
    assert code == 0

    code, out, err = run(
        capsys,
        "providers",
        "update",
        "openai",
        "--rename",
        "openai-eu",
        "--base-url",
        "https://eu.api.openai.com/v1",
        "--remove-header",
        "OpenAI-Beta",
        "--header",
        "X-Region=eu",
        "--disable",
    )
    assert code == 0, err
    code, out, _ = run(capsys, "providers", "show", "openai-eu", "--json")
    shown = json.loads(out)
    assert shown["base_url"] == "https://eu.api.openai.com/v1"
    assert shown["enabled"] is False
    assert shown["settings"] == {"headers": {"X-Region": "****"}}
    assert shown["key_list"] == []
    code, out, _ = run(capsys, "providers", "show", "openai-eu")
    assert code == 0 and "name:       openai-eu" in out

    (spec,) = load_contents(dsn).providers
    assert (spec.name, spec.base_url, spec.enabled) == (
        "openai-eu",
        "https://eu.api.openai.com/v1",
        False,
    )
    assert spec.headers == {"X-Region": "eu"}

    code, out, _ = run(capsys, "providers", "delete", "openai-eu")
    assert code == 0
    code, out, _ = run(capsys, "providers", "list", "--json")
    assert json.loads(out) == []


def test_bedrock_settings(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys,
        "providers",
        "create",
        "claude-bedrock",
        "--type",
        "anthropic",
        "--base-url",
        "https://bedrock-runtime.us-east-1.amazonaws.com",
        "--bedrock-region",
        "us-east-1",
        "--bedrock-model",
        "anthropic.claude-sonnet-4-5-v1:0",
        "--settings-json",
        '{"bedrock": {"region": "x", "model": "y", "access_key": {"env": "AWS_ACCESS_KEY_ID"}}}',
    )
    assert code == 0, err
    code, _, err = run(
        capsys, "providers", "update", "claude-bedrock", "--bedrock-small-fast-model", "haiku"
    )
    assert code == 0, err
    (spec,) = load_contents(dsn).providers
    assert spec.bedrock == BedrockSettings(
        region="us-east-1",
        model="anthropic.claude-sonnet-4-5-v1:0",
        small_fast_model="haiku",
        access_key=KeyRef(env="AWS_ACCESS_KEY_ID"),
    )
    code, _, _ = run(capsys, "providers", "update", "claude-bedrock", "--no-bedrock")
    assert code == 0
    assert load_contents(dsn).providers[0].bedrock is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["providers", "create", "Bad_Name", "--type", "openai", "--base-url", "https://x"],
            "$.name",
        ),
        (["providers", "create", "ok", "--type", "openai", "--base-url", "ftp://x"], "$.base_url"),
        (
            [
                "providers",
                "create",
                "ok",
                "--type",
                "openai",
                "--base-url",
                "https://x",
                "--settings-json",
                '{"colour": 1}',
            ],
            "unknown field `colour`",
        ),
        (
            [
                "providers",
                "create",
                "ok",
                "--type",
                "openai",
                "--base-url",
                "https://x",
                "--settings-json",
                "[1",
            ],
            "--settings-json: invalid JSON",
        ),
        (
            [
                "providers",
                "create",
                "ok",
                "--type",
                "openai",
                "--base-url",
                "https://x",
                "--header",
                "Bad Header=1",
            ],
            "header names",
        ),
        (
            [
                "providers",
                "create",
                "ok",
                "--type",
                "openai",
                "--base-url",
                "https://x",
                "--header",
                "novalue",
            ],
            "--header: expected KEY=VALUE",
        ),
        (
            ["providers", "create", "taken", "--type", "openai", "--base-url", "https://x"],
            "already exists",
        ),
        (["providers", "show", "nope"], 'unknown provider "nope"'),
        (["providers", "delete", "nope"], 'unknown provider "nope"'),
        (["providers", "enable", "nope"], 'unknown provider "nope"'),
        (["providers", "update", "nope", "--type", "anthropic"], 'unknown provider "nope"'),
        (["providers", "update", "taken", "--rename", "other"], 'provider "other" already exists'),
        (["providers", "update", "taken", "--base-url", "mailto:x"], "$.base_url"),
        (["providers", "update", "taken", "--type", "copilot"], "copilot"),
        (["keys", "list", "nope"], 'unknown provider "nope"'),
        (["keys", "remove", "taken", "5"], "has no key 5"),
        (["keys", "remove", "taken", "not-a-key"], "expected a key id or index"),
        (["clients", "revoke", "nobody"], 'unknown client "nobody"'),
        (["clients", "create", "has space"], "$.id"),
        (["clients", "create", "alice"], 'client "alice" already exists'),
    ],
)
def test_refusals_exit_1(
    dsn: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    for name in ("taken", "other"):
        assert (
            run(capsys, "providers", "create", name, "--type", "openai", "--base-url", "https://x")[
                0
            ]
            == 0
        )
    assert run(capsys, "keys", "add", "taken", stdin=KEY)[0] == 0
    assert run(capsys, "clients", "create", "alice")[0] == 0
    before = load_contents(dsn)
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert out == ""
    assert err.startswith("error: ") and message in err
    assert KEY not in err
    assert load_contents(dsn) == before


def test_usage_errors_exit_2(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "providers")[0] == 2
    assert run(capsys, "providers", "create", "x", "--type", "openai")[0] == 2  # no --base-url
    assert (
        run(capsys, "providers", "create", "x", "--type", "gemini", "--base-url", "https://x")[0]
        == 2
    )
    code = run(capsys, "providers", "list", "--database-url", "a", "--database-url-file", "b")[0]
    assert code == 2


def test_keys(dsn: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run(capsys, "providers", "create", "openai", "--type", "openai", "--base-url", "https://x/v1")
    code, out, err = run(capsys, "keys", "add", "openai", stdin=KEY + "\n")
    assert code == 0, err
    assert KEY not in out and "sk-p...6789" in out and "index 0" in out
    key_file = tmp_path / "key"
    key_file.write_text(f"  {KEY2}\n")
    code, out, err = run(capsys, "keys", "add", "openai", "--value-file", str(key_file))
    assert code == 0, err
    assert KEY2 not in out and "index 1" in out

    code, out, _ = run(capsys, "keys", "list", "openai")
    assert code == 0 and KEY not in out and KEY2 not in out
    lines = out.splitlines()
    assert lines[0].split() == ["INDEX", "ID", "HINT", "CREATED_AT"]
    assert [line.split()[0] for line in lines[1:]] == ["0", "1"]
    assert [line.split()[2] for line in lines[1:]] == ["sk-p...6789", "sk-a...8765"]
    code, out, _ = run(capsys, "keys", "list", "openai", "--json")
    listed = json.loads(out)
    assert [k["hint"] for k in listed] == ["sk-p...6789", "sk-a...8765"]
    assert KEY not in out and KEY2 not in out
    code, out, _ = run(capsys, "providers", "show", "openai", "--json")
    assert KEY not in out and json.loads(out)["keys"] == 2
    assert [k.value for k in load_contents(dsn).providers[0].keys] == [KEY, KEY2]

    # Refusals: duplicate, empty, whitespace inside, over the limit.
    assert run(capsys, "keys", "add", "openai", stdin=KEY)[0] == 1
    code, _, err = run(capsys, "keys", "add", "openai", stdin="\n")
    assert code == 1 and "empty" in err
    code, _, err = run(capsys, "keys", "add", "openai", stdin="sk-a b")
    assert code == 1 and "whitespace" in err
    code, _, err = run(capsys, "keys", "add", "openai", "--value-file", str(tmp_path / "missing"))
    assert code == 1 and "cannot read" in err
    for i in range(6):
        assert run(capsys, "keys", "add", "openai", stdin=f"{KEY}-{i}")[0] == 0
    code, _, err = run(capsys, "keys", "add", "openai", stdin=f"{KEY}-9")
    assert code == 1 and "maximum" in err

    # Remove by index and by id.
    code, out, _ = run(capsys, "keys", "remove", "openai", "0")
    assert code == 0 and "sk-p...6789" in out and KEY not in out
    code, _, _ = run(capsys, "keys", "remove", "openai", listed[1]["id"])
    assert code == 0
    remaining = [k.value for k in load_contents(dsn).providers[0].keys]
    assert remaining == [f"{KEY}-{i}" for i in range(6)]


def test_copilot_takes_no_keys(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "providers", "create", "copilot", "--type", "copilot", "--base-url", "https://c")
    code, out, err = run(capsys, "keys", "add", "copilot", stdin=KEY)
    assert code == 1 and "copilot" in err and KEY not in err + out


def test_clients(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "clients", "create", "alice", "--metadata", "Team=infra")
    assert code == 0, err
    token = out.splitlines()[-1]
    assert token.startswith("tb-") and len(token) >= 3 + 43
    assert out.count(token) == 1
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT id, token_sha256, metadata::text FROM ai_bridge_clients"
        ).fetchall()
    assert rows == [("alice", hashlib.sha256(token.encode()).hexdigest(), '{"Team": "infra"}')]
    assert token not in repr(rows)

    code, out, _ = run(capsys, "clients", "create", "bob", "--json")
    created = json.loads(out)
    assert created["token_sha256"] == hashlib.sha256(created["token"].encode()).hexdigest()
    assert out.count(created["token"]) == 1

    code, out, _ = run(capsys, "clients", "list")
    assert code == 0 and token not in out and "alice" in out and "bob" in out
    code, out, _ = run(capsys, "clients", "revoke", "alice")
    assert (code, out.strip()) == (0, 'revoked client "alice"')
    code, out, _ = run(capsys, "clients", "revoke", "alice")
    assert (code, out.strip()) == (0, 'client "alice" was already revoked')
    code, out, _ = run(capsys, "clients", "list", "--json")
    revoked = {c["id"]: c["revoked_at"] for c in json.loads(out)}
    assert revoked["alice"] is not None and revoked["bob"] is None
    code, out, _ = run(capsys, "clients", "list", "--active", "--json")
    assert [c["id"] for c in json.loads(out)] == ["bob"]
    assert [c.id for c in load_contents(dsn).clients] == ["bob"]


def test_clients_rotate_delete_and_a_revoked_id_created_again(
    dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def sha(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    code, out, err = run(capsys, "clients", "create", "alice")
    assert code == 0, err
    first = out.splitlines()[-1]
    code, out, err = run(capsys, "clients", "rotate", "alice")
    assert code == 0, err
    second = out.splitlines()[-1]
    assert second.startswith("tb-") and second != first and out.count(second) == 1
    assert "old one no longer works" in out
    (client,) = load_contents(dsn).clients
    assert client.token_sha256 == sha(second)
    code, out, _ = run(capsys, "clients", "rotate", "alice", "--json")
    third = json.loads(out)["token"]
    assert [c.token_sha256 for c in load_contents(dsn).clients] == [sha(third)]

    assert run(capsys, "clients", "revoke", "alice")[0] == 0
    code, _, err = run(capsys, "clients", "rotate", "alice")
    assert code == 1 and 'client "alice" is revoked' in err
    code, _, err = run(capsys, "clients", "create", "alice")
    assert code == 1 and "delete it first (trio-bridge clients delete alice)" in err

    code, out, _ = run(capsys, "clients", "delete", "alice")
    assert (code, out.strip()) == (0, 'deleted client "alice"')
    code, out, err = run(capsys, "clients", "create", "alice")
    assert code == 0, err
    fourth = out.splitlines()[-1]
    assert [c.token_sha256 for c in load_contents(dsn).clients] == [sha(fourth)]

    for command in ("delete", "rotate"):
        code, _, err = run(capsys, "clients", command, "nobody")
        assert (code, err.strip()) == (1, 'error: unknown client "nobody"')


def test_database_url_sources(
    pg_migrated_dsn: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    bad = "postgresql://postgres:hunter2@127.0.0.1:1/test"
    monkeypatch.delenv("TRIO_BRIDGE_DATABASE_URL", raising=False)
    monkeypatch.delenv("TRIO_BRIDGE_DATABASE_URL_FILE", raising=False)
    code, _, err = run(capsys, "providers", "list")
    assert code == 1 and "no database URL" in err

    # Errors never show the password.
    code, _, err = run(capsys, "providers", "list", "--database-url", bad)
    assert code == 1 and "hunter2" not in err and "Connection refused" in err

    # A flag beats the variable; the file form is stripped.
    url_file = tmp_path / "url"
    url_file.write_text(f"\n{pg_migrated_dsn}\n")
    monkeypatch.setenv("TRIO_BRIDGE_DATABASE_URL", bad)
    assert run(capsys, "providers", "list", "--database-url", pg_migrated_dsn)[0] == 0
    assert run(capsys, "providers", "list", "--database-url-file", str(url_file))[0] == 0
    monkeypatch.delenv("TRIO_BRIDGE_DATABASE_URL")
    monkeypatch.setenv("TRIO_BRIDGE_DATABASE_URL_FILE", str(url_file))
    assert run(capsys, "providers", "list")[0] == 0
    monkeypatch.setenv("TRIO_BRIDGE_DATABASE_URL", pg_migrated_dsn)
    monkeypatch.setenv("TRIO_BRIDGE_DATABASE_URL_FILE", str(tmp_path / "missing"))
    assert run(capsys, "providers", "list")[0] == 0  # the URL variable beats the file one
    code, _, err = run(capsys, "providers", "list", "--database-url-file", str(tmp_path / "nope"))
    assert code == 1 and "cannot read database URL file" in err


def test_subprocess_keys_add_and_clients_create(pg_migrated_dsn: str) -> None:
    env = {**os.environ, "TRIO_BRIDGE_DATABASE_URL": pg_migrated_dsn}
    env.pop("TRIO_BRIDGE_DATABASE_URL_FILE", None)

    def cli(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "trio_bridge.commands.store", *argv],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    assert (
        cli(
            "providers",
            "create",
            "anthropic",
            "--type",
            "anthropic",
            "--base-url",
            "https://api.anthropic.com",
        ).returncode
        == 0
    )
    done = cli("keys", "add", "anthropic", stdin=KEY2 + "\n")
    assert done.returncode == 0, done.stderr
    assert KEY2 not in done.stdout + done.stderr
    done = cli("keys", "list", "anthropic")
    assert done.returncode == 0 and KEY2 not in done.stdout and "sk-a...8765" in done.stdout
    done = cli("keys", "add", "nope", stdin=KEY2)
    assert done.returncode == 1 and done.stderr == 'error: unknown provider "nope"\n'
    done = cli("clients", "create", "ci-bot")
    assert done.returncode == 0
    token = done.stdout.splitlines()[-1]
    assert done.stdout.count(token) == 1 and token not in done.stderr
    (client,) = load_contents(pg_migrated_dsn).clients
    assert client.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
