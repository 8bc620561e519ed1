"""What a source hands the reloader, and the message that travels on the reload channel."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config.model import BridgeSettings, ClientSpec, ProviderSpec
from ..errors import TrioBridgeError
from .resolve import ResolvedSecrets


@dataclass(frozen=True)
class ReloadRequest:
    """A poke on the reload channel: ``source`` names the sender; ``full`` re-reads all."""

    source: str
    full: bool = False


@dataclass(frozen=True)
class SourceContents:
    """What one source loaded. Immutable; a source that fails to load keeps its last one."""

    providers: tuple[ProviderSpec, ...] = ()
    # Providers the source knows by name but could not validate: name -> reason (no secrets).
    invalid_providers: tuple[tuple[str, str], ...] = ()
    clients: tuple[ClientSpec, ...] = ()
    bridge: BridgeSettings | None = None
    # Which file each provider came from (YAML); "database" rows leave it empty.
    origins: dict[str, str] = field(default_factory=dict)
    # Directories whose changes may change this source's result (YAML dir, key file dirs).
    watch_dirs: tuple[Path, ...] = ()
    # A hash of everything the contents were made from (file bytes, key files), when the
    # source can tell; equal digests mean a reload would build the same snapshot.
    digest: str | None = None
    # Every key reference of ``providers`` resolved, in the source's worker thread; None when
    # the source leaves that to the reloader (which then resolves them in a worker thread).
    secrets: ResolvedSecrets | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ConnectionState:
    """A source's live connection (the database listener): ``state`` is ``connected`` or
    ``reconnecting``; ``since`` (wall clock) when it entered that state; ``last_error``
    the last reason the connection failed (password-free), kept after a reconnect."""

    state: str
    since: float
    last_error: str | None = None


class SourceError(TrioBridgeError):
    """A source failed to load. The message is safe to log: no secret, no file content."""
