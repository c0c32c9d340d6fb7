"""`batchvoid run jobs/example-chargebee-lago.csv --simulate`, end to end through the command line."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchvoid.cli import main
from tests.conftest import write

REPO = Path(__file__).resolve().parent.parent
CONFIG = """\
[defaults]
max_attempts = 2

[providers.chargebee]
type = "chargebee"
base_url = "https://acme-test.chargebee.com"
void_reason_code = "other"
rate_limits = []

[providers.lago]
type = "lago"
region = "eu"
rate_limits = []
"""


def test_the_example_job_rehearses_every_case_and_a_rerun_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Open invoices voided, already-void ones confirmed by a read, paid/draft/missing and a wrong
    reason code failed in the provider's words (exit 1); the same command again sends nothing."""
    monkeypatch.chdir(tmp_path)
    job_file = str(shutil.copy(REPO / "jobs" / "example-chargebee-lago.csv", tmp_path / "job.csv"))
    args = ["run", job_file, "--simulate", "--config", str(write(tmp_path / "c.toml", CONFIG))]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert re.search(r"│ chargebee +│ +2 │ +1 │ +2 │ +5 │", out), out
    assert re.search(r"│ lago +│ +1 │ +1 │ +2 │ +4 │", out), out
    assert "9 items finished" in out
    assert ", 13 requests." in out  # 9 voids and 4 reads: a state error each for void_, paid_ and draft_ rows
    failed = out.split("Failed items:", 1)[1]
    assert "chargebee paid_cb_2044: HTTP 409: invalid_state_for_request: " in failed
    assert "(invoice status: paid)" in failed
    assert (
        "chargebee cb_2045: HTTP 400: param_wrong_value: void_reason_code : invalid reason code 'Duplicate'"
        in failed
    )
    assert "(invoice status: draft)" in failed
    assert "lago missing_9e8d7c6b-5a4f-4e3d-2c1b-0a9f8e7d6c5b: HTTP 404: invoice_not_found" in failed
    assert "void_cb_2043" not in failed
    assert "void_6f5e4d3c" not in failed

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1, again.output
    assert ", 0 requests." in again.stdout
