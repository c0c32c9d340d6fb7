"""Many workers on one PostgreSQL job: redrives, reaping under load, dead workers in `status`.

They need BATCHVOID_TEST_PG (see the `pg_url` fixture): .ci/run starts a throwaway server.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import anyio
import psycopg
import pytest

from batchvoid.config import Config
from batchvoid.errors import LedgerError, LedgerLockedError
from batchvoid.ledger import Job
from batchvoid.ledger.ops import Finish
from batchvoid.ledger.postgres import PostgresLedger
from batchvoid.ledger.postgres.lease import WorkerLease
from batchvoid.ledger.postgres.pace import SharedPace
from batchvoid.models import Item, ItemState, RowError
from tests.conftest import job as job_file
from tests.test_postgres import expire, recorded


def fail_next(ledger: PostgresLedger, job: Job) -> str:
    """Claim the job's next item and record it as failed; its invoice id."""
    (work,) = ledger.claim(job, "rapyd", 0, 1)
    ledger.apply([Finish(work.id, ItemState.FAILED, "HTTP 400: no", 400, None, 1)])
    return work.item.invoice_id


def states(ledger: PostgresLedger, job: Job) -> dict[str, str]:
    return {row["invoice_id"]: row["state"] for row in ledger.items(job)}


def test_a_late_joiner_with_retry_failed_re_pends_only_what_failed_before_the_live_workers_began(
    pg_url: str, tmp_path: Path, profiles: Config
) -> None:
    """C joins A (live) with --retry-failed: an earlier session's failure goes back; what B and A failed since stays failed."""
    path = job_file(tmp_path, [("rapyd", "old"), ("rapyd", "by_b"), ("rapyd", "by_a"), ("rapyd", "todo")])
    with (
        PostgresLedger(pg_url) as p,
        PostgresLedger(pg_url) as a,
        PostgresLedger(pg_url) as b,
        PostgresLedger(pg_url) as c,
    ):
        job = recorded(p, path, profiles)
        with p.guard("job"):  # an earlier session, over before this one began
            assert fail_next(p, job) == "old"
        with b.guard("job"):
            assert fail_next(b, job) == "by_b"  # before A joined: still this session (B overlaps A)
            a_guard = a.guard("job")
            a_guard.__enter__()
        try:  # B left; A is live: the session goes on
            assert fail_next(a, job) == "by_a"
            said = io.StringIO()
            with c.guard("job", out=said):
                assert c.redrive(job) == {"rapyd": 1}
            assert states(c, job) == {"old": "pending", "by_b": "failed", "by_a": "failed", "todo": "pending"}
            assert "2 failed items" in said.getvalue()
            assert "stay failed: the job's live workers recorded them since" in said.getvalue()
        finally:
            a_guard.__exit__(None, None, None)
        with c.guard("job"):  # a new session (nobody live): every failure goes back
            assert c.redrive(job) == {"rapyd": 2}


def test_a_lone_worker_with_retry_failed_re_pends_every_failure(
    pg_url: str, tmp_path: Path, profiles: Config
) -> None:
    """With no live peer, --retry-failed on PostgreSQL does what it does on SQLite: every failure goes back."""
    path = job_file(tmp_path, [("rapyd", "x"), ("rapyd", "y")])
    with PostgresLedger(pg_url) as a, PostgresLedger(pg_url) as b:
        job = recorded(a, path, profiles)
        with a.guard("job"):
            fail_next(a, job)
            fail_next(a, job)
        with b.guard("job"):
            assert b.redrive(job) == {"rapyd": 2}
            assert set(states(b, job).values()) == {"pending"}


def test_status_shows_a_worker_whose_lease_ran_out_as_dead_before_anyone_reaps_it(
    pg_url: str, tmp_path: Path, profiles: Config
) -> None:
    """`status` reads without writing: a live row past its lease (database clock) is shown dead."""
    with PostgresLedger(pg_url) as a, a.guard("job"):
        assert a.worker_id is not None
        expire(pg_url, a.worker_id)
        with PostgresLedger(pg_url, readonly=True) as reader:
            assert [w.state for w in reader.workers("job")] == ["dead"]
            assert reader.lock_holder("job") is None


def test_reaping_under_load_gives_a_dead_workers_items_to_the_others_exactly_once(
    pg_url: str, tmp_path: Path, profiles: Config
) -> None:
    """3 workers claim and finish at full speed while a 4th dies holding items: every item ends voided once, the dead one's resent as maybe sent."""
    n = 1200
    path = job_file(tmp_path, [("rapyd", f"i{k}") for k in range(n)])
    with PostgresLedger(pg_url) as first:
        job = recorded(first, path, profiles)
    finished: list[list[int]] = [[] for _ in range(3)]
    resent: list[int] = []
    start = threading.Barrier(4, timeout=30)
    held: list[int] = []
    zombies: list[tuple[PostgresLedger, WorkerLease]] = []
    errors: list[BaseException] = []

    def survivor(k: int) -> None:
        try:
            with PostgresLedger(pg_url) as ledger, ledger.guard("job"):
                start.wait()
                after = 0
                while batch := ledger.claim(job, "rapyd", after, 5):
                    after = batch[-1].item.line
                    resent.extend(w.id for w in batch if w.maybe_sent)
                    finished[k].extend(w.id for w in batch)
                    ledger.apply([Finish(w.id, ItemState.VOIDED, None, 200, None, 1) for w in batch])
        except BaseException as exc:
            errors.append(exc)

    def doomed() -> None:
        ledger = PostgresLedger(pg_url)
        lease = ledger.guard("job").__enter__()  # never left: it dies without a word
        zombies.append((ledger, lease))
        start.wait()
        taken = ledger.claim(job, "rapyd", 0, 5)  # claimed, never finished
        held.extend(w.id for w in taken)
        after = taken[-1].item.line
        for _ in range(20):  # it works a while ...
            batch = ledger.claim(job, "rapyd", after, 5)
            after = batch[-1].item.line
            ledger.apply([Finish(w.id, ItemState.VOIDED, None, 200, None, 1) for w in batch])
        lease._stop.set()  # ... then its heartbeat stops, and its lease runs out: a kill -9
        assert lease._thread is not None
        lease._thread.join()
        assert lease.id is not None
        expire(pg_url, lease.id)

    threads = [threading.Thread(target=survivor, args=(k,)) for k in range(3)]
    threads.append(threading.Thread(target=doomed))
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join(60)
    finally:
        for ledger, lease in zombies:
            assert lease._db is not None
            lease._db.close()
            ledger.close()
    assert errors == []
    assert len(held) == 5
    every = [i for ids in finished for i in ids]
    assert len(every) == len(set(every))  # none finished twice by the survivors
    assert set(held) <= set(every)  # the dead one's claim was taken over ...
    assert set(held) <= set(resent)  # ... as maybe sent: resent with its key
    with PostgresLedger(pg_url, readonly=True) as ledger:
        assert ledger.counts(job) == {("rapyd", ItemState.VOIDED): n}


def test_a_heartbeat_whose_connection_was_killed_renews_the_lease_on_a_new_one(pg_url: str) -> None:
    """The server kills the heartbeat's connection (an idle-connection reaper, a restart): the next beat reconnects and renews."""
    with PostgresLedger(pg_url) as a, a.guard("job") as lease:
        lease._stop.set()  # beat by hand from here
        assert lease._thread is not None
        lease._thread.join()
        assert lease._db is not None
        with psycopg.connect(pg_url, autocommit=True) as db:
            db.execute("SELECT pg_terminate_backend(%s)", (lease._db.info.backend_pid,))
        lease.trusted_until = 0.0
        for _ in range(2):  # the first finds its connection gone
            assert lease.beat()
        assert lease.trusted_until > time.monotonic()
        lease.check()  # it may go on claiming and sending
        assert [w.state for w in a.workers("job")] == ["live"]


def test_a_429_is_noted_without_waiting_for_the_database_and_shared_by_the_next_reservation(
    pg_url: str, profiles: Config
) -> None:
    """A peer holds the account's row: A's 429 returns at once (the event loop never waits on it); A's next reservation shares the pause."""
    profile = profiles.profiles["rapyd"]
    with PostgresLedger(pg_url) as a, PostgresLedger(pg_url) as b:
        pa, pb = SharedPace(a, profile), SharedPace(b, profile)
        pb._reserve()  # the row exists
        release = threading.Event()

        def hold_the_row() -> None:
            with psycopg.connect(pg_url) as db, db.transaction():
                db.execute("SELECT 1 FROM batchvoid.limiter FOR UPDATE")
                held.set()
                release.wait(5)

        held = threading.Event()
        holder = threading.Thread(target=hold_the_row)
        holder.start()
        try:
            assert held.wait(5)
            began = time.monotonic()
            pause = pa.adaptive.throttled(time.monotonic(), 1.0)
            assert time.monotonic() - began < 0.5  # not blocked on the peer's lock
            assert pause >= 1.0  # the lane itself is paused at once
            assert not pa._slots  # and sends none of the slots it held
        finally:
            release.set()
            holder.join()
        pa._reserve()
        assert pa._slots[0][0] - time.monotonic() > 0.8  # its own next slot comes after the pause
        pb._slots.clear()
        pb._reserve()
        assert pb._slots[0][0] - time.monotonic() > 0.8  # and so does every peer's


def test_a_send_that_waited_for_its_slot_past_the_lease_this_worker_can_vouch_for_does_not_go(
    pg_url: str, profiles: Config
) -> None:
    """The lease's trust runs out while a worker waits for its slot (a long 429 pause, say): it raises instead of sending."""
    with PostgresLedger(pg_url) as a, a.guard("job") as lease:
        pace = SharedPace(a, profiles.profiles["rapyd"])
        lease._stop.set()  # no heartbeat renews the trust meanwhile
        now = time.monotonic()
        pace._slots.append((now + 0.15, now + 10))  # a slot a little ahead ...
        lease.trusted_until = now + 0.05  # ... past the trust horizon
        with pytest.raises(LedgerError, match="could not renew its lease"):
            anyio.run(pace.acquire)


def test_recording_a_job_file_slower_than_the_statement_timeout_still_records_it(
    pg_url: str, tmp_path: Path, profiles: Config
) -> None:
    """A job file that takes longer to record than a statement may run (millions of rows) is recorded, not
    cancelled; a worker waiting meanwhile to join it joins it."""
    from batchvoid import jobfile
    from batchvoid.ledger import Ingest, NewJob

    path = job_file(tmp_path, [("rapyd", f"i{k}") for k in range(50)])
    joined: list[Ingest] = []

    def join() -> None:
        with PostgresLedger(pg_url) as other:
            other._db.execute("SET statement_timeout = '200ms'")
            joined.append(
                other.ingest(NewJob("job", str(path), "sha", "fp", jobfile.read(path, profiles.profiles)))
            )

    joiner = threading.Thread(target=join)

    def slowly() -> Iterator[Item | RowError]:
        for n, row in enumerate(jobfile.read(path, profiles.profiles)):
            if n == 25:
                joiner.start()  # it waits for this ingest to commit ...
                time.sleep(0.4)  # ... which takes a while: a big file's reading, in short
            yield row

    with PostgresLedger(pg_url) as ledger:
        ledger._db.execute("SET statement_timeout = '200ms'")  # as 60 s to a file of millions of rows
        found = ledger.ingest(NewJob("job", str(path), "sha", "fp", slowly()))
        joiner.join(10)
        assert found.recorded
        assert found.items == 50
        assert [j.joined for j in joined] == [True]


def test_a_ledger_closes_its_shared_limits_connection_with_it(pg_url: str, profiles: Config) -> None:
    """No connection outlives its ledger: the shared pace's goes with the rest."""
    with PostgresLedger(pg_url) as a:
        SharedPace(a, profiles.profiles["rapyd"])._reserve()
    database = pg_url.rpartition("/")[2]
    deadline = time.monotonic() + 3  # a closed connection's server process takes a moment to go
    with psycopg.connect(pg_url, autocommit=True) as db:
        while (
            left := db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'batchvoid'",
                (database,),
            ).fetchone()
        ) != (0,) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert left == (0,)


def test_a_joining_worker_names_the_live_ones_and_when_their_leases_end(pg_url: str) -> None:
    """Joining (or refused by --max-workers), a worker says who is live and how long a gone one may hold its items."""
    me = f"pid {os.getpid()} on {socket.gethostname()}, lease ends in"
    with PostgresLedger(pg_url) as a, PostgresLedger(pg_url) as b, a.guard("job"):
        said = io.StringIO()
        with b.guard("job", out=said):
            pass
        assert said.getvalue().startswith(f"Joining job 'job' with 1 live worker ({me} ")
        with (
            pytest.raises(LedgerLockedError, match=f"already has 1 live worker \\({me} "),
            b.guard("job", max_workers=1),
        ):
            pass


def test_a_reap_straight_after_the_heartbeats_connection_was_killed_runs_on_a_new_one(pg_url: str) -> None:
    """A claim with nothing to take reaps on the heartbeat's connection: killed between beats, it is replaced, and the
    reap (which the claim would otherwise raise from, stopping the run) goes on."""
    with PostgresLedger(pg_url) as a, a.guard("job") as lease:
        for _ in range(2):
            assert lease._db is not None
            with psycopg.connect(pg_url, autocommit=True) as db:
                db.execute("SELECT pg_terminate_backend(%s)", (lease._db.info.backend_pid,))
            lease.reap()
        assert [w.state for w in a.workers("job")] == ["live"]


def test_a_report_streams_the_items_rather_than_holding_them_all(
    pg_url: str, tmp_path: Path, profiles: Config
) -> None:
    """`report` on a big job: reading every item one after another holds a page of them in memory, not the job."""
    import tracemalloc

    path = job_file(tmp_path, [("rapyd", f"invoice-with-a-longish-id-{k:06d}") for k in range(20_000)])
    with PostgresLedger(pg_url) as ledger:
        job = recorded(ledger, path, profiles)
        tracemalloc.start()
        try:
            count = sum(1 for _ in ledger.items(job))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert count == 20_000
    assert peak < 4_000_000, peak  # all of them: 13.7 MB
    with PostgresLedger(pg_url) as ledger:
        first = [row["invoice_id"] for row in islice(ledger.items(job), 2)]  # left half read, as run.py does
        assert first == ["invoice-with-a-longish-id-000000", "invoice-with-a-longish-id-000001"]
        assert ledger.counts(job) == {("rapyd", ItemState.PENDING): 20_000}  # its cursor is gone
        assert list(ledger.items(job, {ItemState.FAILED})) == []


def test_successes_after_a_429_raise_the_accounts_shared_rate_again(pg_url: str, profiles: Config) -> None:
    """AIMD through the row: a 429 cuts the account's rate; the lane's successes since raise it at its next reservation."""
    profile = profiles.profiles["rapyd"]

    def learned() -> float:
        with psycopg.connect(pg_url, autocommit=True) as db:
            row = db.execute("SELECT adaptive_interval FROM batchvoid.limiter").fetchone()
        assert row is not None
        return float(row[0])

    with PostgresLedger(pg_url) as a:
        pace = SharedPace(a, profile)
        pace.adaptive.throttled(time.monotonic(), 0.0)
        pace._reserve()  # writes the cut
        cut = learned()
        for _ in range(50):
            pace.adaptive.succeeded()
        pace._slots.clear()
        anyio.run(pace.acquire)  # its next reservation carries them
        assert learned() < cut
