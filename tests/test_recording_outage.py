"""Recording never delays or fails a request: the database goes away (a loopback relay the
test closes) and comes back, the queue overflows, the daemon is stopped with records queued."""

from __future__ import annotations

import signal

import psycopg
import trio

from tests.support import client, start_bridge, write_yaml
from tests.support.pg import dsn_for
from tests.support.recording import AUTH, TOKEN, config
from tests.support.relay import Relay
from trio_bridge import metrics

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def relayed_dsn(dsn: str, relay: Relay) -> str:
    database = dsn.rsplit("/", 1)[1]
    return dsn_for(database, f"postgresql://postgres@127.0.0.1:{relay.port}/postgres")


def rows(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT request_id FROM ai_bridge_interceptions ORDER BY started_at"
            )
        ]


async def send_many(url: str, n: int, concurrency: int = 20) -> list[tuple[int, float, str]]:
    """``n`` chat requests; (status, duration on trio's clock, request id) of each."""
    results: list[tuple[int, float, str]] = []
    ids = iter(range(n))

    async def worker(c) -> None:
        for i in ids:
            rid = f"req-{i:04d}"
            t0 = trio.current_time()
            r = await c.post(
                url + "/openai/v1/chat/completions",
                headers={**AUTH, "X-Request-Id": rid},
                json=CHAT,
            )
            results.append((r.status_code, trio.current_time() - t0, rid))

    async with client() as c, trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker, c)
    return results


async def settled(recorder, n: int) -> None:
    """Wait until ``n`` records were handed to the recorder (each is submitted just after
    its response ended)."""
    while recorder.depth + recorder.written + recorder.dropped < n:
        await trio.sleep(0.01)


async def test_database_outage_during_200_requests_delays_nothing_and_loses_nothing(
    socket_clock, nursery, tmp_path, fake_openai, fake_anthropic, pg_migrated_dsn
) -> None:
    relay = await nursery.start(Relay("127.0.0.1", 5432).serve)
    relay.open()
    write_yaml(
        tmp_path, "b.yaml", config(fake_openai, fake_anthropic, "flush_every: 50ms, batch: 50")
    )
    bridge = await start_bridge(nursery, tmp_path, database_url=relayed_dsn(pg_migrated_dsn, relay))
    recorder = bridge.daemon.state.recorder
    relay.close()

    results = await send_many(bridge.url, 200)
    assert [status for status, _, _ in results] == [200] * 200
    assert max(duration for _, duration, _ in results) < 1.0
    with trio.fail_after(30):
        await settled(recorder, 200)
        while recorder.failures == 0:
            await trio.sleep(0.01)
    assert recorder.written == 0 and recorder.depth == 200 and recorder.dropped == 0

    relay.open()
    with trio.fail_after(60):
        await recorder.wait_written(200)
    assert sorted(rows(pg_migrated_dsn)) == sorted(rid for _, _, rid in results)
    assert recorder.depth == 0


async def test_a_full_queue_drops_and_counts_the_extra_records_and_keeps_the_others(
    socket_clock, nursery, tmp_path, fake_openai, fake_anthropic, pg_migrated_dsn
) -> None:
    relay = await nursery.start(Relay("127.0.0.1", 5432).serve)
    write_yaml(
        tmp_path, "b.yaml", config(fake_openai, fake_anthropic, "flush_every: 50ms, queue: 10")
    )
    bridge = await start_bridge(nursery, tmp_path, database_url=relayed_dsn(pg_migrated_dsn, relay))
    recorder = bridge.daemon.state.recorder
    dropped_before = metrics.recorder_dropped._value.get()

    results = await send_many(bridge.url, 30, concurrency=1)
    assert [status for status, _, _ in results] == [200] * 30
    with trio.fail_after(30):
        await settled(recorder, 30)
    assert (recorder.depth, recorder.dropped, recorder.written) == (10, 20, 0)
    assert metrics.recorder_dropped._value.get() - dropped_before == 20

    relay.open()
    with trio.fail_after(60):
        await recorder.wait_written(10)
    # the first ten (queued before the queue filled) are the ones kept, each exactly once
    assert rows(pg_migrated_dsn) == [f"req-{i:04d}" for i in range(10)]


async def test_sigterm_with_500_records_queued_writes_them_all_before_exit(
    nursery, tmp_path, fake_openai, fake_anthropic, pg_migrated_dsn
) -> None:
    from tests.support.daemon import serve

    write_yaml(
        tmp_path,
        "b.yaml",
        config(fake_openai, fake_anthropic, "flush_every: 1h, batch: 1000, queue: 1000"),
    )
    served = await serve(
        nursery,
        tmp_path,
        "--database-url",
        pg_migrated_dsn,
        "--drain-delay",
        "0s",
        "--shutdown-grace",
        "20s",
    )
    results = await send_many(served.url, 500)
    assert [status for status, _, _ in results] == [200] * 500
    async with client() as c:
        with trio.fail_after(20):
            while (
                "trio_bridge_recorder_queue_depth 500.0"
                not in (await c.get(served.admin + "/metrics")).text
            ):
                await trio.sleep(0.05)  # a subprocess: nothing to wait on but its metrics
    assert rows(pg_migrated_dsn) == []
    served.process.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        code = await served.process.wait()
    assert code == 0, served.stderr.decode()
    assert sorted(rows(pg_migrated_dsn)) == sorted(rid for _, _, rid in results)
    assert TOKEN not in served.stderr.decode()
