"""Fault dice: which injected fault, if any, a request gets, and how long its answer takes.

One dice per provider, each with its own `random.Random(seed)`, so a seeded run draws the
same faults in the same order every time. A rate of 0 draws nothing.
"""

from __future__ import annotations

import enum
import random

from batchvoid.simulator.settings import Faults

SERVER_ERROR_STATUSES = (500, 502, 503)
GATEWAY_STATUSES = (502, 503)


class Fault(enum.Enum):
    """An injected fault. ERROR and RESET happen before the app; the others after it."""

    ERROR = "error"  # a 5xx from "the gateway": the void is not applied
    TIMEOUT = "timeout"  # the void is applied, the answer comes only after hang_s
    RESET = "reset"  # the connection drops before the app sees the request
    RESET_AFTER_APPLY = "reset_after_apply"  # the void is applied, then the connection drops


class FaultDice:
    """Draws one provider's faults from its seeded random generator."""

    __slots__ = ("_faults", "_rng")

    def __init__(self, faults: Faults, rng: random.Random) -> None:
        self._faults = faults
        self._rng = rng

    def roll(self) -> Fault | None:
        """The fault for the next request that passed auth and rate limits, or None."""
        faults, rng = self._faults, self._rng
        if faults.error_rate and rng.random() < faults.error_rate:
            return Fault.ERROR
        if faults.timeout_rate and rng.random() < faults.timeout_rate:
            return Fault.TIMEOUT
        if faults.reset_rate and rng.random() < faults.reset_rate:
            return Fault.RESET_AFTER_APPLY if rng.random() < 0.5 else Fault.RESET
        return None

    def error_status(self) -> int:
        """The status of an injected server error: a gateway's when it echoes the headers."""
        return self._rng.choice(GATEWAY_STATUSES if self._faults.echo_headers else SERVER_ERROR_STATUSES)

    def delay_s(self) -> float:
        """Seconds to wait before answering: the latency plus up to `jitter_ms` more."""
        faults = self._faults
        delay_ms = faults.latency_ms
        if faults.jitter_ms:
            delay_ms += self._rng.uniform(0, faults.jitter_ms)
        return delay_ms / 1000
