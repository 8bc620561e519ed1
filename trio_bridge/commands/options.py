"""Every option also reads ``TRIO_BRIDGE_<OPTION>``; a flag beats the variable.

A small layer over argparse, applied to the finished parser tree so that each command
module declares plain argparse options:

- :func:`with_environment` walks every (sub)parser once. Each optional argument gets its
  variable (``--drain-delay`` -> ``TRIO_BRIDGE_DRAIN_DELAY``), and its help line ends with
  ``(default: 5s; env TRIO_BRIDGE_DRAIN_DELAY)``. Its argparse default is suppressed, so
  after parsing an absent attribute means "not given on the command line".
- :func:`resolve_environment` then fills each absent option of the command that runs from
  its variable (converted and checked exactly like the flag), else from its default.
  A bad value raises :class:`UsageError` naming the variable and what was expected; the
  value itself is never quoted (a variable may hold a secret).

Only the parsers on the path of the command that runs are resolved: a bad variable for
``serve`` does not break ``--version`` or ``clients list``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeAlias

from ..config.durations import format_duration, parse_duration
from ..errors import TrioBridgeError

PREFIX = "TRIO_BRIDGE_"
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")

# The object ``add_subparsers`` returns.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(TrioBridgeError):
    """A flag or variable holds a value the command cannot use (exit 2). Safe to print."""


def duration(text: str) -> float:
    """argparse ``type`` for ``250ms`` / ``10s`` / ``5m``; the message never quotes the input."""
    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    """argparse ``type`` for a count of at least 1."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("expected a whole number of at least 1")
    return value


def port(text: str) -> int:
    """argparse ``type`` for a TCP port."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a port number (0-65535)") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("expected a port number (0-65535)")
    return value


def variable(action: argparse.Action) -> str:
    """The environment variable of an optional argument, from its long option."""
    longs = [s for s in action.option_strings if s.startswith("--")]
    name = max(longs or action.option_strings, key=len).lstrip("-")
    return PREFIX + name.upper().replace("-", "_")


# Set on each decorated action: its real default, and whether argparse should require it.
_DEFAULT = "_trio_bridge_default"
_REQUIRED = "_trio_bridge_required"
_SKIP = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def _options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if action.option_strings and not isinstance(action, _SKIP):
            yield action


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, Any]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield action.dest, action


def _show(action: argparse.Action, default: Any) -> str:
    if action.nargs == 0:  # a switch
        return "on" if default and default is not action.const else "off"
    if default is None or default == []:
        return "none"
    if action.type is duration and isinstance(default, int | float):
        return format_duration(default)
    if isinstance(default, Path):
        return str(default)
    return str(default)


def with_environment(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give every optional argument of ``parser`` and its subparsers a variable (see module)."""
    seen: set[int] = set()

    def walk(p: argparse.ArgumentParser) -> None:
        if id(p) in seen:
            return
        seen.add(id(p))
        for action in _options(p):
            if hasattr(action, _DEFAULT):
                continue  # shared through a parent parser: already done
            setattr(action, _DEFAULT, action.default)
            setattr(action, _REQUIRED, action.required)
            action.required = False  # the variable may supply it; checked after resolving
            where = (
                "required"
                if getattr(action, _REQUIRED)
                else f"default: {_show(action, action.default)}"
            )
            text = (action.help or "").replace(f" (env {variable(action)})", "").rstrip()
            action.help = f"{text} ({where}; env {variable(action)})".lstrip().replace("%", "%%")
            action.default = argparse.SUPPRESS
        for _dest, sub in _subparsers(p):
            for child in sub.choices.values():
                walk(child)

    walk(parser)
    return parser


def _convert(action: argparse.Action, raw: str, name: str) -> Any:
    if action.nargs == 0:
        word = raw.strip().lower()
        if word in TRUE:
            return action.const
        if word in FALSE:
            return getattr(action, _DEFAULT)
        raise UsageError(f"{name}: expected one of 1, true, yes, on, 0, false, no, off")
    convert: Callable[[str], Any] = action.type or str  # type: ignore[assignment]
    try:
        value = convert(raw)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{name}: {exc}") from None
    except (TypeError, ValueError):
        what = {int: "a whole number", float: "a number"}.get(convert, "a valid value")  # type: ignore[call-overload]
        raise UsageError(f"{name}: expected {what}") from None
    if action.choices is not None and value not in action.choices:
        raise UsageError(f"{name}: expected one of {', '.join(map(str, action.choices))}")
    if isinstance(action, argparse._AppendAction):
        return [value]
    return value


def _default(action: argparse.Action) -> Any:
    default = getattr(action, _DEFAULT)
    if isinstance(default, str) and callable(action.type) and action.nargs != 0:
        return action.type(default)  # as argparse does for string defaults
    if isinstance(default, list):
        return list(default)
    return default


def _exclusive_groups(parser: argparse.ArgumentParser) -> list[list[argparse.Action]]:
    return [list(g._group_actions) for g in parser._mutually_exclusive_groups]


def _chain(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> list[argparse.ArgumentParser]:
    """The parsers on the path of the chosen command, root first."""
    chain = [parser]
    while True:
        chosen = None
        for dest, sub in _subparsers(chain[-1]):
            name = getattr(args, dest, None)
            if isinstance(name, str) and name in sub.choices:
                chosen = sub.choices[name]
        if chosen is None:
            return chain
        chain.append(chosen)


def command_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The (sub)parser of the command ``args`` chose."""
    return _chain(parser, args)[-1]


def resolve_environment(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
) -> argparse.Namespace:
    """Fill every option the command line left out: variable, else default (see module)."""
    environ = os.environ if environ is None else environ
    for p in _chain(parser, args):
        from_env: dict[str, str] = {}
        given = {a.dest for a in _options(p) if hasattr(args, a.dest)}
        groups = _exclusive_groups(p)
        for action in _options(p):
            if action.dest in given or not hasattr(action, _DEFAULT):
                continue
            name = variable(action)
            raw = environ.get(name)
            group = next((g for g in groups if action in g), [])
            if raw is not None and any(other.dest in given for other in group):
                raw = None  # a flag of the same either/or group was given: it wins
            if raw:  # an empty variable counts as unset
                setattr(args, action.dest, _convert(action, raw, name))
                from_env[action.dest] = name
            else:
                setattr(args, action.dest, _default(action))
        for group in groups:  # either/or options: the first one whose variable is set wins
            chosen = [a for a in group if a.dest in from_env]
            for action in chosen[1:]:
                setattr(args, action.dest, _default(action))
        for action in _options(p):
            if getattr(action, _REQUIRED, False) and getattr(args, action.dest, None) is None:
                raise UsageError(
                    f"{'/'.join(action.option_strings)} is required (or set {variable(action)})"
                )
    return args
