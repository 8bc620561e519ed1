"""The immutable snapshot every request reads once, and how it is built from provider specs.

Building is pure and in two steps around the reloader, which owns the upstream clients:
:func:`plan_snapshot` decides every provider from specs and resolved secrets and says which
upstream clients it needs (:attr:`SnapshotPlan.upstreams`); the reloader gets them from
``UpstreamClients``; :func:`build_snapshot` puts plan and clients together. Neither reads a
file, the environment or a socket.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from .config.durations import Duration
from .config.model import BridgeSettings, ClientSpec, ProviderSpec
from .config.secrets import KeyResolutionError
from .masking import mask_secret
from .providers import Dialect, dialect_for
from .proxymode.view import ProxyView, plan_proxy_view
from .resilience.breaker import BreakerSet, BreakerSettings, ModelLabeler
from .resilience.fallbacks import ChainEntry, ChainTarget, family
from .resilience.keypool import KeyPool, KeyStateRegistry, PoolKey
from .sources.base import ConnectionState
from .sources.resolve import ResolvedSecrets
from .upstream import UpstreamClient, UpstreamLimits

NOT_SUPPORTED = "not supported in this version"


ProviderStatus = Literal["ok", "error", "disabled"]


@dataclass(frozen=True, eq=False)
class ServedProvider:
    """A provider this snapshot serves (status ``ok``): everything the request path needs is
    there (dialect, key pool, upstream client, breakers)."""

    name: str
    type: str
    base_url: str
    source: str
    dialect: Dialect
    pool: KeyPool
    upstream: UpstreamClient
    breakers: BreakerSet
    labeler: ModelLabeler = field(default_factory=ModelLabeler)
    headers: tuple[tuple[bytes, bytes], ...] = ()
    key_sources: tuple[str, ...] = ()
    fallbacks: tuple[ChainEntry, ...] = ()
    first_token_timeout: float | None = None
    enabled: Literal[True] = True
    status: Literal["ok"] = "ok"
    error: None = None

    @property
    def has_keys(self) -> bool:
        return bool(self.pool.keys)


@dataclass(frozen=True, eq=False)
class UnservedProvider:
    """A provider this snapshot knows but cannot serve: switched off (``disabled``) or failed
    to build (``error``, with the reason). ``dialect`` is kept when the type is known (the
    route table decides 404 vs 503); there is no pool, client or breaker."""

    name: str
    type: str | None
    base_url: str | None
    source: str
    enabled: bool
    status: Literal["error", "disabled"]
    error: str | None = None
    dialect: Dialect | None = None
    key_sources: tuple[str, ...] = ()
    pool: None = None
    upstream: None = None
    breakers: None = None

    @property
    def has_keys(self) -> bool:
        return False


Provider = ServedProvider | UnservedProvider


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
    # Every key reference of ``providers``, resolved by the sources (off the event loop).
    secrets: ResolvedSecrets = field(default_factory=ResolvedSecrets, repr=False)


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


@dataclass(frozen=True)
class UpstreamNeed:
    """What one provider's upstream client is made from (the reloader makes it)."""

    limits: UpstreamLimits
    ca_pem: str | None = field(default=None, repr=False)


@dataclass(frozen=True, eq=False)
class _Draft:
    """A provider that will serve once the reloader hands it an upstream client."""

    name: str
    type: str
    base_url: str
    source: str
    key_sources: tuple[str, ...]
    dialect: Dialect
    keys: tuple[tuple[str, str], ...] = field(repr=False)  # (secret or identity, hint)
    upstream: UpstreamNeed
    headers: tuple[tuple[bytes, bytes], ...] = ()
    fallbacks: tuple[ChainEntry, ...] = ()
    first_token_timeout: float | None = None

    def failed(self, reason: str) -> UnservedProvider:
        return UnservedProvider(
            name=self.name,
            type=self.type,
            base_url=self.base_url,
            source=self.source,
            enabled=True,
            status="error",
            error=reason,
            dialect=self.dialect,
            key_sources=self.key_sources,
        )


@dataclass(frozen=True, eq=False)
class SnapshotPlan:
    """Every provider's fate except its upstream client, and the fingerprint of it all.
    ``upstreams`` is the plan of upstream clients the reloader fulfils."""

    inputs: BuildInputs
    entries: Mapping[str, _Draft | UnservedProvider]
    # (provider, secret) pairs whose key states survive the swap; they enter the
    # fingerprint hashed, never as they are.
    secrets: tuple[tuple[str, str], ...] = field(repr=False)
    fingerprint: str
    proxy: ProxyView | None = None  # the CA loaded; its host map comes with the build

    @property
    def upstreams(self) -> dict[str, UpstreamNeed]:
        return {n: e.upstream for n, e in self.entries.items() if isinstance(e, _Draft)}


def plan_snapshot(inputs: BuildInputs) -> SnapshotPlan:
    """Decide every provider from its spec and the resolved secrets (``inputs.secrets``).

    Pure: no I/O, no clock. A provider that fails to build gets status ``error``; it never
    fails the whole plan.
    """
    entries: dict[str, _Draft | UnservedProvider] = {}
    secrets: list[tuple[str, str]] = []
    ca_bundles: list[tuple[str, str]] = []
    digest = hashlib.sha256()
    digest.update(msgspec.json.encode(inputs.bridge, enc_hook=_enc))
    for name in sorted(inputs.providers):
        item = inputs.providers[name]
        entry, entry_secrets = _plan_provider(name, item, inputs)
        entries[name] = entry
        if isinstance(entry, _Draft):
            secrets.extend((name, s) for s in entry_secrets)
            if entry.upstream.ca_pem is not None:
                ca_bundles.append((name, entry.upstream.ca_pem))
        digest.update(
            msgspec.json.encode(
                [name, item.source, item.invalid, item.switched_off, item.spec], enc_hook=_enc
            )
        )
    for provider_name, secret in secrets:
        digest.update(hashlib.sha256(f"{provider_name}\0{secret}".encode()).digest())
    for provider_name, pem in ca_bundles:
        digest.update(hashlib.sha256(f"{provider_name}\0ca\0{pem}".encode()).digest())
    for client in inputs.clients:
        digest.update(msgspec.json.encode(client))
    for source in inputs.sources:
        digest.update(f"{source.name}\0{source.error}\0{source.connection}".encode())
    proxy = None
    if inputs.bridge.proxy_mode is not None:
        proxy = plan_proxy_view(inputs.bridge.proxy_mode, inputs.secrets)
        digest.update(f"proxy\0{proxy.fingerprint}\0{proxy.error}".encode())
    return SnapshotPlan(inputs, entries, tuple(secrets), digest.hexdigest(), proxy)


def build_snapshot(
    plan: SnapshotPlan,
    clients: Mapping[str, UpstreamClient | str],
    *,
    version: int,
    resilience: Resilience,
    built_at: float | None = None,
) -> Snapshot:
    """The snapshot of ``plan`` with the reloader's upstream ``clients`` (one per planned
    provider: the client, or why it could not be made). Creates and closes nothing; key
    states and breakers come from (and are pruned in) ``resilience``."""
    bridge = plan.inputs.bridge
    providers: dict[str, Provider] = {}
    for name, entry in plan.entries.items():
        if isinstance(entry, UnservedProvider):
            providers[name] = entry
            continue
        client = clients.get(name, "no upstream client was made")
        if isinstance(client, str):
            providers[name] = entry.failed(client)
            continue
        pool = KeyPool(
            name,
            [
                PoolKey(
                    index=i,
                    secret=secret,
                    hint=hint,
                    state=resilience.keys.state_for(name, secret),
                )
                for i, (secret, hint) in enumerate(entry.keys)
            ],
        )
        providers[name] = ServedProvider(
            name=name,
            type=entry.type,
            base_url=entry.base_url,
            source=entry.source,
            dialect=entry.dialect,
            pool=pool,
            upstream=client,
            breakers=resilience.breakers_for(
                name, (entry.type, entry.base_url), breaker_settings(bridge)
            ),
            headers=entry.headers,
            key_sources=entry.key_sources,
            fallbacks=entry.fallbacks,
            first_token_timeout=entry.first_token_timeout,
        )
    resilience.keys.retain(list(plan.secrets))
    resilience.retain(set(providers))
    return Snapshot(
        version=version,
        built_at=time.time() if built_at is None else built_at,
        bridge=bridge,
        providers=providers,
        clients={c.token_sha256: c for c in plan.inputs.clients},
        sources=plan.inputs.sources,
        fingerprint=plan.fingerprint,
        proxy=None
        if plan.proxy is None
        else plan.proxy.with_hosts(
            (p.name, p.base_url) for p in providers.values() if isinstance(p, ServedProvider)
        ),
    )


def _enc(obj: object) -> object:
    if isinstance(obj, Duration):
        return float(obj)
    raise NotImplementedError


def _plan_provider(
    name: str, item: ProviderInput, inputs: BuildInputs
) -> tuple[_Draft | UnservedProvider, list[str]]:
    """One provider's fate, and the secrets (key identities) it serves with."""
    spec = item.spec
    if spec is None or spec.is_switch_off:
        # A validation failure (no usable spec) or a switch-off with nothing to switch off.
        return UnservedProvider(
            name=name,
            type=None,
            base_url=None,
            source=item.source,
            enabled=item.invalid is not None,
            status="error" if item.invalid else "disabled",
            error=item.invalid,
        ), []
    assert isinstance(spec.type, str) and isinstance(spec.base_url, str)  # validated specs
    key_sources = tuple(k.describe() for k in spec.keys)
    dialect = dialect_for(spec.type)

    type_, base_url = spec.type, spec.base_url

    def unserved(
        status: Literal["error", "disabled"], error: str | None = None
    ) -> UnservedProvider:
        return UnservedProvider(
            name=name,
            type=type_,
            base_url=base_url,
            source=item.source,
            enabled=status == "error",
            status=status,
            error=error,
            dialect=dialect,
            key_sources=key_sources,
        )

    if item.switched_off or not spec.enabled:
        return unserved("disabled"), []
    if dialect is None:
        return unserved("error", f"type {spec.type}: {NOT_SUPPORTED}"), []
    chain_error = _fallback_error(spec, inputs.providers)
    if chain_error is not None:
        return unserved("error", chain_error), []
    headers = tuple((k.lower().encode(), v.encode()) for k, v in spec.headers.items())
    bridge, secrets = inputs.bridge, inputs.secrets
    if spec.bedrock is not None:
        bedrock = _plan_bedrock(spec, secrets)
        if isinstance(bedrock, str):
            return unserved("error", f"bedrock: {bedrock}"), []
        bedrock_dialect, keys, fingerprinted = bedrock
        return _Draft(
            name=name,
            type=spec.type,
            base_url=spec.base_url,
            source=item.source,
            key_sources=key_sources,
            dialect=bedrock_dialect,
            keys=keys,
            upstream=UpstreamNeed(upstream_limits(bridge)),
            headers=headers,
        ), fingerprinted
    values: list[str] = []
    try:
        for ref in spec.keys:
            values.append(secrets.get(ref))
    except KeyResolutionError as exc:
        return unserved("error", str(exc)), []
    if not values and not bridge.allow_byok and spec.type != "copilot":  # copilot: always BYOK
        return unserved("error", "no keys configured and allow_byok is false"), []
    ca_pem: str | None = None
    if spec.ca_file is not None:
        try:
            ca_pem = secrets.get(spec.ca_file)
        except KeyResolutionError as exc:
            return unserved("error", f"ca_file: {exc}"), []
    return _Draft(
        name=name,
        type=spec.type,
        base_url=spec.base_url,
        source=item.source,
        key_sources=key_sources,
        dialect=dialect,
        keys=tuple((s, mask_secret(s)) for s in values),
        upstream=UpstreamNeed(upstream_limits(bridge), ca_pem),
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
    ), values


def _plan_bedrock(
    spec: ProviderSpec, secrets: ResolvedSecrets
) -> tuple[Dialect, tuple[tuple[str, str], ...], list[str]] | str:
    """An anthropic provider on AWS Bedrock: its own dialect instance (settings, credentials)
    and a pool of one key standing for the AWS credentials (cooldowns, 429 handling). Returns
    the dialect, the pool key (identity, hint) and the secrets to fingerprint, or why not."""
    from .aws_credentials import AwsKeys, DefaultChainCredentials, StaticCredentials
    from .providers.bedrock import EXTRA_HINT, BedrockDialect, botocore_available

    settings = spec.bedrock
    assert settings is not None and isinstance(spec.base_url, str)
    if spec.type != "anthropic":
        return "bedrock settings need type anthropic"
    if spec.keys:
        return "credentials go under bedrock (access_key, access_key_secret), not keys"
    if not botocore_available():
        return f"botocore is not installed ({EXTRA_HINT})"
    refs = (settings.access_key, settings.access_key_secret)
    if (refs[0] is None) != (refs[1] is None):
        return "access_key and access_key_secret go together"
    if settings.session_token is not None and refs[0] is None:
        return "session_token needs access_key and access_key_secret"
    credentials: StaticCredentials | DefaultChainCredentials
    fingerprinted: list[str] = []
    if settings.access_key is not None and settings.access_key_secret is not None:
        try:
            access_key = secrets.get(settings.access_key)
            secret = secrets.get(settings.access_key_secret)
            token = (
                secrets.get(settings.session_token) if settings.session_token is not None else None
            )
        except KeyResolutionError as exc:
            return str(exc)
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
        fingerprinted.extend(s for s in (access_key, secret, token) if s)
    else:
        credentials = DefaultChainCredentials()
        identity, hint = f"aws-default-chain:{settings.region}", "aws default chain"
    fingerprinted.append(identity)
    dialect = BedrockDialect(
        base_url=spec.base_url,
        region=settings.region,
        model=settings.model,
        small_fast_model=settings.small_fast_model,
        credentials=credentials,
    )
    return dialect, ((identity, hint),), fingerprinted


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
