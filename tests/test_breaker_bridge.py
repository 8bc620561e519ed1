"""The circuit breaker through real sockets (contract sections 4, 5, 7, 10; issue 3).

Breaker per provider x endpoint x model: closed -> open after ``failure_threshold``
consecutive failed attempts (500/502/503/504/529, connect error, first-byte timeout) ->
half-open after ``timeout`` on trio's clock -> closed after ``max_requests`` successes.

Most tests here set ``retry: {max_attempts: 1}`` so one request is one upstream attempt and
the breaker is seen alone; tests/test_fallbacks.py and tests/test_faults.py cover the breaker
together with retries and fallbacks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
import pytest
import trio
import trio.testing

from tests.support.metrics import sample
from tests.support.rig import BYOK, K0, K1, Rig, closed_port_url, open_rigs
from trio_bridge.testing import Fail, FakeUpstream, RateLimited, SlowFirstByte

BREAKER = "enabled: true, failure_threshold: 3, interval: 10s, timeout: 30s, max_requests: 2"
SETTINGS = f"auth: none, retry: {{max_attempts: 1}}, circuit_breaker: {{{BREAKER}}}"
MODEL = "gpt-4o-mini"
STATE = "trio_bridge_circuit_breaker_state"
TRIPS = "trio_bridge_circuit_breaker_trips_total"
REJECTS = "trio_bridge_circuit_breaker_rejects_total"


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=3600) as c:
        yield c


@pytest.fixture
async def rigs(nursery, tmp_path, http, clock) -> AsyncIterator[Callable[..., Awaitable[Rig]]]:
    async with open_rigs(nursery, tmp_path, http, clock) as make:
        yield make


@pytest.fixture
async def rig(rigs) -> Rig:
    return await rigs(keys=[K0, K1], bridge=SETTINGS, prefix="cb")


async def breaker(rig: Rig, *, endpoint: str = "chat_completions", model: str = MODEL) -> dict:
    """The breaker's state, trip and reject counts as ``/metrics`` shows them."""
    text = await rig.metrics()
    labels = dict(provider=rig.name, endpoint=endpoint, model=model)
    return {
        "state": sample(text, STATE, **labels),
        "trips": sample(text, TRIPS, **labels),
        "rejects": sample(text, REJECTS, **labels),
    }


async def trip(rig: Rig, failure: Fail | None = None) -> None:
    """Three upstream failures: each relayed as the upstream sent it; then the circuit opens."""
    failure = failure or Fail(503)
    rig.fake.behave(failure, failure, failure)
    for i in range(3):
        response = await rig.chat()
        assert response.status_code == failure.status
        assert "circuit" not in response.text  # the upstream's own answer
        expected = 1.0 if i == 2 else 0.0
        assert (await breaker(rig))["state"] == expected


def assert_circuit_open(response: httpx2.Response, dialect: str = "openai") -> None:
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"
    body = response.json()
    if dialect == "anthropic":
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
        assert "circuit" in body["error"]["message"]
    else:
        assert set(body["error"]) == {"message", "type", "code"}
        assert "circuit" in body["error"]["message"]


async def test_breaker_opens_after_threshold_then_half_opens_on_trio_clock_and_closes(
    rig: Rig, clock
) -> None:
    await trip(rig)
    assert (await breaker(rig))["trips"] == 1

    rejected = await rig.chat()
    assert_circuit_open(rejected)
    assert rig.fake.request_count == 3  # no upstream call while open
    assert (await breaker(rig))["rejects"] == 1

    clock.jump(29.5)
    assert_circuit_open(await rig.chat())
    assert rig.fake.request_count == 3
    clock.jump(0.5)
    assert (await breaker(rig))["state"] == 0.5  # half-open at +30 s

    assert (await rig.chat()).status_code == 200
    assert rig.fake.request_count == 4
    assert (await breaker(rig))["state"] == 0.5  # one success of two
    assert (await rig.chat()).status_code == 200
    assert (await breaker(rig))["state"] == 0.0  # closed after max_requests successes
    # Upstream 503s never touched the key pool.
    assert [k["state"] for k in await rig.keys()] == ["valid", "valid"]
    assert {r.key for r in rig.fake.requests} == {K0}

    # Closed again, it counts from zero: two failures do not trip it.
    rig.fake.behave(Fail(503), Fail(503))
    assert [(await rig.chat()).status_code for _ in range(3)] == [503, 503, 200]
    assert (await breaker(rig)) == {"state": 0.0, "trips": 1.0, "rejects": 2.0}


async def test_half_open_failure_reopens_the_breaker(rig: Rig, clock) -> None:
    await trip(rig)
    clock.jump(30)
    rig.fake.behave(Fail(503))
    assert (await rig.chat()).status_code == 503  # the probe's own failure, relayed
    assert rig.fake.request_count == 4
    assert (await breaker(rig))["state"] == 1.0
    assert (await breaker(rig))["trips"] == 2
    assert_circuit_open(await rig.chat())
    assert rig.fake.request_count == 4

    # A failure after a half-open success re-opens it too.
    clock.jump(30)
    assert (await rig.chat()).status_code == 200
    rig.fake.behave(Fail(504))
    assert (await rig.chat()).status_code == 504
    assert (await breaker(rig))["state"] == 1.0
    assert (await breaker(rig))["trips"] == 3
    assert_circuit_open(await rig.chat())
    assert rig.fake.request_count == 6


async def test_half_open_admits_exactly_max_requests(rig: Rig, clock) -> None:
    await trip(rig)
    clock.jump(30)
    rig.fake.behave(SlowFirstByte(5), SlowFirstByte(5))  # hold two probes in flight
    statuses: list[int] = []

    async def probe() -> None:
        statuses.append((await rig.chat()).status_code)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(probe)
        nursery.start_soon(probe)
        await rig.fake.wait_requests(5)
        third = await rig.chat()  # both half-open slots are taken
        assert_circuit_open(third)
        assert rig.fake.request_count == 5
    assert statuses == [200, 200]
    assert (await breaker(rig))["state"] == 0.0
    assert (await rig.chat()).status_code == 200
    assert rig.fake.request_count == 6


async def test_breakers_are_isolated_per_model_and_endpoint(rig: Rig, clock) -> None:
    await trip(rig)  # chat_completions x gpt-4o-mini
    assert_circuit_open(await rig.chat())
    assert (await rig.chat(model="gpt-4.1")).status_code == 200
    responses = await rig.http.post(
        rig.url("/v1/responses"), json={"model": MODEL, "input": "hi there"}
    )
    assert responses.status_code == 200
    assert rig.fake.request_count == 5
    assert (await breaker(rig))["state"] == 1.0
    assert (await breaker(rig, model="gpt-4.1"))["state"] == 0.0
    assert (await breaker(rig, endpoint="responses"))["state"] == 0.0
    assert (await breaker(rig, model="gpt-4.1"))["trips"] is None


async def test_429_and_400_are_not_breaker_failures_but_500_and_502_are(rig: Rig, clock) -> None:
    # BYOK 429s (relayed, no failover) and 400s: neither trips the breaker.
    rig.fake.behave(*[RateLimited(retry_after="1")] * 3)
    assert [(await rig.chat(headers=BYOK)).status_code for _ in range(3)] == [429] * 3
    rig.fake.behave(*[Fail(400)] * 3)
    assert [(await rig.chat()).status_code for _ in range(3)] == [400] * 3
    assert (await breaker(rig)) == {"state": 0.0, "trips": None, "rejects": None}
    rig.fake.behave(Fail(500), Fail(502), Fail(500))
    assert [(await rig.chat()).status_code for _ in range(3)] == [500, 502, 500]
    assert (await breaker(rig))["state"] == 1.0
    assert rig.fake.request_count == 9
    assert_circuit_open(await rig.chat())
    clock.jump(30)
    assert [(await rig.chat()).status_code for _ in range(2)] == [200, 200]  # half-open: closed
    assert (await breaker(rig))["state"] == 0.0

    # Not failures, so they break a run of failures: 503 503 429 503 503 stays closed.
    rig.fake.behave(Fail(503), Fail(503), RateLimited(retry_after="1"), Fail(503), Fail(503))
    assert [(await rig.chat(headers=BYOK)).status_code for _ in range(5)] == [
        503,
        503,
        429,
        503,
        503,
    ]
    assert (await breaker(rig))["state"] == 0.0
    rig.fake.behave(Fail(503))
    assert (await rig.chat()).status_code == 503  # the third in a row trips it
    assert (await breaker(rig))["state"] == 1.0
    assert rig.fake.request_count == 17
    assert_circuit_open(await rig.chat())
    assert rig.fake.request_count == 17


async def test_connect_errors_count_as_failures(rigs, clock) -> None:
    rig = await rigs(keys=[K0, K1], bridge=SETTINGS, prefix="cb", base_url=closed_port_url())
    assert [(await rig.chat()).status_code for _ in range(3)] == [502] * 3
    assert (await breaker(rig))["state"] == 1.0
    assert_circuit_open(await rig.chat())
    # Refused connections never mark a key nor fail over.
    assert [k["state"] for k in await rig.keys()] == ["valid", "valid"]


async def test_first_byte_timeouts_count_as_failures_and_are_retried_without_a_fallback(
    rigs, clock
) -> None:
    # interval 1m: three 5 s timeouts must fall in one counting window. Default retries: one
    # request makes three attempts (no fallback configured), each a breaker failure.
    breaker_settings = BREAKER.replace("interval: 10s", "interval: 1m")
    rig = await rigs(
        keys=[K0],
        prefix="cb",
        bridge=(f"auth: none, first_byte_timeout: 5s, circuit_breaker: {{{breaker_settings}}}"),
    )
    rig.fake.behave(*[SlowFirstByte(60)] * 3)
    t0 = trio.current_time()
    response = await rig.chat()
    assert response.status_code == 504
    # Three 5 s first-byte timeouts and two full-jitter backoffs (at most 0.25 s + 0.5 s).
    assert 15 <= trio.current_time() - t0 <= 15.8
    assert (await breaker(rig))["state"] == 1.0
    assert_circuit_open(await rig.chat())
    assert rig.fake.request_count == 3


async def test_anthropic_529_trips_and_rejections_use_the_anthropic_shape(rigs, clock) -> None:
    rig = await rigs(keys=[K0], dialect="anthropic", bridge=SETTINGS, prefix="cb")
    rig.fake.behave(*[Fail(529)] * 3)
    for _ in range(3):
        response = await rig.chat(model="claude-sonnet-4-5")
        assert response.status_code == 529
        assert response.json()["error"]["type"] == "overloaded_error"
    assert (await breaker(rig, endpoint="messages", model="claude-sonnet-4-5"))["state"] == 1.0
    assert_circuit_open(await rig.chat(model="claude-sonnet-4-5"), dialect="anthropic")
    assert rig.fake.request_count == 3


async def test_reload_keeps_the_breaker_unless_the_base_url_changes(rigs, clock, nursery) -> None:
    # timeout 1 h: while a reload is noticed the virtual clock may jump past idle deadlines.
    settings = SETTINGS.replace("timeout: 30s", "timeout: 1h")
    rig = await rigs(keys=[K0, K1], bridge=settings, prefix="cb")
    await trip(rig)

    await rig.reload(keys=[K0, K1], headers={"x-unrelated": "1"})
    rejected = await rig.chat()
    assert rejected.status_code == 503 and rejected.headers["retry-after"] == "3600"
    assert rig.fake.request_count == 3  # same type and base_url: the breaker survived

    other = await nursery.start(FakeUpstream("openai").serve)
    await rig.reload(keys=[K0, K1], headers={"x-unrelated": "1"}, base_url=other.base_url)
    response = await rig.chat()
    assert response.status_code == 200  # a new base_url: a new, closed breaker
    assert other.request_count == 1 and rig.fake.request_count == 3
    assert other.last_request.header("x-unrelated") == "1"
    status = await breaker(rig)
    assert status["state"] == 0.0
