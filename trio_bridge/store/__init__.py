"""Postgres: schema migrations, the provider/client load, CRUD and its commands.

Everything here is synchronous (psycopg 3 sync connections); trio code calls it through
``trio.to_thread.run_sync``. Every error leaving this package is a :class:`StoreError`
whose message never contains the database password.
"""

from .errors import StoreError

__all__ = ["StoreError"]
