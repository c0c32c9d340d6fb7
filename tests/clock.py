"""A fake lane clock: time that moves only when a test or a sleep moves it (aiolimiter's MockLoopTime)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable

import anyio.lowlevel


class FakeClock:
    """A `pace.Clock` whose sleeps return at once, the time moved on to their end.

    A `Pace` sleeps one worker at a time (under its gate), so jumping to each sleep's end is
    exact and a test checks exact send times without waiting. `late` makes successive sleeps
    end that much after their time, as a busy loop's timers do. `at(when, action)` runs `action`
    once the time reaches `when`, during whatever sleep or `advance()` passes it, with the time
    set to `when`: an answer that comes back while a worker waits.
    """

    def __init__(self, start: float = 0.0, *, late: Iterable[float] = ()) -> None:
        self.time = start
        self.slept: list[float] = []  # every sleep asked for, in order
        self._late = iter(late)
        self._due: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()  # ties run in the order they were scheduled

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds + next(self._late, 0.0))
        await anyio.lowlevel.checkpoint()  # a sleep is a checkpoint, however short

    def advance(self, seconds: float) -> None:
        """Move the time on by `seconds`, running what falls due on the way."""
        end = self.time + max(0.0, seconds)
        while self._due and self._due[0][0] <= end:
            when, _, action = heapq.heappop(self._due)
            self.time = max(self.time, when)
            action()
        self.time = end

    def at(self, when: float, action: Callable[[], object]) -> None:
        heapq.heappush(self._due, (when, next(self._order), action))
