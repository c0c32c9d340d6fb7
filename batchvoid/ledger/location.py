"""What a ledger location is: a file path (SQLite), or a `postgresql://` URL (PostgreSQL)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

LedgerLocation = Path | str  # a str only for a URL: a path is always a Path
URL_SCHEMES = ("postgresql://", "postgres://")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def is_url(location: object) -> bool:
    """Whether a --ledger value names a PostgreSQL database rather than a file."""
    return isinstance(location, str) and location.startswith(URL_SCHEMES)


def shown(location: LedgerLocation) -> str:
    """The location for messages, logs and suggested commands: a URL without its password."""
    if not is_url(location):
        return str(location)
    assert isinstance(location, str)
    # libpq takes a password as a query parameter too: postgresql://db/billing?password=...
    location = _QUERY_PASSWORD.sub(r"\1***", location)
    parts = urlsplit(location)
    if parts.password is None:
        return location
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
