"""Every metric (contract section 10), one registry, labelled children cached.

Gauges that describe the current snapshot (provider info, key pool and breaker states) are
computed at scrape time from the snapshot, so nothing on the request path maintains them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import trio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .resilience.breaker import CLOSED, HALF_OPEN, OPEN, BreakerState

if TYPE_CHECKING:
    from .snapshot import Snapshot

disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it bare
P = "trio_bridge_"
REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

requests_total = Counter(
    P + "requests_total",
    "Bridged requests by outcome",
    ["provider", "route", "model", "status"],
    registry=REGISTRY,
)
requests_inflight = Gauge(
    P + "requests_inflight", "Requests in flight", ["provider", "route"], registry=REGISTRY
)
request_duration = Histogram(
    P + "request_duration_seconds",
    "Whole request duration",
    ["provider", "route"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
time_to_first_byte = Histogram(
    P + "time_to_first_byte_seconds",
    "Time to the first response byte",
    ["provider", "route"],
    buckets=_LATENCY,
    registry=REGISTRY,
)
overhead = Histogram(
    P + "overhead_seconds",
    "Time spent in the bridge, upstream excluded",
    ["provider", "route"],
    buckets=_OVERHEAD,
    registry=REGISTRY,
)
passthrough_total = Counter(
    P + "passthrough_total",
    "Passthrough requests",
    ["provider", "route", "method", "status"],
    registry=REGISTRY,
)
tokens_total = Counter(
    P + "tokens_total",
    "Tokens reported by upstreams",
    ["provider", "model", "type"],
    registry=REGISTRY,
)
key_pool_transitions = Counter(
    P + "key_pool_transitions_total",
    "Keys entering a cooldown",
    ["provider", "reason"],
    registry=REGISTRY,
)
key_pool_exhaustions = Counter(
    P + "key_pool_exhaustions_total",
    "Requests finding no usable key",
    ["provider", "outcome"],
    registry=REGISTRY,
)
# Exposed as ``trio_bridge_key_pool_failover_attempts_total`` (Prometheus naming for a
# counter); until 0.1 it was a gauge named without ``_total`` (docs/metrics.md).
key_pool_failover = Counter(
    P + "key_pool_failover_attempts_total",
    "Requests re-sent with the next key",
    ["provider"],
    registry=REGISTRY,
)
breaker_trips = Counter(
    P + "circuit_breaker_trips_total",
    "Breakers tripping open",
    ["provider", "endpoint", "model"],
    registry=REGISTRY,
)
breaker_rejects = Counter(
    P + "circuit_breaker_rejects_total",
    "Requests refused by a breaker",
    ["provider", "endpoint", "model"],
    registry=REGISTRY,
)
retries_total = Counter(
    P + "retries_total",
    "Attempts re-sent to the same upstream (key failovers excluded)",
    ["provider", "reason"],
    registry=REGISTRY,
)
fallbacks_total = Counter(
    P + "fallbacks_total",
    "Requests passed from one provider to a fallback target",
    ["from", "to", "reason"],
    registry=REGISTRY,
)
snapshot_version = Gauge(
    P + "snapshot_version", "Version of the snapshot in service", registry=REGISTRY
)
reloads_total = Counter(
    P + "reloads_total", "Reloads by trigger and outcome", ["source", "outcome"], registry=REGISTRY
)
last_reload = Gauge(
    P + "last_reload_timestamp_seconds", "Wall time of the last reload", registry=REGISTRY
)
last_reload_success = Gauge(
    P + "last_reload_success_timestamp_seconds",
    "Wall time of the last successful reload",
    registry=REGISTRY,
)
recorder_queue_depth = Gauge(
    P + "recorder_queue_depth", "Usage records waiting to be written", registry=REGISTRY
)
recorder_dropped = Counter(
    P + "recorder_dropped_total", "Usage records dropped (queue full)", registry=REGISTRY
)
recorder_written = Counter(
    P + "recorder_written_total", "Usage records written to the database or file", registry=REGISTRY
)
recorder_records = Counter(
    P + "recorder_records_total",
    "Usage records produced (written, queued, dropped or only counted)",
    registry=REGISTRY,
)
recorder_write_errors = Counter(
    P + "recorder_write_errors_total",
    "Batches of usage records that failed to be written (and are retried)",
    registry=REGISTRY,
)
proxy_mode_connections = Counter(
    P + "proxy_mode_connections_total",
    "Connections to --proxy-listen by outcome (intercepted, passthrough, unauthenticated, ...)",
    ["outcome"],
    registry=REGISTRY,
)


_Child = TypeVar("_Child")


def cached(factory: Callable[..., _Child]) -> Callable[..., _Child]:
    """Memoise ``metric.labels(...)`` children: ~2 us saved per observation."""
    cache: dict[tuple[str, ...], _Child] = {}

    def get(*labels: str) -> _Child:
        child = cache.get(labels)
        if child is None:
            if len(cache) > 50_000:
                cache.clear()
            child = cache[labels] = factory(*labels)
        return child

    return get


requests_child = cached(requests_total.labels)
inflight_child = cached(requests_inflight.labels)
duration_child = cached(request_duration.labels)
ttfb_child = cached(time_to_first_byte.labels)
overhead_child = cached(overhead.labels)
passthrough_child = cached(passthrough_total.labels)
tokens_child = cached(tokens_total.labels)
retries_child = cached(retries_total.labels)
fallbacks_child = cached(fallbacks_total.labels)


def record_swap(snapshot: Snapshot) -> None:
    snapshot_version.set(snapshot.version)


def record_reload(reason: str, ok: bool) -> None:
    now = time.time()
    reloads_total.labels(reason, "success" if ok else "failure").inc()
    last_reload.set(now)
    if ok:
        last_reload_success.set(now)


BREAKER_GAUGE: dict[BreakerState, float] = {CLOSED: 0.0, HALF_OPEN: 0.5, OPEN: 1.0}
"""The ``circuit_breaker_state`` value of each breaker state."""


class SnapshotCollector(Collector):
    """provider_info, key_pool_state and circuit_breaker_state, read from the live snapshot.

    ``refresh`` runs in trio (it reads trio's clock); ``collect`` returns what it computed,
    so rendering can happen in a worker thread.
    """

    def __init__(self, current: Callable[[], Snapshot | None]) -> None:
        self.current = current
        self._families: list[GaugeMetricFamily] = []

    def refresh(self) -> None:
        snapshot = self.current()
        info = GaugeMetricFamily(
            P + "provider_info",
            "Providers in the current snapshot",
            labels=["provider", "type", "status", "source"],
        )
        pool = GaugeMetricFamily(
            P + "key_pool_state", "Keys per state", labels=["provider", "state"]
        )
        breaker = GaugeMetricFamily(
            P + "circuit_breaker_state",
            "0 closed, 0.5 half-open, 1 open",
            labels=["provider", "endpoint", "model"],
        )
        if snapshot is not None:
            now = trio.current_time()
            for p in snapshot.providers.values():
                info.add_metric([p.name, p.type or "", p.status, p.source], 1)
                if p.pool is not None:
                    for state, n in p.pool.counts(now).items():
                        pool.add_metric([p.name, state], n)
                if p.breakers is not None:
                    for view in p.breakers.views(now):
                        value = BREAKER_GAUGE[view.state]
                        breaker.add_metric([p.name, view.endpoint, view.model], value)
        self._families = [info, pool, breaker]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families)


_collector: SnapshotCollector | None = None


def watch_snapshot(current: Callable[[], Snapshot | None]) -> None:
    """Point the scrape-time collector at the live snapshot."""
    global _collector
    if _collector is None:
        _collector = SnapshotCollector(current)
        REGISTRY.register(_collector)
    else:
        _collector.current = current


async def render() -> bytes:
    """The exposition text; the slow text rendering runs in a worker thread."""
    if _collector is not None:
        _collector.refresh()
    return await trio.to_thread.run_sync(generate_latest, REGISTRY)


def _register_standard_collectors() -> None:
    """The standard ``process_*`` and ``python_*`` collectors, on our registry."""
    from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

    ProcessCollector(registry=REGISTRY)
    PlatformCollector(registry=REGISTRY)
    GCCollector(registry=REGISTRY)


_register_standard_collectors()
