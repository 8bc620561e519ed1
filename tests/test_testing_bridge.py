"""The testing kit as a user's suite uses it: only public names (``trio_bridge.testing``,
the SDKs, trio and pytest-trio's clock fixtures), no project test helpers."""

from __future__ import annotations

import math
import signal
import socket
from pathlib import Path

import anthropic
import httpx2
import openai
import pytest
import trio
import trio.testing

from trio_bridge.testing import (
    Answer,
    BridgeConfigError,
    Fail,
    FakeUpstream,
    RateLimited,
    Unauthorized,
    open_bridge,
)

KEY_1 = "sk-user-suite-key-one-0001"
KEY_2 = "sk-user-suite-key-two-0002"
HI = [{"role": "user", "content": "hi"}]


def config(fake: FakeUpstream, *keys: str, name: str = "openai", **bridge) -> dict:
    return {
        "bridge": {"auth": "none", "reload": {"debounce": "0s"}, **bridge},
        "providers": [
            {
                "name": name,
                "type": fake.dialect,
                "base_url": fake.base_url,
                "keys": [{"value": k} for k in keys or (KEY_1, KEY_2)],
            }
        ],
    }


async def serving(nursery: trio.Nursery, dialect: str = "openai") -> FakeUpstream:
    fake = FakeUpstream(dialect=dialect)
    await nursery.start(fake.serve)
    return fake


def sdk(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key="not-a-real-key", max_retries=0)


def key_states(bridge, provider: str = "openai") -> list[str]:
    return [k["state"] for k in bridge.provider(provider)["keys"]]


async def test_sdk_calls_through_open_bridge_reach_the_fake_with_a_pool_key(nursery) -> None:
    fake_openai, fake_anthropic = await serving(nursery), await serving(nursery, "anthropic")
    cfg = config(fake_openai)
    cfg["providers"].append(config(fake_anthropic, KEY_2, name="claude")["providers"][0])
    async with open_bridge(cfg) as bridge:
        assert bridge.base_url("openai") == f"{bridge.url}/openai/v1"
        assert bridge.base_url("claude") == f"{bridge.url}/claude"
        client = sdk(bridge.base_url("openai"))
        fake_openai.behave(Answer(text="Sunny in Paris."))
        answer = await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert answer.choices[0].message.content == "Sunny in Paris."
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model="gpt-4o-mini", messages=HI, stream=True
            )
        ]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        claude = anthropic.AsyncAnthropic(
            base_url=bridge.base_url("claude"), api_key="not-a-real-key", max_retries=0
        )
        message = await claude.messages.create(
            model="claude-sonnet-4-5", max_tokens=16, messages=HI
        )
        assert message.content[0].text == "Hello from the fake anthropic upstream."
        await client.close()
        await claude.close()

    first = fake_openai.requests[0]
    assert (first.method, first.path, first.key) == ("POST", "/v1/chat/completions", KEY_1)
    assert first.json["messages"] == HI
    assert not any("not-a-real-key" in v for _, v in first.headers)
    assert fake_anthropic.requests[0].key == KEY_2
    assert fake_anthropic.requests[0].header("x-api-key") == KEY_2


async def test_a_429_cooldown_on_the_first_key_ends_with_mock_clock_jump(
    nursery, mock_clock: trio.testing.MockClock
) -> None:
    fake = await serving(nursery)
    async with open_bridge(config(fake)) as bridge:
        client = sdk(bridge.base_url("openai"))
        fake.behave_for_key(KEY_1, RateLimited(retry_after="60"))
        await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert [r.key for r in fake.requests] == [KEY_1, KEY_2]  # failed over at once
        assert key_states(bridge) == ["rate_limited", "valid"]
        fake.clear()

        mock_clock.jump(59)
        await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert fake.last_request.key == KEY_2  # still cooling

        mock_clock.jump(2)
        assert key_states(bridge) == ["valid", "valid"]
        await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert fake.last_request.key == KEY_1  # used again
        await client.close()


async def test_an_open_breaker_half_opens_after_mock_clock_jump(
    nursery, mock_clock: trio.testing.MockClock
) -> None:
    fake = await serving(nursery)
    breaker = {"enabled": True, "failure_threshold": 2, "timeout": "30s"}
    async with open_bridge(config(fake, KEY_1, circuit_breaker=breaker)) as bridge:
        client = sdk(bridge.base_url("openai"))
        fake.behave(*[Fail(503)] * 10)
        # While failing, let time move on its own: a retry backoff sleeps on this clock.
        mock_clock.autojump_threshold = 0.05
        for _ in range(6):
            seen = fake.request_count
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
            if fake.request_count == seen:  # refused without asking the upstream: open
                break
        else:
            pytest.fail("the breaker never opened")
        assert caught.value.status_code == 503
        assert caught.value.response.headers["retry-after"] == "30"
        mock_clock.autojump_threshold = math.inf  # frozen again: only jump() moves it

        fake.clear()
        with pytest.raises(openai.APIStatusError):  # still open
            await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert fake.request_count == seen
        mock_clock.jump(30)
        await client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # half-open
        assert fake.request_count == seen + 1
        await client.close()


async def test_with_every_key_cooling_the_sdk_sees_429_until_the_clock_moves(
    nursery, mock_clock: trio.testing.MockClock
) -> None:
    fake = await serving(nursery)
    async with open_bridge(config(fake, KEY_1)) as bridge:
        client = sdk(bridge.base_url("openai"))
        fake.behave(RateLimited(retry_after="30"))
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        with pytest.raises(openai.RateLimitError) as caught:  # the bridge's own 429
            await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert caught.value.response.headers["retry-after"] == "30"
        assert fake.request_count == 1
        mock_clock.jump(30)
        await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert fake.request_count == 2
        await client.close()


async def test_a_yaml_change_through_the_handle_serves_when_it_returns(nursery) -> None:
    fake, other = await serving(nursery), await serving(nursery)
    async with open_bridge(config(fake, KEY_1)) as bridge:
        before = bridge.version
        doc = await bridge.reconfigure(config(other, KEY_2, name="second"))
        assert doc["version"] == bridge.version > before
        assert [p["name"] for p in doc["providers"]] == ["second"]
        client = sdk(bridge.base_url("second"))
        await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert other.last_request.key == KEY_2
        async with httpx2.AsyncClient() as http:
            gone = await http.post(f"{bridge.url}/openai/v1/chat/completions", json={})
        assert gone.status_code == 404

        # One more file in the config dir, merged in name order.
        extra = config(fake, KEY_1, name="extra")
        del extra["bridge"]
        doc = await bridge.write_config("20-extra.yaml", extra)
        assert [p["name"] for p in doc["providers"]] == ["extra", "second"]

        # A key file rotated: the next request carries the new key.
        await bridge.write_config(
            "20-extra.yaml",
            {"providers": [{**extra["providers"][0], "keys": [{"file": "extra.key"}]}]},
        )
        assert bridge.provider("extra")["status"] == "error"  # the file is missing
        await bridge.write_secret("extra.key", "sk-rotated-0003\n")
        assert bridge.provider("extra")["status"] == "ok"
        await sdk(bridge.base_url("extra")).chat.completions.create(
            model="gpt-4o-mini", messages=HI
        )
        assert fake.last_request.key == "sk-rotated-0003"

        # A config that fails to load raises; the last good snapshot keeps serving.
        with pytest.raises(BridgeConfigError, match=r"\$\.providers\[0\]"):
            await bridge.reconfigure({"providers": [{"name": "x", "type": "openai"}]})
        assert [p["name"] for p in bridge.snapshot["providers"]] == ["extra", "second"]
        await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        await client.close()


async def test_two_bridges_in_one_test_are_independent(nursery) -> None:
    fake = await serving(nursery)
    async with open_bridge(config(fake, KEY_1)) as a, open_bridge(config(fake, KEY_2)) as b:
        assert len({a.url, a.admin_url, b.url, b.admin_url}) == 4
        fake.behave_for_key(KEY_1, RateLimited(retry_after="60"))
        with pytest.raises(openai.RateLimitError):
            await sdk(a.base_url("openai")).chat.completions.create(
                model="gpt-4o-mini", messages=HI
            )
        await sdk(b.base_url("openai")).chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert key_states(a) == ["rate_limited"]
        assert key_states(b) == ["valid"]
        await a.reconfigure(config(fake, KEY_1, name="renamed"))
        assert [p["name"] for p in a.snapshot["providers"]] == ["renamed"]
        assert [p["name"] for p in b.snapshot["providers"]] == ["openai"]
        assert a.config_dir != b.config_dir
    assert [r.key for r in fake.requests] == [KEY_1, KEY_2]


async def test_leaving_the_block_closes_the_ports_and_removes_the_config(nursery) -> None:
    fake = await serving(nursery)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    async with open_bridge(config(fake), secrets={"nested/dir/k.key": "sk-x"}) as bridge:
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == before
        assert (bridge.secrets_dir / "nested" / "dir" / "k.key").read_text() == "sk-x"
        root: Path = bridge.config_dir.parent
        port = int(bridge.url.rsplit(":", 1)[1])
        async with httpx2.AsyncClient() as http:
            assert (await http.get(bridge.url + "/healthz")).status_code == 200
            snapshot = (await http.get(bridge.admin_url + "/-/snapshot")).json()
        assert snapshot == bridge.snapshot | {"providers": snapshot["providers"]}
    assert not root.exists()  # noqa: ASYNC240 - a tiny temp file in a test
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


async def test_an_error_in_the_block_comes_out_as_raised(nursery) -> None:
    fake = await serving(nursery)
    with pytest.raises(KeyError, match="no provider 'nope'"):
        async with open_bridge(config(fake)) as bridge:
            bridge.base_url("nope")


async def test_drain_stops_the_bridge_as_sigterm_would(nursery) -> None:
    fake = await serving(nursery)
    async with open_bridge(config(fake)) as bridge:
        await bridge.drain()
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", int(bridge.url.rsplit(":", 1)[1]))) != 0


async def test_a_config_that_fails_to_load_raises_at_start() -> None:
    with pytest.raises(BridgeConfigError, match="base_url"):
        async with open_bridge({"providers": [{"name": "x", "type": "openai"}]}):
            pytest.fail("started")  # pragma: no cover
    with pytest.raises(BridgeConfigError, match="line"):
        async with open_bridge("providers: [\n"):
            pytest.fail("started")  # pragma: no cover


async def test_reconfigure_on_a_frozen_clock_with_the_default_debounce_returns_at_once(
    nursery, mock_clock: trio.testing.MockClock
) -> None:
    fake = await serving(nursery)
    cfg = config(fake)
    del cfg["bridge"]["reload"]  # the default 250ms debounce, on a clock that never moves
    async with open_bridge(cfg) as bridge:
        before = bridge.snapshot["version"]
        cfg["providers"][0]["headers"] = {"X-Team": "infra"}
        after = await bridge.reconfigure(cfg)
        assert after["version"] == before + 1


async def test_env_references_read_the_given_environ_not_the_process(nursery, monkeypatch) -> None:
    fake = await serving(nursery)
    monkeypatch.setenv("KIT_TEST_KEY", "sk-from-process-env")
    cfg = config(fake)
    cfg["providers"][0]["keys"] = [{"env": "KIT_TEST_KEY"}]
    async with open_bridge(cfg) as bridge:
        assert bridge.provider("openai")["status"] == "error"
    async with open_bridge(cfg, environ={"KIT_TEST_KEY": "sk-given-0004"}) as bridge:
        await sdk(bridge.base_url("openai")).chat.completions.create(
            model="gpt-4o-mini", messages=HI
        )
    assert fake.last_request.key == "sk-given-0004"


# --- FakeUpstream scripting -------------------------------------------------------------------


async def test_fake_scripting_by_model_by_call_number_and_by_predicate(nursery) -> None:
    fake = await serving(nursery)
    fake.behave_for_model("gpt-4o*", Fail(503), times=1)
    fake.behave_on(3, Unauthorized())
    fake.behave_when(lambda r: r.header("x-case") == "slow", Answer(text="late"))
    fake.behave(RateLimited())
    async with httpx2.AsyncClient(base_url=fake.base_url) as http:

        async def status(model: str, **headers: str) -> int:
            r = await http.post("/chat/completions", json={"model": model}, headers=headers)
            return r.status_code

        assert await status("gpt-4o-mini") == 503  # by model, once
        assert await status("gpt-4o-mini") == 429  # then the queue
        assert await status("o3") == 401  # the third request
        r = await http.post("/chat/completions", json={"model": "o3"}, headers={"x-case": "slow"})
        assert r.json()["choices"][0]["message"]["content"] == "late"
        assert await status("gpt-4o") == 200  # rules spent, queue empty: the normal answer
    assert [r.model for r in fake.requests] == ["gpt-4o-mini", "gpt-4o-mini", "o3", "o3", "gpt-4o"]
    with pytest.raises(ValueError):
        fake.behave_on(0, Fail())
    with pytest.raises(ValueError):
        fake.behave_for_model("x", Fail(), times=0)


async def test_fake_pacing_runs_on_the_callers_clock(nursery, autojump_clock) -> None:
    fake = await serving(nursery)
    fake.default_pace = 10.0
    # The client's own timeouts run on the same clock: 10 s between events would trip a
    # 5 s read timeout here too.
    async with httpx2.AsyncClient(base_url=fake.base_url, timeout=None) as http:
        start = trio.current_time()
        body = {"model": "gpt-4o-mini", "stream": True}
        async with http.stream("POST", "/chat/completions", json=body) as r:
            arrivals = [trio.current_time() - start async for _ in r.aiter_raw()]
    assert math.isclose(arrivals[-1], 10.0 * (fake.sent_events - 1), abs_tol=0.5)


async def test_a_database_url_serves_its_rows_from_the_first_request(
    nursery, pg_migrated_dsn: str
) -> None:
    import psycopg

    fake = await serving(nursery)

    def insert(name: str, key: str) -> None:
        with psycopg.connect(pg_migrated_dsn, autocommit=True) as conn:
            conn.execute(
                "WITH p AS (INSERT INTO ai_providers (id, name, type, base_url)"
                " VALUES (gen_random_uuid(), %s, 'openai', %s) RETURNING id)"
                " INSERT INTO ai_provider_keys (id, provider_id, api_key)"
                " SELECT gen_random_uuid(), id, %s FROM p",
                (name, fake.base_url, key),
            )

    await trio.to_thread.run_sync(insert, "from-db", KEY_1)
    cfg = {"bridge": {"auth": "none", "reload": {"debounce": "0s"}}}
    async with open_bridge(cfg, database_url=pg_migrated_dsn) as bridge:
        assert bridge.provider("from-db")["source"] == "database"
        await sdk(bridge.base_url("from-db")).chat.completions.create(
            model="gpt-4o-mini", messages=HI
        )
        assert fake.last_request.key == KEY_1
        await trio.to_thread.run_sync(insert, "later", KEY_2)
        await bridge.reload()  # a full reload re-reads the database too
        assert bridge.provider("later")["status"] == "ok"
