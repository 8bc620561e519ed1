"""The code under test: a small agent that answers questions with the help of a weather
tool, through any OpenAI-compatible endpoint (in production: the bridge)."""

from __future__ import annotations

import json

from openai import AsyncOpenAI

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def get_weather(city: str) -> str:
    return f"Sunny, 21 C in {city}"


async def ask(client: AsyncOpenAI, question: str, *, model: str = "gpt-4o-mini") -> str:
    """Ask the model; run the tool calls it makes; return its final text."""
    messages: list[dict] = [{"role": "user", "content": question}]
    for _ in range(4):
        reply = await client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
        message = reply.choices[0].message
        if not message.tool_calls:
            return message.content or ""
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            result = get_weather(**json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    raise RuntimeError("the model kept calling tools")
