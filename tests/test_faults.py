"""The sixteen upstream faults of issue 10, each with and without a fallback (contract section 7).

One primary provider with two keys in front of a fault-injecting fake, and (``fallback=True``)
a second provider of the same family as its fallback, naming another model. Each test asserts
what the client gets, through the OpenAI/Anthropic SDKs where they apply (a complete answer,
or a clean error in the provider's shape; never a truncated answer reported as complete,
never a hang), and how many attempts each upstream saw. Time is trio's MockClock.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import trio
import trio.testing

from tests.support import RunningBridge, start_bridge, write_yaml
from tests.support.metrics import sample
from tests.support.rig import unique
from tests.support.sse import sse_blocks, sse_parse
from trio_bridge.testing import (
    Answer,
    ContentPolicy,
    ContextLengthExceeded,
    CutStream,
    Fail,
    FakeUpstream,
    PrefillRejected,
    RateLimited,
    Reset,
    SlowFirstByte,
)

K0, K1, KB = "k0-faultsaaaaaaaaaa", "k1-faultsbbbbbbbbbb", "kb-backupcccccccccc"
MODEL, BACKUP_MODEL = "gpt-4o-mini", "gpt-4.1"
CLAUDE, CLAUDE_BACKUP = "claude-sonnet-4-5", "claude-haiku-4-5"
SERVED_BY = "x-trio-bridge-served-by"


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)


@dataclass
class Harness:
    bridge: RunningBridge
    primary: FakeUpstream
    backup: FakeUpstream
    name: str
    backup_name: str
    dialect: str
    clock: trio.testing.MockClock
    client: Any = None

    @property
    def model(self) -> str:
        return CLAUDE if self.dialect == "anthropic" else MODEL

    @property
    def backup_model(self) -> str:
        return CLAUDE_BACKUP if self.dialect == "anthropic" else BACKUP_MODEL

    def base_url(self) -> str:
        suffix = "/v1" if self.dialect == "openai" else ""
        return f"{self.bridge.url}/{self.name}{suffix}"

    async def sdk(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(client)`` with a synchronous SDK client (made once) in a worker thread.

        While the thread runs, the virtual clock may jump to the bridge's next deadline after
        50 ms of real idleness: tests keep timers they assert on far from other deadlines."""

        def run() -> Any:
            if self.client is None:
                sdk = anthropic.Anthropic if self.dialect == "anthropic" else openai.OpenAI
                self.client = sdk(
                    base_url=self.base_url(), api_key="unused", max_retries=0, timeout=60
                )
            return fn(self.client)

        return await trio.to_thread.run_sync(run)

    def drop_client(self) -> None:
        """Forget the SDK client (and its kept-alive connections): after a long clock jump
        the bridge has closed them."""
        if self.client is not None:
            self.client.close()
            self.client = None

    async def metrics(self) -> str:
        threshold, self.clock.autojump_threshold = self.clock.autojump_threshold, math.inf
        try:
            async with httpx2.AsyncClient() as http:
                return (await http.get(self.bridge.admin + "/metrics")).text
        finally:
            self.clock.autojump_threshold = threshold


def _yaml(
    h_name: str,
    b_name: str,
    primary: FakeUpstream,
    backup: FakeUpstream,
    dialect: str,
    *,
    fallback: bool,
    entry: str,
    provider_extra: str,
    bridge: str,
) -> str:
    backup_model = CLAUDE_BACKUP if dialect == "anthropic" else BACKUP_MODEL
    text = f"bridge: {{auth: none{', ' + bridge if bridge else ''}}}\nproviders:\n"
    text += (
        f"  - name: {h_name}\n    type: {dialect}\n    base_url: {primary.base_url}\n"
        f"    keys: [{{value: {K0}}}, {{value: {K1}}}]\n"
    )
    if provider_extra:
        text += f"    {provider_extra}\n"
    if fallback:
        text += f"    fallbacks:\n      - to: [{{provider: {b_name}, model: {backup_model}}}]\n"
        if entry:
            text += f"        {entry}\n"
    text += (
        f"  - name: {b_name}\n    type: {dialect}\n    base_url: {backup.base_url}\n"
        f"    keys: [{{value: {KB}}}]\n"
    )
    return text


@pytest.fixture
async def harness(nursery, tmp_path: Path, clock):
    async def make(
        *,
        fallback: bool,
        dialect: str = "openai",
        entry: str = "",
        provider_extra: str = "",
        bridge: str = "",
    ) -> Harness:
        # pytest-trio installs a clock only when the test itself names the fixture.
        assert trio.lowlevel.current_clock() is clock, "the test must request `clock`"
        primary = await nursery.start(FakeUpstream(dialect).serve)
        backup = await nursery.start(FakeUpstream(dialect).serve)
        name, b_name = unique("flt"), unique("bak")
        config_dir = tmp_path / name
        config_dir.mkdir()
        write_yaml(
            config_dir,
            "bridge.yaml",
            _yaml(
                name,
                b_name,
                primary,
                backup,
                dialect,
                fallback=fallback,
                entry=entry,
                provider_extra=provider_extra,
                bridge=bridge,
            ),
        )
        bridge_ = await start_bridge(nursery, config_dir)
        made.append(Harness(bridge_, primary, backup, name, b_name, dialect, clock))
        return made[-1]

    made: list[Harness] = []
    yield make
    for h in made:
        if h.client is not None:
            h.client.close()
        (h.bridge.config_dir / ".teardown").write_text("")


def chat(client: openai.OpenAI, **kw: Any):
    return client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], **kw
    )


def chat_stream_text(client: openai.OpenAI) -> tuple[str, dict[str, str]]:
    """Stream a chat answer through the SDK; the text and the response headers."""
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
    ) as response:
        text = "".join(
            chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices
        )
        return text, dict(response.headers)


# --- 1-5: answers before the head -------------------------------------------------------


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-fallback"])
async def test_01_429_with_retry_after_then_healthy_is_served_by_the_next_key(
    harness, clock, fallback: bool
) -> None:
    h = await harness(fallback=fallback)
    h.primary.behave(RateLimited(retry_after="2"))
    raw = await h.sdk(chat)
    assert raw.status_code == 200
    assert raw.parse().choices[0].message.content
    assert raw.headers[SERVED_BY] == f"{h.name}/{MODEL}"
    assert [r.key for r in h.primary.requests] == [K0, K1]
    assert h.backup.request_count == 0


async def test_01b_429_with_a_short_retry_after_on_the_only_free_key_is_waited_out(
    harness,
    clock,
) -> None:
    h = await harness(fallback=True)
    h.primary.behave(RateLimited(retry_after="60"))
    assert (await h.sdk(chat)).status_code == 200  # k0 now cools for 60 s; k1 answered
    h.primary.behave(RateLimited(retry_after="2"))  # k1: 2 s <= max_backoff: waited out
    t0 = trio.current_time()
    raw = await h.sdk(chat)
    assert raw.status_code == 200 and raw.headers[SERVED_BY] == f"{h.name}/{MODEL}"
    assert 2 <= trio.current_time() - t0 < 2.5
    assert [r.key for r in h.primary.requests] == [K0, K1, K1, K1]
    assert h.backup.request_count == 0
    text = await h.metrics()
    assert sample(text, "trio_bridge_retries_total", provider=h.name, reason="rate_limited") == 1


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-fallback"])
async def test_02_429_every_time_without_retry_after(harness, clock, fallback: bool) -> None:
    h = await harness(fallback=fallback)
    h.primary.behave_for_model(MODEL, RateLimited())
    t0 = trio.current_time()
    for _ in range(3):  # three requests in a row, within 3 s
        if fallback:
            raw = await h.sdk(chat)
            assert raw.status_code == 200
            assert raw.headers[SERVED_BY] == f"{h.backup_name}/{BACKUP_MODEL}"
            assert raw.parse().model == BACKUP_MODEL
        else:
            exc = None
            try:
                await h.sdk(chat)
            except openai.RateLimitError as caught:
                exc = caught
            assert exc is not None and exc.status_code == 429
            assert exc.response.headers["retry-after"] == "1"
            assert exc.body["message"] == "all configured keys are rate limited; retry later"
    assert trio.current_time() - t0 < 3
    # Both keys cool for this model after the first request: later ones do not ask again.
    assert [r.key for r in h.primary.requests] == [K0, K1]
    assert h.backup.request_count == (3 if fallback else 0)
    if fallback:
        text = await h.metrics()
        labels = {"from": h.name, "to": h.backup_name, "reason": "rate_limited"}
        assert sample(text, "trio_bridge_fallbacks_total", **labels) == 3


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-fallback"])
async def test_03_500_once_is_retried_on_the_same_upstream(harness, clock, fallback: bool) -> None:
    h = await harness(fallback=fallback)
    h.primary.behave(Fail(500))
    raw = await h.sdk(chat)
    assert raw.status_code == 200 and raw.headers[SERVED_BY] == f"{h.name}/{MODEL}"
    assert [r.key for r in h.primary.requests] == [K0, K0]  # same key: 5xx is not the key's
    assert h.backup.request_count == 0
    text = await h.metrics()
    assert sample(text, "trio_bridge_retries_total", provider=h.name, reason="server_error") == 1


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-fallback"])
async def test_04_503_every_time(harness, clock, fallback: bool) -> None:
    h = await harness(fallback=fallback)
    h.primary.behave_for_model(MODEL, Fail(503, "overloaded, sorry"))
    t0 = trio.current_time()
    if fallback:
        raw = await h.sdk(chat)
        assert raw.status_code == 200
        assert raw.headers[SERVED_BY] == f"{h.backup_name}/{BACKUP_MODEL}"
        assert h.backup.request_count == 1
    else:
        exc = None
        try:
            await h.sdk(chat)
        except openai.InternalServerError as caught:
            exc = caught
        assert exc is not None and exc.status_code == 503
        assert exc.body["message"] == "overloaded, sorry"  # the upstream's own answer
        assert SERVED_BY in exc.response.headers
    # The retry budget: three attempts, full-jitter backoffs of at most 0.25 s and 0.5 s.
    assert h.primary.request_count == 3
    assert trio.current_time() - t0 < 1.5


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-fallback"])
async def test_05_reset_before_the_head_is_retried(harness, clock, fallback: bool) -> None:
    h = await harness(fallback=fallback)
    h.primary.behave(Reset())
    raw = await h.sdk(chat)
    assert raw.status_code == 200 and raw.headers[SERVED_BY] == f"{h.name}/{MODEL}"
    assert h.primary.request_count == 2
    assert h.backup.request_count == 0
    text = await h.metrics()
    assert sample(text, "trio_bridge_retries_total", provider=h.name, reason="connect_error") == 1


# --- 6-7: silence -------------------------------------------------------------------------


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-fallback"])
async def test_06_an_upstream_that_never_answers(harness, clock, fallback: bool) -> None:
    h = await harness(fallback=fallback, bridge="first_byte_timeout: 10s")
    h.primary.behave_for_model(MODEL, SlowFirstByte(math.inf))
    t0 = trio.current_time()
    if fallback:
        raw = await h.sdk(chat)
        assert raw.status_code == 200
        assert raw.headers[SERVED_BY] == f"{h.backup_name}/{BACKUP_MODEL}"
        assert h.primary.request_count == 1  # a silent upstream is not asked twice
        assert 10 <= trio.current_time() - t0 < 11
    else:
        exc = None
        try:
            await h.sdk(chat)
        except openai.APIStatusError as caught:
            exc = caught
        assert exc is not None and exc.status_code == 504
        assert exc.body["message"] == "upstream did not answer in time"
        assert h.primary.request_count == 3
        assert 30 <= trio.current_time() - t0 < 31


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-fallback"])
async def test_07_first_token_after_20s_with_first_token_timeout_10s(
    harness, clock, fallback: bool
) -> None:
    h = await harness(fallback=fallback, provider_extra="first_token_timeout: 10s")
    h.backup.default_chunks = 6
    h.primary.behave_for_model(MODEL, Answer(stream=True, first_token_delay=20, chunks=6))
    t0 = trio.current_time()
    if fallback:
        text, headers = await h.sdk(chat_stream_text)
        assert text == "Hello from the fake openai upstream."  # whole, from the fallback
        assert headers[SERVED_BY] == f"{h.backup_name}/{BACKUP_MODEL}"
        assert trio.current_time() - t0 < 15
        metrics_text = await h.metrics()
        labels = {"from": h.name, "to": h.backup_name, "reason": "first_token_timeout"}
        assert sample(metrics_text, "trio_bridge_fallbacks_total", **labels) == 1
    else:
        exc = None
        try:
            await h.sdk(chat_stream_text)
        except openai.APIStatusError as caught:
            exc = caught
        assert exc is not None and exc.status_code == 504
        assert 10 <= trio.current_time() - t0 < 11
    assert h.primary.request_count == 1
    assert h.backup.request_count == (1 if fallback else 0)


# --- 8-11: after the first byte --------------------------------------------------------------


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-fallback"])
async def test_08_stream_cut_after_40_of_60_tokens_ends_with_an_error(
    harness, clock, fallback: bool
) -> None:
    h = await harness(fallback=fallback)
    h.primary.behave(CutStream(after_chunks=41, chunks=60))  # the role chunk, then 40 tokens
    received: list[str] = []

    def run(client: openai.OpenAI) -> None:
        for chunk in client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError, match="upstream stream interrupted"):
        await h.sdk(run)
    assert len([t for t in received if t]) == 40
    assert h.primary.request_count == 1 and h.backup.request_count == 0


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-fallback"])
async def test_09_stream_stalling_after_20_tokens_ends_after_stream_idle_timeout(
    harness, clock, fallback: bool
) -> None:
    h = await harness(fallback=fallback, bridge="stream_idle_timeout: 5s")
    h.primary.behave(Answer(stream=True, chunks=60, stall_after=21))
    t0 = trio.current_time()
    with pytest.raises(openai.APIError, match="upstream stream interrupted"):
        await h.sdk(chat_stream_text)
    assert 5 <= trio.current_time() - t0 < 6
    assert h.primary.request_count == 1 and h.backup.request_count == 0


async def _raw_stream(h: Harness) -> tuple[httpx2.Response, bytes]:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with (
        httpx2.AsyncClient(timeout=3600) as http,
        http.stream("POST", h.base_url() + "/chat/completions", json=payload) as response,
    ):
        return response, await response.aread()


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-fallback"])
async def test_10_a_malformed_event_mid_stream_is_relayed_and_the_stream_completes(
    harness, clock, fallback: bool
) -> None:
    h = await harness(fallback=fallback)
    h.primary.behave(Answer(stream=True, chunks=6, malformed_after=3))
    response, body = await _raw_stream(h)
    assert response.status_code == 200
    events = [sse_parse(b)[1] for b in sse_blocks(body)]
    assert events[3] == '{"choices": [{"delta": {"content": "unterminated'
    assert events[-1] == "[DONE]"
    text = "".join(
        json.loads(e)["choices"][0]["delta"].get("content") or ""
        for i, e in enumerate(events[:-1])
        if i != 3
    )
    assert text == "Hello from the fake openai upstream."
    assert h.primary.request_count == 1 and h.backup.request_count == 0


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-fallback"])
async def test_11_a_complete_stream_without_done_is_delivered_with_its_usage(
    harness, clock, fallback: bool
) -> None:
    h = await harness(fallback=fallback)
    h.primary.behave(Answer(stream=True, chunks=6, omit_terminal=True))

    def run(client: openai.OpenAI) -> tuple[str, Any]:
        text, usage = "", None
        for chunk in client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        ):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage is not None:
                usage = chunk.usage
        return text, usage

    t0 = trio.current_time()
    text, usage = await h.sdk(run)
    assert trio.current_time() - t0 < 1  # delivered at once: no waiting for a [DONE]
    assert text == "Hello from the fake openai upstream."
    assert usage is not None and usage.completion_tokens > 0
    metrics_text = await h.metrics()
    tokens = sample(
        metrics_text, "trio_bridge_tokens_total", provider=h.name, model=MODEL, type="output"
    )
    assert tokens == usage.completion_tokens
    assert h.primary.request_count == 1 and h.backup.request_count == 0


# --- 12-14: refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [None, "context_length: false", "context_length: true"],
    ids=["alone", "fallback-without-context-length", "fallback-with-context-length"],
)
async def test_12_context_length_exceeded(harness, clock, entry: str | None) -> None:
    h = await harness(fallback=entry is not None, entry=entry or "")
    h.primary.behave(ContextLengthExceeded())
    if entry == "context_length: true":
        raw = await h.sdk(chat)
        assert raw.status_code == 200
        assert raw.headers[SERVED_BY] == f"{h.backup_name}/{BACKUP_MODEL}"
        assert h.backup.request_count == 1
    else:
        exc = None
        try:
            await h.sdk(chat)
        except openai.BadRequestError as caught:
            exc = caught
        assert exc is not None and exc.code == "context_length_exceeded"
        assert h.backup.request_count == 0
    assert h.primary.request_count == 1


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-fallback"])
async def test_13_a_content_policy_refusal_is_one_attempt_and_never_a_fallback(
    harness, clock, fallback: bool, dialect: str
) -> None:
    h = await harness(fallback=fallback, dialect=dialect, entry="context_length: true")
    h.primary.behave(ContentPolicy())
    if dialect == "anthropic":

        def call(client: anthropic.Anthropic) -> Any:
            return client.messages.create(
                model=CLAUDE, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
            )

        with pytest.raises(anthropic.BadRequestError, match="content filtering"):
            await h.sdk(call)
    else:
        with pytest.raises(openai.BadRequestError) as caught:
            await h.sdk(chat)
        assert caught.value.code == "content_policy_violation"
    assert h.primary.request_count == 1 and h.backup.request_count == 0


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-fallback"])
async def test_14_a_fallback_rejecting_an_assistant_prefill_is_never_masked_as_success(
    harness, clock, fallback: bool
) -> None:
    h = await harness(fallback=fallback, dialect="anthropic")
    h.primary.behave_for_model(CLAUDE, Fail(529))
    h.backup.behave(PrefillRejected())

    def call(client: anthropic.Anthropic) -> Any:
        return client.messages.create(
            model=CLAUDE,
            max_tokens=16,
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Sure,"},
            ],
        )

    exc = None
    try:
        await h.sdk(call)
    except anthropic.APIStatusError as caught:
        exc = caught
    assert exc is not None
    if fallback:
        assert exc.status_code == 400 and "prefill" in exc.message
        assert exc.response.headers[SERVED_BY] == f"{h.backup_name}/{CLAUDE_BACKUP}"
        assert h.backup.request_count == 1
    else:
        assert exc.status_code == 529  # the primary's own last answer
        assert h.backup.request_count == 0
    assert h.primary.request_count == 3


# --- 15-16: outages and attribution ----------------------------------------------------------

# timeout 1h: far from the bridge's other deadlines (see Harness.sdk).
BREAKER = "circuit_breaker: {enabled: true, failure_threshold: 3, interval: 1h, timeout: 1h}"


@pytest.mark.parametrize("fallback", [False, True], ids=["alone", "with-fallback"])
async def test_15_an_outage_then_recovery(harness, clock, fallback: bool) -> None:
    h = await harness(fallback=fallback, bridge=BREAKER)
    h.primary.behave_for_model(MODEL, Fail(503))
    statuses, served = [], []
    for _ in range(5):  # the outage: the first request's three attempts trip the breaker
        try:
            raw = await h.sdk(chat)
            statuses.append(raw.status_code)
            served.append(raw.headers[SERVED_BY])
        except openai.APIStatusError as exc:
            statuses.append(exc.status_code)
    assert h.primary.request_count == 3  # open: the primary is not asked again
    if fallback:
        assert statuses == [200] * 5
        assert served == [f"{h.backup_name}/{BACKUP_MODEL}"] * 5
    else:
        assert statuses == [503] * 5  # the upstream's 503, then the open circuit's
    h.primary.clear()  # the primary recovers
    clock.jump(3600)  # within the breaker's timeout of recovering, it is used again
    h.drop_client()
    for _ in range(3):
        raw = await h.sdk(chat)
        assert raw.status_code == 200 and raw.headers[SERVED_BY] == f"{h.name}/{MODEL}"
    assert h.primary.request_count == 6
    text = await h.metrics()
    if fallback:
        reasons = {
            reason: sample(
                text,
                "trio_bridge_fallbacks_total",
                **{"from": h.name, "to": h.backup_name, "reason": reason},
            )
            for reason in ("server_error", "breaker_open")
        }
        assert reasons == {"server_error": 1, "breaker_open": 4}


async def test_16_a_served_fallback_names_its_model_and_gets_the_usage(harness, clock) -> None:
    h = await harness(fallback=True)
    h.primary.behave_for_model(MODEL, Fail(502))
    raw = await h.sdk(chat)
    completion = raw.parse()
    assert completion.model == BACKUP_MODEL  # the upstream's own model field
    assert raw.headers[SERVED_BY] == f"{h.backup_name}/{BACKUP_MODEL}"
    assert h.backup.requests[0].json["model"] == BACKUP_MODEL  # the body was rewritten
    assert h.backup.requests[0].key == KB
    text = await h.metrics()
    backup = sample(
        text,
        "trio_bridge_tokens_total",
        provider=h.backup_name,
        model=BACKUP_MODEL,
        type="output",
    )
    assert backup == completion.usage.completion_tokens
    assert sample(text, "trio_bridge_tokens_total", provider=h.name) is None
    # requests_total stays the client's view: the provider and model it called.
    assert (
        sample(text, "trio_bridge_requests_total", provider=h.name, model=MODEL, status="200") == 1
    )
