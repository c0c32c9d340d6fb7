"""A provider lane's pace: its configured rate windows, and what its 429s taught it.

A configured window "COUNT/PERIOD" means what a provider means by it: no span of PERIOD
seconds ever holds more than COUNT requests. `Window` enforces exactly that with a log of the
last COUNT send times: a request may go once the COUNT-th one before it is PERIOD old. (An
aiolimiter leaky bucket cannot: with room for COUNT it lets up to 2*COUNT into one window,
and with room for 1 it drops every timer's lateness, which cost 4% at 50/s in the benchmark.)

On top of that sits `Adaptive`, an AIMD controller for providers whose real limit is below
the configured one (or undocumented): a 429 pauses the whole lane and cuts its rate; each
success raises it again, quickly while far below the rate that last drew a 429 and slowly
near it, so the lane settles just under the provider's real limit instead of sawing between
half and full speed.

`estimate_s` is how long a number of requests take at the configured windows: `plan`
shows it, and the progress ETA never promises faster.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio

from batchvoid.models import RateLimit

# Headroom for the loop and the network: requests sent at the limit can arrive a little bunched.
MARGIN = 1.005
JITTER_S = 0.01


def sustained_rate(limits: Sequence[RateLimit]) -> float | None:
    """Requests per second that every window allows at once, in the long run; None: no limit."""
    return min((limit.count / limit.period for limit in limits), default=None)


def estimate_s(requests: int, limits: Sequence[RateLimit]) -> float | None:
    """How long `requests` take at the configured windows; None: no limit to go by."""
    if requests == 0:
        return 0.0
    rate = sustained_rate(limits)
    return None if rate is None else requests / rate


class Window:
    """At most `limit.count` sends in any `limit.period` seconds (times from time.monotonic)."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._period = limit.period * MARGIN + JITTER_S
        self._sent: deque[float] = deque(maxlen=limit.count)

    def earliest(self) -> float:
        """When the next send may go: once the count-th send before it is a period old."""
        if len(self._sent) < self.limit.count:
            return float("-inf")
        return self._sent[0] + self._period

    def record(self, at: float) -> None:
        self._sent.append(at)


@dataclass(frozen=True, slots=True)
class AimdSettings:
    """How a lane reacts to 429s."""

    decrease: float = 0.85  # rate multiplier on a 429
    fast_increase: float = 0.05  # per second, as a share of the ceiling, when well below it
    slow_increase: float = 0.005  # per second, as a share of the ceiling, near it
    near: float = 0.95  # "near the ceiling" starts here
    floor: float = 0.05  # requests per second, never slower
    first_pause_s: float = 0.25  # a 429 without Retry-After pauses this long, doubling
    max_pause_s: float = 60.0


class Adaptive:
    """AIMD over a lane's send rate; time comes from `clock` so it can be tested without sleeping.

    The rate is None (no adaptive limit) until the first 429.
    """

    def __init__(
        self, settings: AimdSettings | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings or AimdSettings()
        self._clock = clock
        self.rate: float | None = None
        self.ceiling: float | None = None  # the rate that last drew a 429
        self.paused_until = 0.0
        self._next_send = 0.0  # the adaptive pacer's schedule (GCRA)
        self._decreased_at = float("-inf")  # requests sent before this already paid for their 429
        self._streak = 0  # 429s in a row with no success between them
        self._recent: deque[float] = deque()  # send times in the last second: the rate we ran at

    def reserve(self) -> float:
        """Claim the next send slot; returns the (clock) time it starts, perhaps now."""
        start = max(self._clock(), self.paused_until)
        if self.rate is not None:
            start = max(start, self._next_send)
            self._next_send = start + 1 / self.rate
        return start

    def sent(self) -> float:
        """Note a request going out now; returns its send time, to hand back with its answer."""
        now = self._clock()
        self._recent.append(now)
        while self._recent[0] <= now - 1.0:
            self._recent.popleft()
        return now

    def throttled(self, sent_at: float, retry_after: float | None) -> float:
        """A 429 came back for the request sent at `sent_at`: cut the rate, pause the lane.

        Returns how long the lane is paused from now.
        """
        now = self._clock()
        s = self.settings
        if sent_at >= self._decreased_at:  # one cut per congestion event, not one per 429 in flight
            current = self.rate if self.rate is not None else self._measured()
            self.ceiling = current
            self.rate = max(s.floor, current * s.decrease)
            self._decreased_at = now
            self._streak += 1
        if retry_after is not None:
            pause = retry_after + random.uniform(0, 0.1)
        else:
            pause = min(s.max_pause_s, s.first_pause_s * 2 ** (self._streak - 1))
        self.paused_until = max(self.paused_until, now + pause)
        self._next_send = max(self._next_send, self.paused_until)
        return self.paused_until - now

    def succeeded(self) -> None:
        """A non-429 answer came back: raise the rate a little."""
        self._streak = 0
        if self.rate is None or self.ceiling is None:
            return
        s = self.settings
        share = s.fast_increase if self.rate < s.near * self.ceiling else s.slow_increase
        # Per success, so that at `rate` successes a second the rate grows by share*ceiling a second.
        self.rate += share * self.ceiling / self.rate
        if self.rate > self.ceiling:
            self.ceiling = self.rate  # past the old ceiling without a 429: the limit went up

    def _measured(self) -> float:
        """Requests sent in the last second (a burst counts as what it is, not as its peak rate)."""
        return float(max(1, len(self._recent)))


class Pace:
    """Waits until a request may go: every configured window, and the adaptive limit."""

    def __init__(self, limits: Sequence[RateLimit], aimd: AimdSettings | None = None) -> None:
        self._windows = [Window(limit) for limit in limits]
        self.adaptive = Adaptive(aimd)
        self._gate = anyio.Lock()  # one worker at a time decides its send time, in arrival order

    def may_wait(self) -> bool:
        """False when nothing limits the lane: acquire() then returns at once."""
        return bool(self._windows) or self.adaptive.rate is not None or self.adaptive.paused_until > 0

    async def acquire(self) -> float:
        """Wait for a slot; returns the send time to pass to `throttled()`."""
        if not self.may_wait():
            return self.adaptive.sent()
        async with self._gate:
            while True:
                start = self.adaptive.reserve()
                for window in self._windows:
                    start = max(start, window.earliest())
                if (wait := start - time.monotonic()) > 0:
                    await anyio.sleep(wait)
                if self.adaptive.paused_until <= start:
                    break  # no 429 paused the lane again while this worker waited
            sent = self.adaptive.sent()
            for window in self._windows:
                window.record(sent)  # the real send time, lateness and all
            return sent

    @property
    def throttled_until(self) -> float:
        """The monotonic time the lane's 429 pause ends (in the past when not paused)."""
        return self.adaptive.paused_until
