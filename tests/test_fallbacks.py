"""Fallback chains (contract sections 3, 7): the schema, the build-time checks, the chain plan,
and through real sockets: globs, no following of a target's own fallbacks, no (provider, model)
twice, an open breaker skipping straight to the next target, and the access line."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import pytest
import trio

from tests.support.rig import K0, K1, Rig, config_yaml, open_rigs, provider_yaml, unique
from trio_bridge.config.model import BridgeSettings, ProviderSpec, convert
from trio_bridge.reload import stage_clients
from trio_bridge.resilience.fallbacks import (
    ChainEntry,
    ChainTarget,
    match_entry,
    plan,
    rewrite_model,
)
from trio_bridge.snapshot import (
    BuildInputs,
    ProviderInput,
    Resilience,
    build_snapshot,
    plan_snapshot,
)
from trio_bridge.store.rows import InvalidRow, provider_from_row
from trio_bridge.testing import Fail, FakeUpstream, SlowFirstByte
from trio_bridge.upstream import UpstreamClients

# --- schema and build ---------------------------------------------------------------------


def spec(name: str, type: str = "openai", **extra) -> ProviderSpec:
    return convert(
        {
            "name": name,
            "type": type,
            "base_url": "http://127.0.0.1:9/v1",
            "keys": [{"value": "sk-x-0123456789abcdef"}],
            **extra,
        },
        ProviderSpec,
    )


def build(*specs: ProviderSpec):
    inputs = BuildInputs(
        bridge=BridgeSettings(),
        providers={s.name: ProviderInput(s, "yaml:test.yaml") for s in specs},
        clients=(),
        sources=(),
    )
    plan = plan_snapshot(inputs)
    clients = stage_clients(plan, UpstreamClients())
    return build_snapshot(plan, clients, version=1, resilience=Resilience()).providers


def test_the_schema_takes_fallbacks_and_first_token_timeout() -> None:
    s = spec(
        "a",
        first_token_timeout="15s",
        fallbacks=[
            {
                "models": ["gpt-4o*"],
                "to": [{"provider": "b"}, {"provider": "a", "model": "gpt-4o-mini"}],
            },
            {"to": [{"provider": "b"}], "context_length": True},
        ],
    )
    assert float(s.first_token_timeout) == 15.0
    assert s.fallbacks[0].models == ["gpt-4o*"] and s.fallbacks[1].context_length is True


@pytest.mark.parametrize(
    ("fallbacks", "path"),
    [
        ([{"to": []}], "$.fallbacks[0].to"),
        ([{"to": [{"provider": "Bad Name"}]}], "$.fallbacks[0].to[0].provider"),
        ([{"to": [{"provider": "b"}], "colour": 1}], "$.fallbacks[0]"),
        ([{"models": [], "to": [{"provider": "b"}]}], "$.fallbacks[0].models"),
    ],
)
def test_bad_fallbacks_are_schema_errors_naming_the_path(fallbacks, path: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=__import__("re").escape(path)):
        spec("a", fallbacks=fallbacks)


def test_database_settings_fallbacks_use_the_same_schema() -> None:
    row = dict(name="a", type="openai", base_url="http://x/v1", enabled=True, keys=[])
    good = provider_from_row(
        **row, settings={"fallbacks": [{"to": [{"provider": "b"}]}], "first_token_timeout": "5s"}
    )
    assert good.fallbacks[0].to[0].provider == "b"
    with pytest.raises(InvalidRow, match=r"^\$\.settings\.fallbacks\[0\]\.to"):
        provider_from_row(**row, settings={"fallbacks": [{"to": []}]})


def test_an_unknown_target_or_another_api_family_fails_the_naming_provider_only() -> None:
    providers = build(
        spec("a", fallbacks=[{"to": [{"provider": "nowhere"}]}]),
        spec("b", fallbacks=[{"to": [{"provider": "claude"}]}]),
        spec("c", fallbacks=[{"to": [{"provider": "a", "model": "gpt-4o-mini"}]}]),
        spec("claude", type="anthropic"),
    )
    assert providers["a"].status == "error"
    assert providers["a"].error == '$.fallbacks[0].to[0].provider: unknown provider "nowhere"'
    assert providers["b"].status == "error"
    assert "another API family" in (providers["b"].error or "")
    # A target that itself failed to build is fine for the naming provider.
    assert providers["c"].status == "ok"
    assert providers["c"].fallbacks == (ChainEntry(to=(ChainTarget("a", "gpt-4o-mini"),)),)
    assert providers["claude"].status == "ok"


def test_the_first_matching_entry_applies_and_pairs_are_never_repeated() -> None:
    entries = (
        ChainEntry(models=("gpt-4o*",), to=(ChainTarget("b"), ChainTarget("a", "gpt-4o-mini"))),
        ChainEntry(to=(ChainTarget("c"),)),
    )
    assert match_entry(entries, "gpt-4o-2024") is entries[0]
    assert match_entry(entries, "o3") is entries[1]
    assert plan("a", "gpt-4o", entries[0]) == [
        ("a", "gpt-4o"),
        ("b", "gpt-4o"),
        ("a", "gpt-4o-mini"),
    ]
    # A target naming the primary with the same model is dropped.
    again = ChainEntry(to=(ChainTarget("a"), ChainTarget("b"), ChainTarget("b")))
    assert plan("a", "m", again) == [("a", "m"), ("b", "m")]


def test_rewrite_model_keeps_every_other_field() -> None:
    body = b'{"model":"gpt-4o","messages":[{"role":"user","content":"h\xc3\xa9"}],"stream":true}'
    out = msgspec.json.decode(rewrite_model(body, "gpt-4o-mini"))
    assert out == {**msgspec.json.decode(body), "model": "gpt-4o-mini"}
    assert list(out) == ["model", "messages", "stream"]


# --- through sockets ------------------------------------------------------------------------


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.05)


async def chain(nursery, tmp_path: Path, http, clock, *, entries: str, bridge: str = "auth: none"):
    """Providers a (primary), b and c, each on its own fake; ``entries`` is a's fallbacks."""
    fakes = [await nursery.start(FakeUpstream("openai").serve) for _ in range(3)]
    names = [unique(p) for p in ("pa", "pb", "pc")]
    text = ""
    for i, (name, fake) in enumerate(zip(names, fakes, strict=True)):
        text += provider_yaml(name, fake.base_url, [K0 if i == 0 else K1])
        if i == 0:
            text += "    fallbacks:\n" + entries.format(b=names[1], c=names[2])
        if i == 1:  # b's own fallbacks are never followed from a
            text += f"    fallbacks:\n      - to: [{{provider: {names[2]}}}]\n"
    config_dir = tmp_path / names[0]
    config_dir.mkdir()
    from tests.support import start_bridge, write_yaml

    write_yaml(config_dir, "bridge.yaml", config_yaml(text, bridge=bridge))
    running = await start_bridge(nursery, config_dir)
    return running, names, fakes


async def post(http, running, name: str, model: str):
    return await http.post(
        f"{running.url}/{name}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )


@pytest.fixture
async def http():
    import httpx2

    async with httpx2.AsyncClient(timeout=3600) as c:
        yield c


async def test_globs_pick_the_entry_and_a_targets_own_fallbacks_are_not_followed(
    nursery, tmp_path, http, clock
) -> None:
    entries = "      - models: ['gpt-4o*']\n        to: [{{provider: {b}}}]\n"
    running, (a, b, c), (fa, fb, fc) = await chain(nursery, tmp_path, http, clock, entries=entries)
    fa.behave_for_model("gpt-4o", Fail(503))
    fa.behave_for_model("o3", Fail(503))
    fb.behave_for_model("gpt-4o", Fail(503))
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    access = logging.getLogger("trio_bridge.access")
    access.addHandler(handler)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        r = await post(http, running, a, "gpt-4o")
        with trio.fail_after(5):  # the line is written once the response has gone out
            while not lines:
                await trio.sleep(0.001)
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert r.status_code == 503  # b failed too; c (b's own fallback) was never tried
    assert r.headers["x-trio-bridge-served-by"] == f"{b}/gpt-4o"  # the last failure is b's
    assert (fa.request_count, fb.request_count, fc.request_count) == (3, 3, 0)
    attempts = lines[-1].split("attempts=", 1)[1].split(" ", 1)[0].split(",")
    assert attempts == [f"{a}/gpt-4o/k0-a...aaaa->503"] * 3 + [f"{b}/gpt-4o/k1-b...bbbb->503"] * 3
    # A model no glob matches has no fallback: the primary's own failure.
    r = await post(http, running, a, "o3")
    assert r.status_code == 503 and r.headers["x-trio-bridge-served-by"] == f"{a}/o3"
    assert fb.request_count == 3


async def test_an_open_breaker_sends_the_request_to_the_fallback_at_once(
    nursery, tmp_path, http, clock
) -> None:
    entries = "      - to: [{{provider: {b}, model: gpt-4.1}}]\n"
    breaker = "auth: none, circuit_breaker: {enabled: true, failure_threshold: 2, timeout: 1h}"
    running, (a, b, c), (fa, fb, fc) = await chain(
        nursery, tmp_path, http, clock, entries=entries, bridge=breaker
    )
    fa.behave_for_model("gpt-4o-mini", SlowFirstByte(0.5, Fail(502)))
    r = await post(http, running, a, "gpt-4o-mini")  # 2 failures trip it; the fallback answers
    assert r.status_code == 200 and r.headers["x-trio-bridge-served-by"] == f"{b}/gpt-4.1"
    assert fa.request_count == 2
    t0 = trio.current_time()
    r = await post(http, running, a, "gpt-4o-mini")
    assert r.status_code == 200 and r.headers["x-trio-bridge-served-by"] == f"{b}/gpt-4.1"
    assert fa.request_count == 2  # open: not asked
    assert trio.current_time() - t0 < 0.4  # at once, no wait on the primary
    assert fb.requests[-1].json["model"] == "gpt-4.1"


async def test_byok_requests_are_retried_with_their_own_key_never_marked(
    nursery, tmp_path, http, clock
) -> None:
    async with open_rigs(nursery, tmp_path, http, clock) as make:
        rig: Rig = await make(keys=[K0, K1])
        rig.fake.behave(Fail(500))
        byok = {"X-Trio-Bridge-Token": "x", "Authorization": "Bearer client-own-key"}
        r = await rig.chat(headers=byok)
        assert r.status_code == 200
        assert [q.key for q in rig.fake.requests] == ["client-own-key"] * 2
        assert [k["state"] for k in await rig.keys()] == ["valid", "valid"]
