"""The daemon as operators run it: a subprocess, signals, exit codes, and what it prints."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
import trio

from tests.support import write_yaml
from tests.support.daemon import free_port, serve
from trio_bridge.testing import FakeUpstream, Stream, Unauthorized

POOL_KEY = "sk-pool-secret-value-0123456789abcdef"
CLIENT_TOKEN = "tb-client-secret-token-0123456789abcdefghij"
DB_PASSWORD = "hunter2-db-password"


def bridge_yaml(fake: FakeUpstream, auth: str = "tokens") -> str:
    return f"""
bridge: {{auth: {auth}}}
providers:
  - name: openai
    type: openai
    base_url: {fake.base_url}
    keys: [{{env: TEST_POOL_KEY}}]
clients:
  - id: ci
    token_sha256: {hashlib.sha256(CLIENT_TOKEN.encode()).hexdigest()}
"""


AUTH = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
CHAT = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def env_with_key() -> dict[str, str]:
    return {**os.environ, "TEST_POOL_KEY": POOL_KEY}


async def serve_once(config_dir: Path, listen: str) -> subprocess.CompletedProcess[bytes]:
    """``trio-bridge serve`` expected to exit on its own (a refused start)."""
    return await trio.run_process(
        [
            sys.executable,
            "-m",
            "trio_bridge",
            "serve",
            "--config-dir",
            str(config_dir),
            "--listen",
            listen,
            "--admin-listen",
            f"127.0.0.1:{free_port()}",
        ],
        capture_stderr=True,
        check=False,
        env=env_with_key(),
    )


async def test_sigterm_during_a_stream_drains_and_exits_0(nursery, tmp_path, fake_openai) -> None:
    write_yaml(tmp_path, "b.yaml", bridge_yaml(fake_openai))
    served = await serve(
        nursery, tmp_path, "--drain-delay", "1s", "--shutdown-grace", "20s", env=env_with_key()
    )
    fake_openai.behave(Stream(chunks=12, pace=0.25))
    async with httpx2.AsyncClient(timeout=30) as c:
        async with c.stream(
            "POST", served.url + "/openai/v1/chat/completions", headers=AUTH, json=CHAT
        ) as response:
            chunks = response.aiter_raw()
            body = [await chunks.__anext__()]
            served.process.send_signal(signal.SIGTERM)
            with trio.fail_after(5):
                while (await c.get(served.url + "/readyz")).status_code != 503:
                    await trio.sleep(0.02)
            async for chunk in chunks:
                body.append(chunk)
    assert b"".join(body).rstrip().endswith(b"data: [DONE]")
    with trio.fail_after(30):
        code = await served.process.wait()
    assert code == 0, served.stderr.decode()


async def test_invalid_config_dir_exits_1_with_the_error(tmp_path) -> None:
    write_yaml(tmp_path, "b.yaml", "providers: [{name: x, type: openai, base_url: nope}]\n")
    result = await serve_once(tmp_path, f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert b"b.yaml: $.providers[0].base_url: expected a string matching" in result.stderr


async def test_auth_none_is_refused_on_an_open_listener(tmp_path, fake_openai) -> None:
    write_yaml(tmp_path, "b.yaml", bridge_yaml(fake_openai, auth="none"))
    result = await serve_once(tmp_path, f"0.0.0.0:{free_port()}")
    assert result.returncode == 1
    assert b"auth: none is refused" in result.stderr


async def test_no_secret_appears_in_logs_metrics_snapshot_or_error_bodies(
    nursery, tmp_path, fake_openai
) -> None:
    write_yaml(tmp_path, "b.yaml", bridge_yaml(fake_openai))
    dsn = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{free_port()}/nowhere"
    served = await serve(
        nursery,
        tmp_path,
        "--log-level",
        "debug",
        "--log-format",
        "json",
        "--database-url",
        dsn,
        # the database never answers: queued usage records are retried for the whole grace
        "--shutdown-grace",
        "5s",
        env=env_with_key(),
    )
    seen: list[str] = []
    async with httpx2.AsyncClient(timeout=30) as c:
        for request in (
            c.post(served.url + "/openai/v1/chat/completions", headers=AUTH, json=CHAT),
            c.get(served.url + "/openai/v1/models", headers=AUTH),
            c.get(
                served.url + "/openai/v1/models",
                headers={"Authorization": f"Bearer {CLIENT_TOKEN}x"},
            ),
            c.post(served.url + "/openai/v1/chat/completions", headers=AUTH, content=b"not json"),
        ):
            seen.append((await request).text)
        fake_openai.behave(Unauthorized())
        seen.append(
            (
                await c.post(
                    served.url + "/openai/v1/chat/completions",
                    headers=AUTH,
                    json={**CHAT, "stream": False},
                )
            ).text
        )
        seen.append((await c.get(served.admin + "/metrics")).text)
        snapshot = (await c.get(served.admin + "/-/snapshot")).text
        seen.append(snapshot)
    served.process.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        await served.process.wait()
    seen.append(served.stderr.decode())
    text = "\n".join(seen)
    for secret in (POOL_KEY, CLIENT_TOKEN, DB_PASSWORD):
        assert secret not in text
    assert "sk-p...cdef" in snapshot  # the masked hint is what operators see
    access = [
        json.loads(line)
        for line in served.stderr.decode().splitlines()
        if line.startswith("{") and '"trio_bridge.access"' in line
    ]
    assert access and all("request_id" in entry for entry in access)
    assert any(entry.get("key") == "sk-p...cdef" for entry in access)


@pytest.mark.parametrize("command", [["--help"], ["serve", "--help"], ["check-config", "--help"]])
def test_cli_help_works(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_bridge", *command], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "usage" in result.stdout


async def test_a_listen_address_in_use_exits_1_with_the_reason(tmp_path, fake_openai) -> None:
    write_yaml(tmp_path, "b.yaml", bridge_yaml(fake_openai))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await serve_once(tmp_path, f"127.0.0.1:{port}")
    assert result.returncode == 1
    # One line naming the address and the OS's reason (contract section 2).
    reason = os.strerror(errno.EADDRINUSE)  # "Address already in use"
    (line,) = [x for x in result.stderr.decode().splitlines() if "cannot listen" in x]
    assert line.endswith(f"cannot listen on 127.0.0.1:{port}: {reason}"), line
    assert b"Traceback" not in result.stderr and b"nursery" not in result.stderr
