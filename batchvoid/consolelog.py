"""What of a run's log reaches stderr, and how: `--log-level`, `--log-format` and `--quiet`.

The log file gets every event, always: it is the run's audit trail. The console gets a choice,
so that a million-item run stays readable:

- `--log-level info` (the default): the run's own events (`run.started`, `run.finished`, the
  job recorded or resumed) and every warning and error, of which those about one item (a
  failed void) only for the first `ITEMS_SHOWN`: the summary counts the rest by reason.
- `--log-level debug`: every event the file gets, each item's too.
- `--log-level warning` / `error`: only those.
- `--quiet`: the start and end lines, and the warnings and errors about the run itself,
  none about one item.

`--log-format console` renders each line for a person (structlog's console renderer);
`json` writes the file's JSON line, for a log pipeline that reads stderr.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass
from typing import Literal, TextIO

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
Format = Literal["console", "json"]
ITEMS_SHOWN = 5  # warnings about single items on the console before the rest are left to the file
# The run's own events at info level: on the console by default, unlike the items' own.
RUN_EVENTS = frozenset({"run.started", "run.finished", "job.ingested", "job.resumed", "job.redriven"})
QUIET_EVENTS = frozenset({"run.started", "run.finished"})  # a quiet run still says when it began and ended
ITEMS_HIDDEN = (
    "more warnings about single items are not shown here: every one is in the log file, and "
    "the summary counts them by reason (--log-level debug shows them all)"
)


@dataclass(frozen=True, slots=True)
class ConsoleLog:
    """Which log events a run shows on stderr, and in what form."""

    level: str = "info"  # a key of LEVELS
    format: Format = "console"
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"log level {self.level!r}: one of {', '.join(LEVELS)}")

    def chooser(self) -> Chooser:
        """A new chooser for one run's console (it counts the item warnings it let through)."""
        return Chooser(self)


class Chooser:
    """Decides, event by event, whether a line goes to the console."""

    def __init__(self, options: ConsoleLog) -> None:
        self._threshold = LEVELS[options.level]
        self._quiet = options.quiet
        self._items_left = ITEMS_SHOWN
        self.note: str | None = None  # set once, at the first item warning held back: say so there

    def shows(self, level: str, event: str) -> bool:
        number = LEVELS.get(level, logging.ERROR if level in ("critical", "exception") else logging.INFO)
        if number < self._threshold:
            return False
        if self._threshold <= logging.DEBUG:
            return True
        one_item = event.startswith("void.")
        if self._quiet:
            return event in QUIET_EVENTS or (number >= logging.WARNING and not one_item)
        if number < logging.WARNING:
            return event in RUN_EVENTS
        if one_item:
            if self._items_left <= 0:
                if self._items_left == 0:
                    self.note, self._items_left = ITEMS_HIDDEN, -1
                return False
            self._items_left -= 1
        return True


class Unbroken(io.TextIOBase):
    """A run's console stream (stderr) that outlives its reader.

    Once what reads it is gone (`batchvoid run ... 2>&1 | head`), what the run writes to it goes
    nowhere, and the run goes on to its end with its own exit status: stopping a money run
    mid-way because a pager quit would leave it to be resumed for no reason. The log file has
    every line. The stream's descriptor is pointed at /dev/null, so no later write (Python's own
    flush at exit) meets the closed pipe either.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.gone = False  # the reader went away

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self._lost()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._lost()

    def isatty(self) -> bool:
        return not self.gone and self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]  # rich reads it; a StringIO's is None
        return getattr(self._stream, "encoding", None) or "utf-8"

    def _lost(self) -> None:
        self.gone = True
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
