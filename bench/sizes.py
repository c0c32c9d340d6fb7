"""How big each part of the benchmark is: the full run, --quick, and the test suite's smoke run."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Sizes:
    """Item counts and durations; the full sizes take about 12 minutes on 2 cores."""

    name: str
    rounds: int  # interleaved rounds per comparison; figures are the median
    concurrency: int  # per provider, for the runs without rate limits (x5 for the peers)
    overhead_items: int
    curl_items: int  # xargs + curl is far slower: a subset, compared per item
    pace_limit: int  # requests per second per provider, enforced by the simulator
    pace_concurrency: int
    pace_latency_ms: int
    pace_seconds: float  # each pace run is sized to last about this long at the limit
    memory_small: int
    memory_large: int  # stopped once it has voided memory_small items
    resume_items: int
    resume_left: int  # items still pending in the resumed ledger
    scale_latency_ms: int  # the simulator's answer time in the scale-out part
    scale_concurrency: int  # per provider, per worker
    scale_seconds: float  # each unlimited scale-out run lasts about this long for one worker
    scale_limit_seconds: float  # the run against a shared limit lasts about this long

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


FULL = Sizes(
    name="full",
    rounds=3,
    concurrency=8,
    overhead_items=200_000,
    curl_items=1_000,
    pace_limit=50,
    pace_concurrency=10,
    pace_latency_ms=100,
    pace_seconds=15,
    memory_small=100_000,
    memory_large=1_000_000,
    resume_items=1_000_000,
    resume_left=1_000,
    scale_latency_ms=200,
    scale_concurrency=4,
    scale_seconds=20,
    scale_limit_seconds=30,
)
QUICK = Sizes(
    name="quick",
    rounds=1,
    concurrency=8,
    overhead_items=5_000,
    curl_items=200,
    pace_limit=50,
    pace_concurrency=10,
    pace_latency_ms=100,
    pace_seconds=4,
    memory_small=10_000,
    memory_large=100_000,
    resume_items=100_000,
    resume_left=1_000,
    scale_latency_ms=200,
    scale_concurrency=4,
    scale_seconds=5,
    scale_limit_seconds=12,
)
SMOKE = Sizes(
    name="smoke",
    rounds=1,
    concurrency=4,
    overhead_items=250,
    curl_items=25,
    pace_limit=50,
    pace_concurrency=10,
    pace_latency_ms=100,
    pace_seconds=1,
    memory_small=200,
    memory_large=2_000,
    resume_items=2_000,
    resume_left=50,
    scale_latency_ms=100,
    scale_concurrency=2,
    scale_seconds=1,
    scale_limit_seconds=1,
)
