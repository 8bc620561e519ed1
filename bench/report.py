"""Ratios, the targets check and the printed tables, all from one run's results dict."""

from __future__ import annotations

from typing import Any

BRIDGE = "bridge"
PEER_1W = "litellm-1w"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _sweep(results: dict, name: str) -> dict[int, dict]:
    return {r["concurrency"]: r for r in results["targets"].get(name, {}).get("sweep", [])}


def ratios(results: dict) -> dict:
    """Throughput ratios measured in this run."""
    out: dict[str, Any] = {}
    for other in (
        "direct",
        "stack-hello",
        "stack-proxy",
        "stack-proxy-h11",
        "stack-lean",
        PEER_1W,
        "litellm-2w",
    ):
        bridge = _sweep(results, BRIDGE)
        if _sweep(results, f"bridge (beside {other})"):
            bridge = _sweep(results, f"bridge (beside {other})")  # measured side by side
        theirs = _sweep(results, other)
        per_level = {
            c: round(bridge[c]["rps"] / theirs[c]["rps"], 3)
            for c in bridge
            if c in theirs and theirs[c]["rps"]
        }
        if per_level:
            out[f"bridge_rps_over_{other}"] = per_level
    bridge = _sweep(results, BRIDGE)
    if 8 in bridge and 128 in bridge and bridge[8]["rps"]:
        out["bridge_rps_128_over_8"] = round(bridge[128]["rps"] / bridge[8]["rps"], 3)
    proxy_cpu = {c: r.get("cpu_ms_per_req") for c, r in _sweep(results, "stack-proxy").items()}
    per_level = {
        c: round(r["cpu_ms_per_req"] - proxy_cpu[c], 3)
        for c, r in bridge.items()
        if r.get("cpu_ms_per_req") and proxy_cpu.get(c)
    }
    if per_level:
        out["bridge_cpu_ms_per_req_over_stack_proxy"] = per_level
    return out


def _check(name: str, goal: str, value: Any, met: bool | None, note: str = "") -> dict:
    return {"target": name, "goal": goal, "value": value, "met": met, "note": note}


def check_targets(results: dict) -> list[dict]:
    b = results["targets"].get(BRIDGE, {})
    checks = []
    lat = b.get("latency", {})
    if lat:
        checks.append(
            _check(
                "added latency p50 (1 at a time)",
                "<= 1 ms",
                lat["added_p50_ms"],
                lat["added_p50_ms"] <= 1.0,
            )
        )
        checks.append(
            _check(
                "added latency p99 (1 at a time)",
                "<= 3 ms",
                lat["added_p99_ms"],
                lat["added_p99_ms"] <= 3.0,
            )
        )
    sweep, peer = _sweep(results, BRIDGE), _sweep(results, PEER_1W)
    beside = _sweep(results, f"bridge (beside {PEER_1W})") or sweep
    if 32 in beside and 32 in peer:
        ratio = round(beside[32]["rps"] / peer[32]["rps"], 2)
        checks.append(
            _check(
                "req/s at 32 vs LiteLLM 1 worker",
                ">= 10x",
                ratio,
                ratio >= 10,
                f"{beside[32]['rps']:.0f} vs {peer[32]['rps']:.0f} req/s, measured side by side",
            )
        )
    elif 32 in sweep:
        ref = 75.0
        ratio = round(sweep[32]["rps"] / ref, 2)
        checks.append(
            _check(
                "req/s at 32 vs LiteLLM 1 worker",
                ">= 10x",
                ratio,
                None,
                f"not measured in this run (run with --peer); vs the {ref:g} req/s "
                "reference of stack-notes.md",
            )
        )
    if 8 in sweep and 128 in sweep:
        r = round(sweep[128]["rps"] / sweep[8]["rps"], 3)
        checks.append(_check("req/s at 128 / req/s at 8", ">= 0.8", r, r >= 0.8))
    errors = sum(x["errors"] for x in sweep.values()) + lat.get("errors", 0)
    sse = b.get("sse", {})
    errors += sse.get("added", {}).get("target", {}).get("errors", 0)
    checks.append(
        _check(
            "errors (sweep, latency, SSE)",
            "0",
            errors,
            errors == 0,
            "SSE stall search excluded: its failing level may error by design",
        )
    )
    hold = sse.get("hold")
    if hold:
        checks.append(
            _check(
                "paced streams held without a stall",
                ">= 256",
                hold["max_held"],
                hold["max_held"] >= 256,
                "" if not hold["all_levels_held"] else "highest level tried",
            )
        )
    added = sse.get("added")
    if added:
        v = added["added_ttfb_p99_ms"]
        checks.append(_check("added time to first chunk p99", "<= 3 ms", v, v <= 3.0))
    if b.get("rss_load_mb") is not None:
        v = b["rss_load_mb"]
        checks.append(_check("RSS under load", "<= 100 MB", v, v <= 100))
    if b.get("startup_s") is not None:
        v = b["startup_s"]
        checks.append(_check("start to /readyz 200", "<= 1 s", v, v <= 1.0))
    y = results.get("reload", {}).get("yaml")
    if y and y.get("max_minus_debounce_ms") is not None:
        v = y["max_minus_debounce_ms"]
        checks.append(
            _check(
                "YAML reload (worst trial, minus debounce)",
                "<= 500 ms",
                v,
                v <= 500,
                f"debounce {y['debounce_ms']:g} ms",
            )
        )
    d = results.get("reload", {}).get("database")
    if d is not None:
        if d.get("available") and d.get("max_minus_debounce_ms") is not None:
            v = d["max_minus_debounce_ms"]
            checks.append(
                _check(
                    "database reload (worst trial, minus debounce)",
                    "<= 500 ms",
                    v,
                    v <= 500,
                    f"debounce {d['debounce_ms']:g} ms",
                )
            )
        else:
            checks.append(
                _check("database reload", "<= 500 ms", "not available", None, d.get("reason", ""))
            )
    return checks


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def render(results: dict) -> str:
    parts = [
        f"trio-bridge benchmark {results['meta']['started']}  "
        f"({results['meta']['mode']}, {results['meta']['cores']} cores)"
    ]
    targets = results["targets"]
    levels = sorted({r["concurrency"] for t in targets.values() for r in t.get("sweep", [])})
    if levels:
        rows = []
        for name, t in targets.items():
            s = {r["concurrency"]: r for r in t.get("sweep", [])}
            if s:
                rows.append(
                    [name]
                    + [
                        f"{s[c]['rps']:.0f} / {s[c]['p99_ms']:.1f} / {s[c]['errors']}"
                        + (f" / {s[c]['cpu_ms_per_req']:.2f}" if s[c].get("cpu_ms_per_req") else "")
                        if c in s
                        else "-"
                        for c in levels
                    ]
                )
        parts.append(
            "\nConcurrency sweep, blocking chat (req/s / p99 ms / errors / CPU ms per req)\n"
            + _table(["target"] + [f"c={c}" for c in levels], rows)
        )
    rows = []
    for name, t in targets.items():
        lat = t.get("latency")
        if lat:
            rows.append(
                [
                    name,
                    _fmt(lat["p50_ms"], 3),
                    _fmt(lat["p99_ms"], 3),
                    _fmt(lat["direct_p50_ms"], 3),
                    _fmt(lat["direct_p99_ms"], 3),
                    _fmt(lat["added_p50_ms"], 3),
                    _fmt(lat["added_p99_ms"], 3),
                    str(lat["errors"]),
                ]
            )
    if rows:
        parts.append(
            "\nOne request at a time (ms; median of rounds; added = target - direct)\n"
            + _table(
                [
                    "target",
                    "p50",
                    "p99",
                    "direct p50",
                    "direct p99",
                    "added p50",
                    "added p99",
                    "errors",
                ],
                rows,
            )
        )
    rows = []
    for name, t in targets.items():
        sse = t.get("sse")
        if not sse:
            continue
        a, h = sse.get("added", {}), sse.get("hold", {})
        rows.append(
            [
                name,
                _fmt(a.get("target", {}).get("ttfb_p50_ms"), 2),
                _fmt(a.get("added_ttfb_p50_ms"), 2),
                _fmt(a.get("added_ttfb_p99_ms"), 2),
                _fmt(a.get("target", {}).get("gap_p99_ms"), 2),
                _fmt(a.get("added_gap_p99_ms"), 2),
                f"{h.get('max_held', '-')}{'+' if h.get('all_levels_held') else ''}",
                _fmt(_first_fail(h), 1),
                _fmt(_cpu_per_chunk(h), 0),
            ]
        )
    if rows:
        parts.append(
            "\nPaced SSE, 64 chunks x 20 ms (ms; added = target - direct, "
            "same concurrency)\n"
            + _table(
                [
                    "target",
                    "ttfb p50",
                    "added ttfb p50",
                    "added ttfb p99",
                    "gap p99",
                    "added gap p99",
                    "max streams held",
                    "worst gap at failing level",
                    "CPU us/chunk",
                ],
                rows,
            )
        )
    rows = []
    for name, t in targets.items():
        if t.get("startup_s") is not None or t.get("rss_idle_mb") is not None:
            rows.append(
                [
                    name,
                    _fmt(t.get("startup_s"), 3),
                    _fmt(t.get("rss_idle_mb")),
                    _fmt(t.get("rss_load_mb")),
                    _fmt(t.get("rss_after_mb")),
                ]
            )
    if rows:
        parts.append(
            "\nStart-up and memory (s, MB; RSS of the whole process tree)\n"
            + _table(["target", "start->ready", "RSS idle", "RSS load peak", "RSS after"], rows)
        )
    rel = results.get("reload", {})
    rows = []
    for kind, r in rel.items():
        if r.get("available", True) and r.get("median_ms") is not None:
            rows.append(
                [
                    kind,
                    _fmt(r["median_ms"]),
                    _fmt(r["max_ms"]),
                    _fmt(r["debounce_ms"], 0),
                    _fmt(r.get("median_minus_debounce_ms")),
                    str(r["missed"]),
                ]
            )
        else:
            rows.append([kind, "not available", r.get("reason", ""), "", "", ""])
    if rows:
        parts.append(
            "\nReload: change -> first request that sees it (ms)\n"
            + _table(["source", "median", "max", "debounce", "median - debounce", "missed"], rows)
        )
    if results.get("ratios"):
        parts.append(
            "\nRatios (this run)\n" + "\n".join(f"  {k}: {v}" for k, v in results["ratios"].items())
        )
    for label, prof in results.get("profile", {}).items():
        if not prof.get("samples"):
            continue
        lines = [
            f"\nProfile: {label} ({prof['samples']} main-thread samples)",
            "  by layer: " + ", ".join(f"{k} {v:.0%}" for k, v in prof["layers"].items()),
            "  by library: " + ", ".join(f"{k} {v:.0%}" for k, v in prof["areas"].items()),
            "  top self time:",
        ]
        lines += [
            f"    {c['share']:6.1%}  {c['name']}  ({c['where']}){'  <- ours' if c['ours'] else ''}"
            for c in prof["self"][:12]
        ]
        lines.append("  ours, own cost (own code + the trio/stdlib work it asks for directly):")
        lines += [
            f"    {c['share']:6.1%}  {c['name']}  ({c['where']})"
            for c in prof.get("ours_own", [])[:10]
        ]
        lines.append("  ours, inclusive (hypercorn/httpx2 calls included):")
        lines += [
            f"    {c['share']:6.1%}  {c['name']}  ({c['where']})"
            for c in prof["ours_inclusive"]
            if not c["where"].startswith(_WRAPPERS)
        ][:8]
        parts.append("\n".join(lines))
    checks = results.get("targets_check", [])
    if checks:
        rows = [
            [
                c["target"],
                c["goal"],
                _fmt(c["value"], 2),
                {True: "MET", False: "MISSED", None: "n/a"}[c["met"]],
                c["note"],
            ]
            for c in checks
        ]
        parts.append("\nTargets\n" + _table(["target", "goal", "value", "", "note"], rows))
    return "\n".join(parts)


_WRAPPERS = ("trio_bridge/cli.py", "trio_bridge/__main__.py", "trio_bridge/server/")


def _cpu_per_chunk(hold: dict) -> float | None:
    """CPU per streamed chunk (request set-up included) at the first level tried."""
    levels = hold.get("levels") or [{}]
    return levels[0].get("cpu_us_per_chunk")


def _first_fail(hold: dict) -> float | None:
    for level in hold.get("levels", []):
        if not level["ok"]:
            return level["gap_max_ms"]
    return None
