"""The root nursery: sources, reloader, listeners, signals and the drain."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

from . import metrics
from .dumps import DumpWriter
from .http.admin import AdminApp
from .http.app import BridgeApp
from .http.server import serve_app
from .masking import redact_dsn
from .reload import FIRST_DATABASE_LOAD_TIMEOUT, Reloader
from .sources.base import ReloadRequest, SourceError
from .sources.files import FileSource
from .state import BridgeState
from .upstream import UpstreamClients

log = logging.getLogger("trio_bridge.daemon")


@dataclass
class ServeOptions:
    config_dir: Path = Path("config")
    secrets_dir: Path | None = None
    database_url: str | None = None
    listen: str = "127.0.0.1:8080"
    admin_listen: str = "127.0.0.1:9090"
    admin_token: str | None = None
    drain_delay: float = 5.0
    shutdown_grace: float = 30.0
    allow_open_listen: bool = False
    force_polling: bool = False
    handle_signals: bool = True  # False: no signal handlers (an embedded bridge, e.g. tests)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)


class StartupError(Exception):
    """The daemon cannot start (invalid config dir, refused auth: none). Safe to print."""


def is_loopback(bind: str) -> bool:
    host = bind.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Addresses:
    listen: str
    admin: str


class Daemon:
    """One bridge process. ``run`` reports the bound addresses via ``task_status.started``
    and returns after a drain (``drain()`` or SIGTERM/SIGINT)."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.files = FileSource(
            options.config_dir,
            options.secrets_dir,
            force_polling=options.force_polling,
            allow_auth_none=options.allow_open_listen or is_loopback(options.listen),
        )
        self.database = None
        if options.database_url:
            from .sources.postgres import PostgresSource

            self.database = PostgresSource(options.database_url)
        self.upstreams = UpstreamClients()
        self.reloader = Reloader(
            self.files,
            self.database,
            self.upstreams,
            secrets_dir=options.secrets_dir,
            environ=options.environ,
        )
        self.state: BridgeState | None = None
        self._reload_send, self._reload_receive = trio.open_memory_channel[ReloadRequest](256)
        self._shutdown = trio.Event()
        self._drain_started = False

    def request_reload(self, request: ReloadRequest) -> None:
        try:
            self._reload_send.send_nowait(request)
        except trio.WouldBlock:
            pass  # a reload is already queued; it will re-read everything it needs

    async def run(
        self, *, task_status: trio.TaskStatus[Addresses] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            snapshot = await self.reloader.initial()
        except SourceError as exc:
            raise StartupError(str(exc)) from None
        state = self.state = BridgeState(snapshot)
        self.reloader.on_swap.append(lambda s: setattr(state, "current", s))
        metrics.watch_snapshot(lambda: state.current)
        opts = self.options
        async with trio.open_nursery() as root:
            await root.start(self.upstreams.run)
            state.dumps = DumpWriter()
            await root.start(state.dumps.run)
            await root.start(self.reloader.run, self._reload_receive)
            await root.start(self.files.watch, self._reload_send.clone())
            if self.database is not None:
                root.start_soon(self._first_database_load, state)
                root.start_soon(self._listen_database)  # never hold start-up for the database
            else:
                state.database_settled.set()
            if opts.handle_signals:
                root.start_soon(self._signals)
            bridge_app = BridgeApp(state)
            admin_app = AdminApp(state, self.request_reload, opts.admin_token)
            async with trio.open_nursery() as servers:
                listen = await _listen(
                    servers, bridge_app, opts.listen, self._shutdown, opts.shutdown_grace
                )
                admin = await _listen(
                    servers, admin_app, opts.admin_listen, self._shutdown, opts.shutdown_grace
                )
                addresses = Addresses(_http(listen), _http(admin))
                log.info(
                    "listening on %s (admin %s), snapshot v%d",
                    addresses.listen,
                    addresses.admin,
                    snapshot.version,
                )
                task_status.started(addresses)
            log.info("listeners closed; exiting")
            root.cancel_scope.cancel()

    async def _first_database_load(self, state: BridgeState) -> None:
        assert self.database is not None
        try:
            await self.reloader.load_source(self.database, timeout=FIRST_DATABASE_LOAD_TIMEOUT)
            self.reloader.rebuild(reason="database")
        finally:
            state.database_settled.set()

    async def _listen_database(self) -> None:
        assert self.database is not None
        log.info("database source: %s", redact_dsn(self.options.database_url or ""))
        current = self.reloader

        def resync_every() -> float:
            return float(current.current.bridge.reload.resync_every) if current.current else 300.0

        await self.database.listen(self._reload_send.clone(), resync_every=resync_every)

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: full reload")
                    self.request_reload(ReloadRequest("signal", full=True))
                else:
                    log.info("%s: draining", signal.Signals(signum).name)
                    await self.drain()

    async def drain(self) -> None:
        """Readiness 503 at once; keep accepting for drain_delay; then close the listeners and
        give in-flight requests shutdown_grace to finish."""
        if self._drain_started:
            return
        self._drain_started = True
        if self.state is not None:
            self.state.draining = True
        await trio.sleep(self.options.drain_delay)
        self._shutdown.set()


async def _listen(
    nursery: trio.Nursery, app, bind: str, shutdown: trio.Event, grace: float
) -> list[str]:
    try:
        return await nursery.start(serve_app, app, bind, shutdown, grace)
    except* OSError as group:
        exc = group.exceptions[0]
        reason = getattr(exc, "strerror", None) or exc
        raise StartupError(f"cannot listen on {bind}: {reason}") from None


def _http(binds: list[str]) -> str:
    return binds[0] if binds else ""
