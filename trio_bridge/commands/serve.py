"""``trio-bridge serve``: run the daemon until SIGTERM/SIGINT (contract section 2)."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import TrioBridgeError
from .options import Subparsers, duration, positive_int
from .store import CliError, database_options
from .store import database_url as resolve_database_url

LISTEN = "127.0.0.1:8080"
ADMIN_LISTEN = "127.0.0.1:9090"
EXAMPLE = "expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080"


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the bridge until SIGTERM/SIGINT",
        description="Run the bridge until SIGTERM/SIGINT; SIGHUP forces a full reload.",
        parents=[database_options()],
    )
    add_config_options(parser)
    add_serve_options(parser)
    parser.set_defaults(func=run)


def add_config_options(
    parser: argparse.ArgumentParser,
    *,
    config_dir: Path | None = Path("config"),
    config_dir_help: str = "directory whose *.yaml / *.yml files make up the config",
) -> None:
    parser.add_argument(
        "--config-dir", type=Path, metavar="DIR", default=config_dir, help=config_dir_help
    )
    parser.add_argument(
        "--secrets-dir",
        type=Path,
        metavar="DIR",
        default=None,
        help="directory that key references ({file: ...}) are relative to",
    )


def add_serve_options(
    parser: argparse.ArgumentParser, *, drain_delay: str = "5s", shutdown_grace: str = "30s"
) -> None:
    """The daemon's options, shared by ``serve`` and ``demo``."""
    parser.add_argument(
        "--listen", metavar="HOST:PORT", default=LISTEN, help="address the bridge serves on"
    )
    parser.add_argument(
        "--admin-listen",
        metavar="HOST:PORT",
        default=ADMIN_LISTEN,
        help="address of /metrics, /healthz, /readyz and /-/*",
    )
    parser.add_argument(
        "--proxy-listen",
        metavar="HOST:PORT",
        default=None,
        help="address of the interception (CONNECT) proxy; needs bridge.proxy_mode",
    )
    parser.add_argument(
        "--admin-token",
        metavar="TOKEN",
        default=None,
        help="when set, /-/* on the admin listener needs Authorization: Bearer TOKEN",
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="log line format"
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="least severe level logged",
    )
    parser.add_argument(
        "--drain-delay",
        type=duration,
        metavar="DURATION",
        default=drain_delay,
        help="on SIGTERM: /readyz answers 503 and listeners keep accepting this long",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=duration,
        metavar="DURATION",
        default=shutdown_grace,
        help="then: how long requests in flight get to finish",
    )
    parser.add_argument(
        "--header-timeout",
        type=duration,
        metavar="DURATION",
        default="10s",
        help="a client must send a whole request head within this",
    )
    parser.add_argument(
        "--keepalive-timeout",
        type=duration,
        metavar="DURATION",
        default="75s",
        help="an idle keep-alive connection is closed after this",
    )
    parser.add_argument(
        "--max-connections",
        type=positive_int,
        metavar="N",
        default=10000,
        help="client connections open at once, per listener",
    )
    parser.add_argument(
        "--allow-open-listen",
        action="store_true",
        help="accept bridge.auth: none on a non-loopback --listen",
    )
    parser.add_argument(
        "--force-polling",
        action="store_true",
        help="poll the config dir (for mounts without inotify)",
    )


def bind_problem(address: str) -> str | None:
    """Why ``address`` is not a HOST:PORT to listen on, or None when it is one."""
    if not address.strip():
        return f"empty address ({EXAMPLE})"
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep:
            return f"unclosed [ ({EXAMPLE})"
        if not rest.startswith(":"):
            return f"no port ({EXAMPLE})"
        port = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"not an IPv6 address inside [] ({EXAMPLE})"
    else:
        host, sep, port = address.rpartition(":")
        if not sep:
            return f"no port ({EXAMPLE})"
        if not host:
            return f"no host ({EXAMPLE}; 0.0.0.0:PORT for every interface)"
        if ":" in host:
            return f"an IPv6 address needs brackets ({EXAMPLE})"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"the port is not a number from 0 to 65535 ({EXAMPLE})"
    return None


def check_addresses(args: argparse.Namespace) -> None:
    """Raise CliError naming the first listen address that is not HOST:PORT."""
    for option in ("listen", "admin_listen", "proxy_listen"):
        address = getattr(args, option, None)
        if address is None:
            continue
        problem = bind_problem(address)
        if problem:
            flag = "--" + option.replace("_", "-")
            raise CliError(f"cannot listen on {address} ({flag}): {problem}")


def database_url(args: argparse.Namespace) -> str | None:
    """The database URL when one is given (optional for ``serve``), else None."""
    if not (args.database_url or args.database_url_file):
        return None
    return resolve_database_url(args)


def serve_options(args: argparse.Namespace) -> Any:
    """``ServeOptions`` from parsed (and environment-resolved) arguments."""
    from ..daemon import ServeOptions

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
        header_timeout=args.header_timeout,
        keepalive_timeout=args.keepalive_timeout,
        max_connections=args.max_connections,
        proxy_listen=args.proxy_listen,
    )


def run(args: argparse.Namespace) -> int:
    import trio

    from ..daemon import Daemon
    from ..logsetup import configure_logging

    try:
        check_addresses(args)
        options = serve_options(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    configure_logging(args.log_format, args.log_level)
    daemon = Daemon(options)
    return run_until_stopped(lambda: trio.run(daemon.run))


def run_until_stopped(run: Callable[[], object]) -> int:
    """Run the daemon: 0 after a drain, 1 when it cannot start, 130 on a second Ctrl-C.

    A start-up failure (any :class:`TrioBridgeError`, e.g. ``StartupError``) is printed
    as one line, however deep in the nursery tree it was raised.
    """
    try:
        run()
    except BaseException as exc:  # noqa: BLE001 - unwrapped below, re-raised if unknown
        leaves = _leaves(exc)
        expected = [e for e in leaves if isinstance(e, TrioBridgeError)]
        if expected:
            for error in expected:
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
