"""The configuration schema (contract section 3), shared by YAML files and database rows.

Every struct is strict: unknown fields are errors, and validation messages name a JSON
path and what was expected, never the rejected value.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from .durations import Duration

NAME_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
BASE_URL_PATTERN = r"^https?://"
MAX_KEYS = 8

ProviderType = Literal["openai", "anthropic", "copilot"]
ProviderName = Annotated[str, Meta(pattern=NAME_PATTERN, max_length=63)]
BaseUrl = Annotated[str, Meta(pattern=BASE_URL_PATTERN, max_length=2048)]
PositiveInt = Annotated[int, Meta(ge=1)]


# Subclasses inherit these options; each repeats ``frozen=True`` only so type checkers know.
class _Strict(Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    pass


class KeyRef(_Strict, frozen=True):
    """Where an upstream secret comes from: exactly one of env, file, value."""

    env: Annotated[str, Meta(min_length=1)] | None = None
    file: Annotated[str, Meta(min_length=1)] | None = None
    value: Annotated[str, Meta(min_length=1)] | None = None

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.env, self.file, self.value))
        if given != 1:
            raise ValueError("expected exactly one of env, file, value")
        if self.file is not None:
            parts = self.file.replace("\\", "/").split("/")
            if (
                self.file.startswith(("/", "\\"))
                or ".." in parts
                or re.match(r"^[A-Za-z]:", self.file)
            ):
                raise ValueError("expected a relative path under the secrets dir, without '..'")

    def describe(self) -> str:
        """Where the key comes from, safe to print (never the value)."""
        if self.env is not None:
            return f"env:{self.env}"
        if self.file is not None:
            return f"file:{self.file}"
        return "value"


class BedrockSettings(_Strict, frozen=True):
    region: Annotated[str, Meta(pattern=r"^[a-z0-9-]+$")]
    model: str
    small_fast_model: str | None = None
    access_key: KeyRef | None = None
    access_key_secret: KeyRef | None = None
    session_token: KeyRef | None = None


class FallbackTarget(_Strict, frozen=True):
    """One place a request may go when its provider gives up; ``model`` rewrites the body's."""

    provider: ProviderName
    model: Annotated[str, Meta(min_length=1, max_length=256)] | None = None


class FallbackEntry(_Strict, frozen=True):
    """A fallback rule: ``to`` targets, tried in order, for requests whose model matches one of
    the ``models`` globs (omitted: every model). ``context_length``: also on a context-length
    error."""

    to: Annotated[list[FallbackTarget], Meta(min_length=1, max_length=8)]
    models: Annotated[list[Annotated[str, Meta(min_length=1)]], Meta(min_length=1)] | None = None
    context_length: bool = False


class ProviderSpec(_Strict, frozen=True):
    """One provider as configured, from either source.

    A switch-off entry has only ``name`` and ``enabled: false``; every other entry needs
    ``type`` and ``base_url``.
    """

    name: ProviderName
    type: ProviderType | UnsetType = UNSET
    base_url: BaseUrl | UnsetType = UNSET
    enabled: bool = True
    keys: Annotated[list[KeyRef], Meta(max_length=MAX_KEYS)] = []
    headers: dict[str, str] = {}
    bedrock: BedrockSettings | None = None
    # Extra CA bundle (PEM) trusted for this upstream's TLS, besides the system store.
    ca_file: KeyRef | None = None
    first_token_timeout: Duration | None = None
    fallbacks: Annotated[list[FallbackEntry], Meta(max_length=16)] = []

    def __post_init__(self) -> None:
        if self.type is UNSET or self.base_url is UNSET:
            if (
                self.enabled
                or self.keys
                or self.headers
                or self.bedrock is not None
                or self.ca_file is not None
                or self.fallbacks
                or self.first_token_timeout is not None
            ):
                raise ValueError(
                    "expected type and base_url (only a switch-off entry, "
                    "name with enabled: false, may omit them)"
                )
        if self.type == "copilot" and self.keys:
            raise ValueError("copilot providers take no keys: clients bring their own")
        for header in self.headers:
            if not re.match(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", header):
                raise ValueError("expected header names made of token characters")

    @property
    def is_switch_off(self) -> bool:
        return self.type is UNSET or self.base_url is UNSET


class ClientSpec(_Strict, frozen=True):
    """A client allowed to call the bridge; only the sha256 of its token is kept."""

    id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9._@:-]{1,128}$")]
    token_sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
    metadata: dict[str, str] = {}


class CircuitBreakerSettings(_Strict, frozen=True):
    enabled: bool = False
    failure_threshold: PositiveInt = 5
    interval: Duration = Duration(10)
    timeout: Duration = Duration(30)
    max_requests: PositiveInt = 3


class RetrySettings(_Strict, frozen=True):
    """Same-upstream retries (contract section 7): attempts per request and upstream, key
    failovers included; full-jitter exponential backoff from ``backoff`` capped at
    ``max_backoff``."""

    max_attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    backoff: Duration = Duration(0.25)
    max_backoff: Duration = Duration(2)


class ReloadSettings(_Strict, frozen=True):
    debounce: Duration = Duration(0.25)
    resync_every: Duration = Duration(300)


HostPort = Annotated[str, Meta(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$")]


class ProxyModeSettings(_Strict, frozen=True):
    """Interception proxy mode (contract section 11): the CA leaves are minted from."""

    ca_cert: KeyRef
    ca_key: KeyRef
    passthrough_hosts: list[HostPort] = []


class RecordingSettings(_Strict, frozen=True):
    """``bridge.recording``: usage records (contract section 8)."""

    enabled: bool = True
    queue: PositiveInt = 10_000
    batch: PositiveInt = 500
    flush_every: Duration = Duration(1)
    prompts: bool = True
    file: Annotated[str, Meta(min_length=1)] | None = None


class BridgeSettings(_Strict, frozen=True):
    auth: Literal["tokens", "none"] = "tokens"
    allow_byok: bool = True
    send_actor_headers: bool = False
    forward_client_ip: bool = False
    max_body_bytes: PositiveInt = 32 * 1024 * 1024
    max_inflight: PositiveInt = 4096
    api_dump_dir: str | None = None
    upstream_max_connections: PositiveInt = 1024
    upstream_timeout: Duration = Duration(600)
    first_byte_timeout: Duration = Duration(120)
    stream_idle_timeout: Duration = Duration(120)
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    retry: RetrySettings = RetrySettings()
    reload: ReloadSettings = ReloadSettings()
    proxy_mode: ProxyModeSettings | None = None
    recording: RecordingSettings = RecordingSettings()


class ConfigFile(_Strict, frozen=True):
    """One YAML file of the config dir."""

    bridge: BridgeSettings | None = None
    providers: list[ProviderSpec] = []
    clients: list[ClientSpec] = []


_T = TypeVar("_T")


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Duration:
        from .durations import parse_duration

        return parse_duration(obj)
    raise NotImplementedError


def convert(obj: Any, type_: type[_T]) -> _T:
    """msgspec.convert with this schema's custom types (durations)."""
    return msgspec.convert(obj, type_, dec_hook=_dec_hook)
