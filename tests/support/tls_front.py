"""A TLS front for loopback fakes: terminates TLS with a trustme certificate and splices the
plain bytes to a backend port, so a plain-HTTP fake upstream serves ``https://``."""

from __future__ import annotations

import contextlib
import ssl

import trio
import trustme

from trio_bridge.proxymode.tunnel import splice


class TLSFront:
    """``await nursery.start(front.serve, backend_port)``; then ``front.port`` serves TLS for
    ``hostnames`` with a certificate from ``ca`` (a trustme.CA)."""

    def __init__(self, ca: trustme.CA, *hostnames: str) -> None:
        self.ca = ca
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*(hostnames or ("localhost",))).configure_cert(self.context)
        self.port = 0
        self.connections = 0

    async def serve(self, backend_port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]

        async def on_connection(stream: trio.SocketStream) -> None:
            self.connections += 1
            tls = trio.SSLStream(stream, self.context, server_side=True)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await tls.do_handshake()
                backend = await trio.open_tcp_stream("127.0.0.1", backend_port)
                async with backend:
                    await splice(tls, backend)
            await trio.aclose_forcefully(tls)

        task_status.started(self.port)
        await trio.serve_listeners(on_connection, listeners)
