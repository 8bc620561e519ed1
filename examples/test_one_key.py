"""Overriding ``bridge_config`` for one module: a single key, so a rate limit reaches
the agent."""

from __future__ import annotations

import openai
import pytest
from weather_agent import ask

from trio_bridge.testing import RateLimited
from trio_bridge.testing.plugin import default_bridge_config


@pytest.fixture
def bridge_config(fake_openai, fake_anthropic) -> dict:
    config = default_bridge_config(fake_openai.base_url, fake_anthropic.base_url)
    config["providers"][0]["keys"] = [{"value": "sk-the-only-key"}]
    return config


async def test_with_its_only_key_cooling_down_the_agent_sees_429(
    bridge, fake_openai, mock_clock
) -> None:
    client = openai.AsyncOpenAI(base_url=bridge.base_url("openai"), api_key="unused", max_retries=0)
    fake_openai.behave(RateLimited(retry_after="30"))
    with pytest.raises(openai.RateLimitError):
        await ask(client, "Weather?")
    with pytest.raises(openai.RateLimitError) as caught:  # the bridge answers: no key left
        await ask(client, "Weather?")
    assert caught.value.response.headers["retry-after"] == "30"
    assert fake_openai.request_count == 1

    mock_clock.jump(30)
    assert await ask(client, "Weather?")
    assert fake_openai.request_count == 2
