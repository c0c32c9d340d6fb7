"""The benchmark (`python -m bench`) at tiny sizes, so that its code cannot rot unnoticed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIGURES = {
    "overhead.ratio_aiohttp",
    "overhead.ratio_curl",
    "overhead.batchvoid_voids_per_s",
    "overhead.aiohttp_voids_per_s",
    "overhead.curl_voids_per_s",
    "overhead.cpu_ratio_aiohttp",
    "overhead.batchvoid_cpu_us_per_void",
    "pace.at_limit_ratio",
    "pace.at_limit_429s",
    "pace.over_limit_ratio",
    "pace.over_limit_429s",
    "pace.over_limit_429s_second_half",
    "pace.over_limit_last_429_s",
    "memory.ratio",
    "memory.large_peak_mb",
    "memory.small_peak_mb",
    "memory.large_start_to_first_request_s",
    "resume.first_request_s",
    "resume.total_s",
    "resume.peak_mb",
    "cost.cpu_us_per_void",
    "cost.ledger_us_per_void",
    "cost.log_us_per_void",
    "cost.ledger_share",
    "cost.log_share",
    "scaleout.one_worker_per_s",
    "scaleout.efficiency_2",
    "scaleout.efficiency_4",
    "scaleout.limit_ratio",
    "scaleout.limit_429s",
}


@pytest.mark.slow
def test_smoke_run_reports_every_figure(tmp_path: Path) -> None:
    """`python -m bench --smoke` runs all six parts and writes every figure, with a value, as JSON."""
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "targets met" in result.stdout
    figures = json.loads(out.read_text(encoding="utf-8"))["figures"]
    assert set(figures) == FIGURES
    unmeasured = {key for key, figure in figures.items() if figure["value"] is None}
    no_curl = {"overhead.ratio_curl", "overhead.curl_voids_per_s"} if shutil.which("curl") is None else set()
    assert unmeasured <= no_curl
    # Every void writes ledger rows and a log line: a meter that missed them would read 0.
    assert figures["cost.ledger_us_per_void"]["value"] > 0
    assert figures["cost.log_us_per_void"]["value"] > 0
