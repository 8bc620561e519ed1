"""Protocol logic without sockets: paths, header hygiene, client auth, SSE framing, dialects."""

from __future__ import annotations

import hashlib

import pytest

from trio_bridge.config.model import ClientSpec
from trio_bridge.http.auth import Unauthenticated, authenticate
from trio_bridge.http.headers import client_response_headers, upstream_request_headers
from trio_bridge.http.paths import is_safe_path, split_provider
from trio_bridge.providers import dialect_for
from trio_bridge.providers.base import BodyError, TokenUsage, peek_body
from trio_bridge.providers.sse import EventSplitter, iter_events

TOKEN = "tb-client-token-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
CLIENTS = {
    hashlib.sha256(TOKEN.encode()).hexdigest(): ClientSpec(
        id="alice",
        token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
        metadata={"Team": "infra"},
    )
}


@pytest.mark.parametrize(
    "path",
    [
        "/openai/v1/models/../files",
        "/openai/v1/models/%2e%2e/files",
        "/openai/v1/./models",
        "/openai//v1/models",
        "/openai/v1/models%2Ffoo",
        "/openai/v1/models%5cfoo",
        "/openai/v1/models/",
        "/openai/v1\\models",
        "/openai/v1/%2E",
    ],
)
def test_unsafe_paths_are_refused(path: str) -> None:
    assert not is_safe_path(path)


def test_safe_path_splits_into_provider_and_rest() -> None:
    assert is_safe_path("/openai/v1/models/gpt-4o:latest")
    assert split_provider("/openai/v1/models") == ("openai", "/v1/models")
    assert split_provider("/openai") == ("openai", "")


def h(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in pairs]


def test_upstream_headers_strip_what_must_not_travel_and_inject_the_key() -> None:
    client = h(
        ("Host", "bridge"),
        ("Content-Length", "3"),
        ("Cookie", "c=1"),
        ("Authorization", "Bearer tb"),
        ("X-Api-Key", "tb"),
        ("X-Trio-Bridge-Token", "tb"),
        ("X-AI-Bridge-Actor-ID", "mallory"),
        ("Forwarded", "for=1"),
        ("X-Forwarded-For", "1"),
        ("Connection", "keep-alive, X-Custom-Hop"),
        ("X-Custom-Hop", "1"),
        ("TE", "trailers"),
        ("Anthropic-Beta", "b1"),
        ("OpenAI-Organization", "org"),
        ("X-Stainless-Lang", "py"),
        ("Accept-Encoding", "gzip"),
        ("Idempotency-Key", "i1"),
    )
    out = dict(
        upstream_request_headers(
            client,
            keep_auth=frozenset(),
            key_header=(b"authorization", b"Bearer pool-key"),
            identity_encoding=True,
        )
    )
    assert out[b"authorization"] == b"Bearer pool-key"
    assert out[b"accept-encoding"] == b"identity"
    assert out[b"user-agent"].startswith(b"trio-bridge/")
    for kept in (
        b"anthropic-beta",
        b"openai-organization",
        b"x-stainless-lang",
        b"idempotency-key",
    ):
        assert kept in out
    for gone in (
        b"host",
        b"content-length",
        b"cookie",
        b"x-api-key",
        b"x-trio-bridge-token",
        b"x-ai-bridge-actor-id",
        b"forwarded",
        b"x-forwarded-for",
        b"connection",
        b"x-custom-hop",
        b"te",
    ):
        assert gone not in out


def test_passthrough_keeps_the_clients_accept_encoding_and_user_agent() -> None:
    out = dict(
        upstream_request_headers(
            h(("Accept-Encoding", "gzip"), ("User-Agent", "sdk/1")),
            keep_auth=frozenset(),
            key_header=None,
            identity_encoding=False,
        )
    )
    assert out[b"accept-encoding"] == b"gzip" and out[b"user-agent"] == b"sdk/1"


def test_response_headers_drop_hop_by_hop_and_cookies() -> None:
    out = dict(
        client_response_headers(
            h(
                ("Set-Cookie", "a=1"),
                ("Transfer-Encoding", "chunked"),
                ("Content-Length", "10"),
                ("X-Request-Id", "up"),
                ("Content-Type", "text/event-stream"),
            ),
            reframed=True,
            sse=True,
        )
    )
    assert out == {b"x-upstream-request-id": b"up", b"content-type": b"text/event-stream"}


def test_token_from_any_of_the_three_headers() -> None:
    for header in (
        ("X-Trio-Bridge-Token", TOKEN),
        ("Authorization", f"Bearer {TOKEN}"),
        ("X-Api-Key", TOKEN),
    ):
        caller = authenticate(h(header), auth="tokens", clients=CLIENTS)
        assert caller.actor == "alice" and not caller.byok


def test_unknown_or_missing_token_is_refused() -> None:
    with pytest.raises(Unauthenticated):
        authenticate(h(("Authorization", "Bearer nope")), auth="tokens", clients=CLIENTS)
    with pytest.raises(Unauthenticated):
        authenticate([], auth="tokens", clients=CLIENTS)


def test_byok_is_a_different_key_beside_the_bridge_token() -> None:
    caller = authenticate(
        h(("X-Trio-Bridge-Token", TOKEN), ("Authorization", "Bearer sk-own")),
        auth="tokens",
        clients=CLIENTS,
    )
    assert caller.byok and caller.keep_auth == {(b"authorization", b"Bearer sk-own")}
    same = authenticate(
        h(("X-Trio-Bridge-Token", TOKEN), ("Authorization", f"Bearer {TOKEN}")),
        auth="tokens",
        clients=CLIENTS,
    )
    assert not same.byok and not same.keep_auth


def test_auth_none_marks_byok_by_the_bridge_token_header_alone() -> None:
    caller = authenticate(
        h(("X-Trio-Bridge-Token", "anything"), ("X-Api-Key", "sk-own")), auth="none", clients={}
    )
    assert (
        caller.actor == "anonymous"
        and caller.byok
        and caller.keep_auth == {(b"x-api-key", b"sk-own")}
    )
    plain = authenticate(h(("Authorization", "Bearer sdk-dummy")), auth="none", clients={})
    assert not plain.byok


def test_sse_splitter_holds_back_an_incomplete_tail() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: 1\n\ndata: 2") == b"data: 1\n\n"
    assert splitter.tail == b"data: 2"
    assert splitter.feed(b"\n\n") == b"data: 2\n\n"
    assert list(iter_events(b"data: a\r\n\r\nevent: x\ndata: b\n\n")) == [
        b"data: a\r\n\r\n",
        b"event: x\ndata: b\n\n",
    ]


def test_body_peek_requires_json_object_with_model() -> None:
    assert peek_body(b'{"model":"m","stream":true,"messages":[]}').stream is True
    for bad in (b"not json", b"[1]", b"{}", b'{"model": 3}'):
        with pytest.raises(BodyError):
            peek_body(bad)


def test_openai_stream_forces_include_usage_and_remembers_the_client_did_not_ask() -> None:
    d = dialect_for("openai")
    route = d.match("POST", "/v1/chat/completions")
    body, wants = d.prepare_body(
        route, b'{"model":"m","stream":true}', peek_body(b'{"model":"m","stream":true}')
    )
    assert wants is False and b'"include_usage":true' in body
    raw = b'{"model":"m","stream":true,"stream_options":{"include_usage":false}}'
    body, wants = d.prepare_body(route, raw, peek_body(raw))
    assert wants is False and b'"include_usage":true' in body
    raw = b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}'
    assert d.prepare_body(route, raw, peek_body(raw)) == (raw, True)


def test_openai_usage_only_chunk_is_recognised() -> None:
    d = dialect_for("openai")
    route = d.match("POST", "/v1/chat/completions")
    usage = TokenUsage()
    assert d.usage_from_event(
        route, b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}\n\n', usage
    )
    assert (usage.input, usage.output) == (3, 5)
    assert not d.usage_from_event(
        route, b'data: {"choices":[{"delta":{}}],"usage":null}\n\n', usage
    )


def test_anthropic_usage_folds_start_and_delta() -> None:
    d = dialect_for("anthropic")
    route = d.match("POST", "/v1/messages")
    usage = TokenUsage()
    d.usage_from_event(
        route,
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":7,"output_tokens":1}}}\n\n',
        usage,
    )
    d.usage_from_event(
        route,
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":9}}\n\n',
        usage,
    )
    assert (usage.input, usage.output) == (7, 9)


def test_route_tables() -> None:
    openai, anthropic = dialect_for("openai"), dialect_for("anthropic")
    assert openai.match("POST", "/v1/chat/completions").bridged
    assert not openai.match("GET", "/v1/models/gpt-4o").bridged
    assert openai.match("GET", "/v1/chat/completions") is None
    assert openai.match("GET", "/v1/files") is None
    assert anthropic.match("POST", "/v1/messages").bridged
    assert not anthropic.match("POST", "/v1/messages/count_tokens").bridged
    assert openai.upstream_path("/v1/models?x=1") == "/models?x=1"
