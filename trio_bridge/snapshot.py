"""The immutable snapshot every request reads once, and how it is built from provider specs."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypedDict

import msgspec

from .config.durations import Duration
from .config.model import BridgeSettings, ClientSpec, ProviderSpec
from .config.secrets import KeyResolutionError, resolve_key
from .masking import mask_secret
from .providers import Dialect, dialect_for
from .proxymode.view import ProxyView, build_proxy_view
from .resilience.breaker import BreakerSet, BreakerSettings, ModelLabeler
from .resilience.fallbacks import ChainEntry, ChainTarget, family
from .resilience.keypool import KeyPool, KeyStateRegistry, PoolKey
from .sources.base import ConnectionState
from .upstream import UpstreamClient, UpstreamClients, UpstreamConfigError, UpstreamLimits

NOT_SUPPORTED = "not supported in this version"

ProviderStatus = Literal["ok", "error", "disabled"]
"""A provider's state, as ``/-/snapshot`` and the ``provider_info`` gauge show it."""


@dataclass(frozen=True, eq=False)
class Provider:
    """One provider as served by one snapshot. ``status`` is ok, error or disabled."""

    name: str
    type: str | None
    base_url: str | None
    source: str
    enabled: bool
    status: ProviderStatus
    error: str | None = None
    dialect: Dialect | None = None
    pool: KeyPool | None = None
    upstream: UpstreamClient | None = None
    breakers: BreakerSet | None = None
    labeler: ModelLabeler = field(default_factory=ModelLabeler)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    key_sources: tuple[str, ...] = ()
    fallbacks: tuple[ChainEntry, ...] = ()
    first_token_timeout: float | None = None

    @property
    def has_keys(self) -> bool:
        return self.pool is not None and bool(self.pool.keys)


class _Common(TypedDict):
    """The fields every built (or failed) provider of a valid spec shares."""

    name: str
    type: str
    base_url: str
    source: str
    key_sources: tuple[str, ...]


@dataclass(frozen=True)
class SourceStatus:
    name: str
    loaded_at: float | None
    error: str | None
    connection: ConnectionState | None = None


@dataclass(frozen=True, eq=False)
class Snapshot:
    """Everything a request needs, never mutated after the swap."""

    version: int
    built_at: float
    bridge: BridgeSettings
    providers: Mapping[str, Provider]
    clients: Mapping[str, ClientSpec]  # by token_sha256
    sources: tuple[SourceStatus, ...]
    fingerprint: str
    proxy: ProxyView | None = None  # set when bridge.proxy_mode is configured


@dataclass(frozen=True)
class ProviderInput:
    """A merged provider spec and where it came from."""

    spec: ProviderSpec | None
    source: str
    invalid: str | None = None  # a row that failed validation: name only, with the reason
    switched_off: bool = False


@dataclass(frozen=True)
class BuildInputs:
    bridge: BridgeSettings
    providers: Mapping[str, ProviderInput]
    clients: tuple[ClientSpec, ...]
    sources: tuple[SourceStatus, ...]


class Resilience:
    """State that outlives snapshots: key cooldowns by value, breakers by provider."""

    def __init__(self) -> None:
        self.keys = KeyStateRegistry()
        self._breakers: dict[str, tuple[tuple[str, str], BreakerSet]] = {}

    def breakers_for(
        self, name: str, identity: tuple[str, str], settings: BreakerSettings
    ) -> BreakerSet:
        known = self._breakers.get(name)
        if known is not None and known[0] == identity:
            known[1].update_settings(settings)
            return known[1]
        breakers = BreakerSet(settings)
        self._breakers[name] = (identity, breakers)
        return breakers

    def retain(self, names: set[str]) -> None:
        for name in list(self._breakers):
            if name not in names:
                del self._breakers[name]


def breaker_settings(bridge: BridgeSettings) -> BreakerSettings:
    cb = bridge.circuit_breaker
    return BreakerSettings(
        failure_threshold=cb.failure_threshold,
        interval=float(cb.interval),
        timeout=float(cb.timeout),
        max_requests=cb.max_requests,
    )


def upstream_limits(bridge: BridgeSettings) -> UpstreamLimits:
    return UpstreamLimits(
        max_connections=bridge.upstream_max_connections,
        read_timeout=float(bridge.stream_idle_timeout),
    )


@dataclass
class _Build:
    providers: dict[str, Provider]
    clients: dict[str, UpstreamClient]
    secrets: list[tuple[str, str]]
    ca_bundles: list[tuple[str, str]] = field(default_factory=list)


def build_snapshot(
    inputs: BuildInputs,
    *,
    version: int,
    secrets_dir: Path | None,
    environ: Mapping[str, str],
    resilience: Resilience,
    upstreams: UpstreamClients,
) -> tuple[Snapshot, dict[str, UpstreamClient]]:
    """Build a snapshot; returns it and the upstream clients it uses (for commit/discard).

    A provider that fails to build gets status ``error``; it never fails the whole build.
    """
    build = _Build({}, {}, [])
    digest = hashlib.sha256()
    digest.update(msgspec.json.encode(inputs.bridge, enc_hook=_enc))
    for name in sorted(inputs.providers):
        item = inputs.providers[name]
        provider = _build_provider(
            name,
            item,
            inputs.bridge,
            secrets_dir,
            environ,
            resilience,
            upstreams,
            build,
            inputs.providers,
        )
        build.providers[name] = provider
        digest.update(
            msgspec.json.encode(
                [name, item.source, item.invalid, item.switched_off, item.spec], enc_hook=_enc
            )
        )
    for provider_name, secret in build.secrets:
        digest.update(hashlib.sha256(f"{provider_name}\0{secret}".encode()).digest())
    for provider_name, pem in build.ca_bundles:
        digest.update(hashlib.sha256(f"{provider_name}\0ca\0{pem}".encode()).digest())
    for client in inputs.clients:
        digest.update(msgspec.json.encode(client))
    for source in inputs.sources:
        digest.update(f"{source.name}\0{source.error}\0{source.connection}".encode())
    proxy = None
    if inputs.bridge.proxy_mode is not None:
        served = [
            (p.name, p.base_url)
            for p in build.providers.values()
            if p.status == "ok" and p.base_url
        ]
        proxy = build_proxy_view(inputs.bridge.proxy_mode, served, secrets_dir, environ)
        digest.update(f"proxy\0{proxy.fingerprint}\0{proxy.error}".encode())
    resilience.keys.retain(build.secrets)
    resilience.retain(set(build.providers))
    snapshot = Snapshot(
        version=version,
        built_at=time.time(),
        bridge=inputs.bridge,
        providers=build.providers,
        clients={c.token_sha256: c for c in inputs.clients},
        sources=inputs.sources,
        fingerprint=digest.hexdigest(),
        proxy=proxy,
    )
    return snapshot, build.clients


def _enc(obj: object) -> object:
    if isinstance(obj, Duration):
        return float(obj)
    raise NotImplementedError


def _build_provider(
    name: str,
    item: ProviderInput,
    bridge: BridgeSettings,
    secrets_dir: Path | None,
    environ: Mapping[str, str],
    resilience: Resilience,
    upstreams: UpstreamClients,
    build: _Build,
    known: Mapping[str, ProviderInput],
) -> Provider:
    spec = item.spec
    if spec is None or spec.is_switch_off:
        # A validation failure (no usable spec) or a switch-off with nothing to switch off.
        status: ProviderStatus = "error" if item.invalid else "disabled"
        return Provider(
            name=name,
            type=None,
            base_url=None,
            source=item.source,
            enabled=False if item.invalid is None else True,
            status=status,
            error=item.invalid,
        )
    assert isinstance(spec.type, str) and isinstance(spec.base_url, str)
    common = _Common(
        name=name,
        type=spec.type,
        base_url=spec.base_url,
        source=item.source,
        key_sources=tuple(k.describe() for k in spec.keys),
    )
    dialect = dialect_for(spec.type)
    if item.switched_off or not spec.enabled:
        return Provider(**common, enabled=False, status="disabled", dialect=dialect)
    if dialect is None:
        return Provider(
            **common, enabled=True, status="error", error=f"type {spec.type}: {NOT_SUPPORTED}"
        )
    chain_error = _fallback_error(spec, known)
    if chain_error is not None:
        return Provider(**common, enabled=True, status="error", dialect=dialect, error=chain_error)
    if spec.bedrock is not None:
        return _build_bedrock(
            spec, common, bridge, secrets_dir, environ, resilience, upstreams, build
        )
    secrets: list[str] = []
    try:
        for ref in spec.keys:
            secrets.append(resolve_key(ref, secrets_dir, environ))
    except KeyResolutionError as exc:
        return Provider(**common, enabled=True, status="error", dialect=dialect, error=str(exc))
    if not secrets and not bridge.allow_byok and spec.type != "copilot":  # copilot: always BYOK
        return Provider(
            **common,
            enabled=True,
            status="error",
            dialect=dialect,
            error="no keys configured and allow_byok is false",
        )
    ca_pem: str | None = None
    if spec.ca_file is not None:
        try:
            ca_pem = resolve_key(spec.ca_file, secrets_dir, environ)
        except KeyResolutionError as exc:
            return Provider(
                **common, enabled=True, status="error", dialect=dialect, error=f"ca_file: {exc}"
            )
    try:
        upstream = upstreams.client_for(name, upstream_limits(bridge), ca_pem=ca_pem)
    except UpstreamConfigError as exc:
        return Provider(**common, enabled=True, status="error", dialect=dialect, error=str(exc))
    if ca_pem is not None:
        build.ca_bundles.append((name, ca_pem))
    build.secrets.extend((name, s) for s in secrets)
    pool = KeyPool(
        name,
        [
            PoolKey(
                index=i, secret=s, hint=mask_secret(s), state=resilience.keys.state_for(name, s)
            )
            for i, s in enumerate(secrets)
        ],
    )
    build.clients[name] = upstream
    breakers = resilience.breakers_for(name, (spec.type, spec.base_url), breaker_settings(bridge))
    headers = tuple((k.lower().encode(), v.encode()) for k, v in spec.headers.items())
    return Provider(
        **common,
        enabled=True,
        status="ok",
        dialect=dialect,
        pool=pool,
        upstream=upstream,
        breakers=breakers,
        headers=headers,
        fallbacks=tuple(
            ChainEntry(
                to=tuple(ChainTarget(t.provider, t.model) for t in entry.to),
                models=tuple(entry.models) if entry.models is not None else None,
                context_length=entry.context_length,
            )
            for entry in spec.fallbacks
        ),
        first_token_timeout=(
            float(spec.first_token_timeout) if spec.first_token_timeout is not None else None
        ),
    )


def _build_bedrock(
    spec: ProviderSpec,
    common: _Common,
    bridge: BridgeSettings,
    secrets_dir: Path | None,
    environ: Mapping[str, str],
    resilience: Resilience,
    upstreams: UpstreamClients,
    build: _Build,
) -> Provider:
    """An anthropic provider on AWS Bedrock: its own dialect instance (settings, credentials)
    and a pool of one key standing for the AWS credentials (cooldowns, 429 handling)."""
    from .aws_credentials import AwsKeys, DefaultChainCredentials, StaticCredentials
    from .providers.bedrock import EXTRA_HINT, BedrockDialect, botocore_available

    name = common["name"]
    settings = spec.bedrock
    assert settings is not None

    def failed(reason: str) -> Provider:
        return Provider(
            **common,
            enabled=True,
            status="error",
            dialect=dialect_for(str(spec.type)),
            error=f"bedrock: {reason}",
        )

    if spec.type != "anthropic":
        return failed("bedrock settings need type anthropic")
    if spec.keys:
        return failed("credentials go under bedrock (access_key, access_key_secret), not keys")
    if not botocore_available():
        return failed(f"botocore is not installed ({EXTRA_HINT})")
    refs = (settings.access_key, settings.access_key_secret)
    if (refs[0] is None) != (refs[1] is None):
        return failed("access_key and access_key_secret go together")
    if settings.session_token is not None and refs[0] is None:
        return failed("session_token needs access_key and access_key_secret")
    credentials: StaticCredentials | DefaultChainCredentials
    if settings.access_key is not None and settings.access_key_secret is not None:
        try:
            access_key = resolve_key(settings.access_key, secrets_dir, environ)
            secret = resolve_key(settings.access_key_secret, secrets_dir, environ)
            token = (
                resolve_key(settings.session_token, secrets_dir, environ)
                if settings.session_token is not None
                else None
            )
        except KeyResolutionError as exc:
            return failed(str(exc))
        described = [
            f"access_key {settings.access_key.describe()}",
            f"access_key_secret {settings.access_key_secret.describe()}",
        ]
        if settings.session_token is not None:
            described.append(f"session_token {settings.session_token.describe()}")
        credentials = StaticCredentials(AwsKeys(access_key, secret, token), ", ".join(described))
        # The pool key's identity changes with any of the three values (a rotated secret
        # starts fresh); the values themselves only enter the fingerprint, hashed.
        digest = hashlib.sha256(f"{access_key}\0{secret}\0{token or ''}".encode()).hexdigest()
        identity, hint = f"aws:{access_key}:{digest[:16]}", mask_secret(access_key)
        build.secrets.extend((name, s) for s in (access_key, secret, token) if s)
    else:
        credentials = DefaultChainCredentials()
        identity, hint = f"aws-default-chain:{settings.region}", "aws default chain"
    build.secrets.append((name, identity))
    dialect = BedrockDialect(
        base_url=common["base_url"],
        region=settings.region,
        model=settings.model,
        small_fast_model=settings.small_fast_model,
        credentials=credentials,
    )
    pool = KeyPool(
        name,
        [
            PoolKey(
                index=0, secret=identity, hint=hint, state=resilience.keys.state_for(name, identity)
            )
        ],
    )
    upstream = upstreams.client_for(name, upstream_limits(bridge))
    build.clients[name] = upstream
    breakers = resilience.breakers_for(
        name, (spec.type, common["base_url"]), breaker_settings(bridge)
    )
    headers = tuple((k.lower().encode(), v.encode()) for k, v in spec.headers.items())
    return Provider(
        **common,
        enabled=True,
        status="ok",
        dialect=dialect,
        pool=pool,
        upstream=upstream,
        breakers=breakers,
        headers=headers,
    )


def _fallback_error(spec: ProviderSpec, known: Mapping[str, ProviderInput]) -> str | None:
    """Why ``spec``'s fallbacks cannot be served: a target that names no configured provider,
    or one of another API family. A known target that is merely broken or disabled is fine
    (it is skipped while it cannot serve)."""
    own = family(spec.type if isinstance(spec.type, str) else None)
    for i, entry in enumerate(spec.fallbacks):
        for j, target in enumerate(entry.to):
            where = f"$.fallbacks[{i}].to[{j}].provider"
            other = known.get(target.provider)
            if other is None:
                return f'{where}: unknown provider "{target.provider}"'
            other_type = other.spec.type if other.spec is not None else None
            if isinstance(other_type, str) and family(other_type) != own:
                return (
                    f'{where}: provider "{target.provider}" is of another API family '
                    f"({other_type}; expected {own})"
                )
    return None
