"""Results for machines: `run --json` / `--summary-file` and `--metrics-file`, checked against the ledger."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from batchvoid.audit import new_run
from batchvoid.ledger import Run, RunEnd, open_ledger
from batchvoid.results import SUMMARY_SCHEMA_VERSION, last_successes, write_atomically
from tests.conftest import BATCHVOID, job

FAULT = "campfire:rate_limit=2/0.2s,retry_after=seconds"


def metrics(path: Path) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The metrics file through Prometheus's own parser: name -> sorted labels -> value."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_the_json_summary_and_the_metrics_match_the_ledger(tmp_path: Path) -> None:
    """stdout's JSON, the summary file and the Prometheus metrics say what the ledger recorded."""
    rows = [("campfire", f"c{n}") for n in range(6)] + [("maple", "paid_1"), ("rapyd", "r1")]
    path = job(tmp_path, rows)
    ledger = tmp_path / "l.sqlite"
    prom = tmp_path / "batchvoid.prom"
    prom.write_text("stale\n")  # replaced whole
    result = subprocess.run(
        [*BATCHVOID, "run", str(path), "--simulate", "--ledger", str(ledger), "--fault", FAULT,
         "--json", "--summary-file", str(tmp_path / "summary.json"), "--metrics-file", str(prom)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)  # stdout is the JSON alone
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    with open_ledger(ledger, readonly=True) as book:
        job_ = book.job("job.csv")
        assert job_ is not None
        (run,) = book.runs(job_)
        counts = book.counts(job_)
    assert run.end is not None
    assert summary["schema_version"] == SUMMARY_SCHEMA_VERSION
    assert summary["run_id"] == run.run_id
    assert summary["exit_status"] == run.end.exit_status == 1
    assert summary["counts"] == run.end.counts == {
        "campfire": {"voided": 6}, "maple": {"failed": 1}, "rapyd": {"voided": 1}
    }  # fmt: skip
    assert summary["requests_by_provider"] == run.end.requests
    assert summary["requests"] == sum(run.end.requests.values())
    assert summary["throttled_by_provider"] == run.end.throttled
    assert run.end.throttled["campfire"] > 0
    assert summary["first_failures"] == [
        {"provider": "maple", "invoice_id": "paid_1", "reason": summary["first_failures"][0]["reason"]}
    ]

    found = metrics(prom)
    job_label = ("job_id", "job.csv")
    items = {
        dict(labels)["provider"] + "/" + dict(labels)["state"]: n
        for labels, n in found["batchvoid_items"].items()
    }
    assert {key: n for key, n in items.items() if n} == {f"{p}/{s.value}": n for (p, s), n in counts.items()}
    assert items["campfire/failed"] == 0  # every state is there, 0 too
    assert found["batchvoid_run_requests"] == {
        (job_label, ("provider", p)): n for p, n in run.end.requests.items()
    }
    assert (
        found["batchvoid_run_throttled"][(job_label, ("provider", "campfire"))]
        == run.end.throttled["campfire"]
    )
    assert found["batchvoid_run_throttled"][(job_label, ("provider", "rapyd"))] == 0
    assert found["batchvoid_run_exit_status"] == {(job_label,): 1}
    assert found["batchvoid_run_duration_seconds"][(job_label,)] == summary["elapsed_s"]
    assert run.finished_at is not None
    finished = dt.datetime.fromisoformat(run.finished_at).timestamp()
    assert found["batchvoid_run_finished_timestamp_seconds"] == {(job_label,): finished}
    assert found["batchvoid_last_success_timestamp_seconds"] == {  # maple has a failed item
        (job_label, ("provider", "campfire")): finished,
        (job_label, ("provider", "rapyd")): finished,
    }
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644  # the collector may run as another user
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left


def test_a_refused_run_still_writes_its_exit_status_to_the_metrics(tmp_path: Path) -> None:
    """A job file with a bad row is exit 2, and the metrics file says 2 for monitoring to see."""
    path = tmp_path / "bad.csv"
    path.write_text("provider,invoice_id\nrapid,a\n")
    prom = tmp_path / "m.prom"
    result = subprocess.run(
        [*BATCHVOID, "run", str(path), "--simulate", "--ledger", str(tmp_path / "l.sqlite"),
         "--metrics-file", str(prom)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    found = metrics(prom)
    assert found["batchvoid_run_exit_status"] == {(("job_id", "bad.csv"),): 2}
    assert "batchvoid_items" not in found


def test_a_result_file_that_cannot_be_written_refuses_the_run_before_it_sends(tmp_path: Path) -> None:
    """A --metrics-file in a missing directory is exit 2 naming the option; nothing is recorded."""
    ledger = tmp_path / "l.sqlite"
    result = subprocess.run(
        [*BATCHVOID, "run", str(job(tmp_path, [("rapyd", "a")])), "--simulate", "--ledger", str(ledger),
         "--metrics-file", str(tmp_path / "missing" / "m.prom")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "'--metrics-file'" in result.stderr
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert not ledger.exists()


def test_write_atomically_leaves_the_old_file_when_it_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed write (a full disk) raises a ResultFileError naming the file; the old one stays whole."""
    import errno

    from batchvoid.errors import ResultFileError

    target = tmp_path / "m.prom"
    write_atomically(target, "a 1\n", "metrics file")

    def full(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(ResultFileError, match=r"m\.prom: cannot write the metrics file"):
        write_atomically(target, "a 2\n", "metrics file")
    assert target.read_text() == "a 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.prom"]  # no temporary left behind


def test_last_success_is_the_last_run_with_nothing_failed_or_left_per_provider() -> None:
    """A provider's last success is the end of the last run where none of its items failed or was left."""

    def ended(at: str, counts: dict[str, dict[str, int]]) -> Run:
        new = new_run("r" + at, ["batchvoid"], simulated=False, targets={})
        return Run("job", at, new, at, RunEnd(1, counts, {}, {}))

    runs = [
        ended("2026-01-01T00:00:00+00:00", {"rapyd": {"voided": 2}, "maple": {"voided": 1}}),
        ended("2026-01-02T00:00:00+00:00", {"rapyd": {"voided": 1, "pending": 1}, "maple": {"voided": 2}}),
        Run("job", "2026-01-03T00:00:00+00:00", new_run("r3", ["b"], simulated=False, targets={})),  # died
    ]
    assert last_successes(runs) == {
        "rapyd": dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp(),
        "maple": dt.datetime(2026, 1, 2, tzinfo=dt.UTC).timestamp(),
    }


def test_plan_json_has_a_schema_version_and_each_lane(tmp_path: Path) -> None:
    """`plan --json` is the plan as data: per-lane counts, the estimate, problems; it matches a canary's ledger."""
    path = job(tmp_path, [("rapyd", "a"), ("rapyd", "b"), ("maple", "c")])
    ledger = tmp_path / "l.sqlite"
    run = [
        *BATCHVOID,
        "run",
        str(path),
        "--simulate",
        "--ledger",
        str(ledger),
        "--limit",
        "1",
        "--provider",
        "rapyd",
    ]
    assert subprocess.run(run, capture_output=True, check=False).returncode == 3
    result = subprocess.run(
        [*BATCHVOID, "plan", str(path), "--simulate", "--ledger", str(ledger), "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["schema_version"] == 1
    assert (found["known"], found["runnable"], found["problems"], found["to_send"]) == (True, True, [], 2)
    lanes = {lane["provider"]: lane for lane in found["lanes"]}
    assert (lanes["rapyd"]["items"], lanes["rapyd"]["finished"], lanes["rapyd"]["to_send"]) == (2, 1, 1)
    assert lanes["maple"]["to_send"] == 1
    assert all(isinstance(lane["estimate_s"], float) for lane in found["lanes"])
