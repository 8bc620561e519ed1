"""``trio-bridge demo``: the bridge wired to built-in fake OpenAI and Anthropic upstreams."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import trio

DEMO_CONFIG = """\
# Written by `trio-bridge demo`: two providers pointing at the built-in fake upstreams.
bridge:
  auth: none            # demo only: no client token needed on a loopback listener
  allow_byok: true
providers:
  - name: openai
    type: openai
    base_url: http://127.0.0.1:{openai_port}/v1
    keys:
      - value: sk-demo-openai-key-0000000000000001
      - value: sk-demo-openai-key-0000000000000002
  - name: anthropic
    type: anthropic
    base_url: http://127.0.0.1:{anthropic_port}
    keys:
      - value: sk-ant-demo-key-00000000000000001
"""


def examples(listen: str, admin: str) -> str:
    base = f"http://{listen}"
    return f"""
trio-bridge demo is running. The upstreams are fakes on loopback; no key, no database.

  curl -s {base}/openai/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"Hello"}}]}}'

  curl -sN {base}/anthropic/v1/messages -H 'Content-Type: application/json' \\
    -H 'anthropic-version: 2023-06-01' \\
    -d '{{"model":"claude-demo","max_tokens":64,"stream":true,"messages":[{{"role":"user","content":"Hello"}}]}}'

  python - <<'PY'
  from openai import OpenAI
  client = OpenAI(base_url="{base}/openai/v1", api_key="unused-in-demo")
  print(client.chat.completions.create(model="gpt-4o-mini",
        messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)
  PY

  python - <<'PY'
  from anthropic import Anthropic
  client = Anthropic(base_url="{base}/anthropic", api_key="unused-in-demo")
  print(client.messages.create(model="claude-demo", max_tokens=64,
        messages=[{{"role": "user", "content": "Hello"}}]).content[0].text)
  PY

  Snapshot: curl -s http://{admin}/-/snapshot     Metrics: curl -s http://{admin}/metrics
  Stop with Ctrl-C.
"""


def run_demo(args: argparse.Namespace, make_options: Callable) -> int:
    from .daemon import Daemon, StartupError
    from .logsetup import configure_logging
    from .testing import FakeUpstream

    configure_logging(args.log_format, args.log_level)
    with tempfile.TemporaryDirectory(prefix="trio-bridge-demo-") as tmp:
        if args.config_dir is None:
            args.config_dir = Path(tmp)
            (Path(tmp) / "bridge.yaml").write_text(
                DEMO_CONFIG.format(
                    openai_port=args.fake_openai_port, anthropic_port=args.fake_anthropic_port
                )
            )

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                openai = FakeUpstream(dialect="openai", port=args.fake_openai_port, record=False)
                anthropic = FakeUpstream(
                    dialect="anthropic", port=args.fake_anthropic_port, record=False
                )
                openai.default_pace = anthropic.default_pace = 0.05  # visible streaming
                await nursery.start(openai.serve)
                await nursery.start(anthropic.serve)
                daemon = Daemon(make_options(args))

                async def run_daemon(task_status: trio.TaskStatus) -> None:
                    await daemon.run(task_status=task_status)
                    nursery.cancel_scope.cancel()  # the fakes go when the bridge has drained

                addresses = await nursery.start(run_daemon)
                print(
                    examples(
                        addresses.listen.removeprefix("http://"),
                        addresses.admin.removeprefix("http://"),
                    ),
                    flush=True,
                )

        from .cli import run_until_stopped

        return run_until_stopped(lambda: trio.run(main), StartupError)
