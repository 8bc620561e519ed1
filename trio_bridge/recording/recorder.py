"""The recorder: a bounded queue and one batch writer task (contract section 8).

``submit`` never blocks and never fails a request: a record joins the queue, or, when the
queue already holds ``queue`` records, is dropped and counted. One task writes the front
of the queue in batches of at most ``batch`` records, as soon as a batch is full or
``flush_every`` after the first record arrived (trio's clock). A batch leaves the queue
only once written: while the sink is down the writer retries it with backoff and new
records wait behind it, so nothing is lost while the queue has room.

Sink: Postgres when the bridge has a database URL, else ``recording.file`` (JSON lines),
else none: records are only counted.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from itertools import islice

import trio

from .. import metrics
from ..config.model import RecordingSettings
from .records import Interception
from .sinks import FileSink, PostgresSink, SinkError

log = logging.getLogger("trio_bridge.recording")

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0


class Recorder:
    """Owns the queue and the sink. Start ``run`` in the daemon's root nursery; call
    ``flush`` once the listeners have closed."""

    def __init__(
        self,
        database_url: str | None,
        settings: Callable[[], RecordingSettings],
    ) -> None:
        self._dsn = database_url
        self._settings = settings
        self._database = PostgresSink(database_url) if database_url else None
        self._file: FileSink | None = None
        self._pending: deque[Interception] = deque()
        self._wake = trio.Event()
        self._emptied = trio.Event()
        self._progress = trio.Event()
        self._retry_now = trio.Event()
        self._flushing = False
        self.written = 0
        self.dropped = 0
        self.counted = 0
        self.failures = 0
        metrics.recorder_queue_depth.set_function(lambda: len(self._pending))

    # --- the request side -------------------------------------------------------------------

    def submit(self, record: Interception) -> None:
        """Queue one record; never blocks. Dropped (and counted) when the queue is full;
        only counted when there is nowhere to write it."""
        settings = self._settings()
        if self._database is None and settings.file is None:
            self.counted += 1
            metrics.recorder_records.inc()
            return
        metrics.recorder_records.inc()
        pending = self._pending
        if len(pending) >= settings.queue:
            self.dropped += 1
            metrics.recorder_dropped.inc()
            return
        pending.append(record)
        if len(pending) == 1 or len(pending) >= settings.batch:
            self._wake.set()

    @property
    def depth(self) -> int:
        return len(self._pending)

    # --- the writer -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task; runs until cancelled."""
        task_status.started()
        try:
            while True:
                await self._wait_for_batch()
                await self._write_front()
        finally:
            sinks = [s for s in (self._database, self._file) if s is not None]
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                for sink in sinks:
                    await trio.to_thread.run_sync(sink.close, abandon_on_cancel=True)

    async def _wait_for_batch(self) -> None:
        while not self._pending:
            await self._sleep_until_woken()
        settings = self._settings()
        if len(self._pending) >= settings.batch or self._flushing:
            return
        with trio.move_on_after(float(settings.flush_every)):
            while len(self._pending) < self._settings().batch and not self._flushing:
                await self._sleep_until_woken()

    async def _sleep_until_woken(self) -> None:
        self._wake = trio.Event()
        await self._wake.wait()

    async def _write_front(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            sink = self._sink()
            batch = list(islice(self._pending, self._settings().batch))
            if not batch:
                return
            if sink is None:  # recording.file removed by a reload while records waited
                self._take(len(batch), written=False)
                continue
            try:
                await trio.to_thread.run_sync(sink.write, batch, abandon_on_cancel=True)
            except SinkError as exc:
                self.failures += 1
                metrics.recorder_write_errors.inc()
                if delay == BACKOFF_FIRST:
                    log.warning(
                        "usage records not written to the %s (%s); %d queued, retrying",
                        sink.describe(),
                        exc,
                        len(self._pending),
                    )
                with trio.move_on_after(delay):
                    await self._retry_now.wait()  # flush() cuts the backoff short
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            if delay != BACKOFF_FIRST:
                log.info("usage records written to the %s again", sink.describe())
            self._take(len(batch), written=True)
            return

    def _take(self, n: int, *, written: bool) -> None:
        for _ in range(n):
            self._pending.popleft()
        if written:
            self.written += n
            metrics.recorder_written.inc(n)
            self._progress.set()
            self._progress = trio.Event()
        else:
            self.dropped += n
            metrics.recorder_dropped.inc(n)
        if not self._pending:
            self._emptied.set()
            self._emptied = trio.Event()

    def _sink(self) -> PostgresSink | FileSink | None:
        if self._database is not None:
            return self._database
        path = self._settings().file
        if path is None:
            return None
        if self._file is None or str(self._file.path) != path:
            self._file = FileSink(path)
        return self._file

    async def wait_written(self, n: int) -> None:
        """Return once ``n`` records in total have been written."""
        while self.written < n:
            await self._progress.wait()

    async def flush(self, timeout: float) -> None:  # noqa: ASYNC109 - bounds one phase inside
        """Write everything queued, without waiting for ``flush_every``, within ``timeout``
        seconds; what is still queued then is reported (and lost at exit)."""
        self._flushing = True
        self._wake.set()
        self._retry_now.set()  # a batch waiting out its backoff is retried at once
        self._retry_now = trio.Event()
        with trio.move_on_after(timeout):
            while self._pending:
                await self._emptied.wait()
        if self._pending:
            log.warning(
                "shutdown: %d usage records not written within %.1fs",
                len(self._pending),
                timeout,
            )
