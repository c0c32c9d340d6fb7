"""Job files: streamed, every bad row named by file and line."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchvoid import config as configuration
from batchvoid import jobfile
from batchvoid.config import Config
from batchvoid.errors import JobFileError
from batchvoid.jobfile import RowError
from batchvoid.models import Item
from tests.conftest import write


def rows(path: Path, profiles: Config) -> list[Item | RowError]:
    return list(jobfile.read(path, profiles.profiles))


def test_csv_rows_become_items_with_metadata(tmp_path: Path, profiles: Config) -> None:
    """A CSV row keeps its known fields apart and every other column as metadata."""
    path = write(
        tmp_path / "job.csv",
        "provider,invoice_id,void_date,customer\nrapyd,invoice_1,,Acme\ncampfire,77,2026-01-31,Globex\n",
    )
    assert rows(path, profiles) == [
        Item(2, "rapyd", "invoice_1", None, None, None, {"customer": "Acme"}),
        Item(3, "campfire", "77", "2026-01-31", None, None, {"customer": "Globex"}),
    ]


def test_jsonl_rows_become_items(tmp_path: Path, profiles: Config) -> None:
    """A JSONL object gives an item; integer ids are accepted, nested metadata kept as JSON."""
    path = write(
        tmp_path / "job.jsonl",
        '{"provider": "sellapp", "invoice_id": 884301, "store": "main", "tags": ["a"]}\n\n'
        '{"provider": "maple", "invoice_id": "u-1", "company_id": "cmp_x"}\n',
    )
    assert rows(path, profiles) == [
        Item(1, "sellapp", "884301", None, None, "main", {"tags": '["a"]'}),
        Item(3, "maple", "u-1", None, "cmp_x", None, {}),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "rapid,inv_1,",
            "unknown provider 'rapid' (configured: chargeover, rapyd, campfire, maple, sellapp); "
            "did you mean 'rapyd'?",
        ),
        ("rapyd,,", "empty invoice_id"),
        (",inv_1,", "empty provider"),
        ("rapyd,inv 1,", "invoice_id 'inv 1' has spaces or control characters"),
        ("campfire,5,2024-02-30", "bad void_date '2024-02-30': use YYYY-MM-DD, a real date"),
        ("campfire,5,30/01/2024", "bad void_date '30/01/2024'"),
        ("rapyd,inv_1,,extra", "wrong column count: 4 values for the 3 header columns"),
    ],
)
def test_each_bad_csv_row_is_named_by_line(tmp_path: Path, profiles: Config, line: str, message: str) -> None:
    """Every kind of bad CSV row gives an error with its line number and what is wrong."""
    path = write(tmp_path / "job.csv", f"provider,invoice_id,void_date\nrapyd,ok_1,\n{line}\n")
    result = rows(path, profiles)
    assert isinstance(result[0], Item)
    assert isinstance(result[1], RowError)
    assert result[1].line == 3
    assert message in result[1].message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"provider": "rapyd", "invoice_id": "x"', "malformed JSON: Expecting ',' delimiter"),
        ('["rapyd", "x"]', "expected a JSON object, found list"),
        ('{"provider": "rapyd", "invoice_id": true}', "invoice_id must be a string"),
        ('{"provider": "maple", "invoice_id": "u1", "company_id": "acme"}', "must start with 'cmp_'"),
    ],
)
def test_each_bad_jsonl_row_is_named_by_line(
    tmp_path: Path, profiles: Config, text: str, message: str
) -> None:
    """Every kind of bad JSONL row gives an error with its line number and what is wrong."""
    path = write(tmp_path / "job.jsonl", '{"provider": "rapyd", "invoice_id": "ok"}\n' + text + "\n")
    result = rows(path, profiles)
    assert isinstance(result[1], RowError)
    assert result[1].line == 2
    assert message in result[1].message


def test_maple_row_needs_a_company(tmp_path: Path, profiles: Config) -> None:
    """A Maple row with no company_id, where the profile sets none either, is a row error."""
    without = {**profiles.profiles, "maple": replace(profiles.profiles["maple"], options={})}
    path = write(tmp_path / "job.csv", "provider,invoice_id\nmaple,u-1\n")
    (result,) = list(jobfile.read(path, without))
    assert isinstance(result, RowError)
    assert "no company_id" in result.message


def test_multiline_csv_record_reports_its_first_line(tmp_path: Path, profiles: Config) -> None:
    """A quoted field spanning lines does not shift the line numbers of later rows."""
    path = write(
        tmp_path / "job.csv",
        'provider,invoice_id,note\nrapyd,a,"two\nlines"\nrapid,b,x\n',
    )
    result = rows(path, profiles)
    assert isinstance(result[1], RowError)
    assert result[1].line == 4


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("job.csv", "invoice_id\nx\n", "line 1: header row lacks provider"),
        ("job.csv", "provider,invoice_id,provider\n", "names column 'provider' twice"),
        ("job.csv", "\n\n", "empty job file"),
        ("job.txt", "provider,invoice_id\n", "unknown job file type '.txt'"),
    ],
)
def test_unusable_files_are_refused(
    tmp_path: Path, profiles: Config, name: str, text: str, message: str
) -> None:
    """A file with no usable header or of an unknown type is refused as a whole."""
    path = write(tmp_path / name, text)
    with pytest.raises(JobFileError, match=message):
        rows(path, profiles)


def test_non_utf8_file_is_refused(tmp_path: Path, profiles: Config) -> None:
    """A file that is not UTF-8 is refused with a message saying so."""
    path = tmp_path / "job.csv"
    path.write_bytes(b"provider,invoice_id\nrapyd,caf\xe9\n")
    with pytest.raises(JobFileError, match="not valid UTF-8"):
        rows(path, profiles)


def test_reading_is_a_stream(tmp_path: Path, profiles: Config) -> None:
    """Rows are produced one at a time: a bad row far down does not stop the first from coming out."""
    path = write(tmp_path / "job.csv", "provider,invoice_id\nrapyd,a\n" + "rapyd,b\n" * 1000 + "\xff")
    stream = jobfile.read(path, profiles.profiles)
    assert next(stream) == Item(2, "rapyd", "a")


def test_bom_and_spreadsheet_filler_are_ignored(tmp_path: Path, profiles: Config) -> None:
    """A UTF-8 BOM, header case and rows of empty cells from spreadsheets do not count as rows."""
    path = write(tmp_path / "job.csv", "\ufeffProvider, Invoice_ID \nrapyd,a\n,\n")
    assert rows(path, profiles) == [Item(2, "rapyd", "a")]


ids = st.text(alphabet=st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=60).filter(
    lambda s: s.strip() == s and "\x85" not in s
)


@given(invoice_ids=st.lists(ids, min_size=1, max_size=20))
def test_any_printable_id_round_trips_through_csv_and_jsonl(
    tmp_path_factory: pytest.TempPathFactory, invoice_ids: list[str]
) -> None:
    """Whatever printable id a row holds comes back unchanged from either format."""
    profiles = configuration.builtin().profiles
    folder = tmp_path_factory.mktemp("prop")

    with (folder / "job.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["provider", "invoice_id"])
        writer.writerows(["rapyd", i] for i in invoice_ids)
    (folder / "job.jsonl").write_text(
        "".join(json.dumps({"provider": "rapyd", "invoice_id": i}) + "\n" for i in invoice_ids),
        encoding="utf-8",
    )
    for name in ("job.csv", "job.jsonl"):
        got = [r.invoice_id for r in jobfile.read(folder / name, profiles) if isinstance(r, Item)]
        assert got == invoice_ids
