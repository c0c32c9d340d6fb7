"""batchvoid: void invoices in bulk across billing providers, resumably."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from batchvoid.errors import (
    BatchVoidError,
    ConfigError,
    JobFileError,
    LedgerError,
    LedgerLockedError,
)
from batchvoid.models import Item, ItemState, Outcome, OutcomeKind

try:
    __version__ = version("batchvoid")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = [
    "BatchVoidError",
    "ConfigError",
    "Item",
    "ItemState",
    "JobFileError",
    "LedgerError",
    "LedgerLockedError",
    "Outcome",
    "OutcomeKind",
    "__version__",
]
