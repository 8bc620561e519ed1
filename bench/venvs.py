"""Side venvs for benchmark tools (py-spy, LiteLLM): created on demand, never the project's."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def _base_python() -> str:
    """A python to create venvs with: the interpreter behind the project venv."""
    return getattr(sys, "_base_executable", None) or shutil.which("python3.11") or "python3"


def ensure_venv(path: Path, requirements: list[str], *, marker: str) -> Path:
    """Create ``path`` and pip-install ``requirements`` unless ``bin/<marker>`` exists."""
    if (path / "bin" / marker).exists():
        return path
    print(f"[bench] installing {' '.join(requirements)} into {path} (one-time)...", flush=True)
    if not (path / "bin" / "python").exists():
        subprocess.run([_base_python(), "-m", "venv", str(path)], check=True)
    subprocess.run(
        [
            str(path / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            *requirements,
        ],
        check=True,
    )
    return path
