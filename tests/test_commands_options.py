"""The command line's options: flags, TRIO_BRIDGE_* variables, help, listen addresses."""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trio_bridge import cli
from trio_bridge.commands import COMMANDS
from trio_bridge.commands.options import variable
from trio_bridge.commands.serve import bind_problem, serve_options

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-live-DO-NOT-PRINT-0123456789abcdef"


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_BRIDGE_")}
    environ["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "trio_bridge", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **(env or {})},
    )


def parse_fails(argv: list[str], environ: dict[str, str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.parse(argv, environ)
    assert exit_.value.code == 2
    return capsys.readouterr().err


# -- #9: a bad variable is one line naming it, never a traceback ---------------------------


@pytest.mark.parametrize("name", ["TRIO_BRIDGE_DRAIN_DELAY", "TRIO_BRIDGE_SHUTDOWN_GRACE"])
@pytest.mark.parametrize(
    "argv", [["serve"], ["demo"], ["serve", "--config-dir", "x", "--listen", "127.0.0.1:0"]]
)
def test_a_bad_duration_variable_is_one_line_naming_the_variable(
    name: str, argv: list[str]
) -> None:
    result = run_cli(*argv, env={name: "5"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0] and "expected a duration" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "argv",
    [["--version"], ["--help"], ["check-config", "--help"], ["clients", "list", "--help"]],
)
def test_a_bad_serve_variable_does_not_break_other_commands(argv: list[str]) -> None:
    env = {"TRIO_BRIDGE_DRAIN_DELAY": "5", "TRIO_BRIDGE_SHUTDOWN_GRACE": "5"}
    result = run_cli(*argv, env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    if argv == ["--version"]:
        assert result.stdout.startswith("trio-bridge ")


def test_check_config_runs_despite_a_bad_serve_variable(tmp_path: Path) -> None:
    result = run_cli(
        "check-config", "--config-dir", str(tmp_path), env={"TRIO_BRIDGE_DRAIN_DELAY": "5"}
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("TRIO_BRIDGE_MAX_CONNECTIONS", SECRET, "expected a whole number"),
        ("TRIO_BRIDGE_MAX_CONNECTIONS", "0", "at least 1"),
        ("TRIO_BRIDGE_LOG_FORMAT", SECRET, "expected one of text, json"),
        ("TRIO_BRIDGE_LOG_LEVEL", SECRET, "expected one of debug, info, warning, error"),
        ("TRIO_BRIDGE_ALLOW_OPEN_LISTEN", SECRET, "expected one of 1, true"),
        ("TRIO_BRIDGE_HEADER_TIMEOUT", SECRET, "expected a duration"),
        ("TRIO_BRIDGE_KEEPALIVE_TIMEOUT", "-1s", "expected a duration"),
    ],
)
def test_bad_variable_values_name_the_variable_and_never_quote_the_value(
    name: str, value: str, expected: str, capsys
) -> None:
    err = parse_fails(["serve"], {name: value}, capsys)
    assert err.count("\n") == 1
    assert err.startswith(f"trio-bridge serve: error: {name}: ") and expected in err
    assert value not in err


def test_a_flag_beats_the_variable_and_the_variable_beats_the_default() -> None:
    env = {"TRIO_BRIDGE_DRAIN_DELAY": "3s", "TRIO_BRIDGE_ALLOW_OPEN_LISTEN": "yes"}
    assert cli.parse(["serve", "--drain-delay", "250ms"], env).drain_delay == 0.25
    args = cli.parse(["serve"], env)
    assert args.drain_delay == 3.0 and args.allow_open_listen is True
    args = cli.parse(["serve"], {})
    assert args.drain_delay == 5.0 and args.allow_open_listen is False
    assert cli.parse(["serve"], {"TRIO_BRIDGE_ALLOW_OPEN_LISTEN": "off"}).allow_open_listen is False


def test_demo_keeps_its_own_defaults_and_reads_the_same_variables() -> None:
    args = cli.parse(["demo"], {})
    assert (args.drain_delay, args.shutdown_grace, args.config_dir) == (0.0, 2.0, None)
    assert cli.parse(["demo"], {"TRIO_BRIDGE_DRAIN_DELAY": "1s"}).drain_delay == 1.0


def test_a_database_url_flag_beats_the_other_forms_variable(tmp_path: Path) -> None:
    env = {"TRIO_BRIDGE_DATABASE_URL_FILE": str(tmp_path / "missing")}
    args = cli.parse(["clients", "list", "--database-url", "postgresql://h/db"], env)
    assert args.database_url == "postgresql://h/db" and args.database_url_file is None


def test_a_required_option_may_come_from_its_variable(capsys) -> None:
    env = {"TRIO_BRIDGE_TYPE": "openai", "TRIO_BRIDGE_BASE_URL": "https://a/v1"}
    args = cli.parse(["providers", "create", "a"], env)
    assert (args.type, args.base_url) == ("openai", "https://a/v1")
    err = parse_fails(["providers", "create", "a"], {}, capsys)
    assert "trio-bridge providers create: error: --type is required" in err


# -- #11: every option shows help, default and variable ------------------------------------


def _leaves(parser: argparse.ArgumentParser):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser
    for sub in subs:
        for child in sub.choices.values():
            yield from _leaves(child)


def test_every_option_of_every_command_shows_help_default_and_variable() -> None:
    leaves = list(_leaves(cli.build_parser()))
    assert len(leaves) >= 17  # serve, demo, check-config and the database commands
    for parser in leaves:
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            name = variable(action)
            assert f"env {name})" in text, (parser.prog, action.option_strings)
            described = action.help.split(" (")[0]
            assert described and not described.startswith(("default", "required")), (
                parser.prog,
                action.option_strings,
            )
            assert "(default: " in action.help or "(required; " in action.help


def test_serve_help_shows_each_contract_option_with_default_and_variable() -> None:
    result = run_cli("serve", "--help")
    text = " ".join(result.stdout.split())
    for option, default in [
        ("--config-dir", "config"),
        ("--listen", "127.0.0.1:8080"),
        ("--admin-listen", "127.0.0.1:9090"),
        ("--drain-delay", "5s"),
        ("--shutdown-grace", "30s"),
        ("--header-timeout", "10s"),
        ("--keepalive-timeout", "75s"),
        ("--max-connections", "10000"),
        ("--proxy-listen", "none"),
    ]:
        var = "TRIO_BRIDGE_" + option[2:].upper().replace("-", "_")
        assert f"(default: {default}; env {var})" in text, option


def test_the_connection_serve_options_reach_serve_options() -> None:
    args = cli.parse(
        ["serve", "--header-timeout", "2s", "--proxy-listen", "127.0.0.1:8888"],
        {"TRIO_BRIDGE_MAX_CONNECTIONS": "7"},
    )
    assert (args.header_timeout, args.keepalive_timeout, args.max_connections) == (2.0, 75.0, 7)
    options = serve_options(args)
    assert (options.header_timeout, options.keepalive_timeout) == (2.0, 75.0)
    assert (options.max_connections, options.proxy_listen) == (7, "127.0.0.1:8888")


# -- #10: a listen address without a port --------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("localhost", "no port"),
        ("127.0.0.1", "no port"),
        ("[::1]", "no port"),
        ("::1:8080", "needs brackets"),
        (":8080", "no host"),
        ("localhost:http", "not a number"),
        ("localhost:70000", "not a number"),
        ("", "empty"),
    ],
)
def test_listen_addresses_that_are_not_host_port_are_refused(address: str, reason: str) -> None:
    problem = bind_problem(address)
    assert problem is not None and reason in problem


@pytest.mark.parametrize("address", ["127.0.0.1:8080", "localhost:0", "[::1]:9090", "0.0.0.0:80"])
def test_host_port_addresses_are_accepted(address: str) -> None:
    assert bind_problem(address) is None


@pytest.mark.parametrize("option", ["--listen", "--admin-listen"])
def test_listen_without_a_port_is_one_line_naming_the_address_and_exit_1(
    tmp_path: Path, option: str
) -> None:
    result = run_cli("serve", "--config-dir", str(tmp_path), option, "localhost")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on localhost ({option}): no port "
        "(expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080)"
    ]


# -- #25 and #26: one error root; the commands in one room ---------------------------------


def test_every_error_the_bridge_raises_on_purpose_has_one_root() -> None:
    from trio_bridge.commands.options import UsageError
    from trio_bridge.config.errors import ConfigError
    from trio_bridge.config.secrets import KeyResolutionError
    from trio_bridge.daemon import StartupError
    from trio_bridge.errors import TrioBridgeError
    from trio_bridge.sources.base import SourceError
    from trio_bridge.store.crud import CrudError
    from trio_bridge.store.errors import StoreError

    for error in (
        ConfigError,
        SourceError,
        StoreError,
        CrudError,
        StartupError,
        KeyResolutionError,
        UsageError,
    ):
        assert issubclass(error, TrioBridgeError), error


def _imports(path: Path) -> set[str]:
    """Absolute names of the trio_bridge modules ``path`` imports."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_cli_and_the_demo_do_not_import_each_other_and_store_does_not_import_sources() -> None:
    package = ROOT / "trio_bridge"
    assert not {"trio_bridge.commands.demo", "trio_bridge.demo"} & _imports(package / "cli.py")
    assert "trio_bridge.cli" not in _imports(package / "commands" / "demo.py")
    for path in (package / "store").glob("*.py"):
        assert not any(m.startswith("trio_bridge.sources") for m in _imports(path)), path
    assert not (package / "demo.py").exists() and not (package / "check.py").exists()


def test_every_registered_command_module_has_add_parser() -> None:
    import importlib

    for name in COMMANDS:
        assert callable(importlib.import_module(f"trio_bridge.commands.{name}").add_parser)
