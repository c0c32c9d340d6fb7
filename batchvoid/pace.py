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

`Patience` bounds what 429s may cost a lane: a long pause is announced, and a Retry-After
above the cap, or 429s with no success for too long, stop the lane for the run instead.
`estimate_s` is how long a number of requests take at the configured windows: `plan`
shows it, and the progress ETA never promises faster.

All three read one `Clock`, the lane's, so a test moves a fake one instead of sleeping. In a
run it is `SYSTEM_CLOCK`: time.monotonic() and anyio.sleep. Not the loop's own
anyio.current_time(): a lane's times leave the pace (progress compares `throttled_until` with
its own time.monotonic(), Patience reads them) and are read where no loop runs; anyio.sleep
takes a duration, so the two clocks need only tick together, and on asyncio they are one.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio

from batchvoid.models import RateLimit

# Headroom for the loop and the network: requests sent at the limit can arrive a little bunched.
# A stall between a send's time and its leaving (a busy loop, a VM's stolen time) bunches them
# more: on a noisy 2-core machine, 10 ms drew 429s at the limit in 8 of 9 benchmark rounds
# (3 to 15 each), 25 ms in 1 of 6 (2 429s) (`python -m bench --only pace`, 50/1s on five lanes).
# Later rounds' 429s at 25 ms were the simulator's own: a 36-51 ms garbage collection stamped
# the requests that arrived meanwhile together (its start-up heap is frozen since; 0 429s in the
# 12 rounds that followed).
MARGIN = 1.005
JITTER_S = 0.025
LONG_PAUSE_S = 60.0  # a lane pause this long is a warning: the run visibly waits


class Clock(Protocol):
    """Where a lane's time comes from: what time it is, and a way to wait."""

    def now(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` have passed on this clock."""
        ...


@dataclass(frozen=True, slots=True)
class SystemClock:
    """The clock of a run: time.monotonic(), and anyio.sleep for waiting."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


def sustained_rate(limits: Sequence[RateLimit]) -> float | None:
    """Requests per second that every window allows at once, in the long run; None: no limit."""
    return min((limit.count / limit.period for limit in limits), default=None)


def binding_rate(requests: int, limits: Sequence[RateLimit]) -> float | None:
    """The rate `requests` go at: the slowest of the shortest window and of every window they
    would fill (5,000 a day does not slow 300 requests at 60 a minute); None: no limit."""
    if not limits:
        return None
    shortest = min(limits, key=lambda limit: limit.period)
    binding = [limit for limit in limits if limit is shortest or requests > limit.count]
    return sustained_rate(binding)


def estimate_s(requests: int, limits: Sequence[RateLimit]) -> float | None:
    """How long `requests` take at the configured windows; None: no limit to go by."""
    if requests == 0:
        return 0.0
    rate = binding_rate(requests, limits)
    return None if rate is None else requests / rate


class Window:
    """At most `limit.count` sends in any `limit.period` seconds (times from the lane's clock)."""

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
    max_backoff_s: float = 60.0  # ... up to this


class Adaptive:
    """AIMD over a lane's send rate; time comes from `clock` so it can be tested without sleeping.

    The rate is None (no adaptive limit) until the first 429.
    """

    def __init__(self, settings: AimdSettings | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings or AimdSettings()
        self.clock = clock
        self.rate: float | None = None
        self.ceiling: float | None = None  # the rate that last drew a 429
        self.paused_until = 0.0
        self._next_send = 0.0  # the adaptive pacer's schedule (GCRA)
        self._decreased_at = float("-inf")  # requests sent before this already paid for their 429
        self._streak = 0  # 429s in a row with no success between them
        self.throttled_since: float | None = None  # the first 429 that no other answer followed
        self._recent: deque[float] = deque()  # send times in the last second: the rate we ran at

    def reserve(self) -> float:
        """Claim the next send slot; returns the (clock) time it starts, perhaps now."""
        start = max(self.clock.now(), self.paused_until)
        if self.rate is not None:
            start = max(start, self._next_send)
            self._next_send = start + 1 / self.rate
        return start

    def sent(self) -> float:
        """Note a request going out now; returns its send time, to hand back with its answer."""
        now = self.clock.now()
        self._recent.append(now)
        while self._recent[0] <= now - 1.0:
            self._recent.popleft()
        return now

    def throttled(self, sent_at: float, retry_after: float | None) -> float:
        """A 429 came back for the request sent at `sent_at`: cut the rate, pause the lane.

        Returns how long the lane is paused from now.
        """
        now = self.clock.now()
        s = self.settings
        if self.throttled_since is None:
            self.throttled_since = now
        if sent_at >= self._decreased_at:  # one cut per congestion event, not one per 429 in flight
            current = self.rate if self.rate is not None else self._measured()
            self.ceiling = current
            self.rate = max(s.floor, current * s.decrease)
            self._decreased_at = now
            self._streak += 1
        if retry_after is not None:
            pause = retry_after + random.uniform(0, 0.1)
        else:
            pause = min(s.max_backoff_s, s.first_pause_s * 2 ** (self._streak - 1))
        self.paused_until = max(self.paused_until, now + pause)
        self._next_send = max(self._next_send, self.paused_until)
        return self.paused_until - now

    def succeeded(self) -> None:
        """A non-429 answer came back: raise the rate a little."""
        self._streak = 0
        self.throttled_since = None
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


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one 429 means for its lane, beyond the pause `Adaptive` set."""

    stop: str | None = None  # why the lane stops for this run instead of waiting
    until: dt.datetime | None = None  # when a pause worth a warning ends (UTC); None: not one


class Patience:
    """How long a lane waits out the pauses its `Adaptive` sets before it stops for the run.

    A Retry-After above `max_pause_s` stops it at once. So does a 429 after which its next try
    would come `give_up_after_s` or more after the first of an unbroken run of 429s: a provider
    that answers 429 forever cannot keep a cron run alive. A pause of LONG_PAUSE_S or more is
    announced, once. Times come from the adaptive's clock and `wall` (the epoch), so it is
    tested without sleeping.
    """

    def __init__(
        self,
        adaptive: Adaptive,
        max_pause_s: float,
        give_up_after_s: float,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.max_pause_s = max_pause_s
        self.give_up_after_s = give_up_after_s
        self._adaptive = adaptive
        self._wall = wall
        self._announced = float("-inf")  # (clock) end of the last pause announced

    def judge(self, retry_after: float | None) -> Verdict:
        """A 429 asking for `retry_after` came back, and `Adaptive.throttled()` paused the lane."""
        if retry_after is not None and retry_after > self.max_pause_s:
            return Verdict(
                stop=f"the provider asked to wait {math.ceil(retry_after)}s (Retry-After), "
                f"more than max_pause_s ({self.max_pause_s:g}s)"
            )
        now, end = self._adaptive.clock.now(), self._adaptive.paused_until
        since = self._adaptive.throttled_since
        if since is not None and end - since >= self.give_up_after_s:
            return Verdict(
                stop=f"nothing but 429s for {now - since:.1f}s, and its next try would be "
                f"{end - since:.1f}s in, past give_up_throttled_after_s ({self.give_up_after_s:g}s)"
            )
        if end - now < LONG_PAUSE_S or end - self._announced < LONG_PAUSE_S:
            return Verdict()  # short, or announced already (for another 429 of its burst)
        self._announced = end
        return Verdict(until=dt.datetime.fromtimestamp(self._wall() + end - now, dt.UTC))


class Pace:
    """Waits until a request may go: every configured window, and the adaptive limit."""

    def __init__(
        self, limits: Sequence[RateLimit], aimd: AimdSettings | None = None, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._windows = [Window(limit) for limit in limits]
        self.adaptive = Adaptive(aimd, clock)
        self.clock = clock
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
                if (wait := start - self.clock.now()) > 0:
                    await self.clock.sleep(wait)
                if self.adaptive.paused_until <= start:
                    break  # no 429 paused the lane again while this worker waited
            sent = self.adaptive.sent()
            for window in self._windows:
                window.record(sent)  # the real send time, lateness and all
            return sent

    @property
    def throttled_until(self) -> float:
        """When, on the lane's clock, its 429 pause ends (in the past when not paused)."""
        return self.adaptive.paused_until
