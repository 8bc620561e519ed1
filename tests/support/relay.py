"""A loopback TCP relay a test can open, close and cut: a database that comes and goes."""

from __future__ import annotations

import trio


class Relay:
    """Forwards 127.0.0.1:<port> to a target while open; refuses (closes at once) while shut."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.is_open = False
        self.port = 0
        self._pairs: set[trio.CancelScope] = set()

    async def serve(
        self, *, task_status: trio.TaskStatus[Relay] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._handle, listeners)

    def open(self) -> None:
        self.is_open = True

    def close(self) -> None:
        """Refuse new connections and cut the ones in flight."""
        self.is_open = False
        for scope in list(self._pairs):
            scope.cancel()

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if not self.is_open:
                return
            # Cancellable from accept on: close() also cuts a connection still being made.
            with trio.CancelScope() as scope:
                self._pairs.add(scope)
                try:
                    try:
                        upstream = await trio.open_tcp_stream(*self.target)
                    except OSError:
                        return
                    async with upstream, trio.open_nursery() as nursery:
                        nursery.start_soon(_pump, client, upstream, nursery.cancel_scope)
                        nursery.start_soon(_pump, upstream, client, nursery.cancel_scope)
                finally:
                    self._pairs.discard(scope)


async def _pump(
    source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()
