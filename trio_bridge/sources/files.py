"""The config dir as a source: loading it, and watching it (and every key file's directory)."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import trio
import watchfiles

from ..config.errors import ConfigError
from ..config.loader import load_config_dir
from ..config.model import KeyRef
from ..config.secrets import key_file_path
from .base import ReloadRequest, SourceContents, SourceError
from .resolve import provider_references, resolve_references

log = logging.getLogger("trio_bridge.sources.files")


def _file_digest(path: Path) -> bytes:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError as exc:
        return f"unreadable:{type(exc).__name__}".encode()


class FileSource:
    """Loads the config dir and resolves every key reference in it (in a worker thread:
    key files are read there, never on the event loop); ``watch`` pokes the reload channel
    when a watched dir changes. ``env:`` references read ``environ`` (default: the process
    environment)."""

    name = "files"

    def __init__(
        self,
        config_dir: Path,
        secrets_dir: Path | None,
        *,
        force_polling: bool = False,
        allow_auth_none: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.allow_auth_none = allow_auth_none
        self.config_dir = config_dir
        self.secrets_dir = secrets_dir
        self.force_polling = force_polling
        self._dirs: frozenset[Path] = frozenset({config_dir})
        self._dirs_changed = trio.Event()

    def load_sync(self) -> SourceContents:
        """The config dir's contents with every key reference resolved (blocking I/O)."""
        try:
            loaded = load_config_dir(self.config_dir)
        except ConfigError as exc:
            raise SourceError(str(exc)) from None
        if loaded.bridge is not None and loaded.bridge.auth == "none" and not self.allow_auth_none:
            raise SourceError(
                "bridge.auth: none is refused on a non-loopback --listen "
                "(use --allow-open-listen to accept it)"
            )
        dirs = {self.config_dir}
        digest = hashlib.sha256(loaded.digest.encode())
        all_refs: list[KeyRef] = []
        if loaded.bridge is not None and loaded.bridge.proxy_mode is not None:
            all_refs += [loaded.bridge.proxy_mode.ca_cert, loaded.bridge.proxy_mode.ca_key]
        for provider in loaded.providers:
            all_refs += provider_references(provider)
        for ref in all_refs:
            path = key_file_path(ref, self.secrets_dir)
            if path is not None:
                dirs.add(path.parent)
                digest.update(_file_digest(path))
        return SourceContents(
            providers=loaded.providers,
            clients=loaded.clients,
            bridge=loaded.bridge,
            origins=loaded.origins,
            watch_dirs=tuple(sorted(dirs)),
            digest=digest.hexdigest(),
            secrets=resolve_references(all_refs, self.secrets_dir, self.environ),
        )

    async def load(self) -> SourceContents:
        # A stalled mount must not hold a reload past its deadline: abandon the thread.
        contents = await trio.to_thread.run_sync(self.load_sync, abandon_on_cancel=True)
        self.watch_dirs(contents.watch_dirs)
        return contents

    def watch_dirs(self, dirs: Iterable[Path]) -> None:
        """Watch exactly these directories from now on (restarts the watch if they changed)."""
        new = frozenset(dirs) | {self.config_dir}
        if new != self._dirs:
            self._dirs = new
            self._dirs_changed.set()

    async def watch(
        self,
        send: trio.MemorySendChannel[ReloadRequest],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Send ``ReloadRequest("files")`` for every batch of changes, forever.

        Directories are watched non-recursively (a Kubernetes ``..data`` swap shows up as
        changes in the directory); a directory that does not exist yet is retried.
        """
        started = False
        while True:
            self._dirs_changed = trio.Event()
            existing = [str(d) for d in sorted(self._dirs) if d.is_dir()]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._restart_on_change, nursery.cancel_scope)
                if not started:
                    task_status.started()
                    started = True
                if existing:
                    await self._watch_once(existing, send)
                else:
                    await trio.sleep(1.0)
                nursery.cancel_scope.cancel()

    async def _restart_on_change(self, scope: trio.CancelScope) -> None:
        await self._dirs_changed.wait()
        scope.cancel()

    async def _watch_once(
        self, dirs: list[str], send: trio.MemorySendChannel[ReloadRequest]
    ) -> None:
        try:
            async for _changes in watchfiles.awatch(
                *dirs,
                recursive=False,
                debounce=50,
                step=20,
                rust_timeout=200,
                force_polling=self.force_polling,
                poll_delay_ms=100,
                ignore_permission_denied=True,
                watch_filter=None,
            ):
                await send.send(ReloadRequest(self.name))
        except (FileNotFoundError, OSError, RuntimeError) as exc:
            log.warning("watching the config dir failed (%s); retrying", type(exc).__name__)
            await trio.sleep(1.0)
