"""`python -m bench`: run every part of the benchmark, print the table, optionally write JSON."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import cost, memory, overhead, pace, resume, scaleout
from bench.figures import Section, table
from bench.process import BenchError
from bench.simulator import SimulatorProcess
from bench.sizes import FULL, QUICK, SMOKE
from bench.workspace import Workspace

PARTS: dict[str, Callable[[Workspace, SimulatorProcess], Section]] = {
    "overhead": overhead.measure,
    "pace": pace.measure,
    "memory": memory.measure,
    "resume": resume.measure,
    "cost": cost.measure,
    "scaleout": scaleout.measure,
}
PROFILE_LINES = 15


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark batchvoid on this machine against the simulator, over loopback.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small sizes: about a minute instead of 6-8")
    size.add_argument(
        "--smoke", action="store_true", help="tiny sizes, for the test suite: figures mean nothing"
    )
    parser.add_argument("--out", type=Path, metavar="FILE.json", help="also write every figure as JSON")
    parser.add_argument(
        "--profile", action="store_true", help="also profile part 1's batchvoid run (needs pyinstrument)"
    )
    parser.add_argument("--only", metavar="PARTS", help=f"comma-separated subset of: {','.join(PARTS)}")
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="keep job files, ledgers and logs here (default: a temp dir)",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else QUICK if args.quick else FULL
    chosen = list(PARTS) if not args.only else [p.strip() for p in args.only.split(",") if p.strip()]
    if unknown := [p for p in chosen if p not in PARTS]:
        parser.error(f"--only: unknown part {', '.join(unknown)} (parts: {', '.join(PARTS)})")

    began = time.monotonic()
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    sections: list[Section] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="batchvoid-bench-") as scratch:
        work = args.workdir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        ws = Workspace(sizes, work, profile=args.profile, began=began)
        ws.say(f"batchvoid benchmark, {sizes.name} sizes, {os.cpu_count()} CPUs, scratch files in {work}")
        try:
            with SimulatorProcess(ws.logs) as sim:
                ws.say(f"simulator (no faults) at {sim.base_url}, pid {sim.pid}")
                for part in chosen:
                    part_began = time.monotonic()
                    try:
                        section = PARTS[part](ws, sim)
                    except BenchError as exc:
                        failed.append(f"{part}: {exc}")
                        ws.say(f"{part}: could not measure: {exc}")
                        continue
                    section.elapsed_s = time.monotonic() - part_began
                    sections.append(section)
        except BenchError as exc:
            failed.append(str(exc))
    elapsed = time.monotonic() - began

    figures = [f for s in sections for f in s.figures]
    print(table(figures))
    targets = [f for f in figures if f.passed is not None]
    print(
        f"\n{sum(bool(f.passed) for f in targets)} of {len(targets)} targets met; "
        f"{sizes.name} sizes; elapsed {elapsed:.0f}s on {os.cpu_count()} CPUs."
    )
    for section in sections:
        for note in section.notes:
            print(f"note: {note}")
        if profile := section.details.get("profile"):
            _print_profile(profile)
    for failure in failed:
        print(f"error: {failure}", file=sys.stderr)
    if args.out is not None:
        args.out.write_text(
            json.dumps(_as_json(sizes.as_json(), sections, started_at, elapsed, failed), indent=2)
        )
        print(f"Figures written to {args.out}")
    return 2 if failed else 0


def _print_profile(profile: dict[str, Any]) -> None:
    sampled = profile["sampled_s"]
    print(f"\nProfile of the batchvoid run (pyinstrument, event-loop thread, {sampled:.1f}s sampled):")
    print(f"  HTML: {profile['html']}")
    for kind in ("cumulative", "self"):
        print(f"  top {PROFILE_LINES} by {kind} time:")
        for name, seconds in profile[kind][:PROFILE_LINES]:
            print(f"    {seconds:8.2f}s  {100 * seconds / sampled:5.1f}%  {name}")


def _as_json(
    sizes: dict[str, Any], sections: list[Section], started_at: str, elapsed: float, failed: list[str]
) -> dict[str, Any]:
    return {
        "started_at": started_at,
        "elapsed_s": round(elapsed, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "sizes": sizes,
        "figures": {f.key: f.as_json() for s in sections for f in s.figures},
        "parts": {
            s.name: {"elapsed_s": round(s.elapsed_s, 1), "notes": s.notes, "details": s.details}
            for s in sections
        },
        "errors": failed,
    }


if __name__ == "__main__":
    sys.exit(main())
