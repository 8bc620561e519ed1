"""The drain of contract section 9 on the serving core, under load: readiness 503 at once,
kept-alive clients told to close while the listener still accepts, nothing lost, and the
daemon returns as soon as the last in-flight request ends (not after the whole grace)."""

from __future__ import annotations

from pathlib import Path

import httpx2
import trio

from tests.support import write_yaml
from trio_bridge.daemon import Addresses, Daemon, ServeOptions
from trio_bridge.testing import FakeUpstream, Stream

CLIENTS = 32
CHAT = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def test_drain_under_32_keep_alive_clients_loses_nothing_and_ends_with_the_last(
    nursery, tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    write_yaml(
        tmp_path,
        "b.yaml",
        f"""
bridge: {{auth: none}}
providers:
  - name: openai
    type: openai
    base_url: {fake_openai.base_url}
    keys: [{{value: sk-pool-0123456789}}]
""",
    )
    fake_openai.default_chunks = 4
    fake_openai.default_pace = 0.02  # short streams keep beginning and ending
    daemon = Daemon(
        ServeOptions(
            config_dir=tmp_path,
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            drain_delay=1.0,
            shutdown_grace=10.0,
            environ={},
        )
    )
    exited_at: list[float] = []

    async def run(task_status: trio.TaskStatus[Addresses]) -> None:
        await daemon.run(task_status=task_status)
        exited_at.append(trio.current_time())

    addresses = await nursery.start(run)
    url = addresses.listen + "/openai/v1/chat/completions"

    served = trio.Semaphore(0)
    stop_new = trio.Event()
    drain_started: list[float] = []
    failures: list[str] = []
    ends: list[float] = []
    after_drain = 0
    total = 0

    async def client_loop(i: int) -> None:
        nonlocal after_drain, total
        first = True
        await trio.sleep(i / CLIENTS)  # staggered, so requests keep beginning and ending
        async with httpx2.AsyncClient(timeout=30) as c:
            while not stop_new.is_set():
                began = trio.current_time()
                try:
                    async with c.stream("POST", url, json=CHAT) as response:
                        body = b"".join([chunk async for chunk in response.aiter_raw()])
                except httpx2.HTTPError as exc:
                    failures.append(repr(exc))
                    return
                ends.append(trio.current_time())
                total += 1
                if response.status_code != 200 or not body.rstrip().endswith(b"[DONE]"):
                    failures.append(f"{response.status_code} {body[-60:]!r}")
                if drain_started and began > drain_started[0]:  # on a kept-alive connection
                    after_drain += 1
                    if response.headers.get("connection") != "close":
                        failures.append("a response during the drain did not say close")
                if first:
                    first = False
                    served.release()

    async with trio.open_nursery() as load:
        for i in range(CLIENTS):
            load.start_soon(client_loop, i)
        with trio.fail_after(20):
            for _ in range(CLIENTS):
                await served.acquire()  # every client has a kept-alive connection
        for _ in range(4):  # streams still in flight when the drain delay is over
            fake_openai.behave(Stream(chunks=30, pace=0.05))
        await trio.sleep(0.05)
        drain_started.append(trio.current_time())
        load.start_soon(daemon.drain)

        async def load_balancer() -> None:
            # Notices the 503 and stops sending, well within the drain delay.
            with trio.move_on_after(0.6):
                while after_drain < 8:
                    await trio.sleep(0.01)
            stop_new.set()

        load.start_soon(load_balancer)
        async with httpx2.AsyncClient(timeout=5) as probe:
            ready = await probe.get(addresses.listen + "/readyz")
        assert ready.status_code == 503  # at once, the listener still accepting
    last_end = max(ends)
    with trio.fail_after(15):
        while not exited_at:
            await trio.sleep(0.01)
    assert failures == []
    assert total >= 2 * CLIENTS
    assert after_drain > 0
    assert exited_at[0] - last_end < 1.0
    assert exited_at[0] - drain_started[0] < 5.0  # far from the 10 s grace
