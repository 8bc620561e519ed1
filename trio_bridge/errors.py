"""The root of every error trio-bridge raises on purpose.

Every subclass carries a message that is safe to print and log: it names what failed and
where, never a secret or file content. Catching :class:`TrioBridgeError` catches them all:

- ``config.errors.ConfigError``: the config dir (or a database row) cannot be used
- ``sources.base.SourceError``: a source failed to load
- ``store.errors.StoreError``: a database operation failed (``CrudError`` below it)
- ``daemon.StartupError``: the daemon cannot start
- ``commands.options.UsageError``: a flag or ``TRIO_BRIDGE_*`` variable is unusable

This module imports nothing, so every room (``config/`` included) may import it.
"""

from __future__ import annotations


class TrioBridgeError(Exception):
    """An expected failure with a printable, secret-free message."""
