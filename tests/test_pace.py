"""A lane's pace: the buckets built from rate limits never admit more than a window allows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from batchvoid.config import parse_rate_limit
from batchvoid.pace import bucket


@given(count=st.integers(1, 100_000), period=st.floats(0.01, 3600))
def test_no_window_can_hold_more_than_the_limit(count: int, period: float) -> None:
    """Burst plus what leaks in one window, minus the one at its far edge, stays within the count."""
    limit = parse_rate_limit(f"{count}/{period}s")
    b = bucket(limit)
    rate = b.max_rate / b.time_period
    assert b.max_rate + rate * limit.period - 1 <= count + 1e-9


@given(count=st.integers(1, 100_000))
def test_pace_stays_close_to_the_limit(count: int) -> None:
    """The sustained rate loses at most a few percent to the safety margins."""
    b = bucket(parse_rate_limit(f"{count}/1s"))
    rate = b.max_rate / b.time_period
    assert rate >= count * 0.98 - 1
