"""Loading the config dir: every ``*.yaml``/``*.yml`` (no dotfiles), in name order, merged."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import msgspec
import yaml

from .errors import ConfigError, describe_validation_error
from .model import BridgeSettings, ClientSpec, ConfigFile, ProviderSpec, convert
from .validate import schema_errors

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Loader = yaml.SafeLoader


@dataclass(frozen=True)
class LoadedConfig:
    """The merged config dir. ``origins`` maps provider name to the file it came from."""

    bridge: BridgeSettings | None
    providers: tuple[ProviderSpec, ...]
    clients: tuple[ClientSpec, ...]
    origins: dict[str, str]
    files: tuple[Path, ...]
    digest: str


def config_files(config_dir: Path) -> list[Path]:
    """The files that make up the config, in the order they are merged."""
    if not config_dir.is_dir():
        raise ConfigError(f"{config_dir}: not a directory")
    return sorted(
        p
        for p in config_dir.iterdir()
        if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()
    )


_T = TypeVar("_T")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|`[^`]*`")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What PyYAML found, without the quoted bits of the file it likes to include."""
    if isinstance(exc, yaml.constructor.ConstructorError):
        return "a tag plain YAML does not define; quote values that start with !"
    problem = getattr(exc, "problem", None) or "syntax error"
    problem = " ".join(_QUOTED.sub("", problem).split())
    return problem or "syntax error"


def parse_file(name: str, text: str) -> ConfigFile:
    """One file's contents validated against the schema. Raises ConfigError with every
    schema error found in the file, each naming the file and the place."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}:{mark.column + 1}" if mark else "?"
        raise ConfigError(f"{name}: {where}: invalid YAML ({_yaml_problem(exc)})") from None
    except yaml.YAMLError:
        raise ConfigError(f"{name}: invalid YAML") from None
    if data is None:
        return ConfigFile()
    try:
        return convert(data, ConfigFile)
    except msgspec.ValidationError as exc:
        errors = schema_errors(data, ConfigFile) or [describe_validation_error(exc)]
        raise ConfigError(*(f"{name}: {error}" for error in errors)) from None


def load_config_dir(config_dir: Path) -> LoadedConfig:
    """Read and merge the config dir. Raises ConfigError with every problem found: each
    file is read and validated (all its schema errors), then the merge rules apply."""
    bridge: BridgeSettings | None = None
    bridge_file: str | None = None
    providers: list[ProviderSpec] = []
    clients: list[ClientSpec] = []
    origins: dict[str, str] = {}
    client_origins: dict[str, str] = {}
    digest = hashlib.sha256()
    files = config_files(config_dir)
    problems: list[str] = []
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path.name}: cannot be read ({type(exc).__name__})") from None
        digest.update(path.name.encode() + b"\0" + raw + b"\0")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{path.name}: not UTF-8 text") from None
        try:
            parsed = parse_file(path.name, text)
        except ConfigError as exc:
            problems += exc.errors
            continue
        if parsed.bridge is not None:
            if bridge_file is not None:
                raise ConfigError(f"{path.name}: bridge: already set in {bridge_file}")
            bridge, bridge_file = parsed.bridge, path.name
        _collect(path.name, "providers", "name", parsed.providers, providers, origins)
        _collect(path.name, "clients", "id", parsed.clients, clients, client_origins)
    if problems:
        raise ConfigError(*problems)
    return LoadedConfig(
        bridge=bridge,
        providers=tuple(providers),
        clients=tuple(clients),
        origins=origins,
        files=tuple(files),
        digest=digest.hexdigest(),
    )


def _collect(
    file: str, section: str, key: str, items: list[_T], into: list[_T], origins: dict[str, str]
) -> None:
    """Append one file's entries, refusing a name (or id) another file already defined."""
    for i, item in enumerate(items):
        name = getattr(item, key)
        if name in origins:
            raise ConfigError(
                f"{file}: $.{section}[{i}].{key}: {section[:-1]} {name!r} "
                f"is also defined in {origins[name]}"
            )
        origins[name] = file
        into.append(item)
