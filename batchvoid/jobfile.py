"""Reads job files (CSV with a header row, or JSONL) as a stream of items and row errors.

Nothing here holds the file in memory: rows are checked one at a time and yielded, so a
ten-million-row file costs what one row costs. The caller decides what to do with errors
(the ledger refuses the whole file if there is any).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import itertools
import json
import re
import sys
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from batchvoid.config import Profile
from batchvoid.errors import JobFileError
from batchvoid.models import Item, RowError
from batchvoid.suggest import did_you_mean

REQUIRED = ("provider", "invoice_id")
OPTIONAL = ("void_date", "company_id", "store")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_BAD_ID = re.compile(r"[\s\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_ID = 200
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def refusal(path: str | Path, errors: Sequence[RowError], error_count: int) -> JobFileError:
    """The error for a job file refused for its bad rows (`errors`: the first few of them)."""
    if not error_count:
        return JobFileError(f"{path}: no items: the file has a header but no rows")
    shown = "\n  ".join(f"{path} line {row.line}: {row.message}" for row in errors)
    hidden = error_count - len(errors)
    more = f"\n  ... and {hidden} more" if hidden else ""
    plural = "s" * (error_count != 1)
    return JobFileError(
        f"{path}: {error_count} bad row{plural}; nothing was sent. Fix them and run again:\n  {shown}{more}",
        errors=tuple(f"{path} line {row.line}: {row.message}" for row in errors),
        error_count=error_count,
    )


def read(
    path: str | Path, profiles: Mapping[str, Profile], *, at: dt.datetime | None = None
) -> Iterator[Item | RowError]:
    """Yield each row of the job file as an Item, or a RowError saying what is wrong with it.

    A file that cannot be read as a whole raises JobFileError: not UTF-8, no usable header, or
    broken CSV quoting (a quote that never closes, or a quoted cell that takes in job rows),
    which makes every later line meaningless.

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
    try:
        if kind == "csv":
            yield from _csv_items(path, profiles, void_dates)
            return
        for line, fields in _jsonl_rows(path):
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


def _csv_items(
    path: Path, profiles: Mapping[str, Profile], void_dates: Mapping[str, str | None]
) -> Iterator[Item | RowError]:
    """The CSV file's rows as items or row errors, each row through `_CsvRow`'s fast check."""
    check: _CsvRow | None = None
    for line, cells in _csv_rows(path, profiles):
        if isinstance(cells, str):
            yield RowError(line, cells)
            continue
        if check is None:  # the first row is the header; _csv_rows checked it
            check = _CsvRow(cells, profiles, void_dates)
            continue
        yield check(line, cells)


CsvRow = tuple[int, list[str] | str]  # (line, cells; the header's first) or (line, what is wrong)


def _csv_rows(path: Path, providers: Collection[str]) -> Iterator[CsvRow]:
    """The header's cells (stripped, lower case), then each row's cells of the header's count."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        # strict: a quote left open at the end of the file, or text after a closing quote, is
        # an error instead of a guess. A quote inside an unquoted cell (ab"c) stays a literal
        # character, in any mode: it opens no quoted cell, so it cannot take in other rows
        # (and only a hand edit makes one: csv writers and spreadsheets quote such a cell).
        reader = csv.reader(f, strict=True)
        header: list[str] | None = None
        last = 0  # physical line the previous record ended on; a record starts after it
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise _broken_quote(path, last + 1, reader.line_num, exc) from exc
            line, last = last + 1, reader.line_num
            if not "".join(row).strip():
                continue  # blank lines and spreadsheet filler like ",,,"
            first = header is None
            if header is None:
                header = [cell.strip().lower() for cell in row]
                if problem := _header_problem(header):
                    raise JobFileError(f"{path} line {line}: {problem}")
            if last > line and (taken := _row_taken_in(row, line, header, providers)):
                opened, swallowed = taken
                raise JobFileError(
                    f"{path} line {opened}: a quoted cell opens here and runs on to line {last}, "
                    f"taking in line {swallowed}, which reads as a job row; {_QUOTE_FIX}"
                )
            if first:
                yield line, header
                continue
            if len(row) != len(header):
                yield (
                    line,
                    f"wrong column count: {len(row)} values for the {len(header)} header columns",
                )
                continue
            yield line, row
        if header is None:
            raise JobFileError(f"{path}: empty job file: expected a header row with provider,invoice_id")


_QUOTE_FIX = (
    "nothing was sent. Close the quote where the cell should end (or delete it if it is stray), "
    "or export the file from its spreadsheet again"
)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # what ends a physical line when read with newline=""


def _row_taken_in(
    row: list[str], line: int, header: list[str], providers: Collection[str]
) -> tuple[int, int] | None:
    """(opening line, taken-in line) of a quoted cell in a record from `line` that holds a job row.

    Only a quoted cell can span lines, so each line break in a cell is one physical line of the
    file. A line inside the cell reads as a job row if, on its own, it has the header's column
    count and a configured provider in the provider column: a note's second line ("Acme, Inc.")
    does not, a row the stray quote took in does. The cell's last line is cut where the quote
    closed (`sellapp,884201,,Tyrell 5"`), so there fewer columns do, if a provider and an
    invoice id (no spaces) are among them: "rapyd, see ticket 12" is a note.
    """
    kind, invoice = header.index("provider"), header.index("invoice_id")
    at = line  # physical line the current cell starts on
    for cell in row:
        inner = _LINE_BREAK.split(cell)
        for offset, text in enumerate(inner[1:], start=1):
            fields = next(csv.reader([text]), [])
            whole = len(fields) == len(header)
            cut = offset == len(inner) - 1 and max(kind, invoice) < len(fields) <= len(header)
            if (whole or cut) and fields[kind].strip() in providers and _an_id(fields[invoice]):
                return at, at + offset
        at += len(inner) - 1
    return None


def _an_id(text: str) -> bool:
    text = text.strip()
    return bool(text) and not _BAD_ID.search(text)


def _broken_quote(path: Path, start: int, end: int, exc: csv.Error) -> JobFileError:
    """The error for a CSV record from line `start` that the csv reader gave up on at line `end`."""
    trouble = _quote_trouble(path, start, end)
    if trouble is None:
        return JobFileError(
            f"{path} line {end}: unreadable CSV ({exc}); nothing was sent. "
            "Export the file from its spreadsheet again"
        )
    opened, closed, at_eof = trouble
    if closed is not None:
        where = "" if closed == opened else f" on line {closed}"
        return JobFileError(
            f"{path} line {opened}: a quoted cell opens here and has text after its closing "
            f"quote{where}, so a quote is stray or missing; {_QUOTE_FIX}"
        )
    runs = "never closes"
    if not at_eof:  # the csv reader stopped at its field size limit
        runs = f"runs on to line {end}, over {csv.field_size_limit()} characters, without closing"
    return JobFileError(
        f"{path} line {opened}: a quote opens a cell here and {runs}, "
        f"so it would take in every line after it; {_QUOTE_FIX}"
    )


def _quote_trouble(path: Path, start: int, end: int) -> tuple[int, int | None, bool] | None:
    """Re-read the record from line `start` to line `end` and find the quoted cell that broke it.

    Returns (line the cell opened on, line with text after its closing quote or None if it is
    still open at `end`, whether the file ends there), or None if no quoted cell is at fault.
    This follows the csv module's excel dialect, and runs only once the csv reader has failed.
    """
    opened = 0  # line the quoted cell we are in (or just closed) opened on
    quoted = closing = False  # inside a quoted cell / just after a quote inside one
    cell_start = True
    with path.open(encoding="utf-8-sig", newline="") as f:
        for number, text in enumerate(itertools.islice(f, start - 1, end), start=start):
            for char in text:
                if closing:
                    closing = False
                    if char == '"':  # a doubled quote: still inside the cell
                        continue
                    quoted = False
                    if char not in ",\r\n":
                        return opened, number, False
                if quoted:
                    closing = char == '"'
                elif char in ",\r\n":
                    cell_start = True
                elif cell_start and char == '"':
                    quoted, opened = True, number
                else:
                    cell_start = False
        if quoted and not closing:
            return opened, None, f.readline() == ""
    return None


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
            except ValueError:  # the only other: an integer past Python's int-str digit limit
                digits = sys.get_int_max_str_digits()
                yield line, f"a number over {digits} digits long, which no id or field is: {_BIG_FIX}"
                continue
            if not isinstance(value, dict):
                yield line, f"expected a JSON object, found {type(value).__name__}"
                continue
            if "\\u" in text and (where := _lone_surrogate(value)) is not None:
                yield line, f"{where} holds {_SURROGATE_FIX}"
                continue
            yield line, value


_BIG_FIX = "check the line (an id is best written as a string)"
_SURROGATE_FIX = (
    "a \\u escape of half a UTF-16 pair (a lone surrogate, \\ud800 to \\udfff), which is no "
    "character: fix the program that wrote the file"
)


def _lone_surrogate(value: Any, where: str = "") -> str | None:
    """Where in a parsed JSON value a string holds a lone surrogate ("field x", "a key"), if anywhere."""
    if isinstance(value, str):
        return None if _SURROGATE.search(value) is None else (where or "a value")
    if isinstance(value, dict):
        for key, inner in value.items():
            if _SURROGATE.search(key) is not None:
                return f'the key "{key.encode("utf-8", "backslashreplace").decode()[:40]}"'
            if (found := _lone_surrogate(inner, where or f"field {key!r}")) is not None:
                return found
    elif isinstance(value, list):
        for inner in value:
            if (found := _lone_surrogate(inner, where)) is not None:
                return found
    return None


class _CsvRow:
    """The check of a CSV row of one file's header: a good row fast, the rest through `_item`.

    The fast path takes the cells by their header position and only accepts: a row it has any
    doubt about goes through `_item`, which makes the same Item of a good row and words what is
    wrong with a bad one, so the two cannot disagree on what a row means.
    """

    __slots__ = ("_at", "_column", "_extra", "_header", "_profiles", "_rules", "_void_dates")

    def __init__(
        self, header: list[str], profiles: Mapping[str, Profile], void_dates: Mapping[str, str | None]
    ) -> None:
        self._header, self._profiles, self._void_dates = header, profiles, void_dates
        at = {name: n for n, name in enumerate(header)}
        self._at = tuple(at.get(name) for name in (*REQUIRED, *OPTIONAL))
        self._extra = tuple((n, name) for n, name in enumerate(header) if name not in (*REQUIRED, *OPTIONAL))
        self._column = at  # a provider's own row fields (Maxio's void_reason) are among the extra columns
        # Per provider: its default void date, and its row fields' checks (see `_row_checks`).
        self._rules = {
            name: (void_dates.get(name), _row_checks(profile)) for name, profile in profiles.items()
        }

    def __call__(self, line: int, cells: list[str]) -> Item | RowError:
        provider_at, invoice_at, date_at, company_at, store_at = self._at
        assert provider_at is not None and invoice_at is not None  # noqa: PT018 - the header has them
        provider, invoice_id = cells[provider_at].strip(), cells[invoice_at].strip()
        rule = self._rules.get(provider)
        if rule is not None and invoice_id and _fits(invoice_id):
            void_date = None if date_at is None else cells[date_at].strip() or None
            company_id = None if company_at is None else cells[company_at].strip() or None
            store = None if store_at is None else cells[store_at].strip() or None
            default_date, checks = rule
            if checks:
                given = {"void_date": void_date, "company_id": company_id, "store": store}
                for name, *_ in checks:
                    if name not in given:
                        at = self._column.get(name)
                        given[name] = None if at is None else cells[at].strip() or None
                fields_ok = all(
                    _field_problem(provider, name, given[name], prefix, needed, choices, longest) is None
                    for name, prefix, needed, choices, longest in checks
                )
            else:
                fields_ok = True
            if (
                fields_ok
                and (void_date is None or _is_date(void_date))
                and (company_id is None or _fits(company_id))
                and (store is None or _fits(store))
            ):
                metadata = {name: cells[n] for n, name in self._extra} if self._extra else {}
                return Item(
                    line, provider, invoice_id, void_date or default_date, company_id, store, metadata
                )
        return _item(line, dict(zip(self._header, cells, strict=True)), self._profiles, self._void_dates)


RowCheck = tuple[str, str | None, bool, tuple[str, ...], int | None]


def _row_checks(profile: Profile) -> tuple[RowCheck, ...]:
    """The provider's row fields that are checked: (name, required prefix, needed in the row,
    the values it may take, its longest value)."""
    return tuple(
        (f.name, f.prefix, f.required and f.name not in profile.options, f.choices, f.max_length)
        for f in profile.spec.row_fields
        if f.prefix is not None or f.required or f.choices or f.max_length is not None
    )


def _field_problem(
    provider: str,
    name: str,
    value: str | None,
    prefix: str | None,
    needed: bool,
    choices: tuple[str, ...],
    longest: int | None = None,
) -> str | None:
    """What is wrong with a row field's value (stripped; None: not given), or None."""
    if value is None:
        return f"no {name}: give one in this row or set {name} in [providers.{provider}]" if needed else None
    if prefix is not None and not value.startswith(prefix):
        return f"{name} {value[:40]!r} must start with {prefix!r}"
    if choices and value.lower() not in choices:
        return f"{name} {value[:40]!r} must be {' or '.join(choices)}, or empty"
    if longest is not None and len(value) > longest:
        return f"{name} is {len(value)} characters long; the provider takes at most {longest}"
    return None


def _fits(value: str) -> bool:
    """True if `value` (stripped, not empty) may go into a path or a header (see `_item`)."""
    if len(value) > _MAX_ID:
        return False
    if value.isascii():  # the same answer as _BAD_ID for ASCII, in a fifth of the time
        return value.isprintable() and " " not in value
    return not _BAD_ID.search(value)


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
    if void_date is not None and not _is_date(void_date):
        problems.append(f"bad void_date {void_date[:40]!r}: use YYYY-MM-DD, a real date")
    ids = (("invoice_id", invoice_id), ("company_id", company_id), ("store", store))
    for name, value in ids:  # each goes into a path or a header
        if value is not None and (_BAD_ID.search(value) or len(value) > _MAX_ID):
            problems.append(
                f"{name} {value[:60]!r} has spaces or control characters or is over {_MAX_ID} long"
            )
    given = {"void_date": void_date, "company_id": company_id, "store": store}
    for name, prefix, needed, choices, longest in () if profile is None else _row_checks(profile):
        value = given[name] if name in given else text(name)
        problem = _field_problem(str(provider), name, value, prefix, needed, choices, longest)
        if problem is not None:
            problems.append(problem)
    if problems:
        return RowError(line, "; ".join(problems))
    assert provider is not None and invoice_id is not None  # noqa: PT018 - narrowed by the checks above
    metadata = {k: _as_text(v) for k, v in fields.items() if k not in REQUIRED and k not in OPTIONAL}
    void_date = void_date or void_dates.get(provider)
    return Item(line, provider, invoice_id, void_date, company_id, store, metadata)


def _unknown_provider(provider: str, profiles: Mapping[str, Profile]) -> str:
    return f"unknown provider {provider[:40]!r} (configured: {', '.join(profiles)})" + did_you_mean(
        provider, profiles
    )


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
