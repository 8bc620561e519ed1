"""The circuit breaker: state cycle, generations, classification, per-model isolation."""

from __future__ import annotations

import random
import string

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from trio_bridge.resilience.breaker import (
    Admission,
    BreakerSet,
    BreakerSettings,
    CircuitBreaker,
    ModelLabeler,
)
from trio_bridge.resilience.outcome import Kind, Outcome, classify_status

SETTINGS = BreakerSettings(failure_threshold=3, interval=10.0, timeout=30.0, max_requests=2)


def fail(breaker: CircuitBreaker, now: float, times: int = 1) -> None:
    for _ in range(times):
        admission = breaker.admit(now)
        assert admission is not None
        breaker.record_failure(admission, now)


def succeed(breaker: CircuitBreaker, now: float, times: int = 1) -> None:
    for _ in range(times):
        admission = breaker.admit(now)
        assert admission is not None
        breaker.record_success(admission, now)


def tripped_breaker(at: float = 0.0) -> CircuitBreaker:
    breaker = CircuitBreaker(SETTINGS)
    fail(breaker, at, 3)
    assert breaker.state(at) == "open"
    return breaker


# ---- the cycle -------------------------------------------------------------------------


def test_closed_open_half_open_closed() -> None:
    breaker = CircuitBreaker(SETTINGS)
    assert breaker.state(0.0) == "closed"

    fail(breaker, 1.0, 2)
    assert breaker.state(1.0) == "closed"
    admission = breaker.admit(1.0)
    assert admission is not None
    transition = breaker.record_failure(admission, 1.0)
    assert transition.tripped and (transition.previous, transition.current) == ("closed", "open")
    assert breaker.trips == 1

    assert breaker.admit(1.0) is None
    assert breaker.admit(30.9) is None
    assert breaker.retry_after == 30

    assert breaker.state(31.0) == "half_open"
    first = breaker.admit(31.0)
    second = breaker.admit(31.0)
    assert first is not None and second is not None
    assert breaker.record_success(first, 32.0).current == "half_open"
    transition = breaker.record_success(second, 33.0)
    assert transition.recovered and transition.current == "closed"
    assert breaker.admit(33.0) is not None
    assert breaker.trips == 1


def test_success_resets_the_consecutive_failure_count() -> None:
    breaker = CircuitBreaker(SETTINGS)
    fail(breaker, 0.0, 2)
    succeed(breaker, 0.0)
    fail(breaker, 0.0, 2)
    assert breaker.state(0.0) == "closed"
    fail(breaker, 0.0)
    assert breaker.state(0.0) == "open"


def test_half_open_failure_reopens_and_counts_a_second_trip() -> None:
    breaker = tripped_breaker(at=0.0)
    probe = breaker.admit(30.0)
    assert probe is not None
    transition = breaker.record_failure(probe, 35.0)
    assert transition.tripped and transition.previous == "half_open"
    assert breaker.trips == 2
    assert breaker.state(64.9) == "open"  # a full timeout from the failing probe
    assert breaker.state(65.0) == "half_open"


def test_half_open_admits_exactly_max_requests_in_total() -> None:
    breaker = CircuitBreaker(
        BreakerSettings(failure_threshold=1, interval=10.0, timeout=5.0, max_requests=3)
    )
    fail(breaker, 0.0)
    admissions = [breaker.admit(5.0) for _ in range(4)]
    assert [a is not None for a in admissions] == [True, True, True, False]
    first = admissions[0]
    assert first is not None
    breaker.record_success(first, 6.0)  # a finished probe does not free a slot
    assert breaker.state(6.0) == "half_open"
    assert breaker.admit(6.0) is None


def test_released_half_open_admission_frees_its_slot() -> None:
    breaker = tripped_breaker()
    probes = [breaker.admit(30.0), breaker.admit(30.0)]
    assert breaker.admit(30.0) is None
    assert probes[0] is not None
    breaker.release(probes[0], 31.0)  # e.g. the client went away
    assert breaker.admit(31.0) is not None
    assert breaker.admit(31.0) is None


def test_interval_resets_counts_while_closed() -> None:
    breaker = CircuitBreaker(SETTINGS)
    fail(breaker, 0.0, 2)  # the window starts at 0 and ends at 10
    fail(breaker, 10.0)  # a new window: the count restarts at 1
    assert breaker.state(10.0) == "closed"
    fail(breaker, 19.9)
    assert breaker.state(19.9) == "closed"
    fail(breaker, 19.95)
    assert breaker.state(19.95) == "open"


def test_interval_windows_stay_aligned_after_idle_time() -> None:
    breaker = CircuitBreaker(SETTINGS)
    fail(breaker, 0.0)
    fail(breaker, 1000.5, 2)  # windows [1000, 1010)
    fail(breaker, 1010.0)  # reset at 1010, not at 1010.5
    assert breaker.state(1010.0) == "closed"


def test_zero_interval_never_resets_counts() -> None:
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=3, interval=0.0))
    fail(breaker, 0.0, 2)
    fail(breaker, 10_000.0)
    assert breaker.state(10_000.0) == "open"


# ---- generations -----------------------------------------------------------------------


def test_stale_admission_from_before_a_trip_changes_nothing() -> None:
    breaker = CircuitBreaker(SETTINGS)
    slow = breaker.admit(0.0)
    assert slow is not None
    fail(breaker, 1.0, 3)
    assert breaker.state(1.0) == "open"

    # In open: a late success must not close it.
    result = breaker.record_success(slow, 2.0)
    assert result.stale and not result.changed
    assert breaker.state(2.0) == "open"

    # In half-open: a late failure must not re-open it, a late success must not count.
    probe = breaker.admit(31.0)
    assert probe is not None
    assert breaker.record_failure(slow, 31.5).stale
    assert breaker.record_success(slow, 31.5).stale
    assert breaker.state(31.5) == "half_open"
    assert breaker.trips == 1
    breaker.record_success(probe, 32.0)
    assert breaker.state(32.0) == "half_open"  # one real success of the two needed

    # Closed again: old results still do not count.
    succeed(breaker, 33.0)
    assert breaker.state(33.0) == "closed"
    for _ in range(5):
        breaker.record_failure(slow, 34.0)
    assert breaker.state(34.0) == "closed"
    assert breaker.consecutive_failures == 0


def test_slow_failure_admitted_in_an_earlier_window_still_counts() -> None:
    breaker = CircuitBreaker(SETTINGS)
    slow = [breaker.admit(0.0) for _ in range(3)]
    # A first-byte timeout lasts longer than the 10 s count window.
    for admission in slow:
        assert admission is not None
        breaker.record_failure(admission, 120.0)
    assert breaker.state(120.0) == "open"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["admit", "ok", "fail", "release", "wait"]),
            st.integers(0, 20),
            st.sampled_from([0.0, 1.0, 5.0, 10.0, 29.9, 30.0, 31.0]),
        ),
        max_size=80,
    )
)
def test_half_open_never_has_more_than_max_requests_probes(
    ops: list[tuple[str, int, float]],
) -> None:
    breaker = CircuitBreaker(SETTINGS)
    now = 0.0
    held: list[Admission] = []
    keep_alive: list[Admission] = []  # so id() of an admission is never reused
    probes: set[int] = set()  # admitted in the current half-open period, not released
    admitted = released = 0
    for op, pick, amount in ops:
        trips_before = breaker.trips
        if op == "wait":
            now += amount
        elif op == "admit":
            state = breaker.state(now)
            admission = breaker.admit(now)
            if state == "open":
                assert admission is None
            if admission is not None:
                held.append(admission)
                keep_alive.append(admission)
                if state == "half_open":
                    probes.add(id(admission))
                    admitted += 1
        elif held:
            admission = held.pop(pick % len(held))
            if op == "ok":
                breaker.record_success(admission, now)
            elif op == "fail":
                breaker.record_failure(admission, now)
            else:
                breaker.release(admission, now)
                if id(admission) in probes:
                    probes.discard(id(admission))
                    released += 1
        assert breaker.trips >= trips_before
        if breaker.state(now) != "half_open" or breaker.trips != trips_before:
            probes.clear()
            admitted = released = 0
        assert admitted - released <= SETTINGS.max_requests


# ---- classification --------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 529])
def test_overload_statuses_are_failures(status: int) -> None:
    assert classify_status(status).breaker_failure


@pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404, 408, 413, 422, 429, 501, 505])
def test_rate_limits_client_errors_and_other_5xx_are_not_failures(status: int) -> None:
    assert not classify_status(status).breaker_failure


def test_connect_errors_and_timeouts_are_failures_a_full_pool_is_not() -> None:
    for kind in (Kind.CONNECT_ERROR, Kind.TIMEOUT, Kind.FIRST_TOKEN_TIMEOUT, Kind.STREAM_ERROR):
        assert Outcome(kind).breaker_failure
    assert not Outcome(Kind.POOL_FULL).breaker_failure


def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        BreakerSettings(failure_threshold=0)
    with pytest.raises(ValueError):
        BreakerSettings(max_requests=0)
    with pytest.raises(ValueError):
        BreakerSettings(timeout=-1.0)


# ---- BreakerSet and labels -------------------------------------------------------------


def test_breaker_set_isolates_models_and_endpoints() -> None:
    breakers = BreakerSet(SETTINGS)
    fail(breakers.get("/v1/chat/completions", "gpt-4o"), 0.0, 3)

    assert breakers.get("/v1/chat/completions", "gpt-4o").state(0.0) == "open"
    assert breakers.get("/v1/chat/completions", "gpt-4o-mini").state(0.0) == "closed"
    assert breakers.get("/v1/embeddings", "gpt-4o").state(0.0) == "closed"
    assert breakers.get("/v1/chat/completions", "gpt-4o") is breakers.get(
        "/v1/chat/completions", "gpt-4o"
    )
    views = {(v.endpoint, v.model): (v.state, v.trips) for v in breakers.views(0.0)}
    assert views == {
        ("/v1/chat/completions", "gpt-4o"): ("open", 1),
        ("/v1/chat/completions", "gpt-4o-mini"): ("closed", 0),
        ("/v1/embeddings", "gpt-4o"): ("closed", 0),
    }


def test_update_settings_keeps_state_and_applies_new_thresholds() -> None:
    breakers = BreakerSet(SETTINGS)
    open_one = breakers.get("/v1/messages", "claude")
    fail(open_one, 0.0, 3)
    counting = breakers.get("/v1/messages", "haiku")
    fail(counting, 0.0, 2)

    breakers.update_settings(BreakerSettings(failure_threshold=10, timeout=60.0, max_requests=1))

    assert breakers.get("/v1/messages", "claude") is open_one
    assert open_one.state(1.0) == "open" and open_one.trips == 1
    assert counting.consecutive_failures == 2
    fail(counting, 1.0, 7)
    assert counting.state(1.0) == "closed"  # 9 < 10: the new threshold applies
    fail(counting, 1.0)
    assert counting.state(1.0) == "open"
    assert counting.retry_after == 60
    assert breakers.get("/v1/new", "m").settings.failure_threshold == 10


def test_prune_drops_only_idle_breakers() -> None:
    breakers = BreakerSet(SETTINGS, max_breakers=3)
    fail(breakers.get("/e", "open"), 0.0, 3)
    fail(breakers.get("/e", "counting"), 0.0, 1)
    succeed(breakers.get("/e", "idle"), 0.0)
    breakers.get("/e", "new")  # at the cap: idle ones go first
    assert {v.model for v in breakers.views(0.0)} == {"open", "counting", "new"}


def test_model_labels_are_bounded_to_100_distinct_plus_other() -> None:
    rng = random.Random(1234)
    alphabet = string.ascii_letters + string.digits + "._:/-"
    labeler = ModelLabeler()
    names = ["".join(rng.choices(alphabet, k=rng.randint(1, 40))) for _ in range(2000)]
    labels = [labeler.label(name) for name in names]

    distinct = set(labels) - {"other"}
    assert len(distinct) == 100
    assert "other" in labels
    assert distinct == set(list(dict.fromkeys(names))[:100])  # the first 100 seen
    # A model seen before the cap keeps its own label afterwards.
    assert labeler.label(names[0]) == names[0]
    assert len(labeler) == 100


@pytest.mark.parametrize(
    "model", [None, "", "a" * 129, "gpt 4", "gpt-4\n", "modèle", "x;drop", "a{b}"]
)
def test_unlabelable_models_are_other(model: str | None) -> None:
    assert ModelLabeler().label(model) == "other"


def test_labelable_model_is_its_own_label() -> None:
    labeler = ModelLabeler()
    for model in ["gpt-4o", "claude-3-5-sonnet-20241022", "org/model:tag", "a" * 128, "v1.2_x"]:
        assert labeler.label(model) == model


# ---- on trio's clock -------------------------------------------------------------------


async def test_breaker_follows_trio_clock_under_autojump(autojump_clock: MockClock) -> None:
    breaker = CircuitBreaker(SETTINGS)
    fail(breaker, trio.current_time(), 3)
    assert breaker.admit(trio.current_time()) is None

    await trio.sleep(SETTINGS.timeout - 1)
    assert breaker.state(trio.current_time()) == "open"
    await trio.sleep(1)
    assert breaker.state(trio.current_time()) == "half_open"

    async def probe() -> None:
        admission = breaker.admit(trio.current_time())
        assert admission is not None
        await trio.sleep(5)  # the upstream takes its time
        breaker.record_success(admission, trio.current_time())

    async with trio.open_nursery() as nursery:
        for _ in range(SETTINGS.max_requests):
            nursery.start_soon(probe)
        await trio.sleep(1)
        assert breaker.admit(trio.current_time()) is None  # probes in flight use every slot
    assert breaker.state(trio.current_time()) == "closed"
