"""A run's results for machines: the summary as JSON, and metrics in Prometheus text format.

The JSON summary (`run --json`, `--summary-file`) carries a `schema_version`: a field is only
ever added under the same version. The metrics file (`--metrics-file`) follows node_exporter's
textfile collector convention: it is written whole to a temporary file in the same directory
and renamed over the old one, so the collector never reads half a file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from batchvoid.errors import ResultFileError, os_cause
from batchvoid.ledger import Run
from batchvoid.ledger.location import LedgerLocation, shown
from batchvoid.models import UNDONE, ItemState
from batchvoid.run import RunReport

SUMMARY_SCHEMA_VERSION = 1


def summary_json(report: RunReport, *, ledger: LedgerLocation) -> dict[str, Any]:
    """The end-of-run summary of a `RunReport`, as JSON-ready data."""
    run = report.run
    by_provider: dict[str, dict[str, int]] = {}
    totals = dict.fromkeys((s.value for s in ItemState), 0)
    for (provider, state), n in sorted(report.counts.items()):
        by_provider.setdefault(provider, {})[state.value] = n
        totals[state.value] += n
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "job_id": report.job.job_id,
        "job_file": report.job.job_file,
        "ledger": shown(ledger),
        "log_file": str(report.log_file),
        "run_id": None if run is None else run.run_id,
        "simulated": None if run is None else run.new.simulated,
        "started_at": None if run is None else run.started_at,
        "finished_at": None if run is None else run.finished_at,
        "elapsed_s": round(report.elapsed_s, 3),
        "exit_status": report.exit_status,
        "requests": report.requests,
        "requests_by_provider": {} if run is None or run.end is None else dict(run.end.requests),
        "throttled_by_provider": {} if run is None or run.end is None else dict(run.end.throttled),
        "finished": report.finished,
        "left": report.left(),
        "totals": totals,
        "counts": by_provider,
        "stopped": list(report.stopped),
        "interrupted": report.interrupted,
        "first_failures": [
            {"provider": provider, "invoice_id": invoice, "reason": reason}
            for provider, invoice, reason in report.failures
        ],
    }


def _labels(**labels: str) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _seconds(timestamp: str) -> float:
    return dt.datetime.fromisoformat(timestamp).timestamp()


def last_successes(runs: Iterable[Run]) -> dict[str, float]:
    """Per provider, when a run last ended with none of its items failed or left (Unix time)."""
    found: dict[str, float] = {}
    for run in runs:
        if run.end is None or run.finished_at is None:
            continue
        for provider, states in run.end.counts.items():
            bad = {str(s) for s in UNDONE} | {str(ItemState.PENDING), str(ItemState.IN_FLIGHT)}
            if not any(states.get(state) for state in bad):
                found[provider] = _seconds(run.finished_at)
    return found


_METRICS = {
    "batchvoid_items": ("gauge", "The job's items by provider and state when the run ended."),
    "batchvoid_run_requests": ("gauge", "Requests the run sent, by provider."),
    "batchvoid_run_throttled": ("gauge", "429 answers the run got, by provider."),
    "batchvoid_run_duration_seconds": ("gauge", "How long the run took."),
    "batchvoid_run_exit_status": ("gauge", "The run's exit status (0: every item void)."),
    "batchvoid_run_finished_timestamp_seconds": ("gauge", "When the run ended (Unix time)."),
    "batchvoid_last_success_timestamp_seconds": (
        "gauge",
        "When a run last ended with none of the provider's items failed or left (Unix time).",
    ),
}


def metrics_text(
    job_id: str,
    exit_status: int,
    *,
    report: RunReport | None = None,
    now: dt.datetime | None = None,
) -> str:
    """The metrics of one run of `job_id`; without a report (a run refused or aborted) only its end."""
    samples: dict[str, list[tuple[str, float]]] = {name: [] for name in _METRICS}
    job = {"job_id": job_id}  # not "job": Prometheus sets that label to the scrape job
    ended = (now or dt.datetime.now(dt.UTC)).timestamp()
    if report is not None:
        for provider in sorted({provider for provider, _ in report.counts}):
            for state in ItemState:  # every state, 0 too: an alert compares, it does not test presence
                n = report.counts.get((provider, state), 0)
                samples["batchvoid_items"].append((_labels(**job, provider=provider, state=state.value), n))
        run = report.run
        if run is not None and run.end is not None:
            for provider, n in sorted(run.end.requests.items()):
                samples["batchvoid_run_requests"].append((_labels(**job, provider=provider), n))
            for provider in sorted(run.end.requests):
                n = run.end.throttled.get(provider, 0)
                samples["batchvoid_run_throttled"].append((_labels(**job, provider=provider), n))
        if run is not None and run.finished_at is not None:
            ended = _seconds(run.finished_at)
        samples["batchvoid_run_duration_seconds"].append((_labels(**job), round(report.elapsed_s, 3)))
        for provider, at in sorted(last_successes(report.runs).items()):
            samples["batchvoid_last_success_timestamp_seconds"].append(
                (_labels(**job, provider=provider), at)
            )
    samples["batchvoid_run_exit_status"].append((_labels(**job), exit_status))
    samples["batchvoid_run_finished_timestamp_seconds"].append((_labels(**job), ended))
    lines = []
    for name, (kind, text) in _METRICS.items():
        if not samples[name]:
            continue
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{labels} {value:g}" if isinstance(value, int) else f"{name}{labels} {value!r}"
                  for labels, value in samples[name]]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str, what: str) -> None:
    """Write `text` to `path` whole: a temporary file beside it, then renamed over it."""
    directory = path.absolute().parent
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ResultFileError(f"{path}: cannot write the {what}: {os_cause(exc)}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(temporary, 0o644)  # the collector runs as another user; mkstemp makes it 0600
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ResultFileError(f"{path}: cannot write the {what}: {os_cause(exc)}") from exc


def summary_text(summary: Mapping[str, Any]) -> str:
    return json.dumps(summary, indent=2) + "\n"


def writable_problem(path: Path) -> str | None:
    """What keeps `path` from being written as a result file, checked before the run sends."""
    directory = path.absolute().parent
    if not directory.is_dir():
        return f"its directory {directory} does not exist: create it, or pass another file"
    if path.is_dir():
        return "is a directory: pass a file name"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"this user may not write to its directory {directory} (it is written beside, then renamed)"
    return None
