"""Bedrock and Copilot providers from the command line: `providers create` flags and a
settings file into the database; `check-config` showing region, models and credential
source, never a secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trio_bridge.cli import main as bridge_main
from trio_bridge.commands.store import main
from trio_bridge.config.model import BedrockSettings, KeyRef
from trio_bridge.store.load import load_contents

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYTOPSECRET00"


@pytest.fixture
def dsn(pg_migrated_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TRIO_BRIDGE_DATABASE_URL", pg_migrated_dsn)
    monkeypatch.delenv("TRIO_BRIDGE_DATABASE_URL_FILE", raising=False)
    return pg_migrated_dsn


def run(capsys: pytest.CaptureFixture[str], fn, *argv: str) -> tuple[int, str, str]:
    try:
        code = fn(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


BASE = ("--base-url", "https://bedrock-runtime.eu-west-1.amazonaws.com")


def test_providers_create_bedrock_with_flags(dsn: str, capsys) -> None:
    code, out, err = run(
        capsys,
        main,
        "providers",
        "create",
        "claude-bedrock",
        "--type",
        "anthropic",
        *BASE,
        "--bedrock-region",
        "eu-west-1",
        "--bedrock-model",
        "eu.anthropic.claude-sonnet-4-5-v1:0",
        "--bedrock-small-fast-model",
        "eu.anthropic.claude-haiku-4-5-v1:0",
        "--bedrock-access-key",
        "env:AWS_ACCESS_KEY_ID",
        "--bedrock-access-key-secret",
        "file:aws/secret",
    )
    assert code == 0, err
    (spec,) = load_contents(dsn).providers
    assert spec.type == "anthropic"
    assert spec.bedrock == BedrockSettings(
        region="eu-west-1",
        model="eu.anthropic.claude-sonnet-4-5-v1:0",
        small_fast_model="eu.anthropic.claude-haiku-4-5-v1:0",
        access_key=KeyRef(env="AWS_ACCESS_KEY_ID"),
        access_key_secret=KeyRef(file="aws/secret"),
    )


def test_a_secret_itself_is_refused_on_the_command_line(dsn: str, capsys) -> None:
    code, _, err = run(
        capsys,
        main,
        "providers",
        "create",
        "b",
        "--type",
        "anthropic",
        *BASE,
        "--bedrock-region",
        "eu-west-1",
        "--bedrock-model",
        "m",
        "--bedrock-access-key-secret",
        SECRET,
    )
    assert code == 1 and "env:NAME or file:PATH" in err and SECRET not in err
    assert load_contents(dsn).providers == ()


def test_providers_create_with_a_settings_file_and_update(dsn: str, capsys, tmp_path) -> None:
    settings = tmp_path / "bedrock.yaml"
    settings.write_text(
        "bedrock:\n  region: us-west-2\n  model: anthropic.claude-opus-4-1-v1:0\n"
        "headers: {X-Team: infra}\n"
    )
    code, _, err = run(
        capsys,
        main,
        "providers",
        "create",
        "opus",
        "--type",
        "anthropic",
        *BASE,
        "--settings-file",
        str(settings),
    )
    assert code == 0, err
    code, _, err = run(
        capsys, main, "providers", "update", "opus", "--bedrock-small-fast-model", "haiku-x"
    )
    assert code == 0, err
    (spec,) = load_contents(dsn).providers
    assert spec.bedrock == BedrockSettings(
        region="us-west-2", model="anthropic.claude-opus-4-1-v1:0", small_fast_model="haiku-x"
    )
    assert spec.headers == {"X-Team": "infra"}


def test_providers_create_copilot(dsn: str, capsys) -> None:
    code, out, err = run(
        capsys,
        main,
        "providers",
        "create",
        "copilot",
        "--type",
        "copilot",
        "--base-url",
        "https://api.individual.githubcopilot.com",
    )
    assert code == 0, err
    (spec,) = load_contents(dsn).providers
    assert spec.type == "copilot" and spec.keys == []


def test_check_config_shows_bedrock_region_models_and_credentials_never_a_secret(
    tmp_path: Path, capsys
) -> None:
    config, secrets = tmp_path / "config", tmp_path / "secrets"
    config.mkdir()
    (secrets / "aws").mkdir(parents=True)
    (secrets / "aws" / "secret").write_text(SECRET)
    (config / "p.yaml").write_text(
        """
providers:
  - name: claude-bedrock
    type: anthropic
    base_url: https://bedrock-runtime.us-east-1.amazonaws.com
    bedrock:
      region: us-east-1
      model: anthropic.claude-sonnet-4-5-v1:0
      small_fast_model: anthropic.claude-haiku-4-5-v1:0
      access_key: {value: AKIAIOSFODNN7EXAMPLE}
      access_key_secret: {file: aws/secret}
  - name: copilot
    type: copilot
    base_url: https://api.individual.githubcopilot.com
"""
    )
    args = ["check-config", "--config-dir", str(config), "--secrets-dir", str(secrets)]
    code, text, _ = run(capsys, bridge_main, *args)
    assert code == 0, text
    assert "region us-east-1" in text and "anthropic.claude-haiku-4-5-v1:0" in text
    assert "access_key_secret file:aws/secret" in text
    code, out, _ = run(capsys, bridge_main, *args, "--json")
    assert code == 0
    doc = json.loads(out)
    bedrock = next(p for p in doc["providers"] if p["name"] == "claude-bedrock")
    assert bedrock["status"] == "ok"
    assert bedrock["bedrock"]["region"] == "us-east-1"
    assert (
        bedrock["bedrock"]["credentials"] == "access_key value, access_key_secret file:aws/secret"
    )
    copilot = next(p for p in doc["providers"] if p["name"] == "copilot")
    assert copilot["status"] == "ok"
    for output in (text, out):
        assert SECRET not in output and "AKIAIOSFODNN7EXAMPLE" not in output
