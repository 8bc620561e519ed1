"""Live reload from the config dir: edits, Kubernetes ..data swaps, key files, failures."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from tests.support import client, start_bridge, write_yaml
from trio_bridge.reload import Reloader
from trio_bridge.sources.base import ReloadRequest, SourceContents
from trio_bridge.testing import FakeUpstream, Stream
from trio_bridge.upstream import UpstreamClients

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
KEY_A = "sk-key-file-value-aaaaaaaaaaaa"
KEY_B = "sk-key-file-value-bbbbbbbbbbbb"


def providers_yaml(
    base_url: str, key: str = "{value: sk-inline-key-000000000000}", extra: str = ""
) -> str:
    return f"""
bridge: {{auth: none, reload: {{debounce: 50ms}}}}
providers:
  - name: openai
    type: openai
    base_url: {base_url}
    keys: [{key}]
{extra}"""


@pytest.fixture
async def second_openai(nursery) -> FakeUpstream:
    fake = FakeUpstream(dialect="openai")
    await nursery.start(fake.serve)
    return fake


async def chat(bridge, provider: str = "openai"):
    async with client() as c:
        return await c.post(f"{bridge.url}/{provider}/v1/chat/completions", json=CHAT)


async def test_yaml_edit_changes_what_new_requests_get(
    nursery, tmp_path, fake_openai, second_openai
) -> None:
    write_yaml(tmp_path, "p.yaml", providers_yaml(fake_openai.base_url))
    bridge = await start_bridge(nursery, tmp_path)
    assert (await chat(bridge)).status_code == 200
    write_yaml(tmp_path, "p.yaml", providers_yaml(second_openai.base_url))
    with trio.fail_after(10):
        await bridge.next_swap()
    assert (await chat(bridge)).status_code == 200
    assert len(fake_openai.requests) == 1 and len(second_openai.requests) == 1


async def test_kubernetes_data_swap_is_picked_up(
    nursery, tmp_path, fake_openai, second_openai
) -> None:
    def publish(version: str, base_url: str) -> None:
        target = tmp_path / f"..{version}"
        target.mkdir()
        (target / "providers.yaml").write_text(providers_yaml(base_url))
        tmp_link = tmp_path / "..data_tmp"
        tmp_link.symlink_to(target.name)
        os.replace(tmp_link, tmp_path / "..data")
        if not (tmp_path / "providers.yaml").is_symlink():
            (tmp_path / "providers.yaml").symlink_to("..data/providers.yaml")

    publish("2026_11_26_01", fake_openai.base_url)
    bridge = await start_bridge(nursery, tmp_path)
    assert (await chat(bridge)).status_code == 200
    publish("2026_11_26_02", second_openai.base_url)
    with trio.fail_after(10):
        await bridge.next_swap()
    assert (await chat(bridge)).status_code == 200
    assert len(second_openai.requests) == 1


async def test_changed_key_file_changes_the_key_sent(nursery, tmp_path, fake_openai) -> None:
    config, secrets = tmp_path / "config", tmp_path / "secrets"
    config.mkdir()
    (secrets / "openai").mkdir(parents=True)
    (secrets / "openai" / "api.key").write_text(KEY_A + "\n")
    write_yaml(config, "p.yaml", providers_yaml(fake_openai.base_url, "{file: openai/api.key}"))
    bridge = await start_bridge(nursery, config, secrets_dir=secrets)
    await chat(bridge)
    assert fake_openai.last_request.key == KEY_A
    write_yaml(secrets / "openai", "api.key", KEY_B + "\n")
    with trio.fail_after(10):
        await bridge.next_swap()
    await chat(bridge)
    assert fake_openai.last_request.key == KEY_B


async def test_stream_begun_before_an_edit_finishes_on_the_old_snapshot(
    nursery, tmp_path, fake_openai, second_openai
) -> None:
    write_yaml(tmp_path, "p.yaml", providers_yaml(fake_openai.base_url))
    bridge = await start_bridge(nursery, tmp_path)
    fake_openai.behave(Stream(chunks=6, pace=0.15))
    old_version = bridge.snapshot.version
    async with client() as c:
        async with c.stream(
            "POST", bridge.url + "/openai/v1/chat/completions", json={**CHAT, "stream": True}
        ) as response:
            chunks = response.aiter_raw()
            received = [await chunks.__anext__()]
            write_yaml(tmp_path, "p.yaml", providers_yaml(second_openai.base_url))
            with trio.fail_after(10):
                await bridge.next_swap(old_version)
            assert (await chat(bridge)).status_code == 200  # new requests: new snapshot
            async for chunk in chunks:
                received.append(chunk)
    body = b"".join(received)
    assert body.rstrip().endswith(b"data: [DONE]")
    assert len(fake_openai.requests) == 1 and len(second_openai.requests) == 1


async def test_broken_edit_keeps_the_previous_snapshot_and_reports_the_error(
    nursery, tmp_path, fake_openai
) -> None:
    write_yaml(tmp_path, "p.yaml", providers_yaml(fake_openai.base_url))
    bridge = await start_bridge(nursery, tmp_path)
    write_yaml(tmp_path, "p.yaml", "providers: [\n  {name: openai, base_url: sk-leak-me-please}")
    with trio.fail_after(10):
        snapshot = await bridge.next_swap()
    (files,) = [s for s in snapshot.sources if s.name == "files"]
    assert files.error and "p.yaml: line" in files.error and "sk-leak" not in files.error
    assert (await chat(bridge)).status_code == 200
    async with client() as c:
        doc = (await c.get(bridge.admin + "/-/snapshot")).json()
    assert doc["sources"][0]["error"] == files.error
    assert [p["status"] for p in doc["providers"]] == ["ok"]


async def test_missing_key_file_answers_503_while_others_serve(
    nursery, tmp_path, fake_openai
) -> None:
    extra = f"""  - name: other
    type: openai
    base_url: {fake_openai.base_url}
    keys: [{{file: missing.key}}]
"""
    write_yaml(tmp_path, "p.yaml", providers_yaml(fake_openai.base_url, extra=extra))
    bridge = await start_bridge(nursery, tmp_path, secrets_dir=tmp_path)
    assert (await chat(bridge)).status_code == 200
    broken = await chat(bridge, "other")
    assert broken.status_code == 503
    assert broken.json()["error"]["message"] == 'provider "other" is misconfigured'
    async with client() as c:
        doc = (await c.get(bridge.admin + "/-/snapshot")).json()
    other = next(p for p in doc["providers"] if p["name"] == "other")
    assert other["status"] == "error" and "missing.key" in other["error"]


async def test_admin_reload_with_nothing_changed_does_not_swap(
    nursery, tmp_path, fake_openai
) -> None:
    write_yaml(tmp_path, "p.yaml", providers_yaml(fake_openai.base_url))
    bridge = await start_bridge(nursery, tmp_path)
    version = bridge.snapshot.version
    async with client() as c:

        async def post_reload() -> None:
            assert (await c.post(bridge.admin + "/-/reload")).status_code == 202

        assert await bridge.reload_after(post_reload) == ("admin", True)
    assert bridge.snapshot.version == version


class CountingSource:
    """A source whose loads are counted, for driving the reloader without files."""

    name = "files"

    def __init__(self) -> None:
        self.loads = 0

    async def load(self) -> SourceContents:
        self.loads += 1
        return SourceContents()


async def test_a_burst_of_change_events_gives_one_rebuild(autojump_clock) -> None:
    source = CountingSource()
    reloader = Reloader(source, None, UpstreamClients(), secrets_dir=None, environ={})
    await reloader.initial()
    reloads: list[tuple[str, bool]] = []
    reloader.on_reload.append(lambda reason, ok: reloads.append((reason, ok)))
    send, receive = trio.open_memory_channel[ReloadRequest](100)
    async with trio.open_nursery() as nursery:
        await nursery.start(reloader.run, receive)
        for _ in range(25):
            await send.send(ReloadRequest("files"))
            await trio.sleep(0.005)  # within the 250 ms debounce window (virtual time)
        await trio.sleep(1)
        assert source.loads == 2  # the initial load and one for the whole burst
        assert reloads == [("files", True)]  # exactly one reload, not one per event
        await send.send(ReloadRequest("files"))
        await trio.sleep(1)
        assert source.loads == 3 and len(reloads) == 2
        nursery.cancel_scope.cancel()


async def test_sighup_forces_a_full_reload(nursery, tmp_path, fake_openai) -> None:
    import signal

    write_yaml(tmp_path, "p.yaml", providers_yaml(fake_openai.base_url))
    bridge = await start_bridge(nursery, tmp_path)

    async def hangup() -> None:
        os.kill(os.getpid(), signal.SIGHUP)

    assert await bridge.reload_after(hangup) == ("signal", True)


async def test_admin_token_guards_the_admin_endpoints(nursery, tmp_path, fake_openai) -> None:
    write_yaml(tmp_path, "p.yaml", providers_yaml(fake_openai.base_url))
    bridge = await start_bridge(nursery, tmp_path, admin_token="admin-secret-token-123456")
    async with client() as c:
        assert (await c.get(bridge.admin + "/-/snapshot")).status_code == 401
        wrong = await c.get(bridge.admin + "/-/snapshot", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert (await c.post(bridge.admin + "/-/reload")).status_code == 401
        ok = await c.get(
            bridge.admin + "/-/snapshot",
            headers={"Authorization": "Bearer admin-secret-token-123456"},
        )
        assert ok.status_code == 200 and ok.json()["version"] == bridge.snapshot.version
        assert (await c.get(bridge.admin + "/metrics")).status_code == 200


async def test_an_event_with_unchanged_content_does_not_rebuild(
    nursery, tmp_path, fake_openai
) -> None:
    write_yaml(tmp_path, "p.yaml", providers_yaml(fake_openai.base_url))
    bridge = await start_bridge(nursery, tmp_path)
    reloader = bridge.daemon.reloader
    builds, version = reloader.builds, bridge.snapshot.version

    async def touch() -> None:
        write_yaml(tmp_path, "p.yaml", providers_yaml(fake_openai.base_url))  # same bytes

    assert await bridge.reload_after(touch) == ("files", True)
    assert reloader.builds == builds and bridge.snapshot.version == version

    async def edit() -> None:
        write_yaml(tmp_path, "p.yaml", providers_yaml(fake_openai.base_url, extra="# a comment\n"))

    assert await bridge.reload_after(edit) == ("files", True)
    assert reloader.builds == builds + 1
    assert bridge.snapshot.version == version  # a comment changes bytes, not the snapshot
