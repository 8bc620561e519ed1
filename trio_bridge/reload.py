"""The reloader: consumes the reload channel, coalesces bursts, loads, merges, builds, swaps."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import trio

from . import metrics
from .merge import merge
from .snapshot import (
    Resilience,
    Snapshot,
    SnapshotPlan,
    SourceStatus,
    build_snapshot,
    plan_snapshot,
)
from .sources.base import ReloadRequest, SourceContents, SourceError
from .sources.resolve import provider_references, resolve_references
from .upstream import UpstreamClient, UpstreamClients, UpstreamConfigError

log = logging.getLogger("trio_bridge.reload")

FIRST_DATABASE_LOAD_TIMEOUT = 5.0
# Every reload's load of one source ends within this (trio's clock); a database that
# stops answering mid-query is abandoned and reported, its last good rows kept.
LOAD_TIMEOUT = 10.0


class Source(Protocol):
    name: str

    async def load(self) -> SourceContents: ...


@dataclass
class _Loaded:
    contents: SourceContents | None = None
    loaded_at: float | None = None
    error: str | None = None
    lock: trio.Lock = field(default_factory=trio.Lock)


def stage_clients(
    plan: SnapshotPlan, upstreams: UpstreamClients
) -> dict[str, UpstreamClient | str]:
    """One upstream client per planned provider (the live one when unchanged, else a new one,
    staged until ``commit``), or why it cannot be made."""
    staged: dict[str, UpstreamClient | str] = {}
    for name, need in plan.upstreams.items():
        try:
            staged[name] = upstreams.client_for(name, need.limits, ca_pem=need.ca_pem)
        except UpstreamConfigError as exc:
            staged[name] = str(exc)
    return staged


def clients_of(staged: Mapping[str, UpstreamClient | str]) -> dict[str, UpstreamClient]:
    return {n: c for n, c in staged.items() if not isinstance(c, str)}


def resolve_contents(
    contents: SourceContents, secrets_dir: Path | None, environ: Mapping[str, str]
) -> SourceContents:
    """``contents`` with its key references resolved (reads key files: run it in a worker
    thread when there are any)."""
    refs = [ref for spec in contents.providers for ref in provider_references(spec)]
    return replace(contents, secrets=resolve_references(refs, secrets_dir, environ))


class Reloader:
    """Owns the snapshot lifecycle and the one cell holding the current snapshot
    (``current``, written here only). It drives ``UpstreamClients``: it has the clients a
    plan needs made, commits them on a swap, discards them otherwise. The first build
    happens in ``initial``; ``run`` then serves the channel until cancelled. A source that
    fails keeps its last good contents."""

    def __init__(
        self,
        files: Source,
        database: Source | None,
        upstreams: UpstreamClients,
        *,
        secrets_dir: Path | None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.files = files
        self.database = database
        self.upstreams = upstreams
        self.secrets_dir = secrets_dir
        self.environ = environ if environ is not None else os.environ
        self.resilience = Resilience()
        self._loaded: dict[str, _Loaded] = {files.name: _Loaded()}
        if database is not None:
            self._loaded[database.name] = _Loaded()
        self._version = 0
        self._current: Snapshot | None = None
        self.on_swap: list[Callable[[Snapshot], object]] = []  # run after each swap
        # run after each reload (reason, ok), swap or not
        self.on_reload: list[Callable[[str, bool], object]] = []
        self.builds = 0  # snapshots built by reloads (not counting start-up)
        self.load_timeout = LOAD_TIMEOUT

    @property
    def current(self) -> Snapshot | None:
        """The snapshot in service (None before the first build). Replaced whole, never
        mutated; only :meth:`rebuild` writes it."""
        return self._current

    @property
    def debounce(self) -> float:
        return float(self._current.bridge.reload.debounce) if self._current else 0.25

    async def load_source(self, source: Source, *, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - bounds one phase inside
        """Load one source; on failure keep its last contents and record the error. Key
        references a source did not resolve itself are resolved here, in a worker thread."""
        state = self._loaded[source.name]
        try:
            with trio.fail_after(float("inf") if timeout is None else timeout):
                contents = await source.load()
                if contents.secrets is None:
                    contents = await self._resolve(contents)
        except SourceError as exc:
            state.error = str(exc)
            log.warning("source %s failed to load: %s", source.name, exc)
            return False
        except trio.TooSlowError:
            state.error = f"load timed out after {timeout:g}s"
            log.warning("source %s failed to load: %s", source.name, state.error)
            return False
        state.contents, state.loaded_at, state.error = contents, time.time(), None
        return True

    async def _resolve(self, contents: SourceContents) -> SourceContents:
        """Resolve the key references a source left unresolved: key files in a worker
        thread; without any, at once (``env:`` and ``value:`` need no I/O)."""
        if any(ref.file for spec in contents.providers for ref in provider_references(spec)):
            return await trio.to_thread.run_sync(
                resolve_contents, contents, self.secrets_dir, self.environ, abandon_on_cancel=True
            )
        return resolve_contents(contents, self.secrets_dir, self.environ)

    async def initial(self) -> Snapshot:
        """The first snapshot, from the files source alone (which must load); the database's
        first load runs beside the listeners (see the daemon)."""
        if not await self.load_source(self.files):
            raise SourceError(self._loaded[self.files.name].error or "config dir failed to load")
        snapshot = self.rebuild(reason="start", force=True)
        assert snapshot is not None
        metrics.record_reload("start", True)
        return snapshot

    def rebuild(self, *, reason: str, force: bool = False) -> Snapshot | None:
        """Merge the sources' last good contents and swap if anything changed."""
        live = {source.name: getattr(source, "connection", None) for source in self._sources()}
        sources = tuple(
            SourceStatus(name, s.loaded_at, s.error, live.get(name))
            for name, s in self._loaded.items()
        )
        db = self._loaded[self.database.name].contents if self.database else None
        plan = plan_snapshot(merge(db, self._loaded[self.files.name].contents, sources))
        previous = self._current
        if not force and previous is not None and plan.fingerprint == previous.fingerprint:
            return None
        staged = stage_clients(plan, self.upstreams)
        try:
            snapshot = build_snapshot(
                plan, staged, version=self._version + 1, resilience=self.resilience
            )
        except BaseException:
            self.upstreams.discard(clients_of(staged))
            raise
        self._version += 1
        self.upstreams.commit(clients_of(staged))
        self._current = snapshot
        metrics.record_swap(snapshot)
        for hook in self.on_swap:
            hook(snapshot)
        errors = [p.name for p in snapshot.providers.values() if p.status == "error"]
        for name in errors:  # the reason, once per provider while it stays the same
            provider = snapshot.providers[name]
            before = previous.providers.get(name) if previous is not None else None
            if before is None or (before.status, before.error) != ("error", provider.error):
                log.warning("provider %s failed to build: %s", name, provider.error)
        log.info(
            "snapshot v%d swapped in (%s): %d providers, %d with errors%s",
            snapshot.version,
            reason,
            len(snapshot.providers),
            len(errors),
            f" ({', '.join(errors)})" if errors else "",
        )
        return snapshot

    def _sources(self) -> list[Source]:
        return [self.files] + ([self.database] if self.database else [])

    async def reload(self, names: set[str], *, full: bool, reason: str) -> None:
        """Re-read the named sources (all when ``full``) one beside the other, each under
        ``load_timeout``; rebuild as each one arrives unless it reports the same content
        digest and error as before (a no-op event). Returns when all have arrived."""
        wanted = [s for s in self._sources() if full or s.name in names]
        results: list[bool] = []
        async with trio.open_nursery() as nursery:
            for source in wanted:
                nursery.start_soon(self._reload_one, source, full, reason, results)
        ok = all(results)
        metrics.record_reload(reason, ok)
        for hook in self.on_reload:
            hook(reason, ok)

    async def _reload_one(
        self, source: Source, full: bool, reason: str, results: list[bool]
    ) -> None:
        state = self._loaded[source.name]
        async with state.lock:  # one load of a source at a time; a later one re-reads
            before = (state.contents.digest if state.contents else None, state.error)
            ok = await self.load_source(source, timeout=self.load_timeout)
            after = (state.contents.digest if state.contents else None, state.error)
            results.append(ok)
            if full or after != before or after[0] is None:
                self.builds += 1
                try:
                    self.rebuild(reason=reason)
                except Exception:  # a bug in a build must not take the bridge down
                    log.exception("reload (%s) failed; keeping snapshot", reason)
                    results.append(False)

    async def run(
        self,
        receive: trio.MemoryReceiveChannel[ReloadRequest],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve the channel: after the first request, gather more for ``debounce`` seconds
        (trio's clock), then start one reload covering all of them. Reloads run beside
        each other: a source that is slow to answer never holds back another's change."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            async for first in receive:
                names, full = {first.source}, first.full
                with trio.move_on_after(self.debounce):
                    async for more in receive:
                        names.add(more.source)
                        full = full or more.full
                nursery.start_soon(self._reload_logged, names, full)

    async def _reload_logged(self, names: set[str], full: bool) -> None:
        reason = "+".join(sorted(names))
        try:
            await self.reload(names, full=full, reason=reason)
        except Exception:  # a bug in a build must not take the bridge down
            log.exception("reload (%s) failed; keeping snapshot", reason)
            metrics.record_reload(reason, False)
