"""Every provider's example limits hold its documented ones: a lane paced at the example limits
never sends more than a documented limit allows in any window of its period."""

from __future__ import annotations

import pytest

from batchvoid.config import parse_rate_limit
from batchvoid.pace import Pace
from batchvoid.providers import REGISTRY
from tests.clock import FakeClock
from tests.test_pace import sends_of

pytestmark = pytest.mark.anyio
DOCUMENTED = [kind for kind, spec in REGISTRY.items() if spec.documented_limits and spec.example_limits]


def most_in_a_window(sends: list[float], period: float) -> int:
    """The most sends in any window [t, t + period) that starts at a send."""
    most, start = 0, 0
    for end, t in enumerate(sends):
        while sends[start] <= t - period:
            start += 1
        most = max(most, end - start + 1)
    return most


@pytest.mark.parametrize("kind", DOCUMENTED)
async def test_a_lane_at_the_example_limits_keeps_within_the_documented_ones(kind: str) -> None:
    """Twice the largest documented count, sent by 8 workers as fast as the example limits let them."""
    spec = REGISTRY[kind]
    documented = [parse_rate_limit(text) for text in spec.documented_limits]
    pace = Pace([parse_rate_limit(text) for text in spec.example_limits], clock=FakeClock())
    sends = await sends_of(pace, workers=8, sends=2 * max(limit.count for limit in documented) + 1)
    for limit in documented:
        assert most_in_a_window(sends, limit.period) <= limit.count, (kind, str(limit))


def test_the_window_count_finds_the_fullest_window() -> None:
    """The helper itself: three sends within a second, then a lone one."""
    assert most_in_a_window([0.0, 0.5, 0.99, 2.0], 1.0) == 3
    assert most_in_a_window([0.0, 1.0, 2.0], 1.0) == 1
