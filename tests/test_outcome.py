"""What an upstream outcome means: the one sans-IO decision (resilience/outcome.py), no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_bridge.resilience.outcome import (
    Action,
    AttemptWindow,
    Kind,
    Outcome,
    RetryBudget,
    classify_status,
    decide,
)


def budget(used: int = 1, **kw) -> RetryBudget:
    b = RetryBudget(rand=lambda: 1.0, **kw)
    for _ in range(used):
        b.attempt()
    return b


def verdict(outcome: Outcome, *, byok=False, used=1, other_key=False, has_next=False, ctx=False):
    return decide(
        outcome,
        byok=byok,
        budget=budget(used),
        other_key=other_key,
        has_next_target=has_next,
        context_length_fallback=ctx,
    )


@pytest.mark.parametrize(
    ("status", "kind", "breaker_failure"),
    [
        (200, Kind.OK, False),
        (429, Kind.RATE_LIMITED, False),
        (401, Kind.AUTH_FAILED, False),
        (403, Kind.CLIENT_ERROR, False),
        (400, Kind.CLIENT_ERROR, False),
        (500, Kind.SERVER_ERROR, True),
        (502, Kind.SERVER_ERROR, True),
        (503, Kind.SERVER_ERROR, True),
        (504, Kind.SERVER_ERROR, True),
        (529, Kind.SERVER_ERROR, True),
        (501, Kind.CLIENT_ERROR, False),
    ],
)
def test_statuses_classify_and_count_against_the_breaker(status, kind, breaker_failure) -> None:
    outcome = classify_status(status)
    assert outcome.kind is kind
    assert outcome.breaker_failure is breaker_failure


@pytest.mark.parametrize(
    ("kind", "failure"),
    [
        (Kind.CONNECT_ERROR, True),
        (Kind.TIMEOUT, True),
        (Kind.FIRST_TOKEN_TIMEOUT, True),
        (Kind.STREAM_ERROR, True),
        (Kind.POOL_FULL, False),
        (Kind.CONTEXT_LENGTH, False),
    ],
)
def test_transport_outcomes_against_the_breaker(kind: Kind, failure: bool) -> None:
    assert Outcome(kind).breaker_failure is failure


def test_success_and_plain_client_errors_are_relayed() -> None:
    for status in (200, 400, 403, 404, 422, 501):
        assert verdict(classify_status(status), has_next=True).action is Action.RELAY


def test_429_and_401_fail_over_to_the_next_key_and_mark_it() -> None:
    d = verdict(classify_status(429), other_key=True)
    assert (d.action, d.mark) == (Action.NEXT_KEY, "rate_limited")
    d = verdict(classify_status(401), other_key=True)
    assert (d.action, d.mark) == (Action.NEXT_KEY, "auth_failed")


def test_byok_429_and_401_are_relayed_never_marked_nor_failed_over() -> None:
    for status in (429, 401):
        d = verdict(classify_status(status), byok=True, other_key=True, has_next=True)
        assert (d.action, d.mark) == (Action.RELAY, None)


def test_a_short_retry_after_is_waited_out_when_no_other_key_can_take_it() -> None:
    d = verdict(classify_status(429, retry_after=2.0))
    assert (d.action, d.delay, d.reason, d.mark) == (
        Action.RETRY,
        2.0,
        "rate_limited",
        "rate_limited",
    )
    d = verdict(classify_status(429, retry_after=2.5))  # over max_backoff: the pool gives up
    assert (d.action, d.reason) == (Action.GIVE_UP, "rate_limited")
    d = verdict(classify_status(429))  # no header: no wait either
    assert d.action is Action.GIVE_UP


def test_key_failovers_count_against_the_attempt_budget() -> None:
    d = verdict(classify_status(429), used=3, other_key=True)
    assert (d.action, d.reason) == (Action.GIVE_UP, "rate_limited")


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (classify_status(500), "server_error"),
        (classify_status(529), "server_error"),
        (Outcome(Kind.CONNECT_ERROR), "connect_error"),
        (Outcome(Kind.STREAM_ERROR), "server_error"),
        (Outcome(Kind.TIMEOUT), "timeout"),
    ],
)
def test_5xx_connect_errors_and_timeouts_are_retried_then_given_up(outcome, reason) -> None:
    d = verdict(outcome, used=1)
    assert (d.action, d.reason) == (Action.RETRY, reason)
    assert 0 <= d.delay <= 0.25
    d = verdict(outcome, used=3, has_next=True)
    assert (d.action, d.reason) == (Action.GIVE_UP, reason)


def test_a_first_byte_timeout_is_not_retried_when_a_fallback_follows() -> None:
    d = verdict(Outcome(Kind.TIMEOUT), has_next=True)
    assert (d.action, d.reason) == (Action.GIVE_UP, "timeout")


def test_first_token_timeout_goes_to_the_next_target_at_once() -> None:
    d = verdict(Outcome(Kind.FIRST_TOKEN_TIMEOUT), has_next=True)
    assert (d.action, d.reason) == (Action.GIVE_UP, "first_token_timeout")


def test_a_503_retry_after_within_max_backoff_replaces_the_jitter() -> None:
    d = verdict(classify_status(503, retry_after=1.5))
    assert (d.action, d.delay) == (Action.RETRY, 1.5)
    d = verdict(classify_status(503, retry_after=30.0), has_next=True)
    assert (d.action, d.reason) == (Action.GIVE_UP, "server_error")


def test_context_length_falls_back_only_when_the_entry_says_so() -> None:
    outcome = Outcome(Kind.CONTEXT_LENGTH, 400)
    assert verdict(outcome, has_next=True).action is Action.RELAY
    d = verdict(outcome, has_next=True, ctx=True)
    assert (d.action, d.reason) == (Action.GIVE_UP, "context_length")


def test_our_pool_full_is_not_a_fallback_trigger() -> None:
    d = verdict(Outcome(Kind.POOL_FULL), has_next=True)
    assert (d.action, d.reason) == (Action.GIVE_UP, None)


def test_full_jitter_doubles_its_cap_up_to_max_backoff() -> None:
    b = RetryBudget(max_attempts=10, backoff=0.25, max_backoff=2.0, rand=lambda: 1.0)
    caps = []
    for _ in range(6):
        caps.append(b.jitter())
        b.retries += 1
    assert caps == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert RetryBudget(rand=lambda: 0.0).jitter() == 0.0


@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), max_size=40))
def test_never_more_than_4_attempts_within_3_seconds(gaps: list[float]) -> None:
    window = AttemptWindow()
    now = 0.0
    starts: list[float] = []
    for gap in gaps:
        now += gap
        now += window.wait(now)  # the caller sleeps this long first
        window.record(now)
        starts.append(now)
    for i in range(len(starts) - 4):
        assert starts[i + 4] - starts[i] >= 3.0 - 1e-9


@given(
    st.lists(
        st.sampled_from([500, 502, 503, 504, 529, 429, 401]),
        min_size=1,
        max_size=20,
    ),
    st.booleans(),
)
def test_one_target_never_exceeds_max_attempts(statuses: list[int], other_key: bool) -> None:
    b = RetryBudget(rand=lambda: 0.5)
    for status in statuses:
        b.attempt()
        d = decide(
            classify_status(status, retry_after=1.0 if status == 429 else None),
            byok=False,
            budget=b,
            other_key=other_key,
            has_next_target=True,
            context_length_fallback=False,
        )
        if d.action in (Action.GIVE_UP, Action.RELAY):
            break
        assert b.attempts < b.max_attempts
    assert b.attempts <= b.max_attempts
