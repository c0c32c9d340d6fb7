"""One child process, measured: wall time, CPU time and peak RSS from `wait4`, bounded in time.

`wait4` gives the child's own rusage (with its reaped children's, for xargs and its curls),
so nothing else running on the machine leaks into a figure, and no psutil is needed.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

STOP_GRACE_S = 15.0  # after SIGTERM, how long a stopped child gets before SIGKILL


class BenchError(Exception):
    """Raised when the benchmark cannot measure something: a child failed or overran."""


@dataclass(frozen=True, slots=True)
class Finished:
    """How a child process ended and what it cost."""

    name: str
    returncode: int
    started: float  # time.time() just before the spawn, to compare with log timestamps
    wall_s: float
    cpu_s: float  # user + system, its reaped children included
    peak_rss_mb: float
    stopped: bool  # the watcher asked it to stop before it finished
    stdout: Path
    stderr: Path

    def tail(self, lines: int = 15) -> str:
        """The end of its stderr and stdout, for an error message."""
        text = []
        for path in (self.stderr, self.stdout):
            with contextlib.suppress(OSError):
                text.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(text)


def run(
    args: Sequence[str],
    *,
    name: str,
    logs: Path,
    env: dict[str, str] | None = None,
    timeout_s: float,
    stdin: Path | None = None,
    watch: Callable[[], bool] | None = None,
    watch_every_s: float = 0.5,
) -> Finished:
    """Run `args` to the end (or until `watch()` returns True), within `timeout_s`.

    Output goes to `logs/name.out` and `logs/name.err`. On timeout the child's process group
    is killed and BenchError raised.
    """
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    with (
        out.open("wb") as stdout,
        err.open("wb") as stderr,
        stdin.open("rb") if stdin is not None else open(os.devnull, "rb") as source,
    ):
        started = time.time()
        began = time.monotonic()
        proc = subprocess.Popen(
            list(args), stdin=source, stdout=stdout, stderr=stderr, env=env, start_new_session=True
        )
    try:
        ended, stopped = _wait(proc, began + timeout_s, watch, watch_every_s)
    finally:
        _kill_group(proc)  # whatever is left of its group (xargs' curls); the pid is not reaped yet
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if ended is None:
        raise BenchError(f"{name}: still running after {timeout_s:.0f}s; killed")
    return Finished(
        name=name,
        returncode=proc.returncode,
        started=started,
        wall_s=ended - began,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,  # Linux reports KiB
        stopped=stopped,
        stdout=out,
        stderr=err,
    )


def _wait(
    proc: subprocess.Popen[bytes],
    deadline: float,
    watch: Callable[[], bool] | None,
    every: float,
) -> tuple[float | None, bool]:
    """Wait for the child to exit, leaving it unreaped (so its pid and group stay ours).

    Returns the monotonic time it exited (None at the deadline) and whether it was stopped.
    """
    stopped = False
    kill_at: float | None = None
    next_watch = time.monotonic()
    with _ExitWatch(proc.pid) as exited:
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None, stopped
            if kill_at is not None and now >= kill_at:
                _kill_group(proc)
                kill_at = None
            if watch is not None and not stopped and now >= next_watch:
                if watch():
                    stopped = True
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
                    kill_at = now + STOP_GRACE_S
                next_watch = now + every
            wake = deadline
            if watch is not None and not stopped:
                wake = min(wake, next_watch)
            if kill_at is not None:
                wake = min(wake, kill_at)
            if exited(max(0.0, wake - time.monotonic())):
                return time.monotonic(), stopped


class _ExitWatch:
    """Waits up to N seconds for a child to exit, without reaping it: a pidfd where Linux has
    one (exact), else `waitid(WNOWAIT)` every 5 ms."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._fd: int | None = None

    def __enter__(self) -> Callable[[float], bool]:
        with contextlib.suppress(AttributeError, OSError):
            self._fd = os.pidfd_open(self._pid)
        return self._wait

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)

    def _wait(self, timeout: float) -> bool:
        if self._fd is not None:
            ready, _, _ = select.select([self._fd], [], [], timeout)
            return bool(ready)
        end = time.monotonic() + timeout
        while os.waitid(os.P_PID, self._pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if time.monotonic() >= end:
                return False
            time.sleep(0.005)
        return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
