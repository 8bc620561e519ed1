"""Fuzzing the running bridge (issue 9, "must show"): hypothesis-made request targets,
headers and bodies, sent on real sockets to a bridge on loopback in front of fake
upstreams. Whatever a client sends, the bridge answers below 500 and logs no traceback.

Hypothesis drives a synchronous client in a worker thread while the bridge runs in the
test's trio loop. Examples are bounded (``TRIO_BRIDGE_FUZZ_EXAMPLES``, default 250) so the
test stays well under 30 s; set it higher for a longer hunt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import RunningBridge, start_bridge, write_yaml
from trio_bridge.testing import FakeUpstream

TOKEN = "tb-fuzz-client-token-0123456789abcdefghijklmnop"
OPENAI_KEY = "sk-openai-pool-key-aaaaaaaaaaaa1111"
ANTHROPIC_KEY = "sk-ant-pool-key-bbbbbbbbbbbbbbbb2222"
EXAMPLES = int(os.environ.get("TRIO_BRIDGE_FUZZ_EXAMPLES", "250"))

ROUTES = [
    ("POST", "/openai/v1/chat/completions"),
    ("POST", "/openai/v1/responses"),
    ("GET", "/openai/v1/models"),
    ("GET", "/openai/v1/models/gpt-4o"),
    ("POST", "/openai/v1/embeddings"),
    ("GET", "/openai/v1/responses/resp_1"),
    ("POST", "/anthropic/v1/messages"),
    ("POST", "/anthropic/v1/messages/count_tokens"),
    ("GET", "/anthropic/v1/models"),
]

# --- request targets -------------------------------------------------------------------------

_VCHAR = st.characters(min_codepoint=0x21, max_codepoint=0x7E)  # what a request line may hold
segment = st.text(_VCHAR, min_size=0, max_size=12)
random_path = st.lists(segment, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts))
known_path = st.sampled_from([p for _, p in ROUTES])
path = st.one_of(
    known_path,
    st.tuples(known_path, segment).map(lambda t: t[0] + t[1]),  # a known route, then junk
    st.tuples(st.sampled_from(["/openai", "/anthropic"]), random_path).map("".join),
    random_path,
)
query = st.one_of(st.just(""), st.text(_VCHAR, max_size=20).map(lambda q: "?" + q))
method = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])

# --- headers ---------------------------------------------------------------------------------

_TOKEN_CHARS = st.characters(
    codec="ascii", categories=["L", "N"], include_characters="!#$%&'*+-.^_`|~"
)
header_name = st.one_of(
    st.sampled_from(
        [
            "authorization",
            "x-api-key",
            "x-trio-bridge-token",
            "content-type",
            "accept",
            "accept-encoding",
            "x-request-id",
            "user-agent",
            "anthropic-version",
            "anthropic-beta",
            "openai-organization",
            "cookie",
            "forwarded",
            "x-forwarded-for",
            "x-real-ip",
            "via",
            "x-ai-bridge-actor-id",
            "idempotency-key",
            "traceparent",
        ]
    ),
    st.text(_TOKEN_CHARS, min_size=1, max_size=20),
)
# A field value: visible ASCII, obs-text (0x80-0xff) and inner spaces/tabs, as HTTP allows.
header_value = st.binary(max_size=40).map(
    lambda b: bytes(c for c in b if c >= 0x21 and c != 0x7F or c in (0x20, 0x09)).strip(b" \t")
)
auth = st.sampled_from(
    [
        [],
        [(b"authorization", f"Bearer {TOKEN}".encode())],
        [(b"x-api-key", TOKEN.encode())],
        [(b"x-trio-bridge-token", TOKEN.encode())],
        [(b"x-trio-bridge-token", TOKEN.encode()), (b"authorization", b"Bearer sk-own-key")],
        [
            (b"x-trio-bridge-token", TOKEN.encode()),
            (b"authorization", b"Bearer sk-own-key"),
            (b"authorization", f"Bearer {TOKEN}".encode()),
        ],
        [(b"authorization", b"Bearer not-a-client")],
    ]
)
_FRAMING = {"content-length", "transfer-encoding", "connection", "expect", "upgrade", "host", "te"}
headers = st.lists(
    st.tuples(header_name.filter(lambda n: n.lower() not in _FRAMING), header_value).map(
        lambda t: (t[0].encode(), t[1])
    ),
    max_size=6,
)

# --- bodies ----------------------------------------------------------------------------------

_NUMBERS = ["1e999", "-1e999", "1e-999", "123456789012345678901234567890", "-0", "0.0e0", "1E+2"]
json_number = st.one_of(
    st.sampled_from(_NUMBERS), st.integers().map(str), st.floats(allow_nan=False).map(repr)
)
json_scalar = st.one_of(
    json_number,
    st.sampled_from(["true", "false", "null"]),
    st.text(max_size=12).map(json.dumps),
)
json_text = st.recursive(
    json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.dictionaries(st.text(max_size=8), inner, max_size=4).map(
            lambda d: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in d.items()) + "}"
        ),
    ),
    max_leaves=12,
)
request_object = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.sampled_from(['"gpt-4o"', '"claude-fake-1"', '""']), json_text),
        "stream": st.one_of(st.sampled_from(["true", "false"]), json_text),
        "stream_options": st.one_of(
            st.sampled_from(['{"include_usage":false}', '{"include_usage":true}', "null"]),
            json_text,
        ),
        "temperature": json_number,
        "messages": json_text,
        "max_tokens": json_number,
        "input": json_text,
    },
).map(lambda d: ("{" + ",".join(f'"{k}":{v}' for k, v in d.items()) + "}").encode())
deep_nesting = st.tuples(st.integers(500, 5000), st.sampled_from("[{")).map(
    lambda t: (
        b'{"model":"gpt-4o","messages":'
        + (b"[" * t[0] + b"]" * t[0] if t[1] == "[" else b'{"a":' * t[0] + b"1" + b"}" * t[0])
        + b"}"
    )
)
body = st.one_of(
    st.just(b""),
    request_object,
    json_text.map(str.encode),
    deep_nesting,
    st.binary(max_size=200),
)


# --- the rig ---------------------------------------------------------------------------------


@pytest.fixture
async def bridge(nursery, tmp_path: Path, fake_openai, fake_anthropic) -> RunningBridge:
    return await fuzz_bridge(nursery, tmp_path, fake_openai, fake_anthropic)


async def fuzz_bridge(nursery, tmp_path: Path, fo: FakeUpstream, fa: FakeUpstream) -> RunningBridge:
    sha = hashlib.sha256(TOKEN.encode()).hexdigest()
    write_yaml(
        tmp_path,
        "b.yaml",
        f"""
        bridge: {{auth: tokens, allow_byok: true, max_body_bytes: 1048576}}
        providers:
          - {{name: openai, type: openai, base_url: "{fo.base_url}", keys: [{{value: {OPENAI_KEY}}}]}}
          - {{name: anthropic, type: anthropic, base_url: "{fa.base_url}", keys: [{{value: {ANTHROPIC_KEY}}}]}}
        clients:
          - {{id: fuzzer, token_sha256: {sha}}}
        """,
    )
    return await start_bridge(nursery, tmp_path)


def exchange(port: int, head: bytes, payload: bytes) -> bytes:
    """One request on its own connection (``Connection: close``); the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head + payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def build_head(verb: str, target: str, extra: list[tuple[bytes, bytes]], length: int) -> bytes:
    lines = [f"{verb} {target} HTTP/1.1".encode(), b"Host: bridge"]
    lines += [name + b": " + value for name, value in extra]
    lines += [b"Content-Length: " + str(length).encode(), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def test_no_generated_request_gets_a_5xx_or_a_traceback(
    bridge: RunningBridge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    port = int(bridge.url.rsplit(":", 1)[1])
    seen: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        route=st.one_of(st.sampled_from(ROUTES), st.tuples(method, path.map(lambda p: p))),
        q=query,
        credentials=auth,
        extra=headers,
        payload=body,
    )
    def check(route, q, credentials, extra, payload) -> None:
        verb, target = route
        head = build_head(verb, target + q, credentials + extra, len(payload))
        answer = exchange(port, head, payload)
        assert answer.startswith(b"HTTP/1.1 "), (head, answer[:200])
        status = int(answer[9:12])
        seen.append(status)
        assert status < 500, (head, payload[:300], answer[:500])
        bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert not bad, (head, payload[:300], [r.getMessage() for r in bad])

    with trio.fail_after(120):
        await trio.to_thread.run_sync(check)
    # The generators reach past the door: successes, refusals of every kind.
    assert {200, 400, 401, 404} <= set(seen), sorted(set(seen))
