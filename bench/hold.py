"""Paced-stream capacity alone: the mock upstream and the bridge, nothing else running.

    .venv/bin/python -m bench.hold 64 96 128      # stream counts to try, in order

Each level opens that many paced streams (64 chunks x 20 ms) and reports whether any gap
exceeded twice the pacing. The full ``bench/run.py`` climbs the same levels, but between
other scenarios, where leftover load on a 2-core machine can fail a level early."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from .bridge import start_bridge, write_config
from .run import start_mock
from .sse import _level


def main(levels: list[int]) -> int:
    work = Path(tempfile.mkdtemp(prefix="trio-bridge-hold-"))
    logs = work / "logs"
    logs.mkdir()
    mock = start_mock(logs)
    target, _admin = start_bridge(write_config(work, mock.port), logs)
    target.proc.wait_ready(target.port, "/readyz", timeout=30)
    try:
        for level in levels:
            r = _level(target, level)
            print(
                f"{level:4d} streams: {'held' if r['ok'] else 'STALLED'}  "
                f"stalled {r['stalled_streams']}  gap p99 {r['gap_p99_ms']} ms  "
                f"max {r['gap_max_ms']} ms  CPU {r['cpu_us_per_chunk']} us/chunk",
                flush=True,
            )
    finally:
        target.proc.stop()
        mock.proc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main([int(x) for x in sys.argv[1:]] or [32, 64, 96, 128]))
