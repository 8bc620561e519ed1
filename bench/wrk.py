"""Closed-loop load with wrk (C, epoll): POSTs the chat body at a fixed concurrency."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from .targets import Target

LUA = Path(__file__).resolve().parent / "post.lua"
INSTALL_HINT = "apt-get update && apt-get install -y wrk"


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(f"wrk is not installed; install it with:\n    {INSTALL_HINT}")
    return path


@dataclass
class LoadResult:
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx + socket errors (connect, read, write, timeout)
    requests: int
    cpu_ms_per_req: float | None = None  # CPU of the target's process tree per request

    def as_dict(self) -> dict:
        return asdict(self)


def run_wrk(target: Target, body_file: Path, concurrency: int, seconds: float) -> LoadResult:
    """One closed-loop run: ``concurrency`` connections, one wrk thread (it outruns every
    target here; the mock's ceiling shows it)."""
    cmd = [
        require_wrk(),
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        target.url,
    ]
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file), "BENCH_AUTH": target.auth}
    cpu0 = target.proc.cpu_s() if target.proc else None
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
    cpu = target.proc.cpu_s() - cpu0 if target.proc and cpu0 is not None else None
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary: {out.stdout[-500:]} {out.stderr[-500:]}")
    s = json.loads(line.removeprefix("BENCH_JSON "))
    errors = s["connect"] + s["read"] + s["write"] + s["status"] + s["timeout"]
    return LoadResult(
        concurrency=concurrency,
        rps=round(s["requests"] / (s["duration_us"] / 1e6), 1),
        p50_ms=round(s["p50_us"] / 1000, 3),
        p99_ms=round(s["p99_us"] / 1000, 3),
        errors=errors,
        requests=s["requests"],
        cpu_ms_per_req=round(cpu * 1000 / s["requests"], 3) if cpu and s["requests"] else None,
    )
