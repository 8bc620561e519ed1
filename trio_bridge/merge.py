"""Merging sources: database rows first, YAML entries by name on top (contract section 4)."""

from __future__ import annotations

from .config.model import BridgeSettings, ClientSpec
from .snapshot import BuildInputs, ProviderInput, SourceStatus
from .sources.base import SourceContents
from .sources.resolve import ResolvedSecrets


def merge(
    database: SourceContents | None,
    files: SourceContents | None,
    sources: tuple[SourceStatus, ...],
) -> BuildInputs:
    """A YAML entry replaces the row of the same name whole, except a switch-off entry
    (only ``name`` and ``enabled: false``), which keeps the row but disables it. The sources'
    resolved key references travel along (the files' on top)."""
    providers: dict[str, ProviderInput] = {}
    clients: dict[str, ClientSpec] = {}
    if database is not None:
        for spec in database.providers:
            providers[spec.name] = ProviderInput(spec, "database")
        for name, reason in database.invalid_providers:
            providers[name] = ProviderInput(None, "database", invalid=reason)
        for client in database.clients:
            clients[client.id] = client
    bridge = BridgeSettings()
    if files is not None:
        bridge = files.bridge or bridge
        for spec in files.providers:
            origin = f"yaml:{files.origins.get(spec.name, '?')}"
            below = providers.get(spec.name)
            if spec.is_switch_off and below is not None and below.spec is not None:
                providers[spec.name] = ProviderInput(
                    below.spec, f"{below.source}+{origin}", switched_off=True
                )
            else:
                providers[spec.name] = ProviderInput(spec, origin)
        for client in files.clients:
            clients[client.id] = client
    secrets = ResolvedSecrets()
    for contents in (database, files):
        if contents is not None:
            secrets = secrets.union(contents.secrets)
    return BuildInputs(
        bridge=bridge,
        providers=providers,
        clients=tuple(clients.values()),
        sources=sources,
        secrets=secrets,
    )
