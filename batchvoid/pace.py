"""A provider lane's pace: every configured rate window at once, as aiolimiter leaky buckets.

aiolimiter's `AsyncLimiter(n, t)` allows a burst of n and then n per t, which lets up to
2n requests into one window of length t. A provider that counts "200 per minute" would
block us, so each window becomes a bucket with a small burst and a rate chosen so that no
window of length t ever holds more than n requests: burst + rate * t - 1 <= n.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiolimiter import AsyncLimiter

from batchvoid.models import RateLimit

# Headroom for the network: requests sent at the exact limit can arrive a little bunched.
MARGIN = 1.005


def bucket(limit: RateLimit) -> AsyncLimiter:
    """A leaky bucket that never lets more than `limit.count` requests into any window."""
    burst = 1 + limit.count // 100  # a little burst absorbs timer lateness at high rates
    rate = (limit.count - burst + 1) / limit.period / MARGIN
    return AsyncLimiter(burst, burst / rate)


class Pace:
    """Waits until every one of a lane's rate windows has room. Create inside the running loop."""

    def __init__(self, limits: Sequence[RateLimit]) -> None:
        self.limits = tuple(limits)
        self._buckets = [bucket(limit) for limit in limits]

    async def acquire(self) -> None:
        for b in self._buckets:
            await b.acquire()
