"""Progress while a run goes: live bars on a terminal, a plain line at an interval elsewhere.

A task next to the engine polls its lanes (what each has finished, failed, whether it is
throttled or stopped) and draws them; it only reads them. On a terminal that is one `rich`
bar per provider (`--progress bars`); under cron, CI or a pipe it is one short line of plain
text every interval, with the wall-clock time and no control characters (`plain`); `none`
(and `--quiet`, unless `--progress` says otherwise) shows neither. Which log lines reach the
console is `consolelog`'s business.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal, Protocol, TextIO, cast

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.text import Text

from batchvoid.models import UNDONE, ItemState, RateLimit, Stop
from batchvoid.pace import SYSTEM_CLOCK, estimate_s

Mode = Literal["auto", "bars", "plain", "none"]
MODES: tuple[Mode, ...] = ("auto", "bars", "plain", "none")
LANES_SHOWN = 2  # providers named on a plain line, the ones to watch first: it stays short
RATE_WINDOW_S = 30.0  # rate and ETA follow the last half minute, so they recover after a throttle
_HALTED = ("stopped", "stopping")  # lanes that send nothing more in this run


@dataclass(frozen=True, slots=True)
class ProgressOptions:
    """How a run shows its progress.

    `auto` draws live bars when the stream is a terminal and plain lines otherwise; `none`
    (the library default) shows nothing.
    """

    mode: Mode = "none"
    interval_s: float = 10.0  # between plain lines
    refresh_s: float = 0.25  # between redraws of the live bars


class LaneView(Protocol):
    """What progress reads from an engine lane."""

    @property
    def outcomes(self) -> Mapping[ItemState, int]: ...

    @property
    def stopped(self) -> Stop | None: ...

    @property
    def throttled_until(self) -> float:
        """When its 429 pause ends, on the run's clock (`pace.SYSTEM_CLOCK`); past: not paused."""
        ...

    @property
    def rate_limits(self) -> Sequence[RateLimit]:
        """Its configured windows: it never goes faster than they allow."""
        ...


class Watched(Protocol):
    """What progress reads from the engine: its lanes by provider (empty until it starts)."""

    @property
    def lanes(self) -> Mapping[str, LaneView]: ...

    @property
    def halted(self) -> Stop | None:
        """Why the whole run stopped sending (a signal, a failure limit), if it did."""
        ...


@dataclass(frozen=True, slots=True)
class LaneProgress:
    """One provider at one moment of the run."""

    provider: str
    total: int
    done: int  # items in a final state, earlier runs included
    failed: int  # items failed, earlier runs included
    rate: float | None  # items finished per second, lately; None before there is a measure
    state: str  # "", "waiting", "throttled", "stopped" or "done"
    paused_s: float = 0.0  # what is left of its 429 pause
    rate_limits: Sequence[RateLimit] = ()

    @property
    def left(self) -> int:
        return self.total - self.done

    @property
    def eta_s(self) -> float | None:
        """Seconds until this lane is done; None when that is unknown.

        What is left of its pause, then its items at its recent rate, but never faster than its
        windows allow (the estimate `plan` makes). While it is paused, the recent rate is mostly
        the pause's: the windows, when it has any, say better how fast it goes after.
        """
        if self.left == 0:
            return 0.0
        if self.state in _HALTED:
            return None
        windows = estimate_s(self.left, self.rate_limits)
        recent = self.left / self.rate if self.rate else None  # None: no measure, or none finish
        if self.paused_s > 0 and windows is not None:
            return self.paused_s + windows
        if recent is None:
            return None
        return self.paused_s + max(recent, windows or 0.0)


class Tracker:
    """Turns polls of the lanes into `LaneProgress` rows, with a rate over a sliding window."""

    def __init__(
        self,
        counts: Mapping[tuple[str, ItemState], int],
        *,
        clock: Callable[[], float] = SYSTEM_CLOCK.now,  # the lanes' clock: throttled_until is on it
        window_s: float = RATE_WINDOW_S,
    ) -> None:
        self._clock = clock
        self._window_s = window_s
        self.started = clock()
        self._total: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        for (provider, state), n in counts.items():
            self._total[provider] = self._total.get(provider, 0) + n
            self._done[provider] = self._done.get(provider, 0) + (n if state.is_final else 0)
            self._failed[provider] = self._failed.get(provider, 0) + (n if state in UNDONE else 0)
        # Per provider: (time, items finished in this run) samples within the rate window.
        self._samples = {p: deque([(self.started, 0)]) for p in self._total}

    def poll(self, engine: Watched) -> list[LaneProgress]:
        now = self._clock()
        rows = []
        for provider in sorted(self._total):
            lane = engine.lanes.get(provider)
            finished = sum(lane.outcomes.values()) if lane is not None else 0
            failed = sum(lane.outcomes.get(s, 0) for s in UNDONE) if lane is not None else 0
            samples = self._samples[provider]
            samples.append((now, finished))
            while len(samples) > 2 and now - samples[1][0] >= self._window_s:
                samples.popleft()
            (t0, n0), (t1, n1) = samples[0], samples[-1]
            total = self._total[provider]
            done = min(total, self._done[provider] + finished)
            rows.append(
                LaneProgress(
                    provider=provider,
                    total=total,
                    done=done,
                    failed=self._failed[provider] + failed,
                    rate=(n1 - n0) / (t1 - t0) if t1 > t0 else None,
                    state=_state(lane, engine.halted, done >= total, now),
                    paused_s=max(0.0, lane.throttled_until - now) if lane is not None else 0.0,
                    rate_limits=lane.rate_limits if lane is not None else (),
                )
            )
        return rows


def _state(lane: LaneView | None, halted: Stop | None, finished: bool, now: float) -> str:
    if lane is not None and lane.stopped is not None:
        return "stopped"
    if finished:
        return "done"
    if halted is not None:
        return "stopping"
    if lane is None:
        return "waiting"
    if lane.throttled_until > now:
        return "throttled"
    return ""


def format_duration(seconds: float) -> str:
    """'0:07', '12:40', '3:05:09': how long, as a clock reads it."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def _eta(seconds: float | None, state: str = "") -> str:
    if state in _HALTED:
        return "-"
    return "?" if seconds is None else format_duration(seconds)


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1f}/s"


def job_eta_s(rows: list[LaneProgress]) -> float | None:
    """Lanes run side by side, so the run ends when its slowest lane still sending does."""
    etas = [row.eta_s for row in rows if row.state not in _HALTED]
    if any(eta is None for eta in etas):
        return None
    return max((eta for eta in etas if eta is not None), default=0.0)


def _total(rows: list[LaneProgress]) -> LaneProgress:
    rates = [row.rate for row in rows if row.rate is not None]
    total, done = sum(row.total for row in rows), sum(row.done for row in rows)
    return LaneProgress(
        provider="total",
        total=total,
        done=done,
        failed=sum(row.failed for row in rows),
        rate=sum(rates) if rates else None,
        state="done" if done >= total else "",
    )


def progress_line(rows: list[LaneProgress], at: float) -> str:
    """One short plain-text line at wall-clock time `at` (Unix): the whole job, then the lanes to watch.

    At most LANES_SHOWN providers still at work are named, those throttled or stopped first,
    then those with the most left; the rest are counted.
    """
    total = _total(rows)
    percent = 100 * total.done // total.total if total.total else 100
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    parts = [
        f"{stamp} progress {total.done}/{total.total} done ({percent}%), "
        f"{_rate(total.rate)}, ETA {_eta(job_eta_s(rows))}, {total.failed} failed"
    ]
    busy = sorted((row for row in rows if row.state != "done"), key=lambda row: (not row.state, -row.left))
    for row in busy[:LANES_SHOWN]:
        text = f"{row.provider} {row.done}/{row.total}"
        if row.failed:
            text += f" {row.failed} failed"
        if row.state:
            text += f" {row.state}"
        parts.append(text)
    if len(busy) > LANES_SHOWN:
        parts.append(f"{len(busy) - LANES_SHOWN} more")
    return " | ".join(parts)


_STATE_STYLE = {
    "throttled": "bold yellow",
    "stopped": "bold red",
    "stopping": "bold red",
    "done": "green",
    "waiting": "dim",
}


class Display:
    """Shows a run's progress on a stream, as `options.mode` and the stream allow.

    Use `log_stream` for the run's console log lines, and wrap the engine's run in `watching()`.
    """

    def __init__(self, options: ProgressOptions, stream: TextIO, *, console: Console | None = None) -> None:
        self.options = options
        mode = options.mode
        if mode == "auto":
            mode = "bars" if stream.isatty() else "plain"
        self.mode: Mode = mode
        self._stream = stream
        self._console = console or Console(file=stream)
        self._job = JobTotals(None)
        # Where console log lines go. A line written straight to the terminal would land inside
        # the live bars and garble them; printed through the live console it appears above them.
        self.log_stream: TextIO = (
            cast(TextIO, _AboveLive(self._console, stream)) if mode == "bars" else stream
        )

    @asynccontextmanager
    async def watching(
        self,
        engine: Watched,
        counts: Mapping[tuple[str, ItemState], int],
        job_counts: Callable[[], Mapping[tuple[str, ItemState], int]] | None = None,
    ) -> AsyncIterator[None]:
        """Show progress while the body (the engine's run) goes on.

        `job_counts` reads the whole job's counts from the ledger: when other workers share the
        job, the display shows the job's totals as well as this run's own.
        """
        if self.mode not in ("bars", "plain") or not counts:
            yield
            return
        tracker = Tracker(counts)
        self._job = JobTotals(job_counts)
        error: BaseException | None = None
        async with anyio.create_task_group() as tg:
            if job_counts is not None:
                tg.start_soon(self._job.follow)
            tg.start_soon(self._watch, engine, tracker)
            try:
                yield
            except BaseException as exc:  # re-raised below, outside the task group: not wrapped
                error = exc
            finally:
                tg.cancel_scope.cancel()
        if error is not None:
            raise error

    async def _watch(self, engine: Watched, tracker: Tracker) -> None:
        try:
            await (self._live if self.mode == "bars" else self._lines)(engine, tracker)
        except Exception as exc:  # a display bug must never stop a run that is voiding invoices
            print(f"progress display stopped: {exc!r}", file=self._stream, flush=True)

    async def _lines(self, engine: Watched, tracker: Tracker) -> None:
        while True:
            await anyio.sleep(self.options.interval_s)
            rows = tracker.poll(engine)
            line = progress_line(rows, time.time())
            if (shared := self._job.text(rows)) is not None:
                line += f" | {shared}"
            print(line, file=self._stream, flush=True)

    async def _live(self, engine: Watched, tracker: Tracker) -> None:
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8}"),
            TextColumn("ETA {task.fields[eta]:>7}"),
            TextColumn("{task.fields[failed]}"),
            TextColumn("{task.fields[state]}"),
            console=self._console,
            auto_refresh=False,  # redrawn from this task only: no thread next to the event loop
            redirect_stdout=False,
            redirect_stderr=False,
        )
        tasks: dict[str, TaskID] = {}
        _draw(progress, tasks, tracker.poll(engine))  # the bars exist before the first frame
        with progress:
            try:
                while True:
                    await anyio.sleep(self.options.refresh_s)
                    _draw(progress, tasks, tracker.poll(engine), self._job)
            finally:
                _draw(progress, tasks, tracker.poll(engine), self._job)  # the last word: how it ended


def _draw(
    progress: Progress, tasks: dict[str, TaskID], rows: list[LaneProgress], job: JobTotals | None = None
) -> None:
    width = max(len(row.provider) for row in [*rows, _total(rows)])
    total = _total(rows)
    for row in [*rows, total]:
        eta = job_eta_s(rows) if row is total else row.eta_s
        failed = f"[red]{row.failed} failed[/red]" if row.failed else "[dim]0 failed[/dim]"
        style = _STATE_STYLE.get(row.state)
        state = f"[{style}]{row.state}[/{style}]" if style else row.state
        if row.provider not in tasks:
            tasks[row.provider] = progress.add_task(row.provider.ljust(width), total=row.total)
        progress.update(
            tasks[row.provider],
            completed=row.done,
            total=row.total,
            rate=_rate(row.rate),
            eta=_eta(eta, row.state),
            failed=failed,
            state=state,
        )
    if job is not None and (shared := job.text(rows)) is not None:
        if "job" not in tasks:
            tasks["job"] = progress.add_task("", total=None, rate="", eta="", failed="", state="")
        progress.update(tasks["job"], description=shared)
    progress.refresh()


class JobTotals:
    """The whole job's totals, as the ledger counts them, read every few seconds off the loop."""

    EVERY_S = 2.0

    def __init__(self, read: Callable[[], Mapping[tuple[str, ItemState], int]] | None) -> None:
        self._read = read
        self.done: int | None = None
        self.total = 0

    async def follow(self) -> None:
        assert self._read is not None
        while True:
            with contextlib.suppress(Exception):  # the run reports a ledger that fails; the display goes on
                counts = await anyio.to_thread.run_sync(self._read)
                self.total = sum(counts.values())
                self.done = sum(n for (_, state), n in counts.items() if state.is_final)
            await anyio.sleep(self.EVERY_S)

    def text(self, rows: Sequence[LaneProgress]) -> str | None:
        """'all workers: D/T done', when others did part of the job; None when this run did it all."""
        if self.done is None or self.done <= _total(list(rows)).done:
            return None
        percent = 100 * self.done // self.total if self.total else 100
        return f"all workers: {self.done}/{self.total} done ({percent}%)"


class _AboveLive(io.TextIOBase):
    """A text stream that prints whole lines through a rich console, above its live display."""

    def __init__(self, console: Console, stream: TextIO) -> None:
        self._console = console
        self._stream = stream
        self._partial = ""

    def isatty(self) -> bool:
        return self._stream.isatty()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._console.print(Text.from_ansi(line))
        return len(text)
