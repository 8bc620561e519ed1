"""AWS credentials for Bedrock's SigV4 signing: the configured keys, or botocore's default
chain (environment, shared files, container and instance roles), loaded and refreshed in a
worker thread so the event loop never waits on a file or a metadata endpoint.

Credentials are never logged or rendered: ``description`` says where they come from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import trio


@dataclass(frozen=True, repr=False)
class AwsKeys:
    """One set of frozen credentials (``repr`` hides them)."""

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return "AwsKeys(...)"


class NoCredentials(Exception):
    """The default chain found no credentials (the message names no secret)."""


class CredentialSource(Protocol):
    description: str

    async def get(self) -> AwsKeys: ...


class StaticCredentials:
    """Keys resolved from the provider's ``access_key`` / ``access_key_secret`` references
    (a file rotation makes a new snapshot, hence a new source)."""

    def __init__(self, keys: AwsKeys, description: str) -> None:
        self._keys = keys
        self.description = description

    async def get(self) -> AwsKeys:
        return self._keys


class DefaultChainCredentials:
    """botocore's default credential chain. The first ``get`` loads it in a thread; later
    calls return the cached keys until botocore says a refresh is due (expiring role
    credentials), which again happens in a thread. Concurrent callers share one load."""

    description = "default chain"

    def __init__(self, *, session_factory: Any = None) -> None:
        self._session_factory = session_factory
        self._creds: Any = None
        self._frozen: AwsKeys | None = None
        self._lock = trio.Lock()

    async def get(self) -> AwsKeys:
        if self._frozen is not None and not self._refresh_due():
            return self._frozen
        async with self._lock:
            if self._frozen is None or self._refresh_due():
                self._creds, self._frozen = await trio.to_thread.run_sync(
                    self._load, abandon_on_cancel=True
                )
            assert self._frozen is not None
            return self._frozen

    def _refresh_due(self) -> bool:
        refresh_needed = getattr(self._creds, "refresh_needed", None)
        return bool(refresh_needed()) if refresh_needed is not None else False

    def _load(self) -> tuple[Any, AwsKeys]:
        creds = self._creds
        if creds is None:
            if self._session_factory is not None:
                session = self._session_factory()
            else:
                import botocore.session

                session = botocore.session.get_session()
            creds = session.get_credentials()
        if creds is None:
            raise NoCredentials("no AWS credentials found by the default chain")
        frozen = creds.get_frozen_credentials()
        if not frozen.access_key or not frozen.secret_key:
            raise NoCredentials("the default chain returned incomplete AWS credentials")
        return creds, AwsKeys(frozen.access_key, frozen.secret_key, frozen.token or None)
