"""``trio-bridge check-config``: validate the config dir and show the snapshot it would build."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..merge import merge
from ..proxymode.view import proxy_mode_document
from ..reload import stage_clients
from ..snapshot import Provider, Resilience, SourceStatus, build_snapshot, plan_snapshot
from ..sources.base import SourceError
from ..sources.files import FileSource
from ..upstream import UpstreamClients
from .options import Subparsers
from .serve import add_config_options


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help="validate the config dir and show the snapshot it would build",
        description="Load and validate the config dir (and secrets dir); print the snapshot "
        "it would build, never a secret. Exit 0 when every provider builds, 1 otherwise.",
    )
    add_config_options(parser)
    parser.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return check_config(args.config_dir, args.secrets_dir, as_json=args.json)


def check_config(config_dir: Path, secrets_dir: Path | None, *, as_json: bool = False) -> int:
    """Exit 0 when every provider builds, 1 otherwise (or when the dir does not load)."""
    try:
        contents = FileSource(config_dir, secrets_dir, environ=os.environ).load_sync()
    except SourceError as exc:
        errors = str(exc).splitlines()
        if as_json:
            print(json.dumps({"ok": False, "errors": errors, "providers": []}, indent=2))
        for line in errors:
            print(f"error: {line}", file=sys.stderr)
        return 1
    inputs = merge(None, contents, (SourceStatus("files", None, None),))
    plan = plan_snapshot(inputs)
    clients = stage_clients(plan, UpstreamClients())
    snapshot = build_snapshot(plan, clients, version=1, resilience=Resilience())
    providers = sorted(snapshot.providers.values(), key=lambda p: p.name)
    failed = [p for p in providers if p.status == "error"]
    proxy = proxy_mode_document(snapshot.proxy) if snapshot.proxy is not None else None
    proxy_failed = proxy is not None and proxy["error"] is not None
    if as_json:
        doc = {
            "ok": not failed,
            "errors": [],
            "auth": snapshot.bridge.auth,
            "clients": len(snapshot.clients),
            "providers": [
                {
                    "name": p.name,
                    "type": p.type,
                    "source": p.source,
                    "status": p.status,
                    "error": p.error,
                    "keys": len(p.pool.keys) if p.pool else 0,
                    "key_sources": list(p.key_sources),
                    "key_hints": [k.hint for k in p.pool.keys] if p.pool else [],
                    **_bedrock(p),
                }
                for p in providers
            ],
        }
        if proxy is not None:
            doc["ok"] = doc["ok"] and not proxy_failed
            doc["proxy_mode"] = proxy
        print(json.dumps(doc, indent=2))
    else:
        print(
            f"config dir {config_dir}: {len(providers)} providers, {len(snapshot.clients)} "
            f"clients, auth {snapshot.bridge.auth}"
        )
        for p in providers:
            keys = f"{len(p.pool.keys)} keys" if p.pool else "no keys"
            line = f"  {p.name:<24} {p.type or '-':<10} {p.status:<9} {keys:<8} {p.source}"
            if p.error:
                line += f"\n      error: {p.error}"
            if _bedrock(p):
                b = _bedrock(p)["bedrock"]
                line += (
                    f"\n      bedrock: region {b['region']}, model {b['model']}, "
                    f"small_fast_model {b['small_fast_model'] or '-'}, "
                    f"credentials {b['credentials']}"
                )
            print(line)
        if proxy is not None:
            print(_proxy_lines(proxy))
    return 1 if failed or proxy_failed else 0


def _proxy_lines(proxy: dict[str, Any]) -> str:
    """proxy_mode for the text report: the CA (subject, expiry) or its error, the host map."""
    if proxy["error"] is not None:
        head = f"proxy mode: error: {proxy['error']}"
    else:
        head = f"proxy mode: CA {proxy['ca_subject']}, valid until {proxy['ca_not_after']}"
    lines = [head]
    lines += [f"  intercept {host} -> {name}" for host, name in proxy["hosts"].items()]
    lines += [
        f"  not intercepted (shared by {', '.join(names)}): {host}"
        for host, names in proxy["shared_hosts"].items()
    ]
    lines += [f"  passthrough {host}" for host in proxy["passthrough_hosts"]]
    return "\n".join(lines)


def _bedrock(p: Provider) -> dict[str, Any]:
    """A Bedrock provider's region, models and credential source (never a secret)."""
    info = getattr(p.dialect, "bedrock_info", None)
    return {"bedrock": info.as_dict()} if info is not None else {}
