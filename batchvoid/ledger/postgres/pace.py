"""The shared pace: every window of a provider account held across all workers, on the database's clock.

One `limiter` row per provider account (its profile's target: type, base URL and account),
for every worker and every job that sends to it, holds a GCRA schedule: `tat`, the
database-clock time (epoch seconds) from which the next slot is free. A lane reserves a
block of k slots at a time, spaced I' apart:

    I' = max(the learned 429 interval, max over windows (T * MARGIN + JITTER + DELTA) / N)
    first = greatest(tat, now, paused_until); slots s_j = first + j * I'; tat = first + k * I'

(k is the number of the lane's workers waiting to send, at most a block of BLOCK_S: a lane whose
workers are busy with slow answers holds no slot it could not send and its peers could)
and sends slot s only inside [t1 + (s - d), t0 + (s + DELTA - d)] of its own monotonic clock,
where d is the database's clock read by the reservation and t0, t1 the worker's clock before
and after it; a slot it cannot send in time is dropped, never sent late. So every send
happens at database time within [s, s + DELTA] whatever the worker's clock says, slots are
at least I' apart (the row lock serialises reservations and tat never goes back), and any
window of T seconds holds the sends of at most ceil((T + DELTA) / I') <= N slots, summed
over all workers. There is no initial burst: a job sends at most N per window from the start.

A 429 is shared through the same row: it pauses the account (paused_until, and tat pushed
past it) and cuts the rate once per congestion event (a 429 for a slot before the last cut
already paid for it), exactly across workers because all slot times come from one clock.
The 429 is noted at once (the lane's own slots are dropped and its local pause holds it) and
written to the row by the lane's next reservation, in the same transaction and before it, off
the event loop: the next thing a throttled worker does is ask for a slot, so its peers see
the pause within that round trip, and no row lock held by a peer ever stalls the loop.
Successes raise the learned rate again at each worker's next reservation (AIMD, as
`pace.Adaptive`). The lane's local `Adaptive` still keeps its own pause and 429 streak for
`Patience` and the progress display.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from batchvoid.ledger.postgres import one
from batchvoid.pace import JITTER_S, MARGIN, SYSTEM_CLOCK, Adaptive, AimdSettings, Pace

if TYPE_CHECKING:
    import psycopg

    from batchvoid.config import Profile
    from batchvoid.ledger.postgres import PostgresLedger

DELTA_S = 0.05  # how late a slot may be sent; it widens every window's spacing by this much
BLOCK_S = 0.5  # a reservation covers about this long: a dead worker wastes at most that many slots
MAX_BLOCK = 64
FREE_S = 1.0  # with no limit to keep, a lane looks at the account's shared 429 pause this often


def spacing(profile: Profile) -> float:
    """Seconds between two sends to the account that keep every configured window (0: no window)."""
    return max(
        ((limit.period * MARGIN + JITTER_S + DELTA_S) / limit.count for limit in profile.rate_limits),
        default=0.0,
    )


def send_window(slot: float, d: float, t0: float, t1: float) -> tuple[float, float]:
    """When, on the worker's own clock, `slot` (database time) may be sent: (earliest, latest).

    `d` is the database's clock as the reservation read it, `t0` and `t1` the worker's before and
    after. Any send inside the window happens at database time within [slot, slot + DELTA_S],
    whatever the offset between the two clocks; when the round trip took longer than DELTA_S
    the window is empty, and the slot is dropped.
    """
    return t1 + (slot - d), t0 + (slot + DELTA_S - d)


class LimiterConnection:
    """The limiter rows' connection, one per ledger (closed with it), shared by its lanes."""

    def __init__(self, ledger: PostgresLedger) -> None:
        self.db: psycopg.Connection[Any] = ledger.connect("cannot reach the shared rate limits")
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self.db.close()


def _limiter(ledger: PostgresLedger) -> LimiterConnection:
    """The ledger's limiter connection; a new one if there is none yet (the engine makes its lanes
    one after another, on the event loop) or it was closed."""
    found = ledger.limits
    if found is None or found.db.closed:
        found = ledger.limits = LimiterConnection(ledger)
    return found


class SharedAdaptive(Adaptive):
    """The lane's `Adaptive`, whose 429s and successes also go to the account's shared row."""

    def __init__(self, pace: SharedPace, settings: AimdSettings | None = None) -> None:
        super().__init__(settings, SYSTEM_CLOCK)
        self._pace = pace

    def throttled(self, sent_at: float, retry_after: float | None) -> float:
        pause = super().throttled(sent_at, retry_after)
        self._pace.share_throttled(sent_at, pause)
        return pause

    def succeeded(self) -> None:
        super().succeeded()
        self._pace.successes += 1


class SharedPace(Pace):
    """Waits until a request may go, by slots reserved from the account's row (see the module)."""

    def __init__(self, ledger: PostgresLedger, profile: Profile, aimd: AimdSettings | None = None) -> None:
        super().__init__((), aimd)
        from batchvoid.preflight import target

        self.key = target(profile)
        self.interval = spacing(profile)
        self.adaptive = SharedAdaptive(self, aimd)
        self.successes = 0  # since the last reservation: they raise the shared learned rate
        self.dropped = 0  # slots not sent in time
        self._block = 1  # slots per reservation
        self._waiting = 0  # the lane's workers in acquire(): each sends the next slot it gets
        self._ledger = ledger
        self._limiter = _limiter(ledger)
        self._slots: deque[tuple[float, float]] = deque()  # (earliest, latest) on time.monotonic()
        self._free_until = float("-inf")
        self._offset = 0.0  # database clock minus ours, as the last reservation saw it
        self._settings = aimd or AimdSettings()
        self._throttles: deque[_Throttle] = deque()  # 429s noted, not yet written to the row

    def may_wait(self) -> bool:
        return True  # every send checks the lease and the shared row

    async def acquire(self) -> float:
        self._waiting += 1
        try:
            return await self._acquire()
        finally:
            self._waiting -= 1

    async def _acquire(self) -> float:
        async with self._gate:
            while True:
                if self._ledger.lease is not None:
                    self._ledger.lease.check()  # no send past the lease this worker can vouch for
                now = time.monotonic()
                if now < self._free_until and self.adaptive.paused_until <= now:
                    break
                if not self._slots:
                    # Taken here, on the loop that counts them, not on the reservation's thread.
                    successes, self.successes = self.successes, 0
                    await anyio.to_thread.run_sync(self._reserve, successes)
                    continue
                earliest, latest = self._slots.popleft()
                if earliest > now:
                    await anyio.sleep(earliest - now)
                    if self._ledger.lease is not None:
                        self._ledger.lease.check()  # the wait may have outlasted it (a long pause)
                if time.monotonic() <= latest and self.adaptive.paused_until <= time.monotonic():
                    break
                self.dropped += 1  # too late (or paused meanwhile): never sent late
            return self.adaptive.sent()

    def _reserve(self, successes: int = 0) -> None:
        # A slot no worker of the lane is free to send in time is lost to every worker: reserve
        # as many as the lane has workers waiting to send now.
        self._block = max(1, min(MAX_BLOCK, self._waiting))
        limiter = self._limiter
        s = self._settings
        with limiter.lock:
            try:
                db = limiter.db
                t0 = time.monotonic()
                with db.transaction(), db.cursor() as cur:
                    cur.execute("INSERT INTO limiter (key) VALUES (%s) ON CONFLICT DO NOTHING", (self.key,))
                    while self._throttles:  # first the lane's 429s, so that its slots come after them
                        self._write_throttled(cur, self._throttles.popleft())
                    cur.execute(
                        "SELECT tat, paused_until, adaptive_interval, ceiling,"
                        " extract(epoch FROM clock_timestamp())::float8"
                        " FROM limiter WHERE key = %s FOR UPDATE",
                        (self.key,),
                    )
                    tat, paused_until, learned, ceiling, d = one(cur)
                    if learned is not None and ceiling is not None and successes:
                        rate = 1 / learned
                        for _ in range(min(successes, 10_000)):
                            share = s.fast_increase if rate < s.near * ceiling else s.slow_increase
                            rate += share * ceiling / rate
                            ceiling = max(ceiling, rate)
                        learned = 1 / rate
                    interval = max(self.interval, learned or 0.0)
                    first = max(tat, d, paused_until)
                    if interval == 0:
                        k, slots = 0, []
                    else:
                        k = max(1, min(self._block, MAX_BLOCK, math.ceil(BLOCK_S / interval)))
                        slots = [first + j * interval for j in range(k)]
                    cur.execute(
                        "UPDATE limiter SET tat = %s, adaptive_interval = %s, ceiling = %s WHERE key = %s",
                        (first + k * interval if k else tat, learned, ceiling, self.key),
                    )
                t1 = time.monotonic()
            except self._ledger._pg.Error as exc:
                raise self._ledger.fault(exc, "cannot reserve sends from the shared rate limits") from exc
        self._offset = d - (t0 + t1) / 2
        if not slots:  # no limit to keep: send freely, but not through the account's pause
            start = t1 + (first - d)
            self.adaptive.paused_until = max(self.adaptive.paused_until, start if first > d else 0.0)
            self._free_until = t1 + FREE_S
            return
        self._slots.extend(send_window(slot, d, t0, t1) for slot in slots)

    def share_throttled(self, sent_at: float, pause: float) -> None:
        """A 429 for the request sent at `sent_at`: pause the account for every worker, cut its rate once.

        Noted here, on the event loop, without a query: the next reservation writes it.
        """
        self._slots.clear()
        self._free_until = float("-inf")
        measured = 1 / self.adaptive._measured()
        self._throttles.append(_Throttle(sent_at + self._offset, pause, time.monotonic(), measured))

    def _write_throttled(self, cur: psycopg.Cursor[Any], throttle: _Throttle) -> None:
        """Write one noted 429 to the account's row, which the caller's transaction holds."""
        s = self._settings
        cur.execute(
            "SELECT tat, paused_until, adaptive_interval, decreased_at,"
            " extract(epoch FROM clock_timestamp())::float8"
            " FROM limiter WHERE key = %s FOR UPDATE",
            (self.key,),
        )
        tat, paused_until, learned, decreased_at, d = one(cur)
        ceiling = None
        if throttle.slot >= decreased_at:  # one cut per congestion event, across all workers
            current = max(self.interval, learned or 0.0) or throttle.measured
            ceiling = 1 / current
            learned = min(1 / s.floor, current / s.decrease)
            decreased_at = d
        # The pause runs from when the 429 came back: d is no earlier than that on the database's clock.
        paused_until = max(paused_until, d + max(0.0, throttle.pause - (time.monotonic() - throttle.noted)))
        cur.execute(
            "UPDATE limiter SET paused_until = %s, tat = %s, adaptive_interval = %s,"
            " ceiling = coalesce(%s, ceiling), decreased_at = %s WHERE key = %s",
            (paused_until, max(tat, paused_until), learned, ceiling, decreased_at, self.key),
        )


@dataclass(frozen=True, slots=True)
class _Throttle:
    """A 429 a lane noted, for its next reservation to write to the account's row."""

    slot: float  # the request's send time, on the database's clock
    pause: float  # seconds the lane pauses, from `noted`
    noted: float  # time.monotonic() when it came back
    measured: float  # seconds between sends, as the lane measured them then (before any cut)
