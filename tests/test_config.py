"""The config dir: schema, merge rules, and errors that never quote what they reject."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trio_bridge.config import ConfigError, load_config_dir
from trio_bridge.config.durations import parse_duration
from trio_bridge.config.model import KeyRef, ProviderSpec
from trio_bridge.config.secrets import KeyResolutionError, resolve_key

SECRET = "sk-live-DO-NOT-PRINT-0123456789abcdef"


def write(d: Path, name: str, text: str) -> None:
    (d / name).write_text(text)


def test_files_merge_in_name_order_and_dotfiles_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "20-b.yaml", "providers: [{name: b, type: anthropic, base_url: 'https://b'}]\n")
    write(tmp_path, "10-a.yml", "providers: [{name: a, type: openai, base_url: 'https://a/v1'}]\n")
    write(tmp_path, ".hidden.yaml", "providers: [{name: c, type: openai, base_url: 'https://c'}]\n")
    write(tmp_path, "notes.txt", "not yaml: [")
    loaded = load_config_dir(tmp_path)
    assert [p.name for p in loaded.providers] == ["a", "b"]
    assert loaded.origins == {"a": "10-a.yml", "b": "20-b.yaml"}


def test_duplicate_provider_across_files_names_both_files(tmp_path: Path) -> None:
    write(tmp_path, "10-a.yaml", "providers: [{name: x, type: openai, base_url: 'https://a'}]\n")
    write(tmp_path, "20-b.yaml", "providers: [{name: x, type: openai, base_url: 'https://b'}]\n")
    with pytest.raises(ConfigError, match=r"20-b.yaml: .*'x'.*10-a.yaml"):
        load_config_dir(tmp_path)


def test_bridge_section_in_two_files_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "bridge: {auth: none}\n")
    write(tmp_path, "b.yaml", "bridge: {auth: tokens}\n")
    with pytest.raises(ConfigError, match="b.yaml: bridge: already set in a.yaml"):
        load_config_dir(tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"providers: [{{name: a, type: openai, base_url: '{SECRET}'}}]",
            "10-p.yaml: $.providers[0].base_url: expected a string matching ^https?://",
        ),
        (
            f"providers: [{{name: a, type: '{SECRET}', base_url: 'https://a'}}]",
            "10-p.yaml: $.providers[0].type: expected one of openai, anthropic, copilot",
        ),
        (
            f"providers: [{{name: a, type: openai, base_url: 'https://a', keys: [{{env: A, value: '{SECRET}'}}]}}]",
            "10-p.yaml: $.providers[0].keys[0]: expected exactly one of env, file, value",
        ),
        (
            f"bridge: {{max_inflight: '{SECRET}'}}",
            "10-p.yaml: $.bridge.max_inflight: expected an integer",
        ),
        (
            f"bridge: {{reload: {{debounce: '{SECRET}'}}}}",
            "10-p.yaml: $.bridge.reload.debounce: expected a duration",
        ),
        (
            "providers: [{name: a, type: openai, base_url: 'https://a', colour: red}]",
            "10-p.yaml: $.providers[0]: unknown field (expected only name, type, base_url,",
        ),
        (
            "providers: [{name: Bad_Name, type: openai, base_url: 'https://a'}]",
            "10-p.yaml: $.providers[0].name: expected a string matching",
        ),
        (
            "providers: [{name: a, type: openai, base_url: 'https://a', keys: [{file: ../etc/x}]}]",
            "10-p.yaml: $.providers[0].keys[0]: expected a relative path",
        ),
        (
            "providers: [{name: a, type: openai, base_url: 'https://a', keys: [{file: /etc/x}]}]",
            "10-p.yaml: $.providers[0].keys[0]: expected a relative path",
        ),
        (f"providers: [\n  {{name: a, value: '{SECRET}'", "10-p.yaml: line 3:1: invalid YAML"),
        ("providers: [{name: a}]", "10-p.yaml: $.providers[0]: expected type and base_url"),
        (
            f"providers: [{{name: a, type: openai, base_url: !{SECRET} https://a}}]",
            "10-p.yaml: line 1:47: invalid YAML (a tag plain YAML does not define",
        ),
        (
            f"providers: [{{name: a, type: openai, base_url: 'https://a', {SECRET}: 1}}]",
            "10-p.yaml: $.providers[0]: unknown field (expected only name, type, base_url,",
        ),
        (
            f"bridge: {{reload: {{debounce: 1s, '{SECRET}': x, other: y}}}}",
            "10-p.yaml: $.bridge.reload: 2 unknown fields (expected only debounce, resync_every)",
        ),
        (
            f"providers:\n\t- {{name: {SECRET}}}",
            "10-p.yaml: line 2:1: invalid YAML (found character that cannot start any token)",
        ),
        (f"providers: *{SECRET}", "10-p.yaml: line 1:12: invalid YAML (found undefined alias)"),
    ],
)
def test_errors_name_file_and_place_and_never_quote_the_value(
    tmp_path: Path, text: str, expected: str
) -> None:
    write(tmp_path, "10-p.yaml", text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config_dir(tmp_path)
    message = str(info.value)
    assert message.startswith(expected), message
    assert SECRET not in message and "DO-NOT-PRINT" not in message


def test_every_schema_error_of_every_file_is_reported(tmp_path: Path) -> None:
    write(
        tmp_path,
        "10-a.yaml",
        "bridge: {max_inflight: many, reload: {debounce: soon}}\n"
        "providers:\n"
        "  - {name: ok, type: openai, base_url: 'https://a'}\n"
        "  - {name: Bad_Name, type: openai, base_url: 'ftp://a', colour: red}\n"
        "  - {name: b, type: openai, base_url: 'https://b', keys: [{env: A, file: x}, {}]}\n",
    )
    write(tmp_path, "20-b.yaml", "clients: [{id: c}]\n")
    write(
        tmp_path, "30-c.yaml", "providers: [{name: fine, type: anthropic, base_url: 'https://c'}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config_dir(tmp_path)
    assert info.value.errors == (
        "10-a.yaml: $.bridge.max_inflight: expected an integer",
        "10-a.yaml: $.bridge.reload.debounce: expected a duration such as 250ms, 10s or 5m",
        "10-a.yaml: $.providers[1]: unknown field (expected only "
        + ", ".join(ProviderSpec.__struct_fields__)
        + ")",
        "10-a.yaml: $.providers[1].name: expected a string matching ^[a-z0-9]+(-[a-z0-9]+)*$",
        "10-a.yaml: $.providers[1].base_url: expected a string matching ^https?://",
        "10-a.yaml: $.providers[2].keys[0]: expected exactly one of env, file, value",
        "10-a.yaml: $.providers[2].keys[1]: expected exactly one of env, file, value",
        "20-b.yaml: $.clients[0]: missing required field 'token_sha256'",
    )
    assert str(info.value) == "\n".join(info.value.errors)


def test_switch_off_entry_needs_only_name_and_enabled_false(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "providers: [{name: legacy, enabled: false}]\n")
    (provider,) = load_config_dir(tmp_path).providers
    assert provider.is_switch_off and not provider.enabled


def test_too_many_keys_is_an_error(tmp_path: Path) -> None:
    keys = ", ".join(f"{{env: K{i}}}" for i in range(9))
    write(
        tmp_path,
        "a.yaml",
        f"providers: [{{name: a, type: openai, base_url: 'https://a', keys: [{keys}]}}]\n",
    )
    with pytest.raises(ConfigError, match=r"\$.providers\[0\].keys"):
        load_config_dir(tmp_path)


def test_durations_parse_with_units() -> None:
    assert parse_duration("250ms") == 0.25
    assert parse_duration("10s") == 10
    assert parse_duration("5m") == 300
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_key_resolution_reports_the_reference_not_the_value(tmp_path: Path) -> None:
    (tmp_path / "k.key").write_text(f"  {SECRET}\n")
    assert resolve_key(KeyRef(file="k.key"), tmp_path, {}) == SECRET
    assert resolve_key(KeyRef(env="K"), None, {"K": SECRET}) == SECRET
    with pytest.raises(KeyResolutionError, match="environment variable MISSING is not set"):
        resolve_key(KeyRef(env="MISSING"), None, {})
    with pytest.raises(KeyResolutionError, match="key file nope.key not found"):
        resolve_key(KeyRef(file="nope.key"), tmp_path, {})
    (tmp_path / "empty.key").write_text("\n")
    with pytest.raises(KeyResolutionError, match="empty"):
        resolve_key(KeyRef(file="empty.key"), tmp_path, {})


def run_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trio_bridge", "check-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_check_config_exits_0_when_every_provider_builds(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "a.key").write_text(SECRET)
    write(
        tmp_path,
        "p.yaml",
        "providers: [{name: a, type: openai, base_url: 'https://a/v1', keys: [{file: a.key}]}]\n",
    )
    result = run_check("--config-dir", str(tmp_path), "--secrets-dir", str(secrets))
    assert result.returncode == 0, result.stderr
    assert "a " in result.stdout and "1 keys" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_check_config_exits_1_and_names_the_broken_provider(tmp_path: Path) -> None:
    write(
        tmp_path,
        "p.yaml",
        f"""
providers:
  - {{name: good, type: openai, base_url: 'https://a/v1', keys: [{{value: '{SECRET}'}}]}}
  - {{name: broken, type: openai, base_url: 'https://b/v1', keys: [{{env: NOT_SET_ANYWHERE}}]}}
""",
    )
    result = run_check("--config-dir", str(tmp_path), "--json")
    assert result.returncode == 1
    assert "environment variable NOT_SET_ANYWHERE is not set" in result.stdout
    assert SECRET not in result.stdout + result.stderr
    assert "sk-l...cdef" in result.stdout


def test_check_config_exits_1_on_a_syntax_error(tmp_path: Path) -> None:
    write(tmp_path, "p.yaml", "providers: [\n")
    result = run_check("--config-dir", str(tmp_path))
    assert result.returncode == 1
    assert "p.yaml: line" in result.stderr
