"""Structured logs: JSON lines to the run's log file, a readable rendering on stderr.

Every event goes to the file; the console shows run-level events and problems only, so a
million-item run does not print a million lines (`consolelog` says which, and in what form).
No event ever carries a credential: the engine never logs headers, and a last processor blanks
any key that looks like a secret.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

from batchvoid.consolelog import ConsoleLog
from batchvoid.errors import LogFileError, os_cause

_SECRET_KEYS = frozenset(
    {
        "authorization",
        "signature",
        "secret",
        "secret_key",
        "password",
        "token",
        "api_key",
        "access_key",
        "salt",
    }
)


def default_log_path(ledger: Path | str, job_id: str) -> Path:
    """Next to the ledger file (a database's: in the working directory), named after the job."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id)
    return (ledger.parent if isinstance(ledger, Path) else Path()) / f"{safe}.log"


class _Stamp:
    """ISO 8601 UTC timestamps with microseconds, as structlog's TimeStamper(fmt="iso", utc=True)
    writes them, at a third of its cost: the date and time are formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        second, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{nanoseconds // 1000:06d}Z"


def _redact(event: EventDict) -> None:
    if not _SECRET_KEYS.isdisjoint(event):
        for key in _SECRET_KEYS.intersection(event):
            event[key] = "[redacted]"


class _Console:
    """A processor that also renders chosen events to a console stream, then passes them on.

    Which, and as what, `consolelog.ConsoleLog` says. A traceback goes to the file only.
    """

    def __init__(self, stream: TextIO | None, options: ConsoleLog) -> None:
        self._stream = stream
        self._chooser = options.chooser()
        self._json = options.format == "json"
        colors = bool(stream is not None and stream.isatty())
        self._render = structlog.dev.ConsoleRenderer(colors=colors, sort_keys=False)

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
        if self._stream is None:
            return event
        if self._chooser.shows(name, str(event.get("event"))):
            self._print(logger, name, {k: v for k, v in event.items() if k != "exc_info"})
        elif (note := self._chooser.note) is not None:
            self._chooser.note = None
            context = {k: event[k] for k in ("job_id", "run_id") if k in event}
            self._print(logger, "info", {**context, "note": note, "event": "console.items_hidden",
                                         "level": "info", "timestamp": event["timestamp"]})  # fmt: skip
        return event

    def _print(self, logger: WrappedLogger, name: str, event: EventDict) -> None:
        line = orjson.dumps(event, default=str).decode() if self._json else self._render(logger, name, event)
        print(line, file=self._stream, flush=True)


class _Render:
    """The whole pipeline as one processor (a chain of six cost twice as much per line, and a
    run writes a line per item): level, timestamp, redaction, the console, a traceback as text
    for the file only, and the JSON line."""

    def __init__(self, console: TextIO | None, options: ConsoleLog) -> None:
        self._console = _Console(console, options)
        self._stamp = _Stamp()

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> bytes:
        """The event's JSON line (`logger` and `name` as structlog passes them to a processor)."""
        event["level"] = name
        event["timestamp"] = self._stamp()
        _redact(event)
        self._console(logger, name, event)
        if "exc_info" in event:
            event = structlog.processors.format_exc_info(logger, name, event)
        return orjson.dumps(event, default=str)


class _FileSink:
    """The logger's last step: appends each rendered line to the log file.

    Buffered rather than flushed per line (a flush per event was the largest single cost of
    logging in the benchmark): flushed at least every FLUSH_S, at once for warnings and errors,
    and on close. A kill -9 can lose under a second of lines; the ledger is the record. A write
    that fails (a full disk) raises LogFileError, which stops the run: its log is its audit trail.
    """

    FLUSH_S = 1.0
    # Bytes buffered between writes: 16 times the file's own (4 KiB here). Each write is a
    # system call that lets go of the GIL, and a ledger thread that takes it can keep the loop
    # waiting; a run writes 0.3 KB of lines per item.
    BUFFER = 64 * 1024

    def __init__(self, file: BinaryIO, path: Path) -> None:
        self._file = file
        self._path = path
        self._flushed = time.monotonic()
        self.failed: str | None = None  # the first write error: every later write says it again

    def msg(self, line: bytes) -> None:
        now = time.monotonic()
        self._write(line, flush=now - self._flushed >= self.FLUSH_S, now=now)

    def urgent(self, line: bytes) -> None:
        self._write(line, flush=True, now=time.monotonic())

    def _write(self, line: bytes, *, flush: bool, now: float) -> None:
        if self.failed:
            raise LogFileError(self.failed)
        try:
            self._file.write(line + b"\n")
            if flush:
                self._file.flush()
                self._flushed = now
        except OSError as exc:
            self.failed = f"{self._path}: cannot write the log file: {os_cause(exc)}"
            raise LogFileError(self.failed) from exc


class Logger:
    """A logger bound to a run's context, with structlog's call shape (`log.info(event, **fields)`).

    structlog's bound logger takes the event through three layers of calls before the one
    processor here (`_Render`) and the sink, and a run logs a line per item: a line cost 48,700
    instructions through them and costs 34,800 without (cachegrind, an item's line). The lines
    are the same: the context, then the fields, then the event, level and timestamp.
    """

    __slots__ = ("_context", "_render", "_sink")

    def __init__(self, sink: _FileSink, render: _Render, context: dict[str, Any]) -> None:
        self._sink, self._render, self._context = sink, render, context

    def info(self, event: str, **fields: Any) -> None:
        fields = {**self._context, **fields, "event": event}
        self._sink.msg(self._render(self._sink, "info", fields))

    def warning(self, event: str, **fields: Any) -> None:
        fields = {**self._context, **fields, "event": event}
        self._sink.urgent(self._render(self._sink, "warning", fields))

    def error(self, event: str, **fields: Any) -> None:
        fields = {**self._context, **fields, "event": event}
        self._sink.urgent(self._render(self._sink, "error", fields))

    def exception(self, event: str, **fields: Any) -> None:
        """An error with the exception being handled, whose traceback goes to the file."""
        fields.setdefault("exc_info", True)
        self.error(event, **fields)


@contextmanager
def open_log(
    path: Path, *, console: TextIO | None, console_log: ConsoleLog | None = None, **context: Any
) -> Iterator[Logger]:
    """A bound logger writing JSON lines to `path` (and some to `console`); closes the file on exit.

    The directory must exist: a missing one is an error, never created (it may be a volume
    that is not mounted).
    """
    try:
        f = path.open("ab", buffering=_FileSink.BUFFER)
    except OSError as exc:
        raise LogFileError(f"{path}: cannot open the log file: {os_cause(exc)}; or pass --log-file") from exc
    sink = _FileSink(f, path)
    try:
        yield Logger(sink, _Render(console, console_log or ConsoleLog()), context)
    finally:
        try:
            f.close()
        except OSError as exc:
            if not sink.failed:  # a failure already reported is not reported twice
                raise LogFileError(f"{path}: cannot write the log file: {os_cause(exc)}") from exc
            with contextlib.suppress(OSError):
                f.close()
