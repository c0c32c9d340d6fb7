"""What reaches stderr: --log-level, --log-format, the cap on single items' warnings, --progress."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchvoid.cli import main
from batchvoid.consolelog import ITEMS_SHOWN, ConsoleLog
from batchvoid.logs import open_log
from tests.test_operator import CONTROL, example, fast_config, runner, write_job

__all__ = ["runner"]  # the fixture, used by name

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"


def events(stderr: str) -> list[str]:
    """The event names of console-format lines."""
    return [m[1] for m in re.finditer(rf"^{STAMP}\.\d+Z \[\w+ *\] (\S+)", stderr, re.MULTILINE)]


def test_past_the_first_few_item_warnings_the_console_says_where_the_rest_are(
    runner: CliRunner, tmp_path: Path
) -> None:
    """12 failed voids: stderr shows the first 5 and one line saying the rest are in the log file; the file has all 12."""
    rows = [("chargeover", f"paid_{n}") for n in range(12)] + [("rapyd", "ok")]
    args = ["run", write_job(tmp_path / "j.csv", rows), "--simulate", "--config", fast_config(tmp_path)]
    result = runner.invoke(main, [*args, "--progress", "none"])
    assert result.exit_code == 1
    shown = events(result.stderr)
    assert shown == ["run.started", *["void.failed"] * ITEMS_SHOWN, "console.items_hidden", "run.finished"]
    assert "every one is in the log file" in result.stderr
    logged = [json.loads(line)["event"] for line in (tmp_path / "j.csv.log").read_text().splitlines()]
    assert logged.count("void.failed") == 12
    assert "console.items_hidden" not in logged  # a word to the console, not an event of the run
    assert "12 items failed:" in result.stdout  # the summary counts them all


def test_log_level_debug_shows_every_event_and_warning_only_the_warnings(
    runner: CliRunner, tmp_path: Path
) -> None:
    """debug: each item's line, as many as the file has; warning: no info line at all."""
    rows = [("chargeover", f"paid_{n}") for n in range(8)] + [("rapyd", f"ok{n}") for n in range(3)]
    args = ["run", write_job(tmp_path / "j.csv", rows), "--simulate", "--config", fast_config(tmp_path)]
    debug = runner.invoke(main, [*args, "--progress", "none", "--log-level", "debug"])
    assert debug.exit_code == 1
    logged = [json.loads(line)["event"] for line in (tmp_path / "j.csv.log").read_text().splitlines()]
    assert events(debug.stderr) == logged
    assert events(debug.stderr).count("void.succeeded") == 3
    again = runner.invoke(main, [*args, "--progress", "none", "--log-level", "warning", "--retry-failed"])
    assert again.exit_code == 1
    assert events(again.stderr) == [
        *["void.failed"] * ITEMS_SHOWN,
        "console.items_hidden",
    ]  # 8 failed: capped


def test_log_format_json_writes_the_files_lines_to_stderr(runner: CliRunner, tmp_path: Path) -> None:
    """--log-format json: each stderr line is a JSON object with the run id, as in the file; no traceback, no colour."""
    args = ["run", example(tmp_path), "--simulate", "--config", fast_config(tmp_path), "--progress", "none"]
    result = runner.invoke(main, [*args, "--log-format", "json"])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["event"] for line in lines] == ["run.started", *["void.failed"] * 4, "run.finished"]
    assert len({line["run_id"] for line in lines}) == 1
    assert lines[-1]["exit_status"] == 1
    assert lines[-1]["counts"]["maple"] == {"failed": 1, "voided": 2}
    file_lines = {
        json.dumps(e, sort_keys=True)
        for e in map(json.loads, (tmp_path / "example.csv.log").read_text().splitlines())
    }
    assert all(json.dumps(line, sort_keys=True) in file_lines for line in lines)
    assert not CONTROL.search(result.stderr)


def test_json_console_lines_keep_secrets_and_tracebacks_out(tmp_path: Path) -> None:
    """A secret-named key is redacted and a traceback stays in the file, in the JSON console format too."""
    stream = io.StringIO()
    with open_log(tmp_path / "x.log", console=stream, console_log=ConsoleLog(format="json")) as log:
        try:
            int("boom")
        except ValueError:
            log.exception("run.aborted", password="hunter2", reason="internal error")
    (line,) = stream.getvalue().splitlines()
    shown = json.loads(line)
    assert shown["password"] == "[redacted]"
    assert "hunter2" not in stream.getvalue()
    assert "exception" not in shown
    assert "Traceback" in (tmp_path / "x.log").read_text()


@pytest.mark.parametrize(("flag", "want_lines"), [("none", False), ("plain", True)])
def test_progress_flag_picks_the_display_off_a_terminal(
    runner: CliRunner, tmp_path: Path, flag: str, want_lines: bool
) -> None:
    """--progress none draws nothing; plain draws the short lines; --quiet --progress plain draws them too."""
    rows = [(p, f"i{n}") for n in range(12) for p in ("chargeover", "rapyd", "campfire")]
    args = ["run", write_job(tmp_path / "j.csv", rows), "--simulate", "--config", fast_config(tmp_path)]
    args += ["--fault", "latency_ms=25", "--progress-interval", "0.02", "--progress", flag, "--quiet"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    progress = [line for line in result.stderr.splitlines() if re.match(rf"{STAMP}Z progress ", line)]
    assert bool(progress) == want_lines
    assert events(result.stderr) == ["run.started", "run.finished"]  # quiet: the start and the end
