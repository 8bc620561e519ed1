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

from . import metrics, tracing
from .dumps import DumpWriter
from .errors import TrioBridgeError
from .http.admin import AdminApp
from .http.app import BridgeApp
from .masking import redact_dsn
from .recording.recorder import Recorder
from .reload import FIRST_DATABASE_LOAD_TIMEOUT, Reloader
from .server import (
    HTTPServer,
    Limits,
    TCPListener,
    format_address,
    open_tcp_listeners,
    serve_connection,
)
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
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_connections: int = 10000
    proxy_listen: str | None = None  # interception proxy mode (contract section 11)
    force_polling: bool = False
    handle_signals: bool = True  # False: no signal handlers (an embedded bridge, e.g. tests)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)


class StartupError(TrioBridgeError):
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
    proxy: str | None = None  # --proxy-listen, when given


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
            environ=options.environ,
        )
        self.database = None
        if options.database_url:
            from .sources.postgres import PostgresSource

            self.database = PostgresSource(options.database_url)
        self.upstreams = UpstreamClients(options.environ)
        self.reloader = Reloader(
            self.files,
            self.database,
            self.upstreams,
            secrets_dir=options.secrets_dir,
            environ=options.environ,
        )
        self.state: BridgeState | None = None
        self._reload_send, self._reload_receive = trio.open_memory_channel[ReloadRequest](256)
        self._drain_started = False
        self._servers: list[HTTPServer] = []
        self._stop_requested = False

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
        opts = self.options
        if opts.proxy_listen and snapshot.bridge.proxy_mode is None:
            raise StartupError(
                f"--proxy-listen {opts.proxy_listen} needs bridge.proxy_mode in the config "
                "(ca_cert and ca_key; see docs/operations.md, Proxy mode)"
            )
        state = self.state = BridgeState(self.reloader)  # reads the reloader's snapshot cell
        metrics.watch_snapshot(lambda: state.current)
        async with trio.open_nursery() as root:
            await root.start(self.upstreams.run)
            state.dumps = DumpWriter()
            await root.start(state.dumps.run)
            # recording hook: the recorder's writer task and the tracer
            state.recorder = Recorder(opts.database_url, lambda: state.current.bridge.recording)
            await root.start(state.recorder.run)
            state.tracing = tracing.from_environ(opts.environ)
            await root.start(self.reloader.run, self._reload_receive)
            await root.start(self.files.watch, self._reload_send.clone())
            if self.database is not None:
                root.start_soon(self._first_database_load, state)
                root.start_soon(self._listen_database)  # never hold start-up for the database
            else:
                state.database_settled.set()
            if opts.handle_signals:
                root.start_soon(self._signals)
            limits = Limits(
                header_timeout=opts.header_timeout,
                keepalive_timeout=opts.keepalive_timeout,
                max_connections=opts.max_connections,
            )
            binds = [opts.listen, opts.admin_listen, opts.proxy_listen]
            sockets = await _open_all([b for b in binds if b])
            bridge_app = BridgeApp(state)
            self._servers = [
                HTTPServer(bridge_app, limits, name="listen"),
                HTTPServer(
                    AdminApp(state, self.request_reload, opts.admin_token), limits, name="admin"
                ),
            ]
            if opts.proxy_listen:
                self._servers.append(_proxy_server(state, bridge_app, limits))
            for server in self._servers:  # a signal that came during start-up
                if self._drain_started:
                    server.drain()
                if self._stop_requested:
                    server.stop(opts.shutdown_grace)
            async with trio.open_nursery() as servers:
                for server, bound in zip(self._servers, sockets, strict=True):
                    await servers.start(server.serve, bound)
                where = [format_address(bound[0].address) for bound in sockets]
                addresses = Addresses(*where)
                log.info(
                    "listening on %s (admin %s%s), snapshot v%d",
                    addresses.listen,
                    addresses.admin,
                    f", proxy {addresses.proxy}" if addresses.proxy else "",
                    snapshot.version,
                )
                task_status.started(addresses)
            log.info("listeners closed; exiting")
            await state.recorder.flush(opts.shutdown_grace)  # recording hook: drain the queue
            if state.tracing is not None:  # tracing hook: export the last spans
                await trio.to_thread.run_sync(state.tracing.shutdown, abandon_on_cancel=True)
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
        """Contract section 9: readiness 503 at once; keep accepting for drain_delay, every
        response saying ``Connection: close``; then stop accepting, close idle connections,
        give in-flight requests shutdown_grace; ``run`` returns as soon as the last ends."""
        if self._drain_started:
            return
        self._drain_started = True
        if self.state is not None:
            self.state.draining = True
        for server in self._servers:
            server.drain()
        await trio.sleep(self.options.drain_delay)
        self._stop_requested = True
        for server in self._servers:
            server.stop(self.options.shutdown_grace)


def _proxy_server(state: BridgeState, app: BridgeApp, limits: Limits) -> HTTPServer:
    """The ``--proxy-listen`` listener: CONNECT handling on each accepted connection, the
    requests inside an intercepted tunnel served by the bridge app on the same rules."""
    from .proxymode.tunnel import ASGIApp, ProxyConnections, TunnelLimits

    server = HTTPServer(app, limits, name="proxy")

    async def serve_tunnel(stream: trio.abc.Stream, tunnel_app: ASGIApp) -> None:
        await serve_connection(stream, tunnel_app, limits, group=server.group, scheme="https")

    connections = ProxyConnections(
        lambda: state.current,
        app,
        serve_tunnel,
        TunnelLimits(header_timeout=limits.header_timeout),
    )
    server.handler = connections.handle
    return server


async def _open_all(binds: list[str]) -> list[list[TCPListener]]:
    """Listeners for every address, or none (those already opened are closed again)."""
    opened: list[list[TCPListener]] = []
    try:
        for bind in binds:
            opened.append(await _open(bind))
    except BaseException:
        for listeners in opened:
            for listener in listeners:
                listener.socket.close()
        raise
    return opened


async def _open(bind: str) -> list[TCPListener]:
    try:
        return await open_tcp_listeners(bind)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise StartupError(f"cannot listen on {bind}: {reason}") from None
