"""Reload latency: from a change (a YAML file written, a database row committed) to the first
request that observes it (a new provider's route turning from 404 to 200)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from .rawclient import RawClient, build_request
from .targets import Target

POLL_EVERY_S = 0.002


def wait_route(target: Target, path: str, timeout: float = 10.0) -> float | None:
    """Poll ``GET path`` (keep-alive) until 200; the ``perf_counter`` time it answered."""
    request = build_request("GET", path, {"Authorization": target.auth})
    deadline = time.perf_counter() + timeout
    with RawClient(target.port) as client:
        while time.perf_counter() < deadline:
            status, _ = client.call(request)
            if status == 200:
                return time.perf_counter()
            time.sleep(POLL_EVERY_S)
    return None


def _trials(target: Target, trials: int, change: Callable[[int], tuple[str, float]]) -> dict:
    """``change(i)`` makes change i and returns (route to poll, perf_counter when made)."""
    latencies, missed = [], 0
    for i in range(trials):
        path, made = change(i)
        seen = wait_route(target, path)
        if seen is None:
            missed += 1
        else:
            latencies.append((seen - made) * 1000)
        time.sleep(0.3)  # let the reloader settle before the next change
    latencies.sort()
    return {
        "trials": trials,
        "missed": missed,
        "median_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1)
        if latencies
        else None,
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "all_ms": [round(x, 1) for x in latencies],
    }


def yaml_reload(
    target: Target,
    config_dir: Path,
    provider_yaml: Callable[[str], str],
    trials: int,
    debounce_s: float,
) -> dict:
    """Each trial writes a new file adding provider ``probe-<n>`` (atomically, as an editor or
    a ConfigMap swap would) and waits for ``/probe-<n>/v1/models`` to answer 200."""
    stamp = int(time.time()) % 100000

    def change(i: int) -> tuple[str, float]:
        name = f"probe-{stamp}-{i}"
        tmp = config_dir / f".probe-{i}.tmp"
        tmp.write_text(provider_yaml(name))
        os.replace(tmp, config_dir / f"50-probe-{i}.yaml")
        return f"/{name}/v1/models", time.perf_counter()

    out = _trials(target, trials, change)
    out["debounce_ms"] = debounce_s * 1000
    if out["median_ms"] is not None:
        out["median_minus_debounce_ms"] = round(out["median_ms"] - debounce_s * 1000, 1)
        out["max_minus_debounce_ms"] = round(out["max_ms"] - debounce_s * 1000, 1)
    for i in range(trials):
        (config_dir / f"50-probe-{i}.yaml").unlink(missing_ok=True)
    return out
