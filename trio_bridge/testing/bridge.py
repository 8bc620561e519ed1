"""``open_bridge``: a whole bridge inside the caller's trio run, for users' test suites.

::

    async with open_bridge({"bridge": {"auth": "none"}, "providers": [...]}) as bridge:
        client = openai.AsyncOpenAI(base_url=bridge.base_url("openai"), api_key="unused")
        ...
        await bridge.reconfigure(new_config)   # returns once the new snapshot serves

Guarantees:

- It runs the same :class:`~trio_bridge.daemon.Daemon` that ``trio-bridge serve`` runs
  (reloader, file watcher, database source, both listeners), in a nursery of the caller's
  trio run, so every timer (cooldowns, breakers, backoff, debounce, timeouts) reads the
  caller's clock: ``trio.testing.MockClock.jump()`` moves them.
- Listeners bind ephemeral ports on 127.0.0.1; nothing fixed, nothing shared, so any
  number of bridges (in one test or in parallel test processes) are independent.
- The config (and secrets) live in a temporary directory the bridge owns; leaving the
  ``async with`` stops the bridge (cancelling requests still in flight), closes its
  sockets and upstream clients and removes that directory.
- No signal handler is installed and no process-wide state is changed, except the
  Prometheus registry, which is one per process (see docs/testing.md).
- ``env:`` key references resolve against ``environ`` (empty by default), never against
  the test process's environment unless you pass ``environ=os.environ``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import trio
import trio.testing
import yaml

from ..daemon import Addresses, Daemon, ServeOptions, StartupError
from ..snapshot import Snapshot

__all__ = ["BridgeConfigError", "BridgeHandle", "open_bridge"]

# The file ``open_bridge`` and ``reconfigure`` write the config to.
CONFIG_FILE = "bridge.yaml"
# The source name of the marker request that tells a caller its reload was done.

Config = Mapping[str, Any] | str


class BridgeConfigError(Exception):
    """The config failed to load (syntax, schema, ``auth: none`` refused). From
    ``open_bridge``: the bridge did not start (``serve`` would exit 1). From
    ``reconfigure`` and friends: the bridge keeps serving the last good snapshot, as
    ``serve`` does. The message names the file and the JSON path, never a value."""


def _yaml_text(config: Config) -> str:
    if isinstance(config, str):
        return textwrap.dedent(config)
    if isinstance(config, Mapping):
        return yaml.safe_dump(_plain(config), sort_keys=False)
    raise TypeError(f"config must be a mapping or YAML text, not {type(config).__name__}")


def _plain(value: Any) -> Any:
    """Mappings and sequences made into dicts and lists, so ``safe_dump`` accepts them."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _inside(directory: Path, name: str) -> Path:
    """``directory / name``, refusing absolute names and ``..`` (a key-file rule too)."""
    rel = PurePosixPath(name)
    if not name or rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"{name!r}: expected a relative path without '..'")
    return directory.joinpath(*rel.parts)


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` atomically (a dot-named temp file first: the loader ignores those)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


class BridgeHandle:
    """A running bridge (yielded by :func:`open_bridge`)."""

    def __init__(
        self,
        daemon: Daemon,
        addresses: Addresses,
        config_dir: Path,
        secrets_dir: Path,
        stopped: trio.Event,
    ) -> None:
        #: The daemon itself, for what the handle does not cover (not a stable API).
        self.daemon = daemon
        #: ``http://127.0.0.1:PORT`` of the bridge's listener (no trailing slash).
        self.url = addresses.listen
        #: ``http://127.0.0.1:PORT`` of the admin listener (``/metrics``, ``/-/snapshot``).
        self.admin_url = addresses.admin
        #: The config dir the bridge watches (``bridge.yaml`` plus ``write_config`` files).
        self.config_dir = config_dir
        #: The ``--secrets-dir``: ``{file: NAME}`` key references resolve here.
        self.secrets_dir = secrets_dir
        self._stopped = stopped

    # --- addresses --------------------------------------------------------------------------

    def base_url(self, provider: str) -> str:
        """What an SDK takes as ``base_url`` for ``provider``: ``{url}/{name}/v1`` for an
        ``openai`` provider (OpenAI SDK), ``{url}/{name}`` otherwise (Anthropic SDK;
        Copilot clients). KeyError when the current snapshot has no such provider."""
        p = self._current().providers.get(provider)
        if p is None:
            known = ", ".join(sorted(self._current().providers)) or "none"
            raise KeyError(f"no provider {provider!r} in the current snapshot (known: {known})")
        suffix = "/v1" if p.type == "openai" else ""
        return f"{self.url}/{provider}{suffix}"

    # --- state ------------------------------------------------------------------------------

    @property
    def snapshot(self) -> dict[str, Any]:
        """The current snapshot as ``GET /-/snapshot`` shows it (masked key hints, key
        states on the caller's clock, no secret)."""
        from ..http.admin import snapshot_document

        return snapshot_document(self._current(), trio.current_time())

    @property
    def version(self) -> int:
        """The version of the snapshot in service (each swap adds one)."""
        return self._current().version

    def provider(self, name: str) -> dict[str, Any]:
        """One provider's entry of :attr:`snapshot` (``status``, ``error``, ``keys``, ...)."""
        for entry in self.snapshot["providers"]:
            if entry["name"] == name:
                found: dict[str, Any] = entry
                return found
        raise KeyError(f"no provider {name!r} in the current snapshot")

    def _current(self) -> Snapshot:
        state = self.daemon.state
        if state is None:  # pragma: no cover - the handle exists only after start-up
            raise RuntimeError("the bridge is not running")
        return state.current

    # --- changes ----------------------------------------------------------------------------

    async def reconfigure(self, config: Config) -> dict[str, Any]:
        """Make ``config`` the whole config dir (``bridge.yaml``; files added with
        ``write_config`` are removed), then return the snapshot document once the bridge
        serves it. Raises :class:`BridgeConfigError` when it fails to load (the previous
        snapshot keeps serving)."""
        text = _yaml_text(config).encode()
        for path in self.config_dir.iterdir():
            if path.name != CONFIG_FILE and path.suffix in (".yaml", ".yml"):
                path.unlink()
        _replace(self.config_dir / CONFIG_FILE, text)
        return await self._reloaded()

    async def write_config(self, name: str, config: Config | None) -> dict[str, Any]:
        """Write (``None``: delete) one file of the config dir, e.g. ``"20-extra.yaml"``
        (files are merged in name order), and return once the result serves."""
        path = _inside(self.config_dir, name)
        if config is None:
            path.unlink(missing_ok=True)
        else:
            _replace(path, _yaml_text(config).encode())
        return await self._reloaded()

    async def write_secret(self, name: str, value: str | bytes | None) -> dict[str, Any]:
        """Write (``None``: delete) a key file under :attr:`secrets_dir` (a key rotation,
        say) and return once the result serves."""
        path = _inside(self.secrets_dir, name)
        if value is None:
            path.unlink(missing_ok=True)
        else:
            _replace(path, _bytes(value))
        return await self._reloaded()

    async def reload(self) -> dict[str, Any]:
        """A full reload (as ``POST /-/reload`` or SIGHUP: every source re-read, the
        database included); returns once it is done."""
        return await self._reloaded(full=True)

    async def _reloaded(self, *, full: bool = False) -> dict[str, Any]:
        """Re-read the config dir (every source when ``full``) through the reloader itself,
        bypassing the channel's debounce: the reload starts after the caller's writes, so
        once it returns everything written before is loaded and, if it changed anything,
        swapped in. No timer is involved, so a frozen MockClock never makes it wait."""
        reloader = self.daemon.reloader
        await reloader.reload({self.daemon.files.name}, full=full, reason="testing")
        document = self.snapshot
        for source in document["sources"]:
            if source["name"] == self.daemon.files.name and source["error"]:
                raise BridgeConfigError(source["error"])
        return document

    async def drain(self) -> None:
        """Stop as on SIGTERM: ``/readyz`` 503 at once, listeners open for ``drain_delay``,
        in-flight requests get ``shutdown_grace``; returns once the daemon has exited."""
        await self.daemon.drain()
        await self._stopped.wait()


@asynccontextmanager
async def open_bridge(
    config: Config,
    *,
    secrets: Mapping[str, str | bytes] | None = None,
    database_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    admin_token: str | None = None,
    drain_delay: float = 0.0,
    shutdown_grace: float = 5.0,
) -> AsyncIterator[BridgeHandle]:
    """Run a bridge serving ``config`` (a mapping, or YAML text, as one file of the config
    dir) until the block ends.

    ``secrets`` maps paths under the secrets dir to key file contents (``{file: NAME}``
    references); ``database_url`` adds the Postgres source (the block starts once its first
    load attempt ended); ``environ`` is what ``env:`` references read. A config that fails
    to load raises :class:`BridgeConfigError` (where ``serve`` exits 1); a provider that
    fails to build does not (its status is ``error`` in :attr:`BridgeHandle.snapshot`).
    """
    root = Path(tempfile.mkdtemp(prefix="trio-bridge-"))
    try:
        config_dir, secrets_dir = root / "config", root / "secrets"
        config_dir.mkdir()
        secrets_dir.mkdir()
        _replace(config_dir / CONFIG_FILE, _yaml_text(config).encode())
        for name, value in (secrets or {}).items():
            _replace(_inside(secrets_dir, name), _bytes(value))
        daemon = Daemon(
            ServeOptions(
                config_dir=config_dir,
                secrets_dir=secrets_dir,
                database_url=database_url,
                listen="127.0.0.1:0",
                admin_listen="127.0.0.1:0",
                admin_token=admin_token,
                drain_delay=drain_delay,
                shutdown_grace=shutdown_grace,
                handle_signals=False,
                environ=dict(environ or {}),
            )
        )
        failure: StartupError | None = None
        stopped = trio.Event()

        async def run(task_status: trio.TaskStatus[Addresses]) -> None:
            try:
                await daemon.run(task_status=task_status)
            finally:
                stopped.set()

        body_error: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                try:
                    addresses = await nursery.start(run)
                except BaseException as exc:  # noqa: BLE001 - re-raised unless a StartupError
                    failure = _startup_error(exc)
                    if failure is None:
                        raise
                if failure is None:
                    handle = BridgeHandle(daemon, addresses, config_dir, secrets_dir, stopped)
                    assert daemon.state is not None
                    await daemon.state.database_settled.wait()
                    try:
                        yield handle
                    except BaseException as exc:  # noqa: BLE001 - re-raised at once
                        if not isinstance(exc, trio.Cancelled):
                            body_error = exc  # pytest.fail() and skip() are BaseExceptions
                        raise
                    finally:
                        nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The caller's own exception, alone: raise it as it was raised in the block, so
            # ``pytest.raises`` around the block sees it (the daemon ended without error).
            if body_error is not None and list(group.exceptions) == [body_error]:
                raise body_error  # noqa: B904 - the group is only the nursery's wrapping
            raise
        if failure is not None:
            raise BridgeConfigError(str(failure)) from None
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _startup_error(exc: BaseException) -> StartupError | None:
    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _startup_error(inner)
            if found is not None:
                return found
    return None
