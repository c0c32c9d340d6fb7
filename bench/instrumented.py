"""`batchvoid run` through its real entry point, with the CPU time of its ledger and log calls counted.

    python -m bench.instrumented --report OUT.json [--profile OUT.html] -- run JOB --config ...

Counts per-thread CPU time (`time.thread_time`) inside `Ledger.apply` (the group commits,
on the writer thread), `SqliteLedger.claim` (taking work, on a worker thread), and every
log line (`logs.Logger`: rendering and the write, on the event loop's thread). With --profile,
pyinstrument samples the event loop's thread (it sees that thread only, which is why
the ledger threads are counted separately), and the report gets its top entries.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

TOP = 25
WRAPPER_SHARE = 0.9  # cumulative entries above this share of all samples are left out


class Meter:
    """CPU seconds and calls per name, summed over threads."""

    def __init__(self) -> None:
        self.cpu_s: dict[str, float] = {}
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.thread_time() - began
                with self._lock:
                    self.cpu_s[name] = self.cpu_s.get(name, 0.0) + spent
                    self.calls[name] += 1

        return timed


def install(meter: Meter) -> None:
    """Count the ledger's SQL work and every log call."""
    from batchvoid.ledger import SqliteLedger
    from batchvoid.logs import Logger

    SqliteLedger.apply = meter.wrap("ledger.apply", SqliteLedger.apply)  # type: ignore[method-assign]
    SqliteLedger.claim = meter.wrap("ledger.claim", SqliteLedger.claim)  # type: ignore[method-assign]
    # Every line goes through one of these three (`exception` through `error`): render, write.
    for level in ("info", "warning", "error"):
        setattr(Logger, level, meter.wrap("log", getattr(Logger, level)))


def top_entries(root: Any, count: int = TOP) -> dict[str, Any]:
    """The functions with the most cumulative and self time in a pyinstrument frame tree."""
    own: Counter[str] = Counter()  # seconds: Counter adds floats as well
    total: Counter[str] = Counter()
    stack: list[tuple[Any, frozenset[str]]] = [(root, frozenset())]
    while stack:
        frame, above = stack.pop()
        key = above
        if not frame.is_synthetic:
            name = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
            own[name] += frame.total_self_time
            if name not in above:  # recursion: count a function's time once per stack
                total[name] += frame.time
            key = above | {name}
        stack.extend((child, key) for child in frame.children)
    # The frames every sample passes through (main, click, the event loop) say nothing.
    inside = [(name, t) for name, t in total.most_common() if t < WRAPPER_SHARE * root.time]
    return {
        "sampled_s": root.time,
        "cumulative": [[name, round(t, 4)] for name, t in inside[:count]],
        "self": [[name, round(t, 4)] for name, t in own.most_common(count)],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instrumented")
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument(
        "--profile", type=Path, help="write pyinstrument's HTML here; top entries go in the report"
    )
    if "--" not in argv:
        parser.error("give batchvoid's arguments after --")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    batchvoid_args = argv[split + 1 :]

    from batchvoid.cli import main as batchvoid

    meter = Meter()
    install(meter)
    profiler = None
    if args.profile is not None:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001, async_mode="disabled")
        profiler.start()
    status: int | str | None = 0
    try:
        batchvoid(batchvoid_args, prog_name="batchvoid")
    except SystemExit as exc:
        status = exc.code
    finally:
        report: dict[str, Any] = {
            "exit_status": status,
            "cpu_s": dict(meter.cpu_s),
            "calls": dict(meter.calls),
        }
        if profiler is not None:
            session = profiler.stop()
            args.profile.write_text(profiler.output_html(), encoding="utf-8")
            session.save(str(args.profile.with_suffix(".pyisession")))  # pyinstrument --load FILE
            root = session.root_frame()
            report["profile"] = top_entries(root) if root is not None else None
        args.report.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return status if isinstance(status, int) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
