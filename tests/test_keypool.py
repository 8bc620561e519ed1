"""The key pool: failover order, cooldowns, Retry-After parsing, exhaustion, reloads."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import MockClock

from trio_bridge.resilience.keypool import (
    MAX_COOLDOWN,
    KeyPool,
    KeyState,
    KeyStateRegistry,
    PoolKey,
    cooldown_from_headers,
)

SECRETS = [f"sk-test-{i}-0123456789abcdefSECRET{i}" for i in range(4)]
WALL = 1_700_000_000.0  # a whole second, so formatdate() round-trips exactly


def make_pool(n: int = 3, *, registry: KeyStateRegistry | None = None) -> KeyPool:
    keys = []
    for i, secret in enumerate(SECRETS[:n]):
        state = registry.state_for("openai", secret) if registry is not None else KeyState()
        keys.append(PoolKey(i, secret, f"{secret[:4]}...{secret[-4:]}", state))
    return KeyPool("openai", keys)


def picked(pool: KeyPool, now: float, tried: frozenset[int] = frozenset()) -> int | None:
    key = pool.pick(now, tried)
    return None if key is None else key.index


# ---- failover order and cooldown length ------------------------------------------------


def test_rate_limited_first_key_fails_over_and_returns_after_60s() -> None:
    pool = make_pool(3)
    t0 = 1000.0
    k0 = pool.pick(t0)
    assert k0 is not None and k0.index == 0

    cooldown = cooldown_from_headers({}, wall_now=WALL)
    assert pool.mark_rate_limited(k0, t0, cooldown) is True

    assert picked(pool, t0, frozenset({0})) == 1  # the same request retries with k1
    assert picked(pool, t0 + 0.1) == 1  # the next request starts at k1
    assert picked(pool, t0 + 59) == 1
    assert pool.keys[0].state.cooling(t0 + 59)
    assert picked(pool, t0 + 61) == 0


def test_tried_keys_are_skipped_in_configured_order() -> None:
    pool = make_pool(3)
    assert picked(pool, 0.0, frozenset({0})) == 1
    assert picked(pool, 0.0, frozenset({0, 1})) == 2
    assert picked(pool, 0.0, frozenset({0, 1, 2})) is None


def test_auth_failure_cools_for_60s_by_default() -> None:
    pool = make_pool(2)
    assert pool.mark_auth_failed(pool.keys[0], 10.0) is True
    assert picked(pool, 69.9) == 1
    assert picked(pool, 70.0) == 0


def test_shorter_cooldown_never_shortens_one_in_force() -> None:
    pool = make_pool(2)
    k0 = pool.keys[0]
    assert pool.mark_rate_limited(k0, 100.0, 65.0) is True
    assert pool.mark_rate_limited(k0, 101.0, 15.0) is False  # arrives during the 65 s one
    assert k0.state.until() == 165.0
    assert picked(pool, 164.9) == 1
    assert picked(pool, 165.0) == 0


def test_later_ending_cooldown_extends_and_takes_over_the_reason() -> None:
    pool = make_pool(1)
    k0 = pool.keys[0]
    pool.mark_rate_limited(k0, 0.0, 10.0)
    assert pool.mark_auth_failed(k0, 5.0) is True  # rate_limited -> auth_failed
    assert (k0.state.cooling_until, k0.state.reason) == (65.0, "auth_failed")
    assert pool.mark_rate_limited(k0, 6.0, 5.0) is False  # ends earlier: ignored
    assert k0.state.reason == "auth_failed"


# ---- Retry-After -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "30"}, 30.0),
        ({"retry-after": " 7 "}, 7.0),
        ([("RETRY-AFTER", "12")], 12.0),
        ({"Retry-After": formatdate(WALL + 120, usegmt=True)}, 120.0),
        ({"Retry-After": formatdate(WALL + 45, localtime=True)}, 45.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After-Ms": "250", "Retry-After": "30"}, 0.25),  # ms wins
        ({}, 60.0),
    ],
    ids=[
        "seconds",
        "padded",
        "list-any-case",
        "http-date",
        "http-date-local",
        "ms",
        "ms-wins",
        "absent",
    ],
)
def test_cooldown_from_headers(headers: object, expected: float) -> None:
    assert cooldown_from_headers(headers, wall_now=WALL) == pytest.approx(expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "soon"}, 60.0),
        ({"Retry-After": "-5"}, 60.0),
        ({"Retry-After": "nan"}, 60.0),
        ({"retry-after-ms": "-100", "Retry-After": "9"}, 9.0),
        ({"retry-after-ms": "x", "Retry-After": "y"}, 60.0),
    ],
    ids=["garbage", "negative", "nan", "negative-ms-falls-through", "all-garbage"],
)
def test_unusable_retry_after_falls_through_to_the_next_rule(
    headers: dict[str, str], expected: float
) -> None:
    assert cooldown_from_headers(headers, wall_now=WALL) == expected


def test_zero_or_past_retry_after_still_cools_for_one_unit() -> None:
    assert cooldown_from_headers({"Retry-After": "0"}, wall_now=WALL) == 1.0
    past = formatdate(WALL - 3600, usegmt=True)
    assert cooldown_from_headers({"Retry-After": past}, wall_now=WALL) == 1.0
    assert cooldown_from_headers({"retry-after-ms": "0"}, wall_now=WALL) == 0.001


def test_absurd_retry_after_is_capped() -> None:
    assert cooldown_from_headers({"Retry-After": "9" * 400}, wall_now=WALL) == MAX_COOLDOWN


def test_custom_default_applies_only_without_a_usable_header() -> None:
    assert cooldown_from_headers({}, wall_now=WALL, default=5.0) == 5.0
    assert cooldown_from_headers({"Retry-After": "2"}, wall_now=WALL, default=5.0) == 2.0


# ---- exhaustion ------------------------------------------------------------------------


def test_exhaustion_retry_after_is_smallest_remaining_rate_limit() -> None:
    pool = make_pool(3)
    now = 32765.8  # float noise: (32765.8 + 3) - 32765.8 == 3.000000000003638
    for key, cooldown in zip(pool.keys, (5.0, 3.0, 10.0), strict=True):
        pool.mark_rate_limited(key, now, cooldown)
    assert pool.pick(now) is None
    exhausted = pool.exhaustion(now)
    assert (exhausted.status, exhausted.retry_after, exhausted.reason) == (429, 3, "rate_limited")
    assert pool.exhaustion(now + 1.5).retry_after == 2  # rounded up


def test_all_keys_auth_failed_is_502() -> None:
    pool = make_pool(3)
    for key in pool.keys:
        pool.mark_auth_failed(key, 0.0)
    assert pool.pick(1.0) is None
    exhausted = pool.exhaustion(1.0)
    assert (exhausted.status, exhausted.retry_after, exhausted.reason) == (502, None, "auth_failed")


def test_mixed_exhaustion_is_429_timed_by_rate_limited_keys_only() -> None:
    pool = make_pool(3)
    pool.mark_auth_failed(pool.keys[0], 0.0, 10.0)  # back sooner, but it is a bad key
    pool.mark_rate_limited(pool.keys[1], 0.0, 30.0)
    pool.mark_auth_failed(pool.keys[2], 0.0)
    exhausted = pool.exhaustion(0.0)
    assert (exhausted.status, exhausted.retry_after) == (429, 30)


def test_exhaustion_after_a_rate_limit_ended_mid_request_is_429() -> None:
    pool = make_pool(2)
    pool.mark_rate_limited(pool.keys[0], 0.0, 0.001)
    pool.mark_rate_limited(pool.keys[1], 0.0, 0.001)
    assert pool.pick(0.5, frozenset({0, 1})) is None
    exhausted = pool.exhaustion(0.5)
    assert (exhausted.status, exhausted.retry_after) == (429, 1)


def test_exhaustion_on_an_empty_pool_does_not_crash() -> None:
    pool = KeyPool("empty", [])
    assert pool.pick(0.0) is None
    assert pool.exhaustion(0.0).status == 502


# ---- views -----------------------------------------------------------------------------


def test_states_and_counts_report_each_key() -> None:
    pool = make_pool(3)
    pool.mark_rate_limited(pool.keys[0], 0.0, 30.0)
    pool.mark_auth_failed(pool.keys[2], 0.0)
    views = pool.states(1.0)
    assert [(v.index, v.state, v.cooling_until, v.reason) for v in views] == [
        (0, "rate_limited", 30.0, "rate_limited"),
        (1, "valid", None, None),
        (2, "auth_failed", 60.0, "auth_failed"),
    ]
    assert pool.counts(1.0) == {"valid": 1, "rate_limited": 1, "auth_failed": 1}
    assert pool.counts(61.0) == {"valid": 3, "rate_limited": 0, "auth_failed": 0}
    assert [v.state for v in pool.states(61.0)] == ["valid"] * 3


def test_secret_appears_in_no_repr() -> None:
    pool = make_pool(2)
    key = pool.keys[0]
    pool.mark_rate_limited(key, 0.0, 5.0)
    rendered = [repr(key), str(key), repr(pool), repr(pool.states(0.0)), repr(key.state)]
    for text in rendered:
        assert key.secret not in text
        assert "SECRET" not in text
    assert key.hint in repr(key)


# ---- reload ----------------------------------------------------------------------------


def test_registry_carries_cooldowns_across_reload() -> None:
    registry = KeyStateRegistry()
    old = make_pool(3, registry=registry)
    old.mark_rate_limited(old.keys[0], 0.0, 60.0)
    old.mark_auth_failed(old.keys[2], 0.0)

    # Reload: k0 unchanged (moved to second place), k1 removed, k2 removed, k3 new.
    new_secrets = [SECRETS[3], SECRETS[0]]
    new = KeyPool(
        "openai",
        [PoolKey(i, s, "hint", registry.state_for("openai", s)) for i, s in enumerate(new_secrets)],
    )
    registry.retain(("openai", s) for s in new_secrets)

    assert new.keys[1].state is old.keys[0].state
    assert new.keys[1].state.cooling(30.0)
    assert not new.keys[0].state.cooling(30.0)  # new key starts valid
    assert picked(new, 30.0) == 0
    assert len(registry) == 2

    # The removed auth-failed key was forgotten: re-adding it gives a fresh, valid state.
    readded = registry.state_for("openai", SECRETS[2])
    assert readded is not old.keys[2].state
    assert not readded.cooling(1.0)


def test_registry_separates_providers_sharing_a_key_value() -> None:
    registry = KeyStateRegistry()
    a = registry.state_for("a", SECRETS[0])
    b = registry.state_for("b", SECRETS[0])
    assert a is not b
    assert registry.state_for("a", SECRETS[0]) is a


# ---- properties ------------------------------------------------------------------------

N_KEYS = 4
cooldowns = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, 3.0, 15.0, 59.9, 60.0, 60.1, 65.0]),
    st.floats(min_value=0.0, max_value=300.0, allow_nan=False),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("rate"), st.integers(0, N_KEYS - 1), cooldowns),
        st.tuples(st.just("auth"), st.integers(0, N_KEYS - 1), cooldowns),
        st.tuples(st.just("wait"), st.just(0), cooldowns),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(operations, st.frozensets(st.integers(0, N_KEYS - 1)))
def test_pick_is_first_key_not_cooling_and_cooldowns_never_shrink(
    ops: list[tuple[str, int, float]], tried: frozenset[int]
) -> None:
    pool = make_pool(N_KEYS)
    promised = [0.0] * N_KEYS  # the latest end any mark so far promised, per key
    now = 0.0
    for op, index, amount in ops:
        key = pool.keys[index]
        if op == "wait":
            now += amount
        elif op == "rate":
            pool.mark_rate_limited(key, now, amount)
            promised[index] = max(promised[index], now + amount)
        else:
            pool.mark_auth_failed(key, now, amount)
            promised[index] = max(promised[index], now + amount)

        for i, k in enumerate(pool.keys):
            assert k.state.until() >= promised[i]
        free = [i for i in range(N_KEYS) if now >= promised[i]]
        assert picked(pool, now) == (free[0] if free else None)
        free_untried = [i for i in free if i not in tried]
        assert picked(pool, now, tried) == (free_untried[0] if free_untried else None)

        if not free:
            exhausted = pool.exhaustion(now)
            assert exhausted.status in (429, 502)
            if exhausted.status == 429:
                assert exhausted.retry_after is not None and exhausted.retry_after >= 1
                # Retrying after Retry-After (plus float slack) finds a key.
                assert pool.pick(now + exhausted.retry_after + 1e-3) is not None


# ---- on trio's clock -------------------------------------------------------------------


async def test_pool_follows_trio_clock_under_autojump(autojump_clock: MockClock) -> None:
    pool = make_pool(2)
    start = trio.current_time()
    k0 = pool.pick(trio.current_time())
    assert k0 is not None
    cooldown = cooldown_from_headers({"Retry-After": "60"}, wall_now=time.time())
    pool.mark_rate_limited(k0, trio.current_time(), cooldown)
    pool.mark_rate_limited(pool.keys[1], trio.current_time(), 90.0)

    exhausted = pool.exhaustion(trio.current_time())
    assert (exhausted.status, exhausted.retry_after) == (429, 60)

    await trio.sleep(59)
    assert pool.pick(trio.current_time()) is None
    await trio.sleep(2)
    assert picked(pool, trio.current_time()) == 0
    assert trio.current_time() - start == pytest.approx(61)
