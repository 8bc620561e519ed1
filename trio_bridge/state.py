"""The one mutable cell: the current snapshot, plus the daemon's lifecycle flags."""

from __future__ import annotations

import trio

from .dumps import DumpWriter
from .snapshot import Snapshot


class BridgeState:
    """``current`` is replaced whole (never mutated); requests read it once at their start."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot
        self.draining = False
        self.database_settled = trio.Event()  # set once the first database load attempt ended
        self.inflight = 0
        self.dumps: DumpWriter | None = None  # set by the daemon; used when api_dump_dir is set
