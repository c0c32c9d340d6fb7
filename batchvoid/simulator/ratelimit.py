"""Provider-side rate limits: a sliding window, Rapyd's documented windows, and both at once.

Each limit answers `wait(now)`: 0 when a request arriving at `now` may be accepted, else the
seconds until it could be. Only accepted requests are `record`ed: throttled ones do not count.
Times are `time.monotonic()` seconds passed in by the caller, so tests can move the clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from batchvoid.config import parse_rate_limit
from batchvoid.providers.rapyd import SPEC as RAPYD


class Limit(Protocol):
    """A rule about how many requests a provider accepts over time."""

    def wait(self, now: float) -> float:
        """Seconds until a request arriving at `now` could be accepted; 0 if it can now."""
        ...

    def record(self, now: float) -> None:
        """Count a request accepted at `now`."""
        ...


class SlidingWindow:
    """At most `count` requests accepted in any window of `period` seconds."""

    __slots__ = ("_accepted", "_period")

    def __init__(self, count: int, period: float) -> None:
        self._period = period
        # The last `count` acceptance times: the oldest decides when a slot frees.
        self._accepted: deque[float] = deque(maxlen=count)

    def wait(self, now: float) -> float:
        accepted = self._accepted
        if len(accepted) < (accepted.maxlen or 0):
            return 0.0
        return max(0.0, accepted[0] + self._period - now)

    def record(self, now: float) -> None:
        self._accepted.append(now)


class FixedWindow:
    """`count` requests per window that opens at the first one; then blocked for `block` s.

    Without `block`, the block lasts until the window ends ("until that minute ends");
    with it, the block starts when the window fills ("then blocked for 5 minutes").
    """

    __slots__ = ("_block", "_blocked_until", "_count", "_opened", "_period", "_used")

    def __init__(self, count: int, period: float, *, block: float | None = None) -> None:
        self._count = count
        self._period = period
        self._block = block
        self._opened = 0.0
        self._used = 0
        self._blocked_until = 0.0

    def wait(self, now: float) -> float:
        if now < self._blocked_until:
            return self._blocked_until - now
        return 0.0

    def record(self, now: float) -> None:
        if self._used == 0 or now >= self._opened + self._period:
            self._opened, self._used = now, 0
        self._used += 1
        if self._used >= self._count:
            if self._block is None:
                self._blocked_until = self._opened + self._period
            else:
                self._blocked_until = now + self._block
            self._used = 0


def rapyd_windows(time_scale: float = 1.0) -> tuple[Limit, ...]:
    """Rapyd's rule, from its documented limits: 200 per minute, then 429 until the minute
    ends; 1000 per 5 minutes, then blocked for 5 minutes. Both hold at once."""
    short, long = (parse_rate_limit(text) for text in RAPYD.documented_limits)
    return (
        FixedWindow(short.count, short.period * time_scale),
        FixedWindow(long.count, long.period * time_scale, block=long.period * time_scale),
    )


class Throttle:
    """Several limits that must all accept a request; a request counts against all or none."""

    __slots__ = ("_limits",)

    def __init__(self, limits: Sequence[Limit]) -> None:
        self._limits = tuple(limits)

    def admit(self, now: float) -> float:
        """Accept and count a request arriving at `now` (returns 0), or return the wait."""
        wait = max(limit.wait(now) for limit in self._limits)
        if wait > 0:
            return wait
        for limit in self._limits:
            limit.record(now)
        return 0.0


def whole_seconds(wait_s: float) -> int:
    """A wait as the whole seconds a provider would tell: rounded up, at least 1."""
    return max(1, math.ceil(wait_s))
