"""Added latency at one request at a time: rounds alternate direct and target, each with a
keep-alive raw-socket loop; the added figure is target minus direct per round, and the
reported value the median over rounds (robust to a noisy neighbour in one round)."""

from __future__ import annotations

import statistics
import time

from .rawclient import RawClient, build_request
from .targets import BODY, Target


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]


def _round(target: Target, n: int, warmup: int) -> tuple[list[float], int]:
    request = build_request("POST", target.path, target.headers(), BODY)
    times: list[float] = []
    errors = 0
    with RawClient(target.port) as client:
        for i in range(n + warmup):
            t0 = time.perf_counter()
            status, _ = client.call(request)
            dt = time.perf_counter() - t0
            if status != 200:
                errors += 1
            if i >= warmup:
                times.append(dt)
    times.sort()
    return times, errors


def added_latency(direct: Target, target: Target, *, rounds: int, n: int, warmup: int = 50) -> dict:
    """p50/p99 of the target and of the direct call per round, and the added median/p99."""
    per_round = []
    for _ in range(rounds):
        d, d_err = _round(direct, n, warmup)
        t, t_err = _round(target, n, warmup)
        per_round.append(
            {
                "direct_p50_ms": _percentile(d, 50) * 1000,
                "direct_p99_ms": _percentile(d, 99) * 1000,
                "p50_ms": _percentile(t, 50) * 1000,
                "p99_ms": _percentile(t, 99) * 1000,
                "errors": d_err + t_err,
            }
        )

    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in per_round), 3)

    added_p50 = statistics.median(r["p50_ms"] - r["direct_p50_ms"] for r in per_round)
    added_p99 = statistics.median(r["p99_ms"] - r["direct_p99_ms"] for r in per_round)
    return {
        "rounds": rounds,
        "requests_per_round": n,
        "direct_p50_ms": med("direct_p50_ms"),
        "direct_p99_ms": med("direct_p99_ms"),
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "added_p50_ms": round(added_p50, 3),
        "added_p99_ms": round(added_p99, 3),
        "errors": sum(r["errors"] for r in per_round),
    }
