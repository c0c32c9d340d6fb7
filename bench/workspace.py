"""What every part of a benchmark run shares: sizes, the scratch directory, progress lines."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.simulator import SimulatorProcess
from bench.sizes import Sizes

SLOWEST_RATE = 150  # voids/s below which a child is presumed stuck: it sizes every timeout


@dataclass(frozen=True, slots=True)
class Workspace:
    """Job files, configs, ledgers and logs go under `work`; children's output under `work/out`."""

    sizes: Sizes
    work: Path
    profile: bool = False
    began: float = field(default_factory=time.monotonic)

    @property
    def logs(self) -> Path:
        path = self.work / "out"
        path.mkdir(exist_ok=True)
        return path

    def env(self, sim: SimulatorProcess) -> dict[str, str]:
        """The environment for a child: ours plus the simulator's test credentials."""
        return {**os.environ, **sim.env}

    def say(self, message: str) -> None:
        """A progress line on stderr, with the time since the benchmark began."""
        print(f"[{time.monotonic() - self.began:6.1f}s] {message}", file=sys.stderr, flush=True)


def timeout_for(items: int, *, seconds: float = 0) -> float:
    """A generous bound for a child that handles `items` voids (plus `seconds` of planned time)."""
    return 60 + seconds * 2 + items / SLOWEST_RATE
