"""The shared pace's send rule: no window of any profile is exceeded across workers, whatever their clocks say.

Pure arithmetic, no database: workers with clocks hours apart reserve blocks of slots from one
schedule (as the limiter row does, in the database's clock), and each sends every slot at the
first moment its own, possibly late, timer lets it, or drops it past its window.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from batchvoid.config import parse_rate_limit
from batchvoid.ledger.postgres.pace import BLOCK_S, DELTA_S, send_window
from batchvoid.pace import JITTER_S, MARGIN

WINDOWS = [parse_rate_limit("20/1s"), parse_rate_limit("60/5s")]
INTERVAL = max((w.period * MARGIN + JITTER_S + DELTA_S) / w.count for w in WINDOWS)  # as spacing()


def most_within(times: list[float], period: float) -> int:
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t < start + period) for i, start in enumerate(times)), default=0)


reservation = st.tuples(
    st.integers(0, 3),  # which worker
    st.floats(0, 0.6),  # database time since the last reservation
    st.floats(0, 0.08),  # the query's way there ...
    st.floats(0, 0.08),  # ... and back
    st.floats(0, 0.06),  # how late the worker's timer fires
)


@settings(max_examples=200, deadline=None)
@given(
    offsets=st.lists(st.floats(-3600, 3600), min_size=4, max_size=4),
    reservations=st.lists(reservation, min_size=1, max_size=60),
)
def test_no_window_holds_more_than_its_count_over_all_workers(
    offsets: list[float], reservations: list[tuple[int, float, float, float, float]]
) -> None:
    tat, now = 0.0, 1000.0
    sends: list[float] = []  # in database time: what the provider's clock sees
    k = max(1, math.ceil(BLOCK_S / INTERVAL))
    for worker, gap, there, back, late in reservations:
        now += gap
        offset = offsets[worker]
        t0, d, t1 = now - there + offset, now, now + back + offset  # the worker's clock = db + offset
        first = max(tat, d)
        tat = first + k * INTERVAL
        for j in range(k):
            slot = first + j * INTERVAL
            earliest, latest = send_window(slot, d, t0, t1)
            at = max(earliest, t1) + late  # it can send no earlier than the reply, its timer may be late
            if at <= latest:
                sent = at - offset
                assert slot - 1e-9 <= sent <= slot + DELTA_S + 1e-9
                sends.append(sent)
    for window in WINDOWS:
        assert most_within(sends, window.period) <= window.count


def test_a_slow_reply_drops_the_slots_rather_than_send_them_late() -> None:
    earliest, latest = send_window(slot=10.0, d=10.0, t0=0.0, t1=DELTA_S + 0.01)
    assert earliest > latest
