"""The log pipeline: one JSON object per line, UTC timestamps, secrets blanked, tracebacks in the file."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import orjson
import pytest

from batchvoid import logs
from batchvoid.logs import open_log


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_each_event_is_one_json_line_with_its_context_level_and_utc_time(tmp_path: Path) -> None:
    path = tmp_path / "run.log"
    before = dt.datetime.now(dt.UTC)
    with open_log(path, console=None, job_id="march.csv") as log:
        log.info("void.succeeded", provider="rapyd", line=7, where=tmp_path)
        log.warning("void.failed", provider="maple", reason="HTTP 409: paid")
    after = dt.datetime.now(dt.UTC)
    first, second = lines(path)
    assert first == {
        "job_id": "march.csv",
        "provider": "rapyd",
        "line": 7,
        "where": str(tmp_path),  # a path as its text
        "event": "void.succeeded",
        "level": "info",
        "timestamp": first["timestamp"],
    }
    assert second["level"] == "warning"
    assert second["reason"] == "HTTP 409: paid"
    for line in (first, second):
        stamp = str(line["timestamp"])
        assert stamp.endswith("Z")
        assert len(stamp) == len("2026-12-02T21:08:11.227131Z")
        when = dt.datetime.fromisoformat(stamp)
        assert before - dt.timedelta(milliseconds=1) <= when <= after + dt.timedelta(milliseconds=1)


def test_the_timestamp_formats_each_second_once_and_keeps_microseconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stamp = logs._Stamp()
    for now, expected in [
        (1_700_000_000_000_001_999, "2023-11-14T22:13:20.000001Z"),
        (1_700_000_000_500_000_000, "2023-11-14T22:13:20.500000Z"),
        (1_700_000_001_250_000_000, "2023-11-14T22:13:21.250000Z"),  # the next second: formatted anew
        (1_700_086_400_000_000_000, "2023-11-15T22:13:20.000000Z"),
    ]:
        monkeypatch.setattr(logs.time, "time_ns", lambda now=now: now)
        assert stamp() == expected


def test_keys_that_name_a_secret_are_blanked_in_the_file_and_on_the_console(tmp_path: Path) -> None:
    path, console = tmp_path / "run.log", io.StringIO()
    with open_log(path, console=console, job_id="j") as log:
        log.warning("lane.odd", provider="rapyd", secret_key="s3cr3t-value", Signature="x", token="t0k3n")
    (line,) = lines(path)
    assert line["secret_key"] == "[redacted]"
    assert line["token"] == "[redacted]"
    text = path.read_text() + console.getvalue()
    assert "s3cr3t-value" not in text
    assert "t0k3n" not in text
    assert "lane.odd" in console.getvalue()


def test_a_traceback_goes_to_the_file_and_never_to_the_console(tmp_path: Path) -> None:
    path, console = tmp_path / "run.log", io.StringIO()
    with open_log(path, console=console, job_id="j") as log:
        try:
            raise RuntimeError("boom inside")  # noqa: TRY301 - a real traceback to render
        except RuntimeError as exc:
            log.error("run.aborted", reason="RuntimeError: boom inside", exc_info=exc)  # noqa: TRY400
    (line,) = lines(path)
    assert "Traceback" in str(line["exception"])
    assert "exc_info" not in line
    assert line["level"] == "error"
    assert "run.aborted" in console.getvalue()
    assert "Traceback" not in console.getvalue()


def test_a_warning_reaches_the_file_at_once_with_the_lines_before_it(tmp_path: Path) -> None:
    """Item lines are buffered (flushed every second); a warning or an error is written through at
    once, with what was buffered before it, so a kill -9 right after it loses neither."""
    path = tmp_path / "run.log"
    with open_log(path, console=None, job_id="j") as log:
        log.info("void.voided", provider="rapyd", line=2)
        log.warning("void.failed", provider="rapyd", line=3)
        written = [line["event"] for line in lines(path)]  # before the file is closed
        log.error("run.aborted", reason="x")
        assert [line["event"] for line in lines(path)] == [*written, "run.aborted"]
    assert written == ["void.voided", "void.failed"]


def test_item_lines_reach_the_file_in_pieces_of_64_kib(tmp_path: Path) -> None:
    """Under a second of item lines is written in one piece once 64 KiB of them gather (a
    write per 4 KiB let go of the GIL 16 times as often), and on close."""
    path = tmp_path / "run.log"
    with open_log(path, console=None, job_id="j") as log:
        while path.stat().st_size == 0:
            log.info("void.succeeded", provider="rapyd", invoice_id="inv_1", line=2, attempts=1)
        first = path.stat().st_size
        log.info("void.succeeded", provider="rapyd", invoice_id="inv_1", line=3, attempts=1)
        assert path.stat().st_size == first
    assert 60 * 1024 <= first <= 64 * 1024
    assert [line["line"] for line in lines(path)][-1] == 3
