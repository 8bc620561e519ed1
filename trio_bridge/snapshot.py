"""The immutable snapshot every request reads once, and how it is built from provider specs."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from .config.durations import Duration
from .config.model import BridgeSettings, ClientSpec, ProviderSpec
from .config.secrets import KeyResolutionError, resolve_key
from .masking import mask_secret
from .providers import Dialect, dialect_for
from .proxymode.view import ProxyView, build_proxy_view
from .resilience.breaker import BreakerSet, BreakerSettings, ModelLabeler
from .resilience.keypool import KeyPool, KeyStateRegistry, PoolKey
from .upstream import UpstreamClient, UpstreamClients, UpstreamLimits

NOT_SUPPORTED = "not supported in this version"


@dataclass(frozen=True, eq=False)
class Provider:
    """One provider as served by one snapshot. ``status`` is ok, error or disabled."""

    name: str
    type: str | None
    base_url: str | None
    source: str
    enabled: bool
    status: str
    error: str | None = None
    dialect: Dialect | None = None
    pool: KeyPool | None = None
    upstream: UpstreamClient | None = None
    breakers: BreakerSet | None = None
    labeler: ModelLabeler = field(default_factory=ModelLabeler)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    key_sources: tuple[str, ...] = ()

    @property
    def has_keys(self) -> bool:
        return self.pool is not None and bool(self.pool.keys)


@dataclass(frozen=True)
class SourceStatus:
    name: str
    loaded_at: float | None
    error: str | None


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
            name, item, inputs.bridge, secrets_dir, environ, resilience, upstreams, build
        )
        build.providers[name] = provider
        digest.update(
            msgspec.json.encode(
                [name, item.source, item.invalid, item.switched_off, item.spec], enc_hook=_enc
            )
        )
    for provider_name, secret in build.secrets:
        digest.update(hashlib.sha256(f"{provider_name}\0{secret}".encode()).digest())
    for client in inputs.clients:
        digest.update(msgspec.json.encode(client))
    for source in inputs.sources:
        digest.update(f"{source.name}\0{source.error}".encode())
    proxy = None
    if inputs.bridge.proxy_mode is not None:
        served = [(p.name, p.base_url) for p in build.providers.values() if p.status == "ok" and p.base_url]
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
) -> Provider:
    spec = item.spec
    if spec is None or spec.is_switch_off:
        # A validation failure (no usable spec) or a switch-off with nothing to switch off.
        status = "error" if item.invalid else "disabled"
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
    common = dict(
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
    if spec.bedrock is not None:
        return Provider(
            **common,
            enabled=True,
            status="error",
            dialect=dialect,
            error=f"bedrock: {NOT_SUPPORTED}",
        )
    secrets: list[str] = []
    try:
        for ref in spec.keys:
            secrets.append(resolve_key(ref, secrets_dir, environ))
    except KeyResolutionError as exc:
        return Provider(**common, enabled=True, status="error", dialect=dialect, error=str(exc))
    if not secrets and not bridge.allow_byok:
        return Provider(
            **common,
            enabled=True,
            status="error",
            dialect=dialect,
            error="no keys configured and allow_byok is false",
        )
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
    upstream = upstreams.client_for(name, upstream_limits(bridge))
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
    )
