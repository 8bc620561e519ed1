"""pytest plugin (entry point ``pytest11``): fixtures for testing code that talks to the bridge.

Installed with the package and loaded by pytest automatically (``-p no:trio_bridge`` turns
it off). Function-scoped fixtures, for pytest-trio tests (``trio_mode = true`` or
``@pytest.mark.trio``):

- ``fake_openai``, ``fake_anthropic``: a serving :class:`~trio_bridge.testing.FakeUpstream`.
- ``bridge_config``: the config ``bridge`` serves (a dict); override it in your conftest to
  change it (see ``default_bridge_config``).
- ``bridge``: an :func:`~trio_bridge.testing.open_bridge` handle with ``auth: none``,
  providers ``openai`` -> ``fake_openai`` and ``anthropic`` -> ``fake_anthropic``, two pool
  keys each (:data:`OPENAI_KEYS`, :data:`ANTHROPIC_KEYS`).

Everything runs on the test's trio clock, so pytest-trio's ``mock_clock`` and
``autojump_clock`` fixtures (or your own ``MockClock``) drive cooldowns and timeouts.

This module imports nothing heavy at collection time: the bridge is imported when a
fixture is first used. Without pytest-trio the fixtures skip the test, saying so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import trio

    from .bridge import BridgeHandle
    from .fake_upstream import FakeUpstream

__all__ = ["ANTHROPIC_KEYS", "OPENAI_KEYS", "default_bridge_config"]

#: The pool keys of the ``bridge`` fixture's providers, in the order the bridge tries them.
OPENAI_KEYS = ("sk-test-openai-key-0001", "sk-test-openai-key-0002")
ANTHROPIC_KEYS = ("sk-ant-test-key-0001", "sk-ant-test-key-0002")

_NEEDS_TRIO = (
    "the trio_bridge fixtures need pytest-trio (pip install pytest-trio) and a trio test "
    "(trio_mode = true, or @pytest.mark.trio)"
)


def default_bridge_config(openai_url: str, anthropic_url: str) -> dict[str, Any]:
    """The ``bridge`` fixture's config: ``auth: none``, an ``openai`` and an ``anthropic``
    provider at these base URLs with two pool keys each, reloads without debounce (so
    ``reconfigure`` does not wait on a clock that may not move)."""
    return {
        "bridge": {"auth": "none", "reload": {"debounce": "0s"}},
        "providers": [
            {
                "name": "openai",
                "type": "openai",
                "base_url": openai_url,
                "keys": [{"value": k} for k in OPENAI_KEYS],
            },
            {
                "name": "anthropic",
                "type": "anthropic",
                "base_url": anthropic_url,
                "keys": [{"value": k} for k in ANTHROPIC_KEYS],
            },
        ],
    }


def pytest_configure(config: pytest.Config) -> None:
    """Register the fixtures: the real ones when pytest-trio is active, else stand-ins that
    skip the test with the reason."""
    active = config.pluginmanager.has_plugin("trio")  # pytest-trio's entry-point name
    config.pluginmanager.register(
        _TrioFixtures() if active else _SkipFixtures(), "trio_bridge.fixtures"
    )


class _TrioFixtures:
    @pytest.fixture
    async def fake_openai(self, nursery: trio.Nursery) -> FakeUpstream:
        """A fake OpenAI upstream on an ephemeral loopback port, serving for the test."""
        from . import FakeUpstream

        fake = FakeUpstream(dialect="openai")
        await nursery.start(fake.serve)
        return fake

    @pytest.fixture
    async def fake_anthropic(self, nursery: trio.Nursery) -> FakeUpstream:
        """A fake Anthropic upstream on an ephemeral loopback port, serving for the test."""
        from . import FakeUpstream

        fake = FakeUpstream(dialect="anthropic")
        await nursery.start(fake.serve)
        return fake

    @pytest.fixture
    def bridge_config(
        self, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
    ) -> dict[str, Any]:
        """What ``bridge`` serves; override this fixture to serve something else."""
        return default_bridge_config(fake_openai.base_url, fake_anthropic.base_url)

    @pytest.fixture
    async def bridge(self, bridge_config: dict[str, Any]) -> AsyncIterator[BridgeHandle]:
        """A whole bridge serving ``bridge_config`` for the test (an ``open_bridge`` handle)."""
        from .bridge import open_bridge

        async with open_bridge(bridge_config) as handle:
            yield handle


class _SkipFixtures:
    @pytest.fixture
    def fake_openai(self) -> None:
        pytest.skip(_NEEDS_TRIO)

    @pytest.fixture
    def fake_anthropic(self) -> None:
        pytest.skip(_NEEDS_TRIO)

    @pytest.fixture
    def bridge_config(self) -> None:
        pytest.skip(_NEEDS_TRIO)

    @pytest.fixture
    def bridge(self) -> None:
        pytest.skip(_NEEDS_TRIO)
