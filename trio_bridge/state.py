"""The daemon's shared state: a view of the one snapshot cell, plus lifecycle flags."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import trio

from .dumps import DumpWriter
from .snapshot import Snapshot

if TYPE_CHECKING:
    from .recording.recorder import Recorder
    from .tracing import Tracing


class SnapshotCell(Protocol):
    """Where the current snapshot lives (the reloader): read-only from here."""

    @property
    def current(self) -> Snapshot | None: ...


class BridgeState:
    """``current`` reads the reloader's cell: replaced whole by the reloader only, never
    mutated; requests read it once at their start."""

    def __init__(self, cell: SnapshotCell) -> None:
        if cell.current is None:
            raise ValueError("the snapshot cell is empty: build the first snapshot first")
        self._cell = cell
        self.draining = False
        self.database_settled = trio.Event()  # set once the first database load attempt ended
        self.inflight = 0
        self.dumps: DumpWriter | None = None  # set by the daemon; used when api_dump_dir is set
        self.recorder: Recorder | None = None  # recording hook: set by the daemon
        self.tracing: Tracing | None = None  # tracing hook: set by the daemon when OTEL_* ask

    @property
    def current(self) -> Snapshot:
        snapshot = self._cell.current
        if snapshot is None:  # never: the cell is only ever replaced by a newer snapshot
            raise RuntimeError("the snapshot cell was emptied")
        return snapshot
