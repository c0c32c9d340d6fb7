"""The exceptions batchvoid raises, all rooted at one base class.

```
BatchVoidError
  ConfigError        bad or missing configuration; a credential that its variable, file or
                     command does not give
  JobFileError       bad job file: unreadable, bad header, or bad rows (file, line, what is wrong)
  LedgerError        ledger unusable (missing directory, read-only, full, damaged, not a ledger,
                     newer schema), a rehearsal or another target's results, a changed job file
    LedgerLockedError  another live run holds the job
  LogFileError       the run's log file cannot be opened or written
  ResultFileError    the run's summary or metrics file cannot be written
  RunInterrupted     SIGINT or SIGTERM came before the first request: nothing was sent
  RunAborted         a fault (disk full, a lost ledger, an unwritable log, a bug) stopped a run
```

A provider's answer is never an exception: adapters turn it into an `Outcome`.
"""

from __future__ import annotations

import errno


class BatchVoidError(Exception):
    """Raised for every error batchvoid reports to its user; the message says what to do."""


class ConfigError(BatchVoidError):
    """Raised when the configuration file, a provider profile or a credential is unusable.

    A credential's message names its variable, file or command and its key, never its value.
    """


class JobFileError(BatchVoidError):
    """Raised when a job file cannot be read or has bad rows; nothing has been sent."""

    def __init__(self, message: str, *, errors: tuple[str, ...] = (), error_count: int = 0) -> None:
        super().__init__(message)
        self.errors = errors
        self.error_count = error_count


class LedgerError(BatchVoidError):
    """Raised when the checkpoint ledger cannot be used for this run."""


class LedgerLockedError(LedgerError):
    """Raised when another live process is already running the same job on the same ledger."""


class LogFileError(BatchVoidError):
    """Raised when the run's log file cannot be opened or written (permissions, a full disk)."""


class ResultFileError(BatchVoidError):
    """Raised when the run's --summary-file or --metrics-file cannot be written."""


class RunInterrupted(BatchVoidError):
    """Raised when SIGINT or SIGTERM stops a run before it sent anything (during the ingest)."""


class RunAborted(BatchVoidError):
    """Raised when a fault stops a run that has started sending; its items are left for the next run.

    `requests` is how many requests this run sent before the fault (0: nothing was sent).
    """

    def __init__(self, message: str, *, requests: int) -> None:
        super().__init__(message)
        self.requests = requests


def os_cause(exc: OSError) -> str:
    """What the operating system said, and what to do about it, for a file batchvoid writes."""
    what = exc.strerror or str(exc)
    match exc.errno:
        case errno.ENOSPC | errno.EDQUOT:
            return f"{what}: free space on that disk (or raise the quota), then run the same command again"
        case errno.EFBIG:
            return f"{what}: the file reached the size limit for this process (ulimit -f)"
        case errno.EROFS:
            return f"{what}: the file system is mounted read-only; use a writable location"
        case errno.EACCES | errno.EPERM:
            return f"{what}: this user may not write there; fix the permissions or use another path"
        case errno.ENOENT:
            return f"{what}: its directory does not exist; create it or use another path"
        case errno.EIO:
            return f"{what}: the disk reported an I/O error; check that it is healthy (dmesg)"
        case _:
            return what
