"""LiteLLM's proxy as the peer: pinned, in a venv of its own (bench/.peer-venv, never a
project dependency), offline, no database, callbacks off, no retries."""

from __future__ import annotations

from pathlib import Path

from .procs import Proc, free_port
from .targets import PACED_MODEL, Target
from .venvs import ensure_venv

PEER_VENV = Path(__file__).resolve().parent / ".peer-venv"
PEER_REQUIREMENT = "litellm[proxy]==1.106.12"
MASTER_KEY = "sk-bench-litellm-master"


def ensure_litellm() -> Path:
    ensure_venv(PEER_VENV, [PEER_REQUIREMENT], marker="litellm")
    return PEER_VENV / "bin" / "litellm"


def write_config(directory: Path, upstream_port: int) -> Path:
    """The same upstream as the bridge: both models (blocking and paced) routed to the mock."""
    models = ""
    for name in ("gpt-4o-mini", PACED_MODEL):
        models += f"""\
  - model_name: {name}
    litellm_params:
      model: openai/{name}
      api_base: http://127.0.0.1:{upstream_port}/v1
      api_key: sk-bench-pool-key-1
"""
    path = directory / "litellm.yaml"
    path.write_text(f"""\
model_list:
{models}litellm_settings:
  num_retries: 0
  request_timeout: 600
  callbacks: []
  success_callback: []
  failure_callback: []
  telemetry: false
  drop_params: true
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  disable_spend_logs: true
  disable_error_logs: true
""")
    return path


def start_litellm(config: Path, logs: Path, workers: int) -> Target:
    port = free_port()
    cmd = [
        str(ensure_litellm()),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
    ]
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_MASTER_KEY": MASTER_KEY,
        "LITELLM_LOG": "ERROR",
        "LITELLM_MODE": "PRODUCTION",
        "NO_DOCS": "True",
        "DISABLE_ADMIN_UI": "True",
        "TELEMETRY": "False",
    }
    name = f"litellm-{workers}w"
    proc = Proc(name, cmd, logs / f"{name}.log", env=env)
    return Target(name, port, "/v1/chat/completions", f"Bearer {MASTER_KEY}", proc)
