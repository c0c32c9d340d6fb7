"""Part 2, pace at the limit: the simulator enforces a sliding-window limit per provider (429 over
it) with latency; batchvoid is configured at that limit, then 25% above it.

Achieved rates come from the voided outcomes' timestamps in batchvoid's log, per provider
(first to last void, so process start-up and ingest do not count), summed over providers
and divided by the sum of the simulator's limits. 429s come from the simulator's counters.
"""

from __future__ import annotations

from typing import Any

from bench import logscan, runs
from bench.configs import write_config
from bench.figures import Figure, Section, median
from bench.jobs import PROVIDERS, per_provider
from bench.simulator import SimulatorProcess
from bench.workspace import Workspace, timeout_for

AT_LIMIT_TARGET = 0.97
OVER_LIMIT_TARGET = 0.90
OVER = 1.25  # the over-limit config claims this much more than the provider allows


def measure(ws: Workspace, _: SimulatorProcess) -> Section:
    sizes = ws.sizes
    section = Section("pace")
    limit, over = sizes.pace_limit, int(sizes.pace_limit * OVER)
    total_limit = limit * len(PROVIDERS)
    each = round(limit * sizes.pace_seconds)
    job = per_provider(ws.work / "pace.csv", each)
    faults = [f"rate_limit={limit}/1s,latency_ms={sizes.pace_latency_ms}"]
    rounds: list[dict[str, Any]] = []
    with SimulatorProcess(ws.logs, name="simulator-pace", faults=faults) as sim:
        configs = {
            "at": write_config(
                ws.work / "pace-at.toml",
                sim.base_url,
                concurrency=sizes.pace_concurrency,
                rate_limits=[f"{limit}/1s"],
            ),
            "over": write_config(
                ws.work / "pace-over.toml",
                sim.base_url,
                concurrency=sizes.pace_concurrency,
                rate_limits=[f"{over}/1s"],
            ),
        }
        timeout = timeout_for(each * len(PROVIDERS), seconds=sizes.pace_seconds * 2)
        for r in range(1, sizes.rounds + 1):
            found: dict[str, Any] = {}
            for kind in ("at", "over") if r % 2 else ("over", "at"):
                sim.reset()
                name = f"pace-{kind}-{r}"
                done = runs.batchvoid(ws, sim, name, job=job, config=configs[kind], timeout_s=timeout)
                stats = sim.stats()
                timeline = logscan.read(runs.log_file(ws, name))
                found[kind] = (
                    _at_limit(timeline, total_limit) if kind == "at" else _over(timeline, total_limit)
                )
                found[kind] |= {
                    "wall_s": round(done.wall_s, 3),
                    "voided": stats["totals"]["voided"],
                    "throttled": stats["totals"]["throttled"],
                    "throttled_by_provider": {p: stats[p]["throttled"] for p in PROVIDERS},
                }
                if found[kind]["voided"] != each * len(PROVIDERS):
                    section.notes.append(f"{name}: voided {found[kind]['voided']} of {each * len(PROVIDERS)}")
                ws.say(
                    f"pace round {r}/{sizes.rounds}, config {'at' if kind == 'at' else 'over'} the limit: "
                    f"{found[kind]['achieved_per_s']:.1f}/s of {total_limit}/s, "
                    f"{found[kind]['throttled']} 429s, {done.wall_s:.1f}s"
                )
            rounds.append(found)
    section.details = {
        "limit_per_provider": f"{limit}/1s",
        "over_limit_config": f"{over}/1s",
        "latency_ms": sizes.pace_latency_ms,
        "concurrency": sizes.pace_concurrency,
        "items_per_provider": each,
        "rounds": rounds,
    }
    section.figures = [
        Figure(
            "pace.at_limit_ratio",
            f"2 at the limit: achieved / {total_limit}/s",
            median(f["at"]["ratio"] for f in rounds),
            at_least=AT_LIMIT_TARGET,
        ),
        Figure(
            "pace.at_limit_429s",
            "2 at the limit: 429s received (worst round)",
            max(f["at"]["throttled"] for f in rounds),
            at_most=0,
        ),
        Figure(
            "pace.over_limit_ratio",
            f"2 config {over}/1s vs real {limit}/1s: achieved / real, 2nd half",
            median(f["over"]["ratio"] for f in rounds),
            at_least=OVER_LIMIT_TARGET,
        ),
        Figure(
            "pace.over_limit_429s",
            "2 config over the limit: 429s received in all",
            median(f["over"]["throttled"] for f in rounds),
        ),
        Figure(
            "pace.over_limit_429s_second_half",
            "2 config over the limit: 429s in the 2nd half",
            median(f["over"]["throttled_second_half"] for f in rounds),
        ),
        Figure(
            "pace.over_limit_last_429_s",
            "2 config over the limit: last 429, s after start",
            median(f["over"]["last_429_s"] for f in rounds),
            "s",
        ),
    ]
    return section


def _at_limit(timeline: logscan.Timeline, total_limit: int) -> dict[str, Any]:
    by_provider = {p: logscan.rate(timeline.voided.get(p, [])) for p in PROVIDERS}
    achieved = sum(by_provider.values())
    return {
        "achieved_per_s": achieved,
        "ratio": achieved / total_limit,
        "by_provider_per_s": {p: round(r, 2) for p, r in by_provider.items()},
    }


def _over(timeline: logscan.Timeline, total_limit: int) -> dict[str, Any]:
    """The rate over each provider's second half of voids; 429s before and after the run's middle."""
    by_provider = {}
    for p in PROVIDERS:
        times = timeline.voided.get(p, [])
        middle = (times[0] + times[-1]) / 2 if times else 0.0
        by_provider[p] = logscan.rate([t for t in times if t >= middle])
    achieved = sum(by_provider.values())
    start = timeline.first_attempt or 0.0
    end = max((times[-1] for times in timeline.voided.values() if times), default=start)
    middle = (start + end) / 2
    throttled = timeline.throttled
    return {
        "achieved_per_s": achieved,
        "ratio": achieved / total_limit,
        "by_provider_per_s": {p: round(r, 2) for p, r in by_provider.items()},
        "throttled_logged": len(throttled),
        "throttled_first_half": sum(1 for t in throttled if t < middle),
        "throttled_second_half": sum(1 for t in throttled if t >= middle),
        "last_429_s": round(throttled[-1] - start, 3) if throttled else 0.0,
        "run_s": round(end - start, 3),
    }
