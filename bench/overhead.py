"""Part 1, overhead: batchvoid (ledger and JSON log on) against the script a user would write.

Same job, same simulator (no latency, no limits), same total concurrency. Contenders run
one after another in each round, in alternating order, with the simulator reset between
them; the figure is the median over rounds of the per-round ratio of voids per second,
each from the child's wall time, process start to exit.
"""

from __future__ import annotations

from typing import Any

from bench import peer_curl, runs
from bench.configs import write_config
from bench.figures import Figure, Section, median
from bench.jobs import PROVIDERS, write_job
from bench.process import Finished
from bench.simulator import SimulatorProcess
from bench.workspace import Workspace, timeout_for

TARGET = 0.75


def measure(ws: Workspace, sim: SimulatorProcess) -> Section:
    sizes = ws.sizes
    section = Section("overhead")
    items, concurrency = sizes.overhead_items, sizes.concurrency * len(PROVIDERS)
    job = write_job(ws.work / "overhead.csv", items)
    curl_job = write_job(ws.work / "overhead-curl.csv", sizes.curl_items)
    config = write_config(ws.work / "overhead.toml", sim.base_url, concurrency=sizes.concurrency)
    curl_missing = peer_curl.available()
    if curl_missing:
        section.notes.append(f"xargs + curl peer skipped: {curl_missing}")
    rounds: list[dict[str, Any]] = []
    for r in range(1, sizes.rounds + 1):
        order = ["batchvoid", "aiohttp"] if r % 2 else ["aiohttp", "batchvoid"]
        if not curl_missing:
            order.insert(1, "curl")
        found: dict[str, Any] = {}
        for who in order:
            sim.reset()
            name = f"overhead-{who}-{r}"
            if who == "batchvoid":
                done = runs.batchvoid(ws, sim, name, job=job, config=config, timeout_s=timeout_for(items))
            elif who == "aiohttp":
                done = runs.aiohttp_peer(
                    ws, sim, name, job=job, concurrency=concurrency, timeout_s=timeout_for(items)
                )
            else:
                done = runs.curl_peer(
                    ws, sim, name, job=curl_job, concurrency=concurrency, timeout_s=timeout_for(items)
                )
            expected = sizes.curl_items if who == "curl" else items
            found[who] = _result(done, sim.stats()["totals"]["voided"], expected)
            if found[who]["voided"] != expected:
                section.notes.append(f"{name}: voided {found[who]['voided']} of {expected}")
            ws.say(
                f"overhead round {r}/{sizes.rounds}: {who:9} {found[who]['voided']} voids "
                f"in {done.wall_s:.2f}s = {found[who]['voids_per_s']:.0f}/s, "
                f"{found[who]['cpu_us_per_void']:.0f} us CPU per void"
            )
        rounds.append(found)
    section.details = {
        "items": items,
        "curl_items": sizes.curl_items,
        "concurrency": concurrency,
        "rounds": rounds,
    }

    def ratio(a: str, b: str, field: str = "voids_per_s") -> float | None:
        if any(b not in found for found in rounds):
            return None
        return median(found[a][field] / found[b][field] for found in rounds)

    def rate(who: str) -> float | None:
        if any(who not in found for found in rounds):
            return None
        return median(found[who]["voids_per_s"] for found in rounds)

    section.figures = [
        Figure(
            "overhead.ratio_aiohttp",
            f"1 overhead: batchvoid / aiohttp peer, voids/s ({items} items)",
            ratio("batchvoid", "aiohttp"),
            at_least=TARGET,
        ),
        Figure(
            "overhead.ratio_curl",
            f"1 overhead: batchvoid / xargs+curl, voids/s (curl: {sizes.curl_items} items)",
            ratio("batchvoid", "curl"),
            note=curl_missing or "",
        ),
        Figure("overhead.batchvoid_voids_per_s", "1 batchvoid voids/s", rate("batchvoid"), "/s"),
        Figure("overhead.aiohttp_voids_per_s", "1 aiohttp peer voids/s", rate("aiohttp"), "/s"),
        Figure(
            "overhead.curl_voids_per_s", "1 xargs+curl voids/s", rate("curl"), "/s", note=curl_missing or ""
        ),
        Figure(
            "overhead.cpu_ratio_aiohttp",
            "1 CPU per void: batchvoid / aiohttp peer",
            ratio("batchvoid", "aiohttp", "cpu_us_per_void"),
        ),
        Figure(
            "overhead.batchvoid_cpu_us_per_void",
            "1 batchvoid CPU per void",
            None if not rounds else median(found["batchvoid"]["cpu_us_per_void"] for found in rounds),
            " us",
        ),
    ]
    return section


def _result(done: Finished, voided: int, items: int) -> dict[str, Any]:
    return {
        "items": items,
        "voided": voided,
        "wall_s": round(done.wall_s, 3),
        "cpu_s": round(done.cpu_s, 3),
        "peak_rss_mb": round(done.peak_rss_mb, 1),
        "voids_per_s": voided / done.wall_s,
        "cpu_us_per_void": done.cpu_s / max(voided, 1) * 1e6,
    }
