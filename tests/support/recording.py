"""The usage-recording rig: a client token, pool keys, and a config with an OpenAI and an
Anthropic provider in front of two fake upstreams, recording as ``recording:`` says."""

from __future__ import annotations

import hashlib

from trio_bridge.testing import FakeUpstream

TOKEN = "tb-record-client-token-0123456789abcdefghijklmnop"
OPENAI_KEY = "sk-openai-pool-key-aaaaaaaaaaaa1111"
OPENAI_KEY_2 = "sk-openai-pool-key-cccccccccccc3333"
ANTHROPIC_KEY = "sk-ant-pool-key-bbbbbbbbbbbbbbbb2222"
AUTH = {"Authorization": f"Bearer {TOKEN}", "User-Agent": "OpenAI/Python 3.1.0"}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def config(
    fo: FakeUpstream, fa: FakeUpstream, recording: str = "flush_every: 20ms", keys: int = 1
) -> str:
    openai_keys = ", ".join(f"{{value: {k}}}" for k in [OPENAI_KEY, OPENAI_KEY_2][:keys])
    return f"""
bridge:
  recording: {{{recording}}}
providers:
  - name: openai
    type: openai
    base_url: {fo.base_url}
    keys: [{openai_keys}]
  - name: anthropic
    type: anthropic
    base_url: {fa.base_url}
    keys: [{{value: {ANTHROPIC_KEY}}}]
clients:
  - id: alice
    token_sha256: {sha(TOKEN)}
"""
