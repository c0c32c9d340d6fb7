"""The exceptions batchvoid raises, all rooted at one base class.

```
BatchVoidError
  ConfigError        bad or missing configuration, missing credential env var
  JobFileError       bad job file: unreadable, bad header, or bad rows (file, line, what is wrong)
  LedgerError        ledger unreadable, schema mismatch, job file changed since the job began
    LedgerLockedError  another live run holds the job
```

A provider's answer is never an exception: adapters turn it into an `Outcome`.
"""

from __future__ import annotations


class BatchVoidError(Exception):
    """Raised for every error batchvoid reports to its user; the message says what to do."""


class ConfigError(BatchVoidError):
    """Raised when the configuration file, a provider profile or a credential is unusable."""


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
