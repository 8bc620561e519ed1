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


# ---- per (key, model) ------------------------------------------------------------------


def test_a_429_cools_only_its_model_a_401_cools_every_model() -> None:
    pool = make_pool(2)
    k0 = pool.keys[0]
    pool.mark_rate_limited(k0, 0.0, 30.0, "gpt-4o")
    assert picked_for(pool, 1.0, "gpt-4o") == 1
    assert picked_for(pool, 1.0, "gpt-4.1") == 0  # the same key serves another model
    assert k0.state.status(1.0) == "rate_limited"  # as a whole: some pair cools
    assert k0.state.status(1.0, "gpt-4.1") == "valid"
    pool.mark_rate_limited(pool.keys[1], 0.0, 10.0, "gpt-4o")
    assert pool.exhaustion(1.0, "gpt-4o").retry_after == 9  # k1 for gpt-4o ends first
    pool.mark_auth_failed(k0, 2.0)
    assert picked_for(pool, 3.0, "gpt-4.1") == 1
    assert k0.state.status(3.0, "gpt-4o") == "auth_failed"  # the later-ending cooldown


def test_backoff_without_a_header_doubles_to_60s_and_a_success_resets_it() -> None:
    pool = make_pool(1)
    k0 = pool.keys[0]
    now, seen = 0.0, []
    for _ in range(8):
        pool.mark_rate_limited(k0, now, None, "m")
        seen.append(k0.state.until("m") - now)
        now = k0.state.until("m")  # the next 429 arrives once the pair is usable again
    assert seen == [1, 2, 4, 8, 16, 32, 60, 60]
    pool.mark_success(k0, "m")
    pool.mark_rate_limited(k0, now, None, "m")
    assert k0.state.until("m") - now == 1


def test_429s_arriving_while_the_pair_cools_do_not_double_the_backoff() -> None:
    pool = make_pool(1)
    k0 = pool.keys[0]
    for t in (0.0, 0.1, 0.2, 0.3):  # four requests in flight hit the same limit
        pool.mark_rate_limited(k0, t, None, "m")
    assert k0.state.until("m") == pytest.approx(1.3)  # 1 s from the last, not 8 s


def test_a_header_cooldown_never_shortens_a_backoff_in_force() -> None:
    pool = make_pool(1)
    k0 = pool.keys[0]
    for t in (0.0, 1.0, 3.0):
        pool.mark_rate_limited(k0, t, None, "m")  # 1, 2, 4 s: until 7
    assert pool.mark_rate_limited(k0, 3.5, 1.0, "m") is False
    assert k0.state.until("m") == 7.0


def test_model_entries_per_key_stay_bounded() -> None:
    from trio_bridge.resilience.keypool import MAX_MODELS_PER_KEY

    pool = make_pool(1)
    k0 = pool.keys[0]
    for i in range(MAX_MODELS_PER_KEY * 3):
        pool.mark_rate_limited(k0, float(i), 0.5, f"m{i}")
    assert len(k0.state.models) <= MAX_MODELS_PER_KEY


def picked_for(pool: KeyPool, now: float, model: str, tried: frozenset[int] = frozenset()):
    key = pool.pick(now, tried, model)
    return None if key is None else key.index


MODELS = ["a", "b", "c"]
pair_operations = st.lists(
    st.one_of(
        st.tuples(st.just("rate"), st.integers(0, N_KEYS - 1), st.sampled_from(MODELS), cooldowns),
        st.tuples(
            st.just("backoff"), st.integers(0, N_KEYS - 1), st.sampled_from(MODELS), st.just(0.0)
        ),
        st.tuples(st.just("auth"), st.integers(0, N_KEYS - 1), st.just(""), cooldowns),
        st.tuples(st.just("ok"), st.integers(0, N_KEYS - 1), st.sampled_from(MODELS), st.just(0.0)),
        st.tuples(st.just("wait"), st.just(0), st.just(""), cooldowns),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(pair_operations, st.frozensets(st.integers(0, N_KEYS - 1)))
def test_pick_per_model_is_first_key_free_for_that_model_and_cooldowns_never_shrink(
    ops: list[tuple[str, int, str, float]], tried: frozenset[int]
) -> None:
    pool = make_pool(N_KEYS)
    key_wide = [0.0] * N_KEYS  # latest end promised by 401s, per key
    pair = {(i, m): 0.0 for i in range(N_KEYS) for m in MODELS}  # by 429s, per (key, model)
    now = 0.0
    for op, index, model, amount in ops:
        key = pool.keys[index]
        if op == "wait":
            now += amount
        elif op == "rate":
            pool.mark_rate_limited(key, now, amount, model)
            pair[index, model] = max(pair[index, model], now + amount)
        elif op == "backoff":
            pool.mark_rate_limited(key, now, None, model)
            assert key.state.until(model) >= now + 1.0  # a header-less 429 cools >= 1 s
            pair[index, model] = max(pair[index, model], now + 1.0)
        elif op == "auth":
            pool.mark_auth_failed(key, now, amount)
            key_wide[index] = max(key_wide[index], now + amount)
        else:
            pool.mark_success(key, model)

        for m in MODELS:
            promised = [max(key_wide[i], pair[i, m]) for i in range(N_KEYS)]
            for i, k in enumerate(pool.keys):
                assert k.state.until(m) >= promised[i]
            # Exactly the pairs the model-free promise allows are free (backoff may cool
            # longer than the 1 s floor we track, so compare against the pool's own view).
            free = [i for i in range(N_KEYS) if not pool.keys[i].state.cooling(now, m)]
            assert all(now >= promised[i] for i in free)
            assert picked_for(pool, now, m) == (free[0] if free else None)
            free_untried = [i for i in free if i not in tried]
            assert picked_for(pool, now, m, tried) == (free_untried[0] if free_untried else None)
            if not free:
                exhausted = pool.exhaustion(now, m)
                assert exhausted.status in (429, 502)
                if exhausted.status == 429:
                    assert exhausted.retry_after is not None and exhausted.retry_after >= 1
                    assert pool.pick(now + exhausted.retry_after + 1e-3, (), m) is not None
        # A model the operations never named is untouched by any 429.
        untouched = [i for i in range(N_KEYS) if now >= key_wide[i]]
        assert picked_for(pool, now, "never-named") == (untouched[0] if untouched else None)
