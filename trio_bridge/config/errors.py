"""Configuration errors that name where and what, never the rejected content."""

from __future__ import annotations

import re

import msgspec

from ..errors import TrioBridgeError


class ConfigError(TrioBridgeError):
    """The config dir (or a row) cannot be used. The message is safe to print and log.

    ``errors`` holds every problem found (one line each); the message joins them.
    """

    def __init__(self, *errors: str) -> None:
        self.errors: tuple[str, ...] = errors
        super().__init__("\n".join(errors))


_CHOICES = {
    "type": "one of openai, anthropic, copilot",
    "auth": "one of tokens, none",
}

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)


def describe_validation_error(error: msgspec.ValidationError, at: str = "$") -> str:
    """``$.providers[1].base_url: expected a string matching ^https?://``.

    msgspec messages are rephrased so that no rejected value is ever quoted. ``at`` is
    the path of the value that was converted (its error paths are relative to it).
    """
    match = _AT.match(str(error))
    assert match is not None
    msg, path = match.group("msg"), at + (match.group("path") or "$")[1:]
    if msg.startswith("Invalid enum value"):
        field = path.rsplit(".", 1)[-1]
        msg = f"expected {_CHOICES.get(field, 'one of the documented choices')}"
    elif msg.startswith("Expected `str` matching regex"):
        pattern = msg.split("regex ", 1)[1].strip("'")
        msg = f"expected a string matching {pattern}"
    elif msg.startswith("Expected"):
        msg = "expected " + _plain_types(msg[len("Expected ") :])
    elif msg.startswith("Object contains unknown field"):
        msg = "unknown field"  # its name is file content: never quoted
    elif msg.startswith("Object missing required field"):
        field = msg.split("`")[1] if "`" in msg else "?"
        msg = f"missing required field {field!r}"
    return f"{path}: {msg}"


def _plain_types(text: str) -> str:
    names = {
        "`str`": "a string",
        "`int`": "an integer",
        "`bool`": "true or false",
        "`object`": "a mapping",
        "`array`": "a list",
        "`float`": "a number",
    }
    for raw, plain in names.items():
        text = text.replace(raw, plain)
    return re.sub(r", got .*$", "", text)
