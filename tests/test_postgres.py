"""The PostgreSQL ledger on a real server: claims, leases, fencing, reaping, concurrent ingest.

They need BATCHVOID_TEST_PG (see the `pg_url` fixture): .ci/run starts a throwaway server.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from batchvoid import jobfile
from batchvoid.config import Config
from batchvoid.errors import LedgerError, LedgerLockedError
from batchvoid.keys import idempotency_key
from batchvoid.ledger import Job, NewJob, open_ledger
from batchvoid.ledger.ops import Attempt, Finish, Release
from batchvoid.ledger.postgres import PostgresLedger
from batchvoid.models import ItemState
from tests.conftest import job as job_file


def new_job(path: Path, profiles: Config, job_id: str = "job") -> NewJob:
    return NewJob(job_id, str(path), "sha", "fp", jobfile.read(path, profiles.profiles))


def recorded(ledger: PostgresLedger, path: Path, profiles: Config) -> Job:
    assert ledger.ingest(new_job(path, profiles)).recorded
    found = ledger.job("job")
    assert found is not None
    return found


def expire(url: str, worker: int) -> None:
    """Make a worker's lease run out now (as if it stopped heartbeating long ago)."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "UPDATE batchvoid.workers SET lease_until = clock_timestamp() - interval '1 s' WHERE id = %s",
            (worker,),
        )


def test_a_url_opens_the_postgresql_ledger_and_ingest_records_keys_and_duplicates(
    pg_url: str, tmp_path: Path, profiles: Config
) -> None:
    """Schema created on first use (versioned); rows become pending items with their keys; repeats are duplicates."""
    path = job_file(tmp_path, [("rapyd", "a"), ("rapyd", "b"), ("rapyd", "a"), ("maple", "m")])
    with open_ledger(pg_url) as ledger:
        assert isinstance(ledger, PostgresLedger)
        result = ledger.ingest(new_job(path, profiles))
        assert (result.items, result.duplicates) == (3, 1)
        assert [(d.line, d.first_line) for d in result.first_duplicates] == [(4, 2)]
        job = ledger.job("job")
        assert job is not None
        assert job.items == 3
        rows = list(ledger.items(job))
        assert [r["invoice_id"] for r in rows] == ["a", "b", "m"]
        assert rows[0]["idempotency_key"] == idempotency_key("job", "rapyd", "a")
        assert ledger.counts(job) == {("rapyd", ItemState.PENDING): 2, ("maple", ItemState.PENDING): 1}
    with open_ledger(pg_url, readonly=True) as again:
        assert [j.job_id for j in again.jobs()] == ["job"]


def test_a_job_file_with_a_bad_row_leaves_nothing_behind(
    pg_url: str, tmp_path: Path, profiles: Config
) -> None:
    path = job_file(tmp_path, [("rapyd", "a"), ("nosuch", "b")])
    with open_ledger(pg_url) as ledger:
        result = ledger.ingest(new_job(path, profiles))
        assert result.error_count == 1
        assert not result.recorded
        assert ledger.jobs() == []


def test_no_item_is_claimed_twice_by_four_concurrent_claimers(
    pg_url: str, tmp_path: Path, profiles: Config
) -> None:
    """4 workers (4 connections, 4 threads) claim small batches at once: each item goes to exactly one."""
    n = 2000
    path = job_file(tmp_path, [("rapyd", f"i{k}") for k in range(n)])
    with open_ledger(pg_url) as first:
        assert isinstance(first, PostgresLedger)
        job = recorded(first, path, profiles)
    claimed: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(4, timeout=30)

    def claimer(k: int) -> None:
        with PostgresLedger(pg_url) as ledger, ledger.guard("job"):
            start.wait()
            after = 0
            while batch := ledger.claim(job, "rapyd", after, 7):
                claimed[k].extend(w.id for w in batch)
                after = batch[-1].item.line
                ledger.apply([Finish(w.id, ItemState.VOIDED, None, 200, None, 1) for w in batch])

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in claimed for i in ids]
    assert len(every) == n
    assert len(set(every)) == n
    assert all(len(ids) > 50 for ids in claimed), [len(ids) for ids in claimed]  # all four took part
    with open_ledger(pg_url, readonly=True) as ledger:
        assert ledger.counts(job) == {("rapyd", ItemState.VOIDED): n}


def test_a_dead_workers_items_are_reaped_and_resent_with_their_keys_and_its_late_writes_are_no_ops(
    pg_url: str, tmp_path: Path, profiles: Config
) -> None:
    """A's lease runs out: B's claim reaps A, takes A's in-flight items (maybe sent, same key); A's Finish writes nothing."""
    path = job_file(tmp_path, [("rapyd", f"i{k}") for k in range(4)])
    with PostgresLedger(pg_url) as a, PostgresLedger(pg_url) as b:
        job = recorded(a, path, profiles)
        with a.guard("job"), b.guard("job"):
            taken = a.claim(job, "rapyd", 0, 2)
            assert [w.maybe_sent for w in taken] == [False, False]
            assert a.worker_id is not None
            expire(pg_url, a.worker_id)
            rest = b.claim(job, "rapyd", 0, 10)
            assert [w.item.invoice_id for w in rest] == ["i2", "i3"]
            again = b.claim(job, "rapyd", rest[-1].item.line, 10)  # dry: B reaps A, rescans from the start
            assert [w.item.invoice_id for w in again] == ["i0", "i1"]
            assert [w.maybe_sent for w in again] == [True, True]  # A may have sent those
            assert [w.state for w in b.workers("job")] == ["dead", "live"]
            assert [w.idempotency_key for w in again[:2]] == [w.idempotency_key for w in taken]
            b.apply([Finish(again[0].id, ItemState.ALREADY_VOID, None, 200, None, 1)])
            # A comes back (a long GC pause, a partition): its writes are fenced off.
            a.apply(
                [
                    Attempt(taken[0].id, 1, "t", "retryable", 500, 1, "late"),
                    Finish(taken[0].id, ItemState.FAILED, "late", 400, None, 1),
                    Release(taken[1].id, 1, False),
                ]
            )
            rows = {r["invoice_id"]: r for r in b.items(job)}
            assert rows["i0"]["state"] == "already_void"
            assert rows["i0"]["reason"] is None
            assert rows["i1"]["state"] == "in_flight"  # B's claim, not A's release
            assert a.lease is not None
            assert not a.lease.beat()  # its next heartbeat finds it reaped ...
            with pytest.raises(LedgerError, match="lease on job 'job' ran out"):
                a.claim(job, "rapyd", 0, 10)  # ... and it claims no more
        assert a.worker_id is None


def test_a_claim_waits_while_a_live_peer_holds_items_and_ends_when_it_finishes(
    pg_url: str, tmp_path: Path, profiles: Config
) -> None:
    """Nothing claimable, but B holds items: A's claim waits; B finishes them; A's claim returns nothing."""
    path = job_file(tmp_path, [("rapyd", "x"), ("rapyd", "y")])
    with PostgresLedger(pg_url) as a, PostgresLedger(pg_url) as b:
        job = recorded(a, path, profiles)
        with a.guard("job"), b.guard("job"):
            held = b.claim(job, "rapyd", 0, 10)
            assert len(held) == 2
            result: list[object] = []
            waiter = threading.Thread(target=lambda: result.append(a.claim(job, "rapyd", 0, 10)))
            waiter.start()
            waiter.join(0.8)
            assert waiter.is_alive()
            assert not result
            b.apply([Finish(w.id, ItemState.VOIDED, None, 200, None, 1) for w in held])
            waiter.join(5)
            assert result == [[]]


def test_a_signal_ends_a_claims_wait_for_a_peer(pg_url: str, tmp_path: Path, profiles: Config) -> None:
    """B holds the items; A's claim waits, until A's run is told to stop: then it returns nothing at once."""
    path = job_file(tmp_path, [("rapyd", "x")])
    stopping = threading.Event()
    with PostgresLedger(pg_url) as a, PostgresLedger(pg_url) as b:
        job = recorded(a, path, profiles)
        with a.guard("job", stopping=stopping), b.guard("job"):
            assert len(b.claim(job, "rapyd", 0, 10)) == 1
            result: list[object] = []
            waiter = threading.Thread(target=lambda: result.append(a.claim(job, "rapyd", 0, 10)))
            waiter.start()
            waiter.join(0.6)
            assert waiter.is_alive()
            stopping.set()
            waiter.join(1)
            assert result == [[]]


def test_concurrent_ingests_record_the_job_once_and_the_others_join(
    pg_url: str, tmp_path: Path, profiles: Config
) -> None:
    """4 workers start together on a new job: one records it, three are told to join; the items are there once."""
    path = job_file(tmp_path, [("rapyd", f"i{k}") for k in range(3000)])
    results = []
    start = threading.Barrier(4, timeout=30)

    def ingester() -> None:
        with PostgresLedger(pg_url) as ledger:
            start.wait()
            results.append(ledger.ingest(new_job(path, profiles)))

    threads = [threading.Thread(target=ingester) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(r.joined for r in results) == {True: 3, False: 1}
    assert [r.items for r in results if not r.joined] == [3000]
    with open_ledger(pg_url, readonly=True) as ledger:
        (job,) = ledger.jobs()
        assert ledger.counts(job) == {("rapyd", ItemState.PENDING): 3000}


def test_max_workers_refuses_a_worker_beyond_it(pg_url: str) -> None:
    with PostgresLedger(pg_url) as a, PostgresLedger(pg_url) as b:
        with a.guard("job", max_workers=1):
            with pytest.raises(LedgerLockedError, match="--max-workers is 1"), b.guard("job", max_workers=1):
                pass
            with b.guard("job", max_workers=2):
                assert [w.state for w in b.workers("job")] == ["live", "live"]
        assert [w.state for w in a.workers("job")] == ["left", "left"]


def test_a_database_without_a_ledger_is_said_so_read_only(pg_url: str) -> None:
    with pytest.raises(LedgerError, match="no batchvoid ledger in this database"):
        open_ledger(pg_url, readonly=True)


def test_workers_starting_together_on_an_empty_database_set_it_up_once(pg_url: str) -> None:
    """8 ledgers opened at once on a new database: one creates the schema, none fails (no deadlock)."""
    errors: list[BaseException] = []
    start = threading.Barrier(8, timeout=30)

    def opener() -> None:
        try:
            start.wait()
            with PostgresLedger(pg_url) as ledger, ledger.guard("job"):
                pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_429_pauses_and_slows_every_worker_of_the_account_once(pg_url: str, profiles: Config) -> None:
    """A's 429 (Retry-After 0.5 s) pauses the account's row: B's next slots start after it; the rate is cut once per event."""
    import time

    from batchvoid.ledger.postgres.pace import SharedPace, spacing

    profile = profiles.profiles["rapyd"]
    with PostgresLedger(pg_url) as a, PostgresLedger(pg_url) as b:
        pa, pb = SharedPace(a, profile), SharedPace(b, profile)
        assert pa.key == pb.key  # one row per provider account
        pb._reserve()
        assert pb._slots[0][0] - time.monotonic() < 0.2  # not paused: its first slot is now
        sent = time.monotonic()
        pa.adaptive.throttled(sent, 0.5)
        pa.adaptive.throttled(sent, 0.5)  # a second 429 of the same burst: no second cut
        pa._reserve()  # A's next reservation (its throttled worker's next send) writes them
        pb._slots.clear()
        pb._reserve()
        assert pb._slots[0][0] - time.monotonic() > 0.4  # B waits out A's pause
        with psycopg.connect(pg_url, autocommit=True) as db:
            (learned,) = db.execute("SELECT adaptive_interval FROM batchvoid.limiter").fetchone()
        assert learned == pytest.approx(spacing(profile) / 0.85)  # cut by one step, not two


def test_touched_counts_outcomes_but_not_pending_items_nor_redirects(
    pg_url: str, tmp_path: Path, profiles: Config
) -> None:
    """What binds a profile to its target: a void, a provider's rejection, an item in flight; not a 301 or a pending item."""
    rows = [("rapyd", "voided"), ("rapyd", "moved"), ("rapyd", "paid"), ("rapyd", "flying"), ("maple", "m")]
    path = job_file(tmp_path, rows)
    with PostgresLedger(pg_url) as ledger:
        job = recorded(ledger, path, profiles)
        with ledger.guard("job"):
            voided, moved, paid, _ = ledger.claim(job, "rapyd", 0, 10)
            ledger.apply(
                [
                    Finish(voided.id, ItemState.VOIDED, None, 200, None, 1),
                    Finish(moved.id, ItemState.FAILED, "HTTP 301: redirected", 301, None, 1),
                    Finish(paid.id, ItemState.FAILED, "HTTP 400: paid", 400, None, 1),
                ]
            )
            assert ledger.touched(job) == {
                "rapyd": {ItemState.VOIDED: 1, ItemState.FAILED: 1, ItemState.IN_FLIGHT: 1}
            }
