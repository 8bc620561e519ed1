"""Shared fixtures: fake upstreams and Postgres isolation (tests/support/pg.py)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_bridge.testing import FakeUpstream

pytest_plugins = ["tests.support.pg"]


@pytest.fixture
def socket_clock() -> trio.testing.MockClock:
    """A MockClock for tests that also touch sockets: virtual time only jumps after 50 ms of
    real idleness, so loopback I/O completes before timers fire (see stack notes)."""
    return trio.testing.MockClock(autojump_threshold=0.05)


@pytest.fixture
async def fake_openai(nursery: trio.Nursery) -> FakeUpstream:
    fake = FakeUpstream(dialect="openai")
    await nursery.start(fake.serve)
    return fake


@pytest.fixture
async def fake_anthropic(nursery: trio.Nursery) -> FakeUpstream:
    fake = FakeUpstream(dialect="anthropic")
    await nursery.start(fake.serve)
    return fake
