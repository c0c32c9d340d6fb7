"""Job files: streamed, every bad row named by file and line."""

from __future__ import annotations

import csv
import json
import os
import re
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from batchvoid import config as configuration
from batchvoid import jobfile
from batchvoid.config import Config
from batchvoid.errors import JobFileError
from batchvoid.models import Item, RowError
from batchvoid.providers import REGISTRY
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
            f"unknown provider 'rapid' (configured: {', '.join(REGISTRY)}); did you mean 'rapyd'?",
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
        ('{"provider": "rapyd", "invoice_id": "\\ud800"}', "field 'invoice_id' holds a \\u escape of half"),
        ('{"provider": "rapyd", "invoice_id": "x", "note": ["\\udfff"]}', "field 'note' holds a \\u escape"),
        ('{"provider": "rapyd", "invoice_id": "x", "\\udc00": 1}', 'the key "\\udc00" holds a \\u escape'),
        ('{"provider": "rapyd", "invoice_id": ' + "1" * 4301 + "}", "a number over 4300 digits long"),
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
        ("job.csv", "provider,invoice_id\nrapyd," + "x" * 140_000, r"line 2: unreadable CSV \(field larger"),
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


@pytest.mark.parametrize(
    ("name", "first", "row", "line"),
    [
        ("job.csv", "provider,invoice_id\nrapyd,a\n", "rapyd,b{n}\n", 2),
        (
            "job.jsonl",
            '{"provider": "rapyd", "invoice_id": "a"}\n',
            '{{"provider": "rapyd", "invoice_id": "b{n}"}}\n',
            1,
        ),
    ],
)
def test_reading_is_a_stream(
    tmp_path: Path, profiles: Config, name: str, first: str, row: str, line: int
) -> None:
    """The first row comes out while the rest of the file is still unwritten: the reader never reads ahead to its end."""
    path = tmp_path / name
    os.mkfifo(path)
    first_out, all_written = threading.Event(), threading.Event()

    def write() -> None:
        with path.open("w", encoding="utf-8") as pipe:
            pipe.write(first)
            pipe.flush()
            first_out.wait(timeout=5)  # a reader that wants the whole file first gets it after this
            pipe.writelines(row.format(n=n) for n in range(1000))
            pipe.flush()
            all_written.set()  # before the close: a reader that waits for the end sees it set

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        stream = jobfile.read(path, profiles.profiles)
        assert next(stream) == Item(line, "rapyd", "a")
        assert not all_written.is_set(), "the first row came out only once the whole file was written"
        first_out.set()
        assert sum(1 for _ in stream) == 1000
    finally:
        first_out.set()
        writer.join(10)


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


# -- quoting ------------------------------------------------------------------------------

HEAD = "provider,invoice_id,note,memo\nrapyd,a,x,y\nrapyd,b,x,y\n"  # lines 1-3; line 4 is the test's
FIX = "nothing was sent. Close the quote where the cell should end"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            HEAD + 'rapyd,c,"oops,y\nrapyd,d,x,y\nrapyd,e,x,y\n',
            "line 4: a quote opens a cell here and never closes, so it would take in every line after it",
        ),
        (
            (HEAD + 'rapyd,c,"oops,y\nrapyd,d,x,y\n').replace("\n", "\r\n"),
            "line 4: a quote opens a cell here and never closes",
        ),
        (
            HEAD + 'rapyd,c,"oops,y\nrapyd,d,x,y\nrapyd,e,5 in",y\n',
            "line 4: a quoted cell opens here and runs on to line 6, taking in line 5, which reads as a job row",
        ),
        (
            'invoice_id,note,provider\na,x,rapyd\nb,"oops,rapyd\nc,x,rapyd\nd,x,rapyd\ne,x",rapyd\n',
            "line 3: a quoted cell opens here and runs on to line 6, taking in line 4",
        ),
        (
            'provider,invoice_id,"note\nrapyd,a,x\nrapyd,b,y"\nrapyd,c,z\n',
            "line 1: a quoted cell opens here and runs on to line 3, taking in line 2",
        ),
        (
            HEAD + 'rapyd,c,"oops,y\nrapyd,d,"late",y\n',
            "line 4: a quoted cell opens here and has text after its closing quote on line 5",
        ),
        (
            HEAD + 'rapyd,c,"ab"c,y\n',
            "line 4: a quoted cell opens here and has text after its closing quote, so a quote is stray",
        ),
        (
            HEAD + 'rapyd,c,"say ""hi"" and,y\nrapyd,d,x,y\n',
            "line 4: a quote opens a cell here and never closes",
        ),
        (
            HEAD + 'rapyd,c,"two\nlines","oops\nrapyd,d,x,y\n',
            "line 5: a quote opens a cell here and never closes",
        ),
        (
            HEAD + 'rapyd,c,"two\nlines","oops\nrapyd,d,x,y\nrapyd,e,x,y"\n',
            "line 5: a quoted cell opens here and runs on to line 7, taking in line 6",
        ),
        (
            HEAD + 'rapyd,c,"oops,y\n' + "rapyd,d,x,y\n" * 20_000,
            "line 4: a quote opens a cell here and runs on to line 10927, over 131072 characters",
        ),
    ],
    ids=[
        "open-at-eof",
        "open-at-eof-crlf",
        "stray-quote-closes-it-later",
        "provider-not-first-column",
        "in-the-header",
        "text-after-the-closing-quote-lines-later",
        "text-after-the-closing-quote",
        "open-at-eof-after-doubled-quotes",
        "second-cell-of-a-record-runs-away",
        "second-cell-of-a-record-takes-in-rows",
        "past-the-field-size-limit",
    ],
)
def test_broken_quoting_refuses_the_file_at_the_line_the_quote_opened(
    tmp_path: Path, profiles: Config, text: str, message: str
) -> None:
    """A quote that never closes, or closes only after taking in job rows, refuses the whole file at its opening line."""
    path = write(tmp_path / "job.csv", text)
    with pytest.raises(JobFileError) as refused:
        rows(path, profiles)
    assert str(refused.value).startswith(f"{path} {message}")
    assert FIX in str(refused.value)


@pytest.mark.parametrize(
    ("cell", "note", "next_line"),
    [
        ('"line one\nline two"', "line one\nline two", 6),
        ('"Acme\nInc., Springfield, IL, USA"', "Acme\nInc., Springfield, IL, USA", 6),
        ('"voided once already:\nrapyd, see ticket 12"', "voided once already:\nrapyd, see ticket 12", 6),
        ('"one\r\ntwo\rthree\n\nfour"', "one\r\ntwo\rthree\n\nfour", 9),
        ('"5"" screen, ""big"""', '5" screen, "big"', 5),
        ('5" screen', '5" screen', 5),
        ('ab"c"', 'ab"c"', 5),
    ],
    ids=[
        "two-lines",
        "second-line-with-the-header-column-count",
        "second-line-starting-with-a-provider",
        "crlf-cr-and-blank-lines",
        "doubled-quotes-and-commas",
        "quote-inside-an-unquoted-cell",
        "quotes-inside-an-unquoted-cell",
    ],
)
def test_well_formed_quoted_cells_are_read_exactly(
    tmp_path: Path, profiles: Config, cell: str, note: str, next_line: int
) -> None:
    """Notes spanning lines, doubled quotes and literal quotes in unquoted cells read back exactly; later lines keep their numbers."""
    path = write(tmp_path / "job.csv", HEAD + f"rapyd,c,{cell},y\nrapyd,d,x,y\n")
    assert rows(path, profiles)[2:] == [
        Item(4, "rapyd", "c", None, None, None, {"note": note, "memo": "y"}),
        Item(next_line, "rapyd", "d", None, None, None, {"note": "x", "memo": "y"}),
    ]


cells = st.text(
    alphabet=st.one_of(st.sampled_from(',"\r\n \t\ufeff'), st.characters(codec="utf-8")), max_size=30
)
LINE_BREAK = re.compile(r"\r\n|\r|\n")


def holds_a_job_row(cell: str) -> bool:
    """A line inside the cell starts with a provider name: the one kind of cell refused by design."""
    providers = configuration.builtin().profiles
    return any(line.split(",")[0].strip() in providers for line in LINE_BREAK.split(cell)[1:])


@given(
    records=st.lists(st.tuples(ids, cells, cells), min_size=1, max_size=12),
    terminator=st.sampled_from(["\r\n", "\n"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig"]),
)
def test_any_csv_writer_output_reads_back_identically(
    tmp_path_factory: pytest.TempPathFactory,
    records: list[tuple[str, str, str]],
    terminator: str,
    encoding: str,
) -> None:
    """Whatever text cells csv.writer writes (quotes, commas, line breaks, BOM, CRLF) read back unchanged, each at its physical line."""
    text = [cell for record in records for cell in record[1:]]
    assume(not any(holds_a_job_row(cell) for cell in text))
    # Before CPython 3.11.9 (gh-67044) csv.writer leaves a bare \r unquoted unless the line
    # terminator has one, which is not well-formed CSV: no reader can tell it from a line end.
    assume(terminator == "\r\n" or not any(re.search("\r(?!\n)", cell) for cell in text))
    path = tmp_path_factory.mktemp("prop") / "job.csv"
    with path.open("w", newline="", encoding=encoding) as f:
        writer = csv.writer(f, lineterminator=terminator)
        writer.writerow(["provider", "invoice_id", "note", "memo"])
        writer.writerows(("rapyd", *record) for record in records)
    expected, line = [], 2
    for invoice_id, note, memo in records:
        expected.append(Item(line, "rapyd", invoice_id, None, None, None, {"note": note, "memo": memo}))
        line += 1 + len(LINE_BREAK.findall(note)) + len(LINE_BREAK.findall(memo))
    assert list(jobfile.read(path, configuration.builtin().profiles)) == expected


def test_store_and_company_with_control_characters_are_bad_rows(tmp_path: Path, profiles: Config) -> None:
    """A row's store (sent as a header) or company_id (in the path) with a control character is refused by line."""
    path = write(
        tmp_path / "job.jsonl",
        '{"provider": "sellapp", "invoice_id": "1", "store": "main\\r\\nX-Evil: 1"}\n'
        '{"provider": "maple", "invoice_id": "2", "company_id": "cmp_a\\tb"}\n'
        '{"provider": "sellapp", "invoice_id": "3", "store": "main-store"}\n',
    )
    first, second, third = rows(path, profiles)
    assert isinstance(first, RowError)
    assert (first.line, first.message) == (
        1,
        "store 'main\\r\\nX-Evil: 1' has spaces or control characters or is over 200 long",
    )
    assert isinstance(second, RowError)
    assert "company_id 'cmp_a\\tb' has spaces or control characters" in second.message
    assert isinstance(third, Item)
    assert third.store == "main-store"


def test_a_quote_closed_midway_through_a_taken_in_row_refuses_the_file(
    tmp_path: Path, profiles: Config
) -> None:
    """A stray quote closed by an inch mark on the next row (`Tyrell 5"`) takes in that row: refused at line 3."""
    path = write(
        tmp_path / "job.csv",
        "provider,invoice_id,void_date,company_id,store,customer,reason\n"
        "campfire,5521,2026-11-30,,,Stark Industries,month-end reversal\n"
        'campfire,5522,,,,"Stark Industries,month-end reversal\n'
        'sellapp,884201,,,,Tyrell 5",abandoned checkout\n'
        "sellapp,884202,,,,Tyrell,abandoned checkout\n",
    )
    with pytest.raises(JobFileError) as refused:
        rows(path, profiles)
    assert str(refused.value).startswith(f"{path} line 3: a quoted cell opens here and runs on to line 4")
    assert "taking in line 4, which reads as a job row" in str(refused.value)


_CELLS = st.one_of(
    st.sampled_from(
        ["", " ", " u-1 ", "a b", "x" * 201, "cmp_a", "cmpa", "2025-03-01", "2025-02-29", "rapyd"]
    ),
    st.text(max_size=4),
)
_ROWS = st.tuples(
    st.sampled_from(["rapyd", " maple ", "maple", "campfire", "sellapp", "chargeover", "rapid", ""]),
    *[_CELLS] * 5,
).map(list)


@settings(max_examples=500)
@given(
    columns=st.lists(st.sampled_from(["void_date", "company_id", "store", "note"]), unique=True),
    cells=st.lists(_ROWS, min_size=1, max_size=8),
    maple_company=st.booleans(),
)
def test_the_fast_csv_check_agrees_with_the_full_one(
    columns: list[str], cells: list[list[str]], maple_company: bool
) -> None:
    """Any CSV row gives the Item or RowError the full check (`_item`) gives for its fields."""
    profiles = configuration.builtin().profiles
    if not maple_company:
        profiles = {**profiles, "maple": replace(profiles["maple"], options={})}
    header = ["provider", "invoice_id", *columns]
    at = jobfile.dt.datetime(2025, 3, 1, tzinfo=jobfile.dt.UTC)
    void_dates = {name: profile.default_void_date(at) for name, profile in profiles.items()}
    check = jobfile._CsvRow(header, profiles, void_dates)
    for line, row in enumerate(cells, start=2):
        row = row[: len(header)]
        expected = jobfile._item(line, dict(zip(header, row, strict=True)), profiles, void_dates)
        assert check(line, row) == expected


def test_a_lone_surrogate_or_a_huge_number_refuses_the_file_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run` of a JSONL file with a lone surrogate or a 5000-digit id exits 2 naming file and line; a surrogate pair is text."""
    from click.testing import CliRunner

    from batchvoid.cli import main

    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "job.jsonl",
        '{"provider": "sellapp", "invoice_id": "1", "note": "\\ud83d\\ude00"}\n'
        '{"provider": "sellapp", "invoice_id": "2", "note": "\\ud800"}\n'
        '{"provider": "sellapp", "invoice_id": ' + "7" * 5000 + "}\n",
    )
    result = CliRunner().invoke(main, ["run", "job.jsonl", "--simulate", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.stderr
    assert "job.jsonl: 2 bad rows; nothing was sent" in result.stderr
    assert "job.jsonl line 2: field 'note' holds a \\u escape of half a UTF-16 pair" in result.stderr
    assert "job.jsonl line 3: a number over 4300 digits long" in result.stderr


@given(
    invoice_id=st.text(
        alphabet=st.one_of(
            st.characters(codec="ascii", exclude_characters=',"\r\n'),
            st.characters(codec="utf-8", exclude_characters=',"\r\n'),
        ),
        min_size=1,
        max_size=30,
    )
)
@example(invoice_id="a b")
@example(invoice_id="a\tb")
@example(invoice_id="a\x1fb")
@example(invoice_id="a\x7fb")
@example(invoice_id="a\u00a0b")  # no-break space
@example(invoice_id="a\u2003b")  # em space
@example(invoice_id="inv\u00e9-1")
def test_a_csv_row_means_what_the_same_jsonl_row_means(
    tmp_path_factory: pytest.TempPathFactory, invoice_id: str
) -> None:
    """The CSV fast path (ids checked without the regex when they are ASCII) accepts and refuses the
    ids that the full check of a JSONL row does, with the same words: spaces, tabs, control
    characters, Unicode spaces."""
    folder = tmp_path_factory.mktemp("same")
    profiles = configuration.builtin().profiles
    as_csv = write(folder / "job.csv", f"provider,invoice_id\nrapyd,{invoice_id}\n")
    as_jsonl = write(folder / "job.jsonl", json.dumps({"provider": "rapyd", "invoice_id": invoice_id}) + "\n")
    (from_csv,) = jobfile.read(as_csv, profiles)
    (from_jsonl,) = jobfile.read(as_jsonl, profiles)

    def meaning(row: Item | RowError) -> object:
        return row.message if isinstance(row, RowError) else row[1:]  # all but the line

    assert meaning(from_csv) == meaning(from_jsonl)
