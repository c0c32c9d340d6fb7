"""The group-commit writer: a run's ops, batched into one transaction at a time, off the event loop.

Nothing waits for a commit on the hot path: an item is durable as "may have been sent" from
its claim, so its outcome can follow in the next batch. A batch gathers while the one before
commits on a worker thread, so a busy run makes a few hundred commits for 50,000 answers, not
one per answer (measured: 141). A crash loses at most the batch being gathered, whose items are
resent with their keys. Leaving the writer commits what is queued, even when the run is being
cancelled. The writer knows no
SQL: it hands each batch to `WorkQueue.apply`.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

import anyio

from batchvoid.errors import LedgerError
from batchvoid.ledger.api import WorkQueue
from batchvoid.ledger.ops import Op


class LedgerWriter:
    """Batches a run's ops into group commits. Use as an async context manager."""

    def __init__(self, queue: WorkQueue) -> None:
        self._queue = queue
        self._ops: list[Op] = []
        self._wake = anyio.Event()
        self._closing = False
        self.error: LedgerError | None = None  # the first failed commit: the run must stop
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        tg = await self._stack.enter_async_context(anyio.create_task_group())
        tg.start_soon(self._flusher)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        self._wake.set()
        try:
            await self._stack.aclose()
        finally:
            with anyio.CancelScope(shield=True):
                await self._commit()  # whatever the flusher had no time for, even when cancelled
        if self.error is not None and exc is None:
            raise self.error

    def record(self, op: Op) -> None:
        """Queue `op` for the next commit; raises the error of an earlier commit that failed."""
        if self.error is not None:
            raise self.error
        self._ops.append(op)
        self._wake.set()

    async def _flusher(self) -> None:
        while not (self._closing and not self._ops):
            await self._wake.wait()
            self._wake = anyio.Event()
            await self._commit()

    async def _commit(self) -> None:
        ops, self._ops = self._ops, []
        if ops and self.error is None:
            try:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._queue.apply, ops)
            except LedgerError as exc:
                self.error = exc
