"""The bridge as a subprocess with a production-like config: client tokens, a key pool of two
keys (one from the environment, one from a secrets file), the circuit breaker on; usage
recording off (``bridge``) or on, to a Postgres database (``bridge-rec``)."""

from __future__ import annotations

import hashlib
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from .procs import Proc, free_port
from .targets import Target

MOCK_KEYS = ("sk-bench-pool-key-1", "sk-bench-pool-key-2")
DEBOUNCE_S = 0.25  # the contract's default, written out in the config


@dataclass
class BridgeSetup:
    config_dir: Path
    secrets_dir: Path
    token: str


def write_config(root: Path, upstream_port: int, *, recording: bool = False) -> BridgeSetup:
    """``recording``: ``bridge.recording`` on with the contract's defaults (queue 10000,
    batch 500, flush every 1 s, prompts kept), to the database given at start-up; otherwise
    ``enabled: false`` (no record is built at all)."""
    config_dir, secrets_dir = root / "config", root / "secrets"
    config_dir.mkdir(parents=True, exist_ok=True)
    secrets_dir.mkdir(parents=True, exist_ok=True)
    (secrets_dir / "openai.key").write_text(MOCK_KEYS[1] + "\n")
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    rec = (
        "{enabled: true, queue: 10000, batch: 500, flush_every: 1s, prompts: true}"
        if recording
        else "{enabled: false}"
    )
    (config_dir / "00-bridge.yaml").write_text(f"""\
bridge:
  auth: tokens
  allow_byok: true
  circuit_breaker:
    {{enabled: true, failure_threshold: 5, interval: 10s, timeout: 30s, max_requests: 3}}
  reload: {{debounce: {int(DEBOUNCE_S * 1000)}ms, resync_every: 5m}}
  recording: {rec}
""")
    (config_dir / "10-providers.yaml").write_text(f"""\
providers:
  - name: openai
    type: openai
    base_url: http://127.0.0.1:{upstream_port}/v1
    keys:
      - env: BENCH_OPENAI_KEY
      - file: openai.key
""")
    (config_dir / "20-clients.yaml").write_text(f"""\
clients:
  - id: bench-client
    token_sha256: {digest}
    metadata: {{Team: bench}}
  - id: other-client
    token_sha256: {hashlib.sha256(secrets.token_bytes(32)).hexdigest()}
""")
    return BridgeSetup(config_dir, secrets_dir, token)


def probe_provider_yaml(name: str, upstream_port: int) -> str:
    return f"""\
providers:
  - name: {name}
    type: openai
    base_url: http://127.0.0.1:{upstream_port}/v1
    keys: [{{env: BENCH_OPENAI_KEY}}]
"""


def start_bridge(
    setup: BridgeSetup,
    logs: Path,
    *,
    name: str = "bridge",
    database_url: str | None = None,
    shutdown_grace: str = "2s",
) -> tuple[Target, int]:
    """Start ``trio-bridge serve``; returns the target (started, not yet ready) and the
    admin port."""
    port, admin = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "trio_bridge",
        "serve",
        "--config-dir",
        str(setup.config_dir),
        "--secrets-dir",
        str(setup.secrets_dir),
        "--listen",
        f"127.0.0.1:{port}",
        "--admin-listen",
        f"127.0.0.1:{admin}",
        "--log-level",
        "warning",
        "--drain-delay",
        "0s",
        "--shutdown-grace",
        shutdown_grace,
    ]
    if database_url:
        cmd += ["--database-url", database_url]
    proc = Proc(name, cmd, logs / f"{name}.log", env={"BENCH_OPENAI_KEY": MOCK_KEYS[0]})
    target = Target(name, port, "/openai/v1/chat/completions", f"Bearer {setup.token}", proc)
    return target, admin
