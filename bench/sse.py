"""Paced SSE scenarios: added time to first chunk and inter-chunk gap against the direct call,
and the most concurrent paced streams a target holds without a stall."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .latency import _percentile
from .targets import PACE, PACED_CHUNKS, PACED_MODEL, Target

CLIENT = Path(__file__).resolve().parent / "sse_client.py"
STALL_S = 2 * PACE


def run_streams(
    target: Target, streams: int, *, ramp: float = 0.5, model: str = PACED_MODEL
) -> dict:
    """Run the SSE client in its own process; its JSON result."""
    cmd = [
        sys.executable,
        str(CLIENT),
        "--port",
        str(target.port),
        "--path",
        target.path,
        "--auth",
        target.auth,
        "--model",
        model,
        "--streams",
        str(streams),
        "--ramp",
        str(ramp),
        "--timeout",
        "60",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        raise RuntimeError(f"sse client failed: {out.stderr[-800:]}")
    return json.loads(out.stdout)


def _summary(runs: list[dict]) -> dict:
    ttfb, gaps, errors = [], [], 0
    for run in runs:
        for r in run["results"]:
            if "error" in r or r.get("ttfb_ms") is None:
                errors += 1
                continue
            ttfb.append(r["ttfb_ms"])
            gaps.extend(r["gaps_ms"])
    ttfb.sort()
    gaps.sort()
    return {
        "streams": len(ttfb) + errors,
        "errors": errors,
        "ttfb_p50_ms": round(_percentile(ttfb, 50), 3),
        "ttfb_p99_ms": round(_percentile(ttfb, 99), 3),
        "gap_p50_ms": round(_percentile(gaps, 50), 3),
        "gap_p99_ms": round(_percentile(gaps, 99), 3),
        "gap_max_ms": round(gaps[-1], 3) if gaps else None,
    }


def added_stream_times(direct: Target, target: Target, *, streams: int, waves: int) -> dict:
    """Waves of ``streams`` concurrent paced streams, alternating direct and target."""
    d_runs, t_runs = [], []
    for _ in range(waves):
        d_runs.append(run_streams(direct, streams))
        t_runs.append(run_streams(target, streams))
    d, t = _summary(d_runs), _summary(t_runs)
    return {
        "concurrent_streams": streams,
        "waves": waves,
        "direct": d,
        "target": t,
        "added_ttfb_p50_ms": round(t["ttfb_p50_ms"] - d["ttfb_p50_ms"], 3),
        "added_ttfb_p99_ms": round(t["ttfb_p99_ms"] - d["ttfb_p99_ms"], 3),
        "added_gap_p99_ms": round(t["gap_p99_ms"] - d["gap_p99_ms"], 3),
    }


def _level(target: Target, streams: int) -> dict:
    cpu0 = target.proc.cpu_s() if target.proc else None
    run = run_streams(target, streams)
    cpu = target.proc.cpu_s() - cpu0 if target.proc and cpu0 is not None else None
    s = _summary([run])
    chunks = sum(r.get("chunks", 0) for r in run["results"])
    stalled = sum(
        1
        for r in run["results"]
        if "error" in r or any(g > STALL_S * 1000 for g in r["gaps_ms"]) or r["chunks"] < 1
    )
    short = sum(1 for r in run["results"] if "error" not in r and r["chunks"] < PACED_CHUNKS // 2)
    return {
        "streams": streams,
        "stalled_streams": stalled,
        "errors": s["errors"],
        "gap_p99_ms": s["gap_p99_ms"],
        "gap_max_ms": s["gap_max_ms"],
        "ttfb_p99_ms": s["ttfb_p99_ms"],
        "coalesced_streams": short,
        "cpu_us_per_chunk": round(cpu * 1e6 / (streams * PACED_CHUNKS), 1) if cpu else None,
        "received_reads": chunks,
        "ok": stalled == 0 and s["errors"] == 0,
    }


def max_held_streams(target: Target, levels: list[int], direct: Target | None = None) -> dict:
    """Climb ``levels`` until a level stalls (a gap over twice the pacing) or errors; the
    most held is the last clean level. When a level fails, the same level is run direct to
    tell a target's limit from the measuring setup's."""
    tried, held = [], 0
    for level in levels:
        result = _level(target, level)
        tried.append(result)
        if not result["ok"]:
            break
        held = level
    out = {
        "max_held": held,
        "levels": tried,
        "stall_threshold_ms": STALL_S * 1000,
        "all_levels_held": held == levels[-1],
    }
    if direct is not None and tried and not tried[-1]["ok"]:
        out["direct_at_failing_level"] = _level(direct, tried[-1]["streams"])
    return out
