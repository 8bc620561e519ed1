"""Shared test rigs; test files import from here, never from one another.

- ``bridge``: ``start_bridge`` (a real daemon in-process on loopback), ``RunningBridge``,
  ``write_yaml`` (atomic config writes), ``client`` (an httpx2 client for the tests).
- ``pg``: the Postgres isolation plugin (``pg_dsn``, ``pg_migrated_dsn``, ``pg_conn``).
- ``relay``: a loopback TCP relay a test opens, closes and cuts (a database that comes and goes).
- ``upstream_servers``: raw HTTP/1.1 (and TLS, CONNECT proxy) servers for the upstream client.
- ``rig``: ``Rig`` / ``open_rigs``, a bridge in front of one fake upstream per provider, with
  pool keys ``K0``/``K1``/``K2`` and YAML builders (``provider_yaml``, ``config_yaml``).
- ``metrics``: ``sample`` reads one value out of Prometheus text.
- ``sse``: ``sse_blocks`` / ``sse_parse`` read an SSE body as whole events.
- ``recording``: the usage-recording config (client token, pool keys, two providers).
- ``daemon``: ``serve``, the daemon in a subprocess as operators run it; ``free_port``.

The names most tests need are re-exported here: ``from tests.support import start_bridge``.
"""

from tests.support.bridge import RunningBridge, client, start_bridge, write_yaml

__all__ = ["RunningBridge", "client", "start_bridge", "write_yaml"]
