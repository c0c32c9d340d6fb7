"""A canary run: `--limit N` sends at most N items of the job in this run, then stops.

The cap sits in front of the work queue, not in the engine: an item is sent only once it is
claimed, so a queue that hands out at most N claims over all lanes sends at most N items,
counting an item a killed run left in flight (claimed first, in file order) like any other.
Its retries are the same item. What is left stays pending for the next run.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from batchvoid.ledger import Job, WorkQueue
from batchvoid.ledger.ops import Op
from batchvoid.models import WorkItem

if TYPE_CHECKING:
    from batchvoid.config import Profile
    from batchvoid.pace import Pace


class LimitedQueue:
    """A `WorkQueue` that hands out at most `limit` items over all its claims."""

    def __init__(self, queue: WorkQueue, limit: int) -> None:
        self._queue = queue
        self.limit = limit
        self.taken = 0
        self._lock = threading.Lock()  # lanes claim from worker threads at once

    def claim(self, job: Job, provider: str, after_line: int, limit: int) -> list[WorkItem]:
        with self._lock:
            room = min(limit, self.limit - self.taken)
            if room <= 0:
                return []
            batch = self._queue.claim(job, provider, after_line, room)
            self.taken += len(batch)
            return batch

    def apply(self, ops: Sequence[Op]) -> None:
        self._queue.apply(ops)

    def pace(self, profile: Profile) -> Pace | None:
        return self._queue.pace(profile)
