"""The ``trio-bridge`` command line. Every option also reads ``TRIO_BRIDGE_<OPTION>``;
a flag beats the variable."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from .config.durations import parse_duration


def env(option: str, default: str | None = None) -> str | None:
    return os.environ.get("TRIO_BRIDGE_" + option.upper().replace("-", "_"), default)


def env_flag(option: str) -> bool:
    value = env(option, "") or ""
    return value.lower() in ("1", "true", "yes", "on")


def _duration(text: str) -> float:
    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="Postgres URL (env TRIO_BRIDGE_DATABASE_URL)")
    parser.add_argument(
        "--database-url-file",
        help="file holding the Postgres URL (env TRIO_BRIDGE_DATABASE_URL_FILE)",
    )


def database_url(args: argparse.Namespace) -> str | None:
    """The URL from --database-url, else --database-url-file, else their variables; None
    when none is given (the database is optional for ``serve``)."""
    if not (
        args.database_url
        or args.database_url_file
        or env("database_url")
        or env("database_url_file")
    ):
        return None
    from .store.cli import CliError
    from .store.cli import database_url as resolve

    try:
        return resolve(args)
    except CliError as exc:
        raise SystemExit(f"error: {exc}") from None


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-dir", type=Path, default=Path(env("config_dir", "config")))
    secrets = env("secrets_dir")
    parser.add_argument("--secrets-dir", type=Path, default=Path(secrets) if secrets else None)


def add_serve_options(parser: argparse.ArgumentParser, *, listen: str, admin: str) -> None:
    add_config_options(parser)
    add_database_options(parser)
    parser.add_argument("--listen", default=env("listen", listen))
    parser.add_argument("--admin-listen", default=env("admin_listen", admin))
    parser.add_argument("--admin-token", default=env("admin_token"))
    parser.add_argument("--log-format", choices=["text", "json"], default=env("log_format", "text"))
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=env("log_level", "info"),
    )
    parser.add_argument(
        "--drain-delay", type=_duration, default=_duration(env("drain_delay", "5s"))
    )
    parser.add_argument(
        "--shutdown-grace", type=_duration, default=_duration(env("shutdown_grace", "30s"))
    )
    parser.add_argument(
        "--allow-open-listen", action="store_true", default=env_flag("allow_open_listen")
    )
    parser.add_argument(
        "--force-polling",
        action="store_true",
        default=env_flag("force_polling"),
        help="poll the config dir (for mounts without inotify)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trio-bridge", description="An LLM API gateway on trio.")
    parser.add_argument("--version", action="version", version=f"trio-bridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the bridge until SIGTERM/SIGINT")
    add_serve_options(serve, listen="127.0.0.1:8080", admin="127.0.0.1:9090")
    serve.set_defaults(func=_serve)

    demo = commands.add_parser("demo", help="the bridge wired to built-in fake upstreams")
    add_serve_options(demo, listen="127.0.0.1:8080", admin="127.0.0.1:9090")
    demo.set_defaults(config_dir=None, drain_delay=0.0, shutdown_grace=2.0)
    demo.add_argument("--fake-openai-port", type=int, default=18081)
    demo.add_argument("--fake-anthropic-port", type=int, default=18082)
    demo.set_defaults(func=_demo)

    check = commands.add_parser(
        "check-config", help="validate the config dir and show the snapshot"
    )
    add_config_options(check)
    check.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    check.set_defaults(func=_check_config)

    try:
        from .store.cli import add_commands
    except ImportError:  # pragma: no cover - store not installed
        pass
    else:
        add_commands(commands, argparse.ArgumentParser(add_help=False))
    from .commands import usage as usage_command  # recording: the usage command

    usage_command.add_parser(commands)
    return parser


def _options(args: argparse.Namespace):
    from .daemon import ServeOptions

    return ServeOptions(
        config_dir=args.config_dir,
        secrets_dir=args.secrets_dir,
        database_url=database_url(args),
        listen=args.listen,
        admin_listen=args.admin_listen,
        admin_token=args.admin_token,
        drain_delay=args.drain_delay,
        shutdown_grace=args.shutdown_grace,
        allow_open_listen=args.allow_open_listen,
        force_polling=args.force_polling,
    )


def _serve(args: argparse.Namespace) -> int:
    import trio

    from .daemon import Daemon, StartupError
    from .logsetup import configure_logging

    configure_logging(args.log_format, args.log_level)
    daemon = Daemon(_options(args))
    return run_until_stopped(lambda: trio.run(daemon.run), StartupError)


def run_until_stopped(run, startup_error: type[Exception]) -> int:
    """Run the daemon: 0 after a drain, 1 when it cannot start, 130 on a second Ctrl-C."""
    try:
        run()
    except BaseException as exc:  # noqa: BLE001 - unwrapped below, re-raised if unknown
        leaves = _leaves(exc)
        startup = [e for e in leaves if isinstance(e, startup_error)]
        if startup:
            for error in startup:
                print(f"error: {error}", file=sys.stderr)
            return 1
        if leaves and all(isinstance(e, KeyboardInterrupt) for e in leaves):
            return 130  # a signal outside the daemon's handler, e.g. a second Ctrl-C
        raise
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args, _options)


def _check_config(args: argparse.Namespace) -> int:
    from .check import check_config

    return check_config(args.config_dir, args.secrets_dir, as_json=args.json)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
