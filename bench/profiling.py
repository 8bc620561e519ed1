"""Sampling profile of a running process with py-spy (from a venv of its own), summarised.

py-spy is installed into ``bench/.tools-venv`` on first use (never into the project venv).
``summarise`` reads py-spy's collapsed stacks and returns the top self and inclusive costs,
each marked ``ours`` when the frame is trio_bridge code.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .venvs import ensure_venv

TOOLS_VENV = Path(__file__).resolve().parent / ".tools-venv"
_ROOT = str(Path(__file__).resolve().parent.parent) + "/"  # the tree the bridge runs from
_STDLIB = f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")


def py_spy() -> Path:
    """The py-spy binary, installing it into bench/.tools-venv when missing."""
    ensure_venv(TOOLS_VENV, ["py-spy"], marker="py-spy")
    return TOOLS_VENV / "bin" / "py-spy"


def record(pid: int, seconds: float, out: Path, rate: int = 200) -> Path:
    """Sample ``pid`` for ``seconds``; collapsed stacks go to ``out``."""
    cmd = [
        str(py_spy()),
        "record",
        "-p",
        str(pid),
        "-d",
        str(max(1, int(seconds))),
        "-r",
        str(rate),
        "--format",
        "raw",
        "--threads",
        "-o",
        str(out),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return out


@dataclass(frozen=True)
class Cost:
    name: str  # function (module/file:line-less)
    where: str  # shortened file path
    share: float  # fraction of all samples
    ours: bool


def _short(path: str) -> str:
    for marker in ("site-packages/", _STDLIB, _ROOT):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _parse(line: str) -> tuple[list[tuple[str, str]], int]:
    stack, _, count = line.rpartition(" ")
    frames = []
    for raw in stack.split(";"):
        m = _FRAME.match(raw.strip())
        if m:
            frames.append((m["func"], _short(m["file"])))
        else:
            frames.append((raw.strip(), "?"))
    return frames, int(count)


def summarise(path: Path, top: int = 15) -> dict:
    """Main-thread samples only (the event loop; idle worker threads are left out): top self
    (leaf) costs, top inclusive costs of trio_bridge functions, the "own" cost of each
    trio_bridge function (samples billed to our layer, by the innermost trio_bridge frame:
    its own code plus the trio/stdlib work it asks for directly), the share by library area
    (the innermost library frame) and by layer (whose code asked for the work: the server
    side, the upstream client, ours, or trio's scheduler)."""
    self_costs: Counter[tuple[str, str]] = Counter()
    inclusive: Counter[tuple[str, str]] = Counter()
    areas: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    ours: Counter[tuple[str, str]] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        frames, count = _parse(line)
        if frames and frames[0][0].startswith("thread ("):
            if "MainThread" not in frames[0][0]:
                continue
            frames = frames[1:]
        if not frames:
            continue
        total += count
        self_costs[frames[-1]] += count
        areas[_area(frames)] += count
        layer = _layer(frames)
        layers[layer] += count
        if layer.startswith("ours"):
            ours[next(f for f in reversed(frames) if f[1].startswith("trio_bridge/"))] += count
        for frame in set(frames):
            if frame[1].startswith("trio_bridge/"):
                inclusive[frame] += count
    if not total:
        return {
            "samples": 0,
            "self": [],
            "ours_inclusive": [],
            "ours_own": [],
            "areas": {},
            "layers": {},
        }

    def costs(counter: Counter[tuple[str, str]]) -> list[dict]:
        return [
            Cost(f, w, round(n / total, 4), w.startswith("trio_bridge/")).__dict__
            for (f, w), n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "self": costs(self_costs),
        "ours_inclusive": costs(inclusive),
        "ours_own": costs(ours),
        "areas": {k: round(v / total, 4) for k, v in areas.most_common()},
        "layers": {k: round(v / total, 4) for k, v in layers.most_common()},
    }


_AREAS = (
    ("trio_bridge/server/", "trio_bridge.server (serving core)"),
    ("trio_bridge/upstream/", "trio_bridge.upstream (h11 pool)"),
    ("trio_bridge/", "trio_bridge (ours)"),
    ("hypercorn/", "hypercorn"),
    ("httpx2/", "httpx2"),
    ("httpcore", "httpx2"),
    ("h11/", "h11"),
    ("trio/", "trio"),
    ("prometheus_client/", "prometheus_client"),
    ("msgspec", "msgspec"),
    ("logging/", "logging"),
)


def _area(frames: list[tuple[str, str]]) -> str:
    """The area a sample's time is billed to: the innermost frame from a known library, so
    time inside h11 called by hypercorn counts as h11."""
    for _func, where in reversed(frames):
        for prefix, name in _AREAS:
            if where.startswith(prefix) or f"/{prefix}" in where:
                return name
    return "other (stdlib, interpreter)"


_LAYERS = (
    ("trio_bridge/cli.py", None),
    ("trio_bridge/__main__.py", None),
    ("trio_bridge/server/", "server side (trio_bridge.server)"),
    ("trio_bridge/upstream/", "upstream client (trio_bridge.upstream)"),
    ("trio_bridge/", "ours (trio_bridge)"),
    ("hypercorn/", "server side (hypercorn)"),
    ("httpx2/", "upstream client (httpx2)"),
    ("httpcore2/", "upstream client (httpx2)"),
)


def _layer(frames: list[tuple[str, str]]) -> str:
    """Whose code asked for a sample's work: the innermost frame of the serving core, the
    upstream pool, the rest of trio_bridge, or (reference stacks) hypercorn / httpx2 (h11,
    trio and stdlib time is billed to its caller); with none of them on
    the stack, trio's scheduler. The ASGI shim and CLI frames of ours wrap everything and
    do not count."""
    for _func, where in reversed(frames):
        for prefix, name in _LAYERS:
            if where.startswith(prefix):
                if name is None:
                    break
                return name
    return "trio scheduler / other"


if __name__ == "__main__":  # pragma: no cover - manual use: python -m bench.profiling FILE
    import json

    json.dump(summarise(Path(sys.argv[1])), sys.stdout, indent=1)
