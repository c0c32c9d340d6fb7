"""Structured logs: JSON lines to the run's log file, a readable rendering on stderr.

Every event goes to the file; the console shows run-level events and problems only, so a
million-item run does not print a million lines. No event ever carries a credential: the
engine never logs headers, and a last processor blanks any key that looks like a secret.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

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
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
# Per-item events go to the file only; run-level ones also to the console.
CONSOLE_EVENTS = frozenset({"run.started", "run.finished", "job.ingested", "job.resumed", "job.redriven"})


def default_log_path(ledger: Path, job_id: str) -> Path:
    """Next to the ledger, named after the job."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id)
    return ledger.parent / f"{safe}.log"


def _redact(logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
    for key in _SECRET_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


class _Console:
    """A processor that also renders chosen events to a console stream, then passes them on.

    A stream with a true `run_level_only` attribute (--quiet's) gets only the warnings and
    errors about the run, none about one item (`void.*`). A traceback goes to the file only.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._run_level_only = bool(getattr(stream, "run_level_only", False))
        colors = bool(stream is not None and stream.isatty())
        self._render = structlog.dev.ConsoleRenderer(colors=colors, sort_keys=False)

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
        if self._stream is not None and self._shows(name, str(event.get("event"))):
            line = self._render(logger, name, {k: v for k, v in event.items() if k != "exc_info"})
            print(line, file=self._stream, flush=True)
        return event

    def _shows(self, level: str, event: str) -> bool:
        if self._run_level_only:
            return _LEVELS.get(level, 20) >= logging.WARNING and not event.startswith("void.")
        return _LEVELS.get(level, 20) >= logging.WARNING or event in CONSOLE_EVENTS


class _FileSink:
    """structlog's last step: appends each rendered line to the log file.

    Buffered rather than flushed per line (a flush per event was the largest single cost of
    logging in the benchmark): flushed at least every FLUSH_S, at once for warnings and errors,
    and on close. A kill -9 can lose under a second of lines; the ledger is the record.
    """

    FLUSH_S = 1.0

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._flushed = time.monotonic()

    def msg(self, line: bytes) -> None:
        self._file.write(line + b"\n")
        if (now := time.monotonic()) - self._flushed >= self.FLUSH_S:
            self._flush(now)

    def urgent(self, line: bytes) -> None:
        self._file.write(line + b"\n")
        self._flush(time.monotonic())

    def _flush(self, now: float) -> None:
        self._file.flush()
        self._flushed = now

    debug = info = msg
    warning = error = critical = exception = urgent


@contextmanager
def open_log(path: Path, *, console: TextIO | None, **context: Any) -> Iterator[Any]:
    """A bound structlog logger writing JSON lines to `path`; closes the file on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        logger = structlog.wrap_logger(
            _FileSink(f),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _redact,
                _Console(console),
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            context_class=dict,
        )
        yield logger.bind(**context)
