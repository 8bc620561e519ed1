"""Key-pool failover through real sockets (contract sections 5, 7, 10; issue 3).

Fake upstreams that answer per key, a real bridge in-process, an httpx2 client. Time is
trio's virtual clock: ``clock.jump()`` moves cooldowns; no test sleeps on real time.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx2
import pytest
import trio
import trio.testing

from tests.support.metrics import sample
from tests.support.rig import (
    BYOK,
    CHAT,
    K0,
    K1,
    K2,
    MESSAGES,
    Rig,
    closed_port_url,
    open_rigs,
)
from tests.support.sse import sse_blocks, sse_parse
from trio_bridge.testing import (
    CutStream,
    RateLimited,
    Reply,
    SlowFirstByte,
    Unauthorized,
)

HINT0, HINT1 = "k0-a...aaaa", "k1-b...bbbb"

# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time that jumps only once every task has waited 50 ms of real time (loopback
    I/O never waits that long, so it moves only past fake-upstream sleeps and debounces)."""
    return trio.testing.MockClock(autojump_threshold=0.05)


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    # The client's timeouts run on the virtual clock too: make them irrelevant.
    async with httpx2.AsyncClient(timeout=3600) as c:
        yield c


def failover_attempts(text: str, provider: str) -> float | None:
    """A counter, so exposed as ``key_pool_failover_attempts_total`` (docs/metrics.md: the
    contract's gauge name was renamed)."""
    return sample(text, "trio_bridge_key_pool_failover_attempts_total", provider=provider)


@pytest.fixture
async def rigs(nursery, tmp_path, http, clock) -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    async with open_rigs(nursery, tmp_path, http, clock) as make:
        yield make


@pytest.fixture
async def rig(rigs) -> Rig:
    return await rigs(keys=[K0, K1])


# --- 429 failover and cooldowns --------------------------------------------------------------


async def test_429_fails_over_unseen_and_cools_the_key_model_pair_with_backoff(
    rig: Rig, clock
) -> None:
    rig.fake.behave_for_key(K0, RateLimited())  # no Retry-After: 1 s, doubling per 429
    response = await rig.chat()
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"]
    assert "retry-after" not in response.headers
    assert [r.key for r in rig.fake.requests] == [K0, K1]
    assert rig.fake.requests[0].body == rig.fake.requests[1].body

    assert await rig.keys_used_by(rig.chat) == [K1]  # the next request starts at k1
    keys = await rig.keys()
    assert [k["state"] for k in keys] == ["rate_limited", "valid"]
    assert [k["hint"] for k in keys] == [HINT0, HINT1]
    assert keys[0]["reason"] == "rate_limited"
    assert keys[0]["cooling_until"] == pytest.approx(time.time() + 1, abs=0.5)

    # Each consecutive 429 without a header doubles the pair's cooldown: 1, 2, 4 s.
    for cooldown in (1, 2, 4):
        clock.jump(rig.cooling_until(0) - trio.current_time() - 0.05)
        assert await rig.keys_used_by(rig.chat) == [K1]  # just before the end: still cooling
        clock.jump(0.1)
        assert await rig.keys_used_by(rig.chat) == [K0, K1]  # k0 tried again, 429 again
        assert rig.cooling_until(0) - trio.current_time() == pytest.approx(cooldown * 2, abs=0.2)
    # A success resets the backoff: the next 429 cools for 1 s again.
    rig.fake.clear()
    clock.jump(rig.cooling_until(0) - trio.current_time() + 0.1)
    assert await rig.keys_used_by(rig.chat) == [K0]
    assert [k["state"] for k in await rig.keys()] == ["valid", "valid"]
    rig.fake.behave(RateLimited())
    assert await rig.keys_used_by(rig.chat) == [K0, K1]
    assert rig.cooling_until(0) - trio.current_time() == pytest.approx(1, abs=0.2)

    text = await rig.metrics()
    assert (
        sample(
            text, "trio_bridge_key_pool_transitions_total", provider=rig.name, reason="rate_limited"
        )
        == 5
    )
    assert failover_attempts(text, rig.name) == 5
    assert sample(text, "trio_bridge_key_pool_exhaustions_total", provider=rig.name) is None
    assert sample(text, "trio_bridge_key_pool_state", provider=rig.name, state="rate_limited") == 1


async def test_429_on_one_model_leaves_the_other_models_of_the_key_untouched(
    rig: Rig, clock
) -> None:
    rig.fake.behave(RateLimited(retry_after="30"))
    assert await rig.keys_used_by(lambda: rig.chat(model="gpt-4o-mini")) == [K0, K1]
    # gpt-4.1 on the same key is not rate-limited: k0 serves it.
    assert await rig.keys_used_by(lambda: rig.chat(model="gpt-4.1")) == [K0]
    assert await rig.keys_used_by(lambda: rig.chat(model="gpt-4o-mini")) == [K1]
    assert rig.cooling_until(0, "gpt-4o-mini") > trio.current_time() + 25
    assert rig.cooling_until(0, "gpt-4.1") == 0.0
    # Every key of one model cooling answers 429 for that model only.
    rig.fake.behave(RateLimited(retry_after="30"))
    assert await rig.keys_used_by(lambda: rig.chat(model="gpt-4o-mini"), status=429) == [K1]
    assert await rig.keys_used_by(lambda: rig.chat(model="gpt-4.1")) == [K0]


def _http_date_in(seconds: float) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


@pytest.mark.parametrize(
    ("behaviour", "still_cooling_at", "valid_at", "cooldown"),
    [
        pytest.param(lambda: RateLimited(retry_after="7"), 6.9, 7.1, 7, id="retry-after-seconds"),
        # An HTTP date has 1 s resolution: it is 30..31 s away when converted.
        pytest.param(
            lambda: RateLimited(retry_after=_http_date_in(31)),
            29.5,
            31.5,
            30.5,
            id="retry-after-http-date",
        ),
        pytest.param(lambda: RateLimited(retry_after_ms=1500), 1.4, 1.6, 1.5, id="retry-after-ms"),
        pytest.param(
            lambda: RateLimited(retry_after="5", retry_after_ms=2500),
            2.4,
            2.6,
            2.5,
            id="retry-after-ms-beats-retry-after",
        ),
        pytest.param(lambda: RateLimited(), 0.9, 1.1, 1, id="absent-1s-backoff"),
    ],
)
async def test_429_cooldown_follows_retry_after_headers(
    rig: Rig, clock, behaviour, still_cooling_at: float, valid_at: float, cooldown: float
) -> None:
    rig.fake.behave(behaviour())  # the first request (on k0) gets it; the failover does not
    assert await rig.keys_used_by(rig.chat) == [K0, K1]
    (k0, _k1) = await rig.keys()
    assert k0["state"] == "rate_limited"
    assert k0["cooling_until"] == pytest.approx(time.time() + cooldown, abs=1.5)
    clock.jump(still_cooling_at)
    assert await rig.keys_used_by(rig.chat) == [K1]
    clock.jump(valid_at - still_cooling_at)
    assert await rig.keys_used_by(rig.chat) == [K0]


async def test_shorter_cooldown_arriving_during_a_longer_one_does_not_shorten_it(
    rig: Rig, clock
) -> None:
    t0 = trio.current_time()
    # Two requests hold k0 at once; the first 429 (at +1 s) says 65 s, the second (+2 s) 15 s.
    rig.fake.behave(
        SlowFirstByte(1, RateLimited(retry_after="65")),
        SlowFirstByte(2, RateLimited(retry_after="15")),
    )
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await rig.chat()).status_code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
    assert statuses == [200, 200]
    assert [r.key for r in rig.fake.requests] == [K0, K0, K1, K1]
    assert rig.cooling_until(0) == pytest.approx(t0 + 1 + 65)

    clock.jump(t0 + 60 - trio.current_time())  # well past the 15 s cooldown
    assert await rig.keys_used_by(rig.chat) == [K1]
    assert (await rig.keys())[0]["state"] == "rate_limited"
    clock.jump(t0 + 66.5 - trio.current_time())
    assert await rig.keys_used_by(rig.chat) == [K0]
    text = await rig.metrics()
    # The second 429 changed nothing visible: one transition only.
    assert (
        sample(
            text, "trio_bridge_key_pool_transitions_total", provider=rig.name, reason="rate_limited"
        )
        == 1
    )


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
async def test_all_keys_rate_limited_answers_429_with_smallest_retry_after_in_provider_shape(
    rigs, clock, dialect: str
) -> None:
    rig = await rigs(keys=[K0, K1, K2], dialect=dialect)
    for key, seconds in ((K0, "5"), (K1, "3"), (K2, "10")):
        rig.fake.behave_for_key(key, RateLimited(retry_after=seconds))
    response = await rig.chat()
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert [r.key for r in rig.fake.requests] == [K0, K1, K2]
    if dialect == "anthropic":
        assert all(
            r.header("x-api-key") == r.key and r.header("authorization") is None
            for r in rig.fake.requests
        )
        body = response.json()
        assert body["type"] == "error"
        assert set(body["error"]) == {"type", "message"}
    else:
        assert [r.header("authorization") for r in rig.fake.requests] == [
            f"Bearer {k}" for k in (K0, K1, K2)
        ]
        assert set(response.json()["error"]) == {"message", "type", "code"}

    # While every key cools, the bridge answers without calling upstream.
    rig.fake.clear()
    clock.jump(1)
    again = await rig.chat()
    assert again.status_code == 429 and again.headers["retry-after"] == "2"
    assert rig.fake.request_count == 3
    clock.jump(2)  # k1's 3 s are over
    assert await rig.keys_used_by(rig.chat) == [K1]

    text = await rig.metrics()
    assert (
        sample(
            text,
            "trio_bridge_key_pool_exhaustions_total",
            provider=rig.name,
            outcome="rate_limited",
        )
        == 2
    )
    assert (
        sample(
            text, "trio_bridge_key_pool_transitions_total", provider=rig.name, reason="rate_limited"
        )
        == 3
    )
    assert failover_attempts(text, rig.name) == 2
    assert sample(text, "trio_bridge_key_pool_state", provider=rig.name, state="rate_limited") == 2


async def test_all_keys_401_answers_502_all_configured_keys_failed_authentication(
    rig: Rig, clock
) -> None:
    rig.fake.valid_keys = ()  # every key is refused
    response = await rig.chat()
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "all configured keys failed authentication"
    assert "retry-after" not in response.headers
    assert [r.key for r in rig.fake.requests] == [K0, K1]
    keys = await rig.keys()
    assert [k["state"] for k in keys] == ["auth_failed", "auth_failed"]
    assert [k["reason"] for k in keys] == ["auth_failed", "auth_failed"]

    again = await rig.chat()  # both keys cool for 60 s: no upstream call
    assert again.status_code == 502
    assert rig.fake.request_count == 2

    text = await rig.metrics()
    assert (
        sample(
            text, "trio_bridge_key_pool_transitions_total", provider=rig.name, reason="auth_failed"
        )
        == 2
    )
    assert (
        sample(
            text, "trio_bridge_key_pool_exhaustions_total", provider=rig.name, outcome="auth_failed"
        )
        == 2
    )
    assert sample(text, "trio_bridge_key_pool_state", provider=rig.name, state="auth_failed") == 2

    rig.fake.valid_keys = None
    clock.jump(61)
    assert await rig.keys_used_by(rig.chat) == [K0]


async def test_401_then_429_answers_429_since_some_key_is_only_rate_limited(
    rig: Rig, clock
) -> None:
    rig.fake.behave_for_key(K0, Unauthorized())
    rig.fake.behave_for_key(K1, RateLimited(retry_after="4"))
    response = await rig.chat()
    assert response.status_code == 429
    assert response.headers["retry-after"] == "4"
    assert [k["state"] for k in await rig.keys()] == ["auth_failed", "rate_limited"]


# --- what never fails over --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "headers"),
    [
        pytest.param(
            Reply(403, b'{"error":{"message":"forbidden here","type":"x","code":7}}'),
            None,
            id="403",
        ),
        pytest.param(
            Reply(
                400,
                b'{"error":{"message":"bad field \xe2\x9c\x97","code":"invalid_value"}}',
                {"x-upstream-detail": "kept"},
            ),
            None,
            id="400",
        ),
        pytest.param(
            Reply(501, b'{"error":{"message":"not here"}}', {"x-upstream-detail": "kept"}),
            None,
            id="501",
        ),
        pytest.param(
            Reply(429, b'{"error":{"message":"your own key is limited"}}', {"retry-after": "9"}),
            BYOK,
            id="byok-429",
        ),
        pytest.param(
            Reply(401, b'{"error":{"message":"your own key is bad"}}'), BYOK, id="byok-401"
        ),
    ],
)
async def test_relayed_unchanged_without_failover_or_marking_a_key(
    rig: Rig, clock, reply: Reply, headers: dict[str, str] | None
) -> None:
    rig.fake.behave(reply)
    response = await rig.chat(headers=headers)
    assert response.status_code == reply.status
    assert response.content == reply.body
    for name, value in (reply.headers or {}).items():
        assert response.headers[name] == value
    assert rig.fake.request_count == 1  # no second attempt
    if headers is BYOK:
        assert rig.fake.requests[0].key == "client-own-key"
    else:
        assert rig.fake.requests[0].key == K0
    assert [k["state"] for k in await rig.keys()] == ["valid", "valid"]
    text = await rig.metrics()
    assert sample(text, "trio_bridge_key_pool_transitions_total", provider=rig.name) is None
    assert failover_attempts(text, rig.name) is None
    assert await rig.keys_used_by(rig.chat) == [K0]  # k0 still first


async def test_connection_refused_answers_502_without_failover_or_marking_a_key(
    rigs, clock
) -> None:
    rig = await rigs(keys=[K0, K1], base_url=closed_port_url())
    response = await rig.chat()
    assert response.status_code == 502
    assert set(response.json()["error"]) == {"message", "type", "code"}
    assert [k["state"] for k in await rig.keys()] == ["valid", "valid"]
    text = await rig.metrics()
    assert sample(text, "trio_bridge_key_pool_transitions_total", provider=rig.name) is None
    assert failover_attempts(text, rig.name) is None


# --- streaming ----------------------------------------------------------------------------------


async def _stream(rig: Rig, path: str, payload: dict[str, Any]) -> tuple[httpx2.Response, bytes]:
    async with rig.http.stream("POST", rig.url(path), json=payload) as response:
        body = await response.aread()
    return response, body


async def test_stream_429_before_first_byte_fails_over_unseen(rig: Rig, clock) -> None:
    rig.fake.behave_for_key(K0, RateLimited(retry_after="30"))
    response, body = await _stream(rig, "/v1/chat/completions", {**CHAT, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [sse_parse(b) for b in sse_blocks(body)]
    assert events[-1] == (None, "[DONE]")
    assert all("error" not in json.loads(d) for _, d in events[:-1])
    assert [r.key for r in rig.fake.requests] == [K0, K1]
    assert rig.fake.requests[0].body == rig.fake.requests[1].body


STREAM_CASES = [
    pytest.param("openai", "/v1/chat/completions", {**CHAT, "stream": True}, id="openai-chat"),
    pytest.param(
        "openai",
        "/v1/responses",
        {"model": "gpt-4o-mini", "input": "hi there", "stream": True},
        id="openai-responses",
    ),
    pytest.param(
        "anthropic", "/v1/messages", {**MESSAGES, "stream": True}, id="anthropic-messages"
    ),
]
_TERMINATORS = ("[DONE]", "message_stop", "response.completed")


def _assert_stream_error_tail(dialect: str, path: str, body: bytes, whole_events: int) -> None:
    """``whole_events`` upstream events, then one error event in the dialect's shape, nothing
    after it, no terminator."""
    blocks = sse_blocks(body)
    assert len(blocks) == whole_events + 1, blocks
    events = [sse_parse(b) for b in blocks]
    for name, data in events:
        assert name not in _TERMINATORS and data not in _TERMINATORS
        assert '"message_stop"' not in data and '"response.completed"' not in data
    name, data = events[-1]
    error = json.loads(data)
    if dialect == "anthropic":
        assert name == "error"
        assert error["type"] == "error" and error["error"]["type"] == "api_error"
        assert error["error"]["message"]
    elif path.endswith("/responses"):
        assert name == "error"
        assert error["type"] == "error" and error["message"] and "code" in error
        previous = json.loads(events[-2][1])["sequence_number"]
        assert error["sequence_number"] == previous + 1
    else:
        assert name is None
        assert error["error"]["type"] == "upstream_error"
        assert error["error"]["message"] and error["error"]["code"] is None
    for _, data in events[:-1]:  # the relayed events are the upstream's, whole
        json.loads(data)


@pytest.mark.parametrize(("dialect", "path", "payload"), STREAM_CASES)
async def test_stream_cut_after_first_byte_ends_with_one_error_event_and_no_failover(
    rigs, clock, dialect: str, path: str, payload: dict[str, Any]
) -> None:
    rig = await rigs(keys=[K0, K1], dialect=dialect)
    rig.fake.behave(CutStream(after_chunks=3))  # 3 whole events, half of one, connection reset
    response, body = await _stream(rig, path, payload)
    assert response.status_code == 200
    _assert_stream_error_tail(dialect, path, body, whole_events=3)
    assert rig.fake.request_count == 1  # no failover after the first byte
    assert [k["state"] for k in await rig.keys()] == ["valid", "valid"]
    assert failover_attempts(await rig.metrics(), rig.name) is None


@pytest.mark.parametrize(("dialect", "path", "payload"), STREAM_CASES)
async def test_stream_ending_mid_event_holds_back_the_tail_and_ends_with_error_event(
    rigs, clock, dialect: str, path: str, payload: dict[str, Any]
) -> None:
    rig = await rigs(keys=[K0, K1], dialect=dialect)
    # 3 whole events, half of the 4th, then a clean end of the chunked body.
    rig.fake.behave(CutStream(after_chunks=3, abort=False))
    response, body = await _stream(rig, path, payload)
    assert response.status_code == 200
    _assert_stream_error_tail(dialect, path, body, whole_events=3)
    assert rig.fake.request_count == 1


# --- passthrough failover ------------------------------------------------------------------------


async def test_passthrough_post_failover_replays_the_body_byte_for_byte(rig: Rig, clock) -> None:
    rig.fake.behave_for_key(K0, RateLimited(retry_after="20"))
    # Odd spacing, key order and non-ASCII: a re-encoded body would differ.
    body = '{ "input" : ["héllo",  "wörld"],\n"model":"text-embedding-3-small" }'.encode()
    response = await rig.http.post(
        rig.url("/v1/embeddings?trace=a%2Fb"),
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200
    assert response.json()["object"] == "list"
    first, second = rig.fake.requests
    assert (first.key, second.key) == (K0, K1)
    assert first.body == second.body == body
    assert first.raw_path == second.raw_path == "/v1/embeddings?trace=a%2Fb"
    assert first.header("content-length") == second.header("content-length") == str(len(body))
    assert failover_attempts(await rig.metrics(), rig.name) == 1


async def test_passthrough_get_fails_over_on_401(rig: Rig, clock) -> None:
    rig.fake.behave_for_key(K0, Unauthorized())
    response = await rig.http.get(rig.url("/v1/models"))
    assert response.status_code == 200
    assert response.json()["object"] == "list"
    assert [(r.method, r.raw_path, r.key) for r in rig.fake.requests] == [
        ("GET", "/v1/models", K0),
        ("GET", "/v1/models", K1),
    ]
    assert [k["state"] for k in await rig.keys()] == ["auth_failed", "valid"]


# --- reloads ------------------------------------------------------------------------------------


async def test_reload_keeps_an_unchanged_keys_cooldown_and_forgets_removed_keys(
    rig: Rig, clock
) -> None:
    rig.fake.behave_for_key(K0, RateLimited(retry_after="3600"))
    assert await rig.keys_used_by(rig.chat) == [K0, K1]
    rig.fake.clear()
    until = rig.cooling_until(0)

    # An unrelated change to the provider: k0 keeps its cooldown.
    await rig.reload(keys=[K0, K1], headers={"x-unrelated": "1"})
    assert rig.cooling_until(0) == until
    assert [k["state"] for k in await rig.keys()] == ["rate_limited", "valid"]
    assert await rig.keys_used_by(rig.chat) == [K1]
    assert rig.fake.last_request.header("x-unrelated") == "1"  # the new snapshot serves

    # A new key starts valid; the kept one still cools.
    await rig.reload(keys=[K0, K2, K1])
    assert [k["state"] for k in await rig.keys()] == ["rate_limited", "valid", "valid"]
    assert await rig.keys_used_by(rig.chat) == [K2]

    # A removed key is forgotten: back again, it starts valid.
    await rig.reload(keys=[K1])
    await rig.reload(keys=[K0, K1])
    assert [k["state"] for k in await rig.keys()] == ["valid", "valid"]
    assert await rig.keys_used_by(rig.chat) == [K0]


# --- nothing secret in the admin views ---------------------------------------------------------


async def test_metrics_and_snapshot_never_show_a_key_value(rigs, clock) -> None:
    secrets = ["sk-live-0123SECRETZERO-tail0", "sk-live-4567SECRETONE-tail1"]
    rig = await rigs(keys=secrets)
    rig.fake.behave_for_key(secrets[0], RateLimited())
    rig.fake.behave_for_key(secrets[1], Unauthorized())
    assert (await rig.chat()).status_code == 429
    assert (await rig.chat(headers=BYOK)).status_code == 200
    snapshot = (await rig.http.get(rig.bridge.admin + "/-/snapshot")).text
    text = await rig.metrics()
    assert [k["hint"] for k in await rig.keys()] == ["sk-l...ail0", "sk-l...ail1"]
    for secret in [*secrets, "client-own-key"]:
        for shown in (snapshot, text):
            assert secret not in shown
            assert secret[4:-4] not in shown
    assert sample(text, "trio_bridge_key_pool_state", provider=rig.name, state="rate_limited") == 1
    assert sample(text, "trio_bridge_key_pool_state", provider=rig.name, state="auth_failed") == 1
    assert sample(text, "trio_bridge_key_pool_state", provider=rig.name, state="valid") == 0
