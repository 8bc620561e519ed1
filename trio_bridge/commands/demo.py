"""``trio-bridge demo``: the bridge wired to built-in fake OpenAI and Anthropic upstreams."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from .options import Subparsers, port
from .serve import (
    add_config_options,
    add_serve_options,
    check_addresses,
    run_until_stopped,
    serve_options,
)
from .store import CliError, database_options

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


INSTALL = "python -m pip install openai anthropic"


def examples(listen: str, admin: str) -> str:
    """What the demo prints: a shell script, pasteable as a whole or command by command.

    Nothing is indented (a heredoc's closing ``PY`` must start its line); prose lines are
    shell comments. The Python examples need the SDKs: :data:`INSTALL` installs them.
    """
    base = f"http://{listen}"
    return f"""\
# trio-bridge demo is running. The upstreams are fakes on loopback; no key, no database.
# Paste any of these into another shell.

# OpenAI chat completion, plain JSON:
curl -s {base}/openai/v1/chat/completions -H 'Content-Type: application/json' \\
  -d '{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"Hello"}}]}}'

# Anthropic message, streamed (SSE):
curl -sN {base}/anthropic/v1/messages -H 'Content-Type: application/json' \\
  -H 'anthropic-version: 2023-06-01' \\
  -d '{{"model":"claude-demo","max_tokens":64,"stream":true,"messages":[{{"role":"user","content":"Hello"}}]}}'

# The Python examples need the OpenAI and Anthropic SDKs:
{INSTALL}

python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="{base}/openai/v1", api_key="unused-in-demo")
reply = client.chat.completions.create(
    model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hello"}}]
)
print(reply.choices[0].message.content)
PY

python - <<'PY'
from anthropic import Anthropic
client = Anthropic(base_url="{base}/anthropic", api_key="unused-in-demo")
reply = client.messages.create(
    model="claude-demo", max_tokens=64, messages=[{{"role": "user", "content": "Hello"}}]
)
print(reply.content[0].text)
PY

# The bridge's snapshot and metrics:
curl -s http://{admin}/-/snapshot
curl -s http://{admin}/metrics

# Stop the demo with Ctrl-C.
"""


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the bridge wired to built-in fake upstreams",
        description="The bridge wired to built-in fake OpenAI and Anthropic upstreams on "
        "loopback; prints ready-to-paste curl and SDK examples. Needs no key, no database.",
        parents=[database_options()],
    )
    add_config_options(
        parser,
        config_dir=None,
        config_dir_help="use this config dir instead of a generated one whose two providers "
        "point at the fakes",
    )
    add_serve_options(parser, drain_delay="0s", shutdown_grace="2s")
    parser.add_argument(
        "--fake-openai-port", type=port, default=18081, help="port of the fake OpenAI (0: any)"
    )
    parser.add_argument(
        "--fake-anthropic-port",
        type=port,
        default=18082,
        help="port of the fake Anthropic (0: any)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..daemon import Daemon
    from ..logsetup import configure_logging
    from ..testing import FakeUpstream

    try:
        check_addresses(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    configure_logging(args.log_format, args.log_level)
    with tempfile.TemporaryDirectory(prefix="trio-bridge-demo-") as tmp:

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                openai = FakeUpstream(dialect="openai", port=args.fake_openai_port, record=False)
                anthropic = FakeUpstream(
                    dialect="anthropic", port=args.fake_anthropic_port, record=False
                )
                openai.default_pace = anthropic.default_pace = 0.05  # visible streaming
                await nursery.start(openai.serve)
                await nursery.start(anthropic.serve)
                if args.config_dir is None:
                    args.config_dir = Path(tmp)
                    (Path(tmp) / "bridge.yaml").write_text(
                        DEMO_CONFIG.format(openai_port=openai.port, anthropic_port=anthropic.port)
                    )
                daemon = Daemon(serve_options(args))

                async def run_daemon(task_status: trio.TaskStatus[Any]) -> None:
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

        try:
            return run_until_stopped(lambda: trio.run(main))
        except CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
