"""``just bench``: the bridge against a direct call (and, with --peer, LiteLLM), one run.

    .venv/bin/python bench/run.py [--quick] [--peer] [--no-profile] [--no-db]

Starts the mock upstream, the stack reference apps and the bridge as separate processes,
runs the scenarios, prints the tables and writes bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # import bench.* as a package; never shadow the stdlib with bench/

from bench import dbreload, profiling, recording, report, sse  # noqa: E402
from bench.bridge import DEBOUNCE_S, probe_provider_yaml, start_bridge, write_config  # noqa: E402
from bench.latency import added_latency  # noqa: E402
from bench.peer import PEER_REQUIREMENT, ensure_litellm, start_litellm  # noqa: E402
from bench.peer import write_config as write_peer_config  # noqa: E402
from bench.procs import Proc, RssSampler, free_port  # noqa: E402
from bench.reload import yaml_reload  # noqa: E402
from bench.targets import Target, write_body  # noqa: E402
from bench.wrk import require_wrk, run_wrk  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PY = sys.executable


@dataclass(frozen=True)
class Plan:
    """How long each scenario runs: the full run (~3-5 min) or --quick (~1 min)."""

    levels: tuple[int, ...] = (1, 8, 32, 128)
    sweep_s: float = 4.0
    lean_refs: bool = True  # also measure the h11-based references (what a leaner stack reaches)
    latency_rounds: int = 7
    latency_n: int = 800
    peer_latency_n: int = 150
    sse_streams: int = 32
    sse_waves: int = 3
    hold_levels: tuple[int, ...] = (32, 64, 128, 192, 256, 384, 512)
    startups: int = 3
    profile_s: float = 6.0
    reload_trials: int = 5

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            sweep_s=2.0,
            lean_refs=False,
            latency_rounds=3,
            latency_n=200,
            peer_latency_n=60,
            sse_waves=1,
            hold_levels=(64, 128, 256),
            startups=1,
            profile_s=3.0,
            reload_trials=3,
        )


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def start_mock(logs: Path) -> Target:
    port = free_port()
    proc = Proc(
        "mock",
        [PY, str(ROOT / "bench" / "mock_upstream.py"), "--port", str(port)],
        logs / "mock.log",
    )
    target = Target("direct", port, "/v1/chat/completions", "Bearer sk-bench-pool-key-1", proc)
    target.startup_s = proc.wait_ready(port, "/v1/models", timeout=15)
    return target


def start_stack(mode: str, logs: Path, upstream: Target) -> Target:
    """A reference app (bench/stack_apps.py, or bench/lean_proxy.py for ``lean``)."""
    port = free_port()
    if mode == "lean":
        cmd = [
            PY,
            str(ROOT / "bench" / "lean_proxy.py"),
            "--port",
            str(port),
            "--upstream-port",
            str(upstream.port),
        ]
    else:
        cmd = [
            PY,
            str(ROOT / "bench" / "stack_apps.py"),
            mode,
            "--port",
            str(port),
            "--upstream",
            f"http://127.0.0.1:{upstream.port}",
        ]
    proc = Proc(f"stack-{mode}", cmd, logs / f"stack-{mode}.log")
    target = Target(f"stack-{mode}", port, "/v1/chat/completions", "Bearer unused", proc)
    # no /readyz on the reference apps: start to the first 200 on /v1/models
    target.startup_s = round(proc.wait_ready(port, "/v1/models", timeout=15), 3)
    return target


def measure_startup(setup, logs: Path, times: int) -> list[float]:
    """Start and stop the bridge ``times`` times; seconds from spawn to /readyz 200."""
    out = []
    for i in range(times):
        target, _ = start_bridge(setup, logs, name=f"bridge-start{i}")
        try:
            out.append(round(target.proc.wait_ready(target.port, "/readyz", timeout=30), 3))
        finally:
            target.proc.stop()
    return out


def start_recording_bridge(
    work: Path, logs: Path, upstream_port: int, dsn: str
) -> tuple[Target, int, float]:
    """``bridge-rec``: the bridge's config with recording on, writing to ``dsn``. A long
    shutdown grace so the queue is flushed at stop."""
    setup = write_config(work / "bridge-rec", upstream_port, recording=True)
    target, admin = start_bridge(
        setup, logs, name="bridge-rec", database_url=dsn, shutdown_grace="30s"
    )
    ready = target.proc.wait_ready(target.port, "/readyz", timeout=30)
    return target, admin, round(ready, 3)


def finish_recording(rec: Target, admin_port: int, entry: dict) -> dict:
    """Stop ``bridge-rec`` (its queue is flushed on SIGTERM) and count what it wrote."""
    sent = sum(r["requests"] for r in entry.get("sweep", []))
    lat = entry.get("latency")
    if lat:  # latency.added_latency's default warm-up of 50 per round is recorded too
        sent += lat["rounds"] * (lat["requests_per_round"] + 50)
    out: dict = {"available": True, "database": recording.REC_DB, "requests_sent": sent}
    try:
        out["recorder_before_stop"] = recording.recorder_metrics(admin_port)
    except OSError as exc:
        out["recorder_before_stop"] = {"error": str(exc)}
    t0 = time.perf_counter()
    rec.proc.stop(timeout=45)
    out["stop_s"] = round(time.perf_counter() - t0, 2)
    out["exit_code"] = rec.proc.popen.returncode
    out["rows"] = recording.rows()
    out["interceptions_written"] = out["rows"]["ai_bridge_interceptions"]
    return out


def sweep(targets: list[Target], body: Path, plan: Plan, samplers: dict) -> dict[str, list]:
    """Every level, every target, interleaved so a noisy neighbour hits all alike."""
    out: dict[str, list] = {t.name: [] for t in targets}
    for level in plan.levels:
        for t in targets:
            with samplers.get(t.name) or _Null():
                r = run_wrk(t, body, level, plan.sweep_s)
            out[t.name].append(r.as_dict())
            log(
                f"  {t.name:12s} c={level:<4d} {r.rps:8.0f} req/s  p99 {r.p99_ms:7.2f} ms  "
                f"errors {r.errors}"
            )
    return out


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def sse_block(direct: Target, t: Target, plan: Plan) -> dict:
    added = sse.added_stream_times(direct, t, streams=plan.sse_streams, waves=plan.sse_waves)
    log(
        f"  {t.name}: added ttfb p50 {added['added_ttfb_p50_ms']} ms, "
        f"p99 {added['added_ttfb_p99_ms']} ms; added gap p99 {added['added_gap_p99_ms']} ms"
    )
    levels = list(plan.hold_levels)
    if t.name.startswith("litellm"):
        levels = [8, 16] + levels
    hold = sse.max_held_streams(t, levels, direct)
    log(f"  {t.name}: most paced streams held without a stall: {hold['max_held']}")
    return {"added": added, "hold": hold}


def profile_block(target: Target, body: Path, plan: Plan, work: Path) -> dict:
    """py-spy on the bridge under blocking load (c=32) and under 128 paced streams."""
    out = {}
    loads = {
        "blocking chat, 32 concurrent": [
            "wrk",
            "-t1",
            "-c32",
            f"-d{int(plan.profile_s) + 3}s",
            "--timeout",
            "10s",
            "-s",
            str(ROOT / "bench" / "post.lua"),
            target.url,
        ],
        "paced SSE, 128 concurrent streams": [
            PY,
            str(ROOT / "bench" / "sse_client.py"),
            "--port",
            str(target.port),
            "--path",
            target.path,
            "--auth",
            target.auth,
            "--streams",
            "128",
            "--ramp",
            "0.3",
        ],
    }
    env = {**os.environ, "BENCH_BODY_FILE": str(body), "BENCH_AUTH": target.auth}
    for label, cmd in loads.items():
        raw = work / f"profile-{len(out)}.txt"
        if cmd[0] != "wrk":  # streams are short: keep starting waves while py-spy samples
            cmd = [
                "bash",
                "-c",
                f"for i in 1 2 3 4 5 6; do {' '.join(map(_q, cmd))} >/dev/null; done",
            ]
        load = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            time.sleep(0.5)
            profiling.record(target.proc.pid, plan.profile_s, raw, rate=100)
            out[label] = profiling.summarise(raw)
            out[label]["raw_file"] = str(raw)
        except (subprocess.CalledProcessError, OSError) as exc:
            out[label] = {"samples": 0, "error": str(exc)}
        finally:
            load.kill()
            load.wait()
    return out


def _q(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def run_peers(
    plan: Plan, direct: Target, bridge: Target, body: Path, work: Path, logs: Path, results: dict
) -> None:
    """LiteLLM at 1 worker and at workers = cores, each beside a fresh bridge measurement."""
    ensure_litellm()
    config = write_peer_config(work, direct.port)
    for workers in sorted({1, os.cpu_count() or 1}):
        t = start_litellm(config, logs, workers)
        try:
            t.startup_s = round(t.proc.wait_ready(t.port, "/health/readiness", timeout=120), 3)
            time.sleep(1.0)
            entry = results["targets"][t.name] = {
                "startup_s": t.startup_s,
                "rss_idle_mb": round(t.proc.rss_mb(), 1),
            }
            log(f"{t.name}: ready in {t.startup_s} s, RSS {entry['rss_idle_mb']} MB")
            entry["latency"] = added_latency(
                direct, t, rounds=max(3, plan.latency_rounds // 2), n=plan.peer_latency_n, warmup=10
            )
            log(
                f"  {t.name}: added p50 {entry['latency']['added_p50_ms']} ms, "
                f"p99 {entry['latency']['added_p99_ms']} ms"
            )
            sampler = RssSampler(t.proc)
            with sampler:
                pair = sweep([bridge, t], body, plan, {})
                entry["sweep"] = pair[t.name]
                results["targets"][f"bridge (beside {t.name})"] = {"sweep": pair[bridge.name]}
                entry["sse"] = sse_block(direct, t, plan)
            entry["rss_load_mb"] = round(sampler.peak, 1)
            time.sleep(2.0)
            entry["rss_after_mb"] = round(t.proc.rss_mb(), 1)
        finally:
            t.proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="trio-bridge benchmarks")
    parser.add_argument("--quick", action="store_true", help="~1 minute instead of ~5")
    parser.add_argument(
        "--peer",
        action="store_true",
        help=f"also measure LiteLLM ({PEER_REQUIREMENT}) at 1 and N workers",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument("--no-db", action="store_true", help="skip the database reload")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/<ts>.json)")
    parser.add_argument(
        "--reload-trials", type=int, help="changes per reload scenario (default 5; quick 3)"
    )
    args = parser.parse_args()
    require_wrk()
    if args.peer:
        ensure_litellm()
    plan = Plan.quick() if args.quick else Plan()
    if args.reload_trials:
        plan = dataclasses.replace(plan, reload_trials=args.reload_trials)
    started = time.strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix="trio-bridge-bench-"))
    logs = work / "logs"
    logs.mkdir()
    results: dict = {
        "meta": {
            "started": started,
            "mode": "quick" if args.quick else "full",
            "peer": args.peer,
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "command": " ".join([Path(PY).name, *sys.argv]),
            "logs": str(logs),
            "versions": _versions(),
            "plan": plan.__dict__,
        },
        "targets": {},
        "reload": {},
        "profile": {},
    }
    t_start = time.perf_counter()
    procs: list[Proc] = []
    rec_dsn: str | None = None
    try:
        log(f"work dir {work}")
        direct = start_mock(logs)
        procs.append(direct.proc)
        body = write_body(work)
        setup = write_config(work / "bridge", direct.port)

        log(f"bridge start-up x{plan.startups}")
        startups = measure_startup(setup, logs, plan.startups)
        bridge, admin_port = start_bridge(setup, logs)
        procs.append(bridge.proc)
        bridge.proc.wait_ready(bridge.port, "/readyz", timeout=30)
        time.sleep(1.0)
        b = results["targets"]["bridge"] = {
            "startup_s": sorted(startups)[len(startups) // 2],
            "startup_all_s": startups,
            "rss_idle_mb": round(bridge.proc.rss_mb(), 1),
        }
        results["targets"]["direct"] = {}
        log(f"bridge ready in {startups} s; idle RSS {b['rss_idle_mb']} MB")

        recs: list[Target] = []  # bridge-rec, when a database is at hand
        if args.no_db:
            results["recording"] = {"available": False, "reason": "--no-db"}
        else:
            rec_dsn, reason = recording.prepare()
            if rec_dsn is None:
                results["recording"] = {"available": False, "reason": reason}
                log(f"recording to Postgres: not available ({reason})")
            else:
                rec, rec_admin, rec_ready = start_recording_bridge(work, logs, direct.port, rec_dsn)
                procs.append(rec.proc)
                recs.append(rec)
                time.sleep(1.0)
                results["targets"][rec.name] = {
                    "startup_s": rec_ready,
                    "rss_idle_mb": round(rec.proc.rss_mb(), 1),
                }
                log(f"bridge-rec (recording to {recording.REC_DB}) ready in {rec_ready} s")

        hello = start_stack("hello", logs, direct)
        proxy = start_stack("proxy", logs, direct)
        refs = [proxy]
        if plan.lean_refs:
            refs += [start_stack("proxy-h11", logs, direct), start_stack("lean", logs, direct)]
        procs += [hello.proc] + [r.proc for r in refs]
        time.sleep(0.5)
        for t in refs:
            results["targets"][t.name] = {
                "startup_s": t.startup_s,
                "rss_idle_mb": round(t.proc.rss_mb(), 1),
            }

        log("one request at a time")
        for t in (bridge, *recs, *refs):
            lat = added_latency(direct, t, rounds=plan.latency_rounds, n=plan.latency_n)
            results["targets"].setdefault(t.name, {})["latency"] = lat
            log(
                f"  {t.name}: p50 {lat['p50_ms']} ms (direct {lat['direct_p50_ms']}), added p50 "
                f"{lat['added_p50_ms']} ms, p99 {lat['added_p99_ms']} ms"
            )

        log("concurrency sweep (wrk)")
        sampler = RssSampler(bridge.proc)
        side = ExitStack()  # peak RSS of bridge-rec (sweep) and the references (sweep + SSE)
        side_samplers = {
            t.name: side.enter_context(RssSampler(t.proc, every=0.5)) for t in (*recs, *refs)
        }
        with side:
            with sampler:
                swept = sweep([direct, bridge, *recs, *refs, hello], body, plan, {})
                for name, rows in swept.items():
                    results["targets"].setdefault(name, {})["sweep"] = rows
                for rec in recs:  # stopped before the SSE scenarios: its flush is not their load
                    rec_entry = results["targets"][rec.name]
                    rec_entry["rss_load_mb"] = round(side_samplers[rec.name].peak, 1)
                    log("bridge-rec: stopping (flushes its queue), counting rows")
                    results["recording"] = finish_recording(rec, rec_admin, rec_entry)
                    r = results["recording"]
                    log(
                        f"  {r['requests_sent']} requests sent, "
                        f"{r['interceptions_written']} interceptions written; "
                        f"recorder {r['recorder_before_stop']}"
                    )
                log("paced SSE")
                b["sse"] = sse_block(direct, bridge, plan)
            b["rss_load_mb"] = round(sampler.peak, 1)
            if plan.lean_refs:
                log("paced SSE on the reference stacks")
                for t in refs:
                    added = sse.added_stream_times(direct, t, streams=plan.sse_streams, waves=1)
                    hold = sse.max_held_streams(t, list(plan.hold_levels))
                    results["targets"][t.name]["sse"] = {"added": added, "hold": hold}
                    log(
                        f"  {t.name}: added ttfb p99 {added['added_ttfb_p99_ms']} ms; most "
                        f"paced streams held without a stall: {hold['max_held']}"
                    )
        for t in refs:
            results["targets"][t.name]["rss_load_mb"] = round(side_samplers[t.name].peak, 1)
        time.sleep(2.0)
        b["rss_after_mb"] = round(bridge.proc.rss_mb(), 1)
        log(f"bridge RSS peak under load {b['rss_load_mb']} MB, after {b['rss_after_mb']} MB")

        if not args.no_profile:
            log("profiling the bridge (py-spy)")
            results["profile"] = profile_block(bridge, body, plan, work)

        log("reload from a YAML edit")
        results["reload"]["yaml"] = yaml_reload(
            bridge,
            setup.config_dir,
            lambda name: probe_provider_yaml(name, direct.port),
            plan.reload_trials,
            DEBOUNCE_S,
        )
        if not args.no_db:
            log("reload from a database change")
            results["reload"]["database"] = dbreload.db_reload(
                setup, logs, direct.port, plan.reload_trials, DEBOUNCE_S
            )

        if args.peer:
            log("peer: LiteLLM")
            run_peers(plan, direct, bridge, body, work, logs, results)
    finally:
        for p in reversed(procs):
            p.stop()
        if rec_dsn is not None:
            try:
                recording.drop()
            except Exception as exc:  # noqa: BLE001 - Postgres gone: nothing left to drop
                log(f"could not drop {recording.REC_DB}: {exc}")
    results["meta"]["wall_s"] = round(time.perf_counter() - t_start, 1)
    results["ratios"] = report.ratios(results)
    results["targets_check"] = report.check_targets(results)
    out = args.out or RESULTS / f"{started}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print()
    print(report.render(results))
    print(f"\nresults: {out}  (logs: {logs}; wall {results['meta']['wall_s']} s)")
    return 0


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("trio-bridge", "trio", "h11", "psycopg", "hypercorn", "httpx2"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    try:
        out["git"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "trio_bridge"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        out["trio_bridge_tree"] = "dirty" if dirty else "clean"
    except OSError:
        pass
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    out["wrk"] = (done.stdout + done.stderr).split("\n")[0]
    return out


if __name__ == "__main__":
    sys.exit(main())
