"""A lane's pace: no window ever holds more than its count, and 429s teach the lane the real limit."""

from __future__ import annotations

import datetime as dt
import heapq
import time
from collections import deque

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchvoid.config import parse_rate_limit
from batchvoid.models import ItemState
from batchvoid.pace import JITTER_S, MARGIN, Adaptive, AimdSettings, Pace, Patience, Verdict, Window
from batchvoid.progress import Tracker
from tests.clock import FakeClock
from tests.test_progress import Engine, Lane


@given(
    count=st.integers(1, 60),
    period=st.floats(0.01, 100),
    lateness=st.lists(st.floats(0, 0.5), min_size=1, max_size=300),
)
def test_no_window_ever_holds_more_than_its_count(count: int, period: float, lateness: list[float]) -> None:
    """However late each sender wakes, no span of `period` holds more than `count` recorded sends."""
    window = Window(parse_rate_limit(f"{count}/{period}s"))
    now, sends = 0.0, []
    for late in lateness:
        now = max(now, window.earliest()) + late * period  # a timer that fires late
        window.record(now)
        sends.append(now)
    for i, first in enumerate(sends):
        assert sum(1 for t in sends[i:] if t < first + period) <= count


def test_a_window_lets_a_burst_of_its_count_through_then_paces() -> None:
    """The first `count` sends may go at once; the next waits until the first is a period old."""
    window = Window(parse_rate_limit("3/1s"))
    for t in (0.0, 0.01, 0.02):
        assert window.earliest() == float("-inf")
        window.record(t)
    assert window.earliest() == pytest.approx(1.0 * MARGIN + JITTER_S)


PERIOD_S = {limit: limit * MARGIN + JITTER_S for limit in (0.25, 1.0)}  # a window's period as paced


async def sends_of(pace: Pace, workers: int, sends: int) -> list[float]:
    """The send times `workers` concurrent workers get from `pace` for `sends` requests, in order."""
    times: list[float] = []

    async def worker() -> None:
        while len(times) < sends:
            times.append(await pace.acquire())

    async with anyio.create_task_group() as tg:
        for _ in range(workers):
            tg.start_soon(worker)
    return times[:sends]


@pytest.mark.anyio
async def test_pace_runs_at_its_limit_with_concurrent_workers() -> None:
    """Eight workers sharing a 100/0.25s lane send 100 at once, then 100 a paced period later, and so on: no sooner, no later."""
    clock = FakeClock()
    pace = Pace([parse_rate_limit("100/0.25s")], clock=clock)
    period = PERIOD_S[0.25]
    assert await sends_of(pace, workers=8, sends=300) == [0.0] * 100 + [period] * 100 + [2 * period] * 100


@pytest.mark.anyio
async def test_every_window_of_a_lane_holds_at_once() -> None:
    """With '10/0.25s' and '25/1s', 16 workers send 10, 10 and 5 a short period apart, then wait out the long one."""
    clock = FakeClock()
    pace = Pace([parse_rate_limit("10/0.25s"), parse_rate_limit("25/1s")], clock=clock)
    short, long = PERIOD_S[0.25], PERIOD_S[1.0]
    assert await sends_of(pace, workers=16, sends=32) == (
        [0.0] * 10 + [short] * 10 + [2 * short] * 5 + [long] * 7
    )


@pytest.mark.anyio
async def test_a_late_wake_counts_from_when_the_request_really_went() -> None:
    """A worker that wakes 0.3 s late holds its window from its real send time, so the sends after it wait longer too."""
    clock = FakeClock(late=[0.3])
    pace = Pace([parse_rate_limit("2/1s")], clock=clock)
    period = PERIOD_S[1.0]
    late = period + 0.3
    assert await sends_of(pace, workers=4, sends=6) == [0.0, 0.0, late, late, late + period, late + period]


@pytest.mark.anyio
async def test_a_429_while_a_worker_waits_holds_it_until_the_pause_ends() -> None:
    """A pause that begins while a worker waits for its window slot sends it when the pause ends, not at its slot."""
    clock = FakeClock()
    pace = Pace([parse_rate_limit("1/1s")], AimdSettings(first_pause_s=2.0), clock=clock)
    first = await pace.acquire()
    clock.at(0.5, lambda: pace.adaptive.throttled(first, None))  # its 429 comes back mid-wait
    assert await pace.acquire() == 2.5
    assert pace.throttled_until == 2.5


@pytest.mark.anyio
async def test_a_lane_without_limits_never_waits() -> None:
    """No windows and no 429 yet: every acquire returns the time it was called, with no sleep."""
    clock = FakeClock(7.0)
    pace = Pace([], clock=clock)
    assert not pace.may_wait()
    assert await sends_of(pace, workers=4, sends=50) == [7.0] * 50
    assert clock.slept == []


def test_a_lanes_pause_is_on_the_clock_progress_reads() -> None:
    """By default a lane's throttled_until is time.monotonic() seconds, the clock progress measures what is left of it against."""
    pace = Pace([])
    pace.adaptive.throttled(pace.adaptive.sent(), retry_after=5.0)
    assert 4.9 < pace.throttled_until - time.monotonic() <= 5.1
    tracker = Tracker({("a", ItemState.PENDING): 1})
    (row,) = tracker.poll(Engine({"a": Lane(throttled_until=pace.throttled_until)}))
    assert row.state == "throttled"
    assert 4.9 < row.paused_s <= 5.1


def run_against_window(
    real: int, configured: float, seconds: float, latency: float = 0.1, retry_after: float | None = None
) -> tuple[list[float], list[float]]:
    """Drive an Adaptive lane in virtual time against a provider allowing `real` per sliding second.

    Answers come back `latency` later, as on a network: returns (accepted, throttled) send times.
    """
    clock = FakeClock()
    adaptive = Adaptive(clock=clock)
    window: deque[float] = deque()
    answers: list[tuple[float, float, bool]] = []  # (arrives at, sent at, was it a 429)
    accepted: list[float] = []
    throttled: list[float] = []
    next_configured = 0.0
    while clock.time < seconds:
        start = max(adaptive.reserve(), next_configured)
        next_configured = start + 1 / configured
        while answers and answers[0][0] <= start:  # answers that arrive before we send again
            clock.time, sent, was_429 = heapq.heappop(answers)
            if was_429:
                adaptive.throttled(sent, retry_after)
            else:
                adaptive.succeeded()
        if adaptive.paused_until > start:
            continue  # a 429 paused the lane meanwhile: ask again
        clock.time = start
        sent = adaptive.sent()
        while window and window[0] <= start - 1.0:
            window.popleft()
        over = len(window) >= real
        (throttled if over else accepted).append(start)
        if not over:
            window.append(start)
        heapq.heappush(answers, (start + latency, sent, over))
    return accepted, throttled


def test_lane_settles_just_under_a_lower_real_limit() -> None:
    """Configured 25% above the provider's real 50/s, the lane converges to >= 90% of 50/s and 429s die down."""
    accepted, throttled = run_against_window(real=50, configured=62.5, seconds=120)
    late = [t for t in accepted if t >= 60]
    assert len(late) / 60 >= 0.90 * 50
    early_429s = sum(1 for t in throttled if t < 10)
    late_429s = sum(1 for t in throttled if t >= 60) / 6  # per 10 s, averaged
    assert early_429s >= 1
    assert late_429s < early_429s


def test_no_429_means_no_adaptive_limit() -> None:
    """A lane that never sees a 429 runs at its configured pace: the controller adds nothing."""
    accepted, throttled = run_against_window(real=1000, configured=50, seconds=10)
    assert throttled == []
    assert len(accepted) >= 499


def test_retry_after_pauses_the_lane_for_that_long() -> None:
    """A 429 with Retry-After pauses every request of the lane until it has passed."""
    clock = FakeClock(100.0)
    adaptive = Adaptive(clock=clock)
    sent = adaptive.sent()
    assert adaptive.throttled(sent, retry_after=2.0) >= 2.0
    assert adaptive.reserve() >= 102.0
    clock.time = 103.0
    adaptive.succeeded()
    assert adaptive.reserve() >= 103.0


def test_a_429_storm_backs_off_exponentially_without_retry_after() -> None:
    """429s in a row, with no success between, double the pause up to its cap."""
    clock = FakeClock()
    adaptive = Adaptive(clock=clock)
    pauses = []
    for _ in range(12):
        sent = adaptive.sent()
        clock.time += 0.001
        pauses.append(adaptive.throttled(sent, None))
        clock.time = adaptive.paused_until
    assert pauses[:4] == pytest.approx([0.25, 0.5, 1.0, 2.0], rel=0.01)
    assert max(pauses) == 60.0
    assert adaptive.rate == pytest.approx(0.85**12)  # cut on every one: each was sent after the last cut


def test_many_429s_from_one_burst_cut_the_rate_once() -> None:
    """The 429s of requests that were already in flight when the rate was cut do not cut it again."""
    clock = FakeClock()
    adaptive = Adaptive(clock=clock)
    sends = []
    for _ in range(10):
        clock.time += 0.01
        sends.append(adaptive.sent())
    clock.time += 0.1
    for sent in sends:
        adaptive.throttled(sent, None)
    assert adaptive.rate == pytest.approx(0.85 * 10)  # 10 sent in the last second, cut once


def test_a_long_pause_is_a_warning_once_with_its_wall_clock_end() -> None:
    """A pause of 60 s or more is announced once, with its UTC end; its burst's other 429s and short pauses are not."""
    clock, epoch = FakeClock(500.0), 1_790_000_000.0
    adaptive = Adaptive(clock=clock)
    patience = Patience(adaptive, 900, 1800, wall=lambda: epoch + clock.time)
    adaptive.throttled(adaptive.sent(), 59.0)
    assert patience.judge(59.0) == Verdict()
    clock.time = adaptive.paused_until
    adaptive.throttled(adaptive.sent(), 120.0)
    verdict = patience.judge(120.0)
    assert verdict.stop is None
    assert verdict.until == dt.datetime.fromtimestamp(epoch + adaptive.paused_until, dt.UTC)
    clock.time += 0.01
    adaptive.throttled(clock.time - 0.02, 120.0)  # another request of the same burst
    assert patience.judge(120.0) == Verdict()
    adaptive.succeeded()
    clock.time = adaptive.paused_until + 5
    adaptive.throttled(adaptive.sent(), 60.0)
    assert patience.judge(60.0).until == dt.datetime.fromtimestamp(epoch + adaptive.paused_until, dt.UTC)


def test_a_retry_after_above_max_pause_s_stops_the_lane() -> None:
    """Retry-After above the cap is a stop naming what was asked and the cap; at the cap it is waited out."""
    adaptive = Adaptive(clock=FakeClock())
    patience = Patience(adaptive, 900, 1800)
    adaptive.throttled(adaptive.sent(), 900.0)
    assert patience.judge(900.0).stop is None
    adaptive.throttled(adaptive.sent(), 900.2)
    stop = patience.judge(900.2).stop
    assert stop == "the provider asked to wait 901s (Retry-After), more than max_pause_s (900s)"


def test_only_429s_stop_the_lane_before_its_next_try_passes_the_give_up_time() -> None:
    """A 429 storm stops the lane at the 429 whose pause would end past give_up_after_s; a success restarts the count."""
    clock = FakeClock()
    adaptive = Adaptive(clock=clock)
    patience = Patience(adaptive, 900, 300)

    def storm() -> tuple[float, float, str]:
        """429s without Retry-After, each retried when its pause ends, until a stop."""
        first = clock.time
        while True:
            sent = adaptive.sent()
            clock.time += 0.05  # the answer's latency
            pause = adaptive.throttled(sent, None)
            verdict = patience.judge(None)
            if verdict.stop is not None:
                return clock.time - first, pause, verdict.stop
            clock.time = adaptive.paused_until

    waited, pause, stop = storm()
    assert waited < 300 <= waited + pause
    assert waited > 240  # it did not give up a whole backoff early
    assert stop.endswith("past give_up_throttled_after_s (300s)")
    assert stop.startswith(f"nothing but 429s for {waited - 0.05:.1f}s, and its next try would be")
    adaptive.succeeded()
    clock.time += 1000
    again, _, _ = storm()
    assert again > 240  # counted from this storm's first 429, not from the last storm's
