"""Testing the agent through a real bridge and a fake OpenAI upstream, with the fixtures
the trio-bridge pytest plugin provides (``bridge``, ``fake_openai``)."""

from __future__ import annotations

import openai
import pytest
from weather_agent import ask

from trio_bridge.testing import Answer, RateLimited, ToolCall
from trio_bridge.testing.plugin import OPENAI_KEYS


@pytest.fixture
def client(bridge) -> openai.AsyncOpenAI:
    # The bridge runs with auth: none, so any api_key does; the pool keys go upstream.
    # max_retries=0: the bridge does the retrying and failing over.
    return openai.AsyncOpenAI(base_url=bridge.base_url("openai"), api_key="unused", max_retries=0)


async def test_the_agent_answers_through_the_bridge(client, fake_openai) -> None:
    fake_openai.behave(Answer(text="It is sunny."))
    assert await ask(client, "Weather?") == "It is sunny."
    request = fake_openai.requests[0]
    assert (request.path, request.key) == ("/v1/chat/completions", OPENAI_KEYS[0])
    assert request.json["tools"][0]["function"]["name"] == "get_weather"


async def test_the_agent_runs_the_tool_the_model_asks_for(client, fake_openai) -> None:
    fake_openai.behave_on(1, Answer(tool_call=ToolCall("get_weather", {"city": "Paris"})))
    fake_openai.behave_on(2, Answer(text="Sunny in Paris."))
    assert await ask(client, "Weather in Paris?") == "Sunny in Paris."
    tool_message = fake_openai.requests[1].json["messages"][-1]
    assert tool_message["role"] == "tool"
    assert tool_message["content"] == "Sunny, 21 C in Paris"


async def test_a_rate_limited_key_is_used_again_after_its_cooldown(
    client, bridge, fake_openai, mock_clock
) -> None:
    # The first key is rate limited for 60 s: the bridge fails over to the second at once.
    fake_openai.behave_for_key(OPENAI_KEYS[0], RateLimited(retry_after="60"))
    await ask(client, "Weather?")
    assert [r.key for r in fake_openai.requests] == list(OPENAI_KEYS)
    assert [k["state"] for k in bridge.provider("openai")["keys"]] == ["rate_limited", "valid"]

    fake_openai.clear()  # the upstream recovers; the bridge still waits out the cooldown
    await ask(client, "Weather?")
    assert fake_openai.last_request.key == OPENAI_KEYS[1]

    mock_clock.jump(61)  # the bridge's timers run on the test's clock
    await ask(client, "Weather?")
    assert fake_openai.last_request.key == OPENAI_KEYS[0]


async def test_a_config_change_is_served_when_reconfigure_returns(
    client, bridge, bridge_config, fake_openai
) -> None:
    openai_provider = bridge_config["providers"][0]
    openai_provider["keys"] = [{"value": "sk-rotated-key"}]
    await bridge.reconfigure(bridge_config)
    await ask(client, "Weather?")
    assert fake_openai.last_request.key == "sk-rotated-key"

    openai_provider["enabled"] = False
    await bridge.reconfigure(bridge_config)
    with pytest.raises(openai.APIStatusError) as caught:
        await ask(client, "Weather?")
    assert caught.value.status_code == 503
