"""Reads job files (CSV with a header row, or JSONL) as a stream of items and row errors.

Nothing here holds the file in memory: rows are checked one at a time and yielded, so a
ten-million-row file costs what one row costs. The caller decides what to do with errors
(the ledger refuses the whole file if there is any).
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchvoid.config import Profile
from batchvoid.errors import JobFileError
from batchvoid.models import Item

REQUIRED = ("provider", "invoice_id")
OPTIONAL = ("void_date", "company_id", "store")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_BAD_ID = re.compile(r"[\s\x00-\x1f\x7f]")
_MAX_ID = 200
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True, slots=True)
class RowError:
    """One bad row: where it is and what is wrong with it."""

    line: int
    message: str


def read(
    path: str | Path, profiles: Mapping[str, Profile], *, at: dt.datetime | None = None
) -> Iterator[Item | RowError]:
    """Yield each row of the job file as an Item, or a RowError saying what is wrong with it.

    A row of a profile that takes a void date (Campfire) and gives none gets the profile's,
    fixed once for the whole file at `at` (default: now), so a job that runs past midnight
    sends one date, and the ledger records the date each item is sent with.
    """
    path = Path(path)
    at = at or dt.datetime.now(dt.UTC)
    void_dates = {name: profile.default_void_date(at) for name, profile in profiles.items()}
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise JobFileError(f"{path}: unknown job file type {path.suffix!r}: use .csv, .jsonl or .ndjson")
    rows = _csv_rows(path) if kind == "csv" else _jsonl_rows(path)
    try:
        for line, fields in rows:
            if isinstance(fields, str):
                yield RowError(line, fields)
            else:
                yield _item(line, fields, profiles, void_dates)
    except UnicodeDecodeError as exc:
        raise JobFileError(f"{path}: not valid UTF-8 text ({exc.reason}): save it as UTF-8") from exc
    except OSError as exc:
        raise JobFileError(f"{path}: cannot read it: {exc.strerror or exc}") from exc


def sha256(path: str | Path) -> str:
    """The file's sha256, read in chunks; the ledger uses it to notice a changed job file."""
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError:
        raise JobFileError(f"{path}: no such job file") from None
    except OSError as exc:
        raise JobFileError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    return digest.hexdigest()


Row = tuple[int, dict[str, Any] | str]  # (line, fields) or (line, what is wrong)


def _csv_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header: list[str] | None = None
        last = 0  # physical line the previous record ended on; a record starts after it
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                yield reader.line_num, f"unreadable CSV: {exc}"
                last = reader.line_num
                continue
            line, last = last + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue  # blank lines and spreadsheet filler like ",,,"
            if header is None:
                header = [cell.strip().lower() for cell in row]
                if problem := _header_problem(header):
                    raise JobFileError(f"{path} line {line}: {problem}")
                continue
            if len(row) != len(header):
                yield (
                    line,
                    f"wrong column count: {len(row)} values for the {len(header)} header columns",
                )
                continue
            yield line, dict(zip(header, row, strict=True))
        if header is None:
            raise JobFileError(f"{path}: empty job file: expected a header row with provider,invoice_id")


def _header_problem(header: list[str]) -> str | None:
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        return f"header row lacks {', '.join(missing)} (found: {', '.join(header)})"
    seen: set[str] = set()
    for name in header:
        if not name:
            return "header row has an empty column name"
        if name in seen:
            return f"header row names column {name!r} twice"
        seen.add(name)
    return None


def _jsonl_rows(path: Path) -> Iterator[Row]:
    with path.open(encoding="utf-8-sig") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line, f"malformed JSON: {exc.msg} at column {exc.colno}"
                continue
            if not isinstance(value, dict):
                yield line, f"expected a JSON object, found {type(value).__name__}"
                continue
            yield line, value


def _item(
    line: int, fields: dict[str, Any], profiles: Mapping[str, Profile], void_dates: Mapping[str, str | None]
) -> Item | RowError:
    problems: list[str] = []

    def text(name: str) -> str | None:
        value = fields.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            problems.append(f"{name} must be a string, found {json.dumps(value)[:40]}")
            return None
        return str(value).strip() or None

    provider, invoice_id = text("provider"), text("invoice_id")
    void_date, company_id, store = text("void_date"), text("company_id"), text("store")
    profile = None
    if provider is None:
        problems.append("empty provider")
    elif (profile := profiles.get(provider)) is None:
        problems.append(_unknown_provider(provider, profiles))
    if invoice_id is None:
        problems.append("empty invoice_id")
    elif _BAD_ID.search(invoice_id) or len(invoice_id) > _MAX_ID:
        problems.append(
            f"invoice_id {invoice_id[:60]!r} has spaces or control characters or is over {_MAX_ID} long"
        )
    if void_date is not None and not _is_date(void_date):
        problems.append(f"bad void_date {void_date[:40]!r}: use YYYY-MM-DD, a real date")
    if profile is not None and "company_id" in profile.spec.options:
        if company_id is None and "company_id" not in profile.options:
            problems.append(
                f"no company_id: give one in this row or set company_id in [providers.{provider}]"
            )
        elif company_id is not None and not company_id.startswith("cmp_"):
            problems.append(f"company_id {company_id[:40]!r} must start with 'cmp_'")
    if problems:
        return RowError(line, "; ".join(problems))
    assert provider is not None and invoice_id is not None  # noqa: PT018 - narrowed by the checks above
    metadata = {k: _as_text(v) for k, v in fields.items() if k not in REQUIRED and k not in OPTIONAL}
    void_date = void_date or void_dates.get(provider)
    return Item(line, provider, invoice_id, void_date, company_id, store, metadata)


def _unknown_provider(provider: str, profiles: Mapping[str, Profile]) -> str:
    message = f"unknown provider {provider[:40]!r} (configured: {', '.join(profiles)})"
    if close := difflib.get_close_matches(provider, list(profiles), n=1):
        message += f"; did you mean {close[0]!r}?"
    return message


def _is_date(value: str) -> bool:
    if not _DATE.match(value):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))
