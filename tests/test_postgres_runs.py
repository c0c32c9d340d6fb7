"""Run records, --limit and --provider on the PostgreSQL ledger (a real server: BATCHVOID_TEST_PG).

The three-worker run with a kill -9 (tests/test_scale_out.py) checks that every worker's run is
a record of the job; these check one worker's runs, the canary on shared claims, and the schema
upgrade from before run records.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from batchvoid.canary import LimitedQueue
from batchvoid.config import Config
from batchvoid.errors import LedgerError
from batchvoid.ledger import open_ledger
from batchvoid.ledger.postgres import SCHEMA_VERSION, PostgresLedger
from batchvoid.models import ItemState
from batchvoid.run import EXIT_FAILED, EXIT_STOPPED
from batchvoid.simulator import Simulator, SimulatorSettings
from tests.conftest import job, run_on, sim_config
from tests.test_postgres import recorded

PROVIDERS = ("rapyd", "campfire", "maple")


def sent_since(simulator: Simulator, before: Counter[tuple[str, str]]) -> set[tuple[str, str]]:
    return {key for key, n in simulator.void_requests.items() if n > before.get(key, 0)}


@pytest.mark.anyio
async def test_runs_on_postgresql_are_recorded_with_their_id_on_attempts_and_outcomes(
    tmp_path: Path, pg_url: str
) -> None:
    """--limit 4 --provider campfire, then the rest: two records with their ends; each run's id on what it sent and wrote."""
    simulator = Simulator(SimulatorSettings.from_specs(["campfire:rate_limit=5/0.2s,retry_after=seconds"]))
    rows = [(p, f"inv-{p}-{n}") for n in range(6) for p in PROVIDERS] + [("maple", "paid_1")]
    path = job(tmp_path, rows)
    async with simulator.serve() as url:
        config = sim_config(url, concurrency=4)
        canary = await run_on(
            config,
            path,
            tmp_path,
            ledger=pg_url,
            log_file=tmp_path / "1.log",
            limit=4,
            providers=("campfire",),
        )
        first_sent = sent_since(simulator, Counter())
        before = Counter(simulator.void_requests)
        rest = await run_on(config, path, tmp_path, ledger=pg_url, log_file=tmp_path / "2.log")
    assert canary.exit_status == EXIT_STOPPED
    assert len(first_sent) == 4
    assert {p for p, _ in first_sent} == {"campfire"}
    assert rest.exit_status == EXIT_FAILED  # paid_1 cannot be voided
    assert sent_since(simulator, before) == set(rows) - first_sent  # the rest, once each
    assert canary.run is not None
    assert rest.run is not None
    with open_ledger(pg_url, readonly=True) as ledger:
        job_ = ledger.job("job.csv")
        assert job_ is not None
        assert job_.runs == 2
        first, second = ledger.runs(job_)
        assert (first.run_id, second.run_id) == (canary.run.run_id, rest.run.run_id)
        assert first.end is not None
        assert second.end is not None
        assert (first.end.exit_status, second.end.exit_status) == (EXIT_STOPPED, EXIT_FAILED)
        assert first.end.requests == {"campfire": 4 + first.end.throttled.get("campfire", 0)}
        assert first.end.counts["campfire"] == {"pending": 2, "voided": 4}
        assert second.end.counts == {"campfire": {"voided": 6}, "maple": {"failed": 1, "voided": 6},
                                     "rapyd": {"voided": 6}}  # fmt: skip
        assert sum(second.end.requests.values()) == rest.requests
        assert first.new.command == second.new.command  # run_on gives none: this process's argv
        assert first.new.targets == ledger.targets(job_)
        assert first.alive is None  # ended: nothing to tell
        throttled = simulator.stats()["campfire"]["throttled"]
        assert throttled > 0
        assert first.end.throttled.get("campfire", 0) + second.end.throttled.get("campfire", 0) == throttled
        by_first = {(r["provider"], r["invoice_id"]) for r in ledger.items(job_, run=first.run_id)}
        assert by_first == first_sent
        assert {(r["provider"], r["invoice_id"]) for r in ledger.items(job_, run=second.run_id)} == (
            set(rows) - first_sent
        )
    with psycopg.connect(pg_url) as db:
        history = db.execute("SELECT run, http_status FROM batchvoid.attempts").fetchall()
        assert {run for run, _ in history} <= {first.run_id, second.run_id}  # none without a run
        per_run = Counter(run for run, status in history if status == 429)
        assert per_run == {
            r.run_id: sum(r.end.throttled.values()) for r in (first, second) if r.end.throttled
        }
    for log, run in ((tmp_path / "1.log", first), (tmp_path / "2.log", second)):
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        assert {line["run_id"] for line in lines} == {run.run_id}


def test_limit_bounds_each_workers_claims_on_shared_work(
    pg_url: str, tmp_path: Path, profiles: Config
) -> None:
    """Two workers, each with --limit 5, claim at once from one job: each takes exactly 5, no item twice."""
    path = job(tmp_path, [("rapyd", f"i{k}") for k in range(40)])
    with PostgresLedger(pg_url) as first:
        job_ = recorded(first, path, profiles)
    taken: list[list[int]] = [[], []]
    start, done = threading.Barrier(2, timeout=30), threading.Barrier(2, timeout=30)

    def worker(k: int) -> None:
        with PostgresLedger(pg_url) as ledger, ledger.guard("job"):
            queue = LimitedQueue(ledger, 5)
            start.wait()
            after = 0
            while batch := queue.claim(job_, "rapyd", after, 3):
                taken[k].extend(w.id for w in batch)
                after = batch[-1].item.line
            done.wait()  # a worker that leaves gives back what it holds: the other could take it

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [len(ids) for ids in taken] == [5, 5]
    assert len(set(taken[0]) | set(taken[1])) == 10
    with open_ledger(
        pg_url, readonly=True
    ) as ledger:  # the 10 claimed count as maybe sent, the rest untouched
        assert ledger.counts(job_) == {("rapyd", ItemState.PENDING): 30, ("rapyd", ItemState.IN_FLIGHT): 10}


def downgrade_to_version_1(url: str) -> None:
    """What batchvoid wrote before run records: schema version 1."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("DROP TABLE batchvoid.runs")
        db.execute("ALTER TABLE batchvoid.items DROP COLUMN run")
        db.execute("ALTER TABLE batchvoid.attempts DROP COLUMN run")
        db.execute("UPDATE batchvoid.meta SET value = '1' WHERE key = 'schema_version'")


@pytest.mark.anyio
async def test_a_version_1_ledger_gains_run_records_in_place(tmp_path: Path, pg_url: str) -> None:
    """Read-only it is read as it is (no runs); the next run upgrades it, keeping its items, and is recorded."""
    path = job(tmp_path, [("rapyd", "a"), ("maple", "paid_b")])
    async with Simulator(SimulatorSettings()).serve() as url:
        config = sim_config(url)
        assert (await run_on(config, path, tmp_path, ledger=pg_url)).exit_status == EXIT_FAILED
        downgrade_to_version_1(pg_url)
        with open_ledger(pg_url, readonly=True) as old:
            old_job = old.job("job.csv")
            assert old_job is not None
            assert old.runs(old_job) == []
            assert old.throttled("any") == {}
        again = await run_on(config, path, tmp_path, ledger=pg_url, retry_failed=True)
    assert again.exit_status == EXIT_FAILED
    with open_ledger(pg_url, readonly=True) as upgraded:
        job_ = upgraded.job("job.csv")
        assert job_ is not None
        (run,) = upgraded.runs(job_)
        assert run.end is not None
        assert run.end.counts == {"maple": {"failed": 1}, "rapyd": {"voided": 1}}
        assert {i["invoice_id"] for i in upgraded.items(job_, run=run.run_id)} == {"paid_b"}
    with psycopg.connect(pg_url) as db:
        version = db.execute("SELECT value FROM batchvoid.meta WHERE key = 'schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION),)


def test_workers_starting_together_on_a_version_1_ledger_upgrade_it_once(pg_url: str) -> None:
    """6 ledgers opened at once on a version-1 schema: one upgrades it, none fails."""
    PostgresLedger(pg_url).close()
    downgrade_to_version_1(pg_url)
    errors: list[BaseException] = []
    start = threading.Barrier(6, timeout=30)

    def opener() -> None:
        try:
            start.wait()
            with PostgresLedger(pg_url) as ledger:
                assert ledger.version == SCHEMA_VERSION
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_newer_schema_is_refused_with_what_to_do(pg_url: str) -> None:
    """A schema from a newer batchvoid is neither read nor changed: the message names the release to use."""
    PostgresLedger(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("UPDATE batchvoid.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(
        LedgerError, match=r"schema is version 99.*reads versions up to 2.*release that wrote it"
    ):
        PostgresLedger(pg_url)
