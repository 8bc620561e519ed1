"""The one mutable cell: the current snapshot, plus the daemon's lifecycle flags."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from .dumps import DumpWriter
from .snapshot import Snapshot

if TYPE_CHECKING:
    from .recording.recorder import Recorder
    from .tracing import Tracing


class BridgeState:
    """``current`` is replaced whole (never mutated); requests read it once at their start."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot
        self.draining = False
        self.database_settled = trio.Event()  # set once the first database load attempt ended
        self.inflight = 0
        self.dumps: DumpWriter | None = None  # set by the daemon; used when api_dump_dir is set
        self.recorder: Recorder | None = None  # recording hook: set by the daemon
        self.tracing: Tracing | None = None  # tracing hook: set by the daemon when OTEL_* ask
