"""A worker's registration and lease: how many `batchvoid run` processes share one job safely.

Joining a job inserts a `workers` row whose lease ends `lease_s` seconds later on the
database's clock; a heartbeat thread renews it every quarter lease, and reaps: any worker
whose lease ran out is marked dead in the same statement that gives its items back to the
queue (their state kept: an in-flight item is resent with its idempotency key). No leader,
no worker's own clock: only the database's `clock_timestamp()` decides who is dead.

The lease's connection, when the server killed it (or restarted), is replaced on the spot. A
worker trusts its own lease only until the send time of its last good heartbeat plus the lease
less a margin (as River does with its leader): past that, `check` refuses to claim and the
shared pace refuses to send, so a worker cut off from the database stops before a peer
can take its items over. A heartbeat that finds the worker no longer live (it was reaped)
makes it stop too; its later writes are fenced off (see the ledger's `apply`).

On PostgreSQL this replaces the run lock: `--max-workers N` refuses a worker beyond N live
ones (exit 4), and N = 1 is SQLite's one run per job.

The job's live workers and those they overlapped, one after another, are one *session* of the
job (`session_since`): what its workers recorded belongs to it. `--retry-failed` puts back only
the failures from before the session began, so that a worker joining it late (a restarted pod)
does not send again what its peers have just failed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TextIO

from batchvoid.errors import LedgerError, LedgerLockedError
from batchvoid.ledger.postgres import one

if TYPE_CHECKING:
    import psycopg

    from batchvoid.ledger.postgres import PostgresLedger

LEASE_ENV = "BATCHVOID_LEASE_S"
DEFAULT_LEASE_S = 20.0
_REAP = """
WITH dead AS (
    UPDATE workers SET state = 'dead', ended_at = lease_until
    WHERE state = 'live' AND lease_until < clock_timestamp() RETURNING id)
UPDATE items SET worker_id = NULL FROM dead WHERE items.worker_id = dead.id
"""
# Every worker of the job with the end of its time in it (NULL: it is live), latest start first.
_SPANS = """
SELECT started_at, CASE WHEN state = 'live' AND lease_until >= clock_timestamp() THEN NULL
    ELSE coalesce(ended_at, lease_until) END
FROM workers WHERE job_id = %s ORDER BY started_at DESC
"""


def lease_seconds(env: dict[str, str] | os._Environ[str] = os.environ) -> float:
    """The lease a worker takes: BATCHVOID_LEASE_S, else 20 s."""
    raw = env.get(LEASE_ENV, "").strip()
    if not raw:
        return DEFAULT_LEASE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 1 <= value <= 3600:
        raise LedgerError(
            f"{LEASE_ENV}={raw!r}: a worker's lease is a number of seconds from 1 to 3600 "
            f"(default {DEFAULT_LEASE_S:g}); set it alike for every worker of a job, or unset it"
        )
    return value


def _who(workers: list[tuple[str, int, float]]) -> str:
    """Live workers for a message: who, and when each one's lease ends unless it renews it."""
    shown = "; ".join(
        f"pid {pid} on {host}, lease ends in {max(left, 0):.0f}s" for host, pid, left in workers[:5]
    )
    return shown + (f"; {len(workers) - 5} more" if len(workers) > 5 else "")


class WorkerLease:
    """This process as one worker of a job on a PostgreSQL ledger. A context manager."""

    def __init__(
        self,
        ledger: PostgresLedger,
        job_id: str,
        *,
        out: TextIO | None = None,
        max_workers: int | None = None,
    ) -> None:
        self.ledger = ledger
        self.job_id = job_id
        self.out = out
        self.max_workers = max_workers
        self.lease_s = lease_seconds()
        self.margin_s = min(5.0, self.lease_s / 4)
        self.id: int | None = None
        self.lost = False  # a heartbeat found this worker reaped
        self.trusted_until = 0.0  # time.monotonic(): no claim and no send past it
        self._lock = threading.Lock()
        self._db: psycopg.Connection[Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        self._db = self.ledger.connect("cannot join the job as a worker")
        try:
            peers = self._register()
        except BaseException:
            self._db.close()
            raise
        self.ledger.worker_id, self.ledger.lease = self.id, self
        self._thread = threading.Thread(target=self._beat, name="batchvoid-heartbeat", daemon=True)
        self._thread.start()
        if peers and self.out is not None:
            # A worker that died without a word (a lost database, a dead machine) is live until its
            # lease ends: its lease says how long this one may wait for the items it holds.
            print(
                f"Joining job {self.job_id!r} with {len(peers)} live worker{'s' * (len(peers) != 1)} "
                f"({_who(peers)}).",
                file=self.out,
                flush=True,
            )
        return self

    def _register(self) -> list[tuple[str, int, float]]:
        pg = self.ledger._pg
        assert self._db is not None
        t0 = time.monotonic()
        try:
            with self._db.transaction(), self._db.cursor() as cur:
                cur.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended('batchvoid.workers:' || %s, 0))",
                    (self.job_id,),
                )
                cur.execute(_REAP)
                cur.execute(
                    "SELECT host, pid, extract(epoch FROM lease_until - clock_timestamp())::float8"
                    " FROM workers WHERE job_id = %s AND state = 'live' ORDER BY id",
                    (self.job_id,),
                )
                live = cur.fetchall()
                if self.max_workers is not None and len(live) >= self.max_workers:
                    raise LedgerLockedError(
                        f"job {self.job_id!r} in {self.ledger.location} already has {len(live)} live "
                        f"worker{'s' * (len(live) != 1)} ({_who(live)}), and --max-workers is "
                        f"{self.max_workers}. Nothing was sent. Let one finish (one that is gone counts "
                        "until its lease ends), or raise --max-workers; `batchvoid status --ledger URL "
                        f"--job-id {self.job_id}` shows them"
                    )
                cur.execute(
                    "INSERT INTO workers (job_id, host, pid, lease_until)"
                    " VALUES (%s, %s, %s, clock_timestamp() + make_interval(secs => %s)) RETURNING id",
                    (self.job_id, socket.gethostname(), os.getpid(), self.lease_s),
                )
                self.id = one(cur)[0]
        except pg.Error as exc:
            raise self.ledger.fault(exc, "cannot join the job as a worker") from exc
        self.trusted_until = t0 + self.lease_s - self.margin_s
        return live

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            if not self.beat():
                return

    def beat(self) -> bool:
        """Renew the lease, then reap; False once this worker was found reaped (it must stop)."""
        t0 = time.monotonic()
        try:
            renewed = self._execute(
                "UPDATE workers SET lease_until = clock_timestamp() + make_interval(secs => %s)"
                " WHERE id = %s AND state = 'live'",
                (self.lease_s, self.id),
            ).rowcount
            if not renewed:
                self.lost = True
                return False
            self.trusted_until = t0 + self.lease_s - self.margin_s
            self.reap()
        except (self.ledger._pg.Error, LedgerError):
            pass  # the database is away: the next beat tries again, else the trust horizon runs out
        return True

    def reap(self) -> None:
        """Mark the workers whose lease ran out dead, and give their items back: one statement."""
        pg = self.ledger._pg
        try:
            self._execute(_REAP)
        except (pg.errors.DeadlockDetected, pg.errors.SerializationFailure, pg.errors.LockNotAvailable):
            pass  # another worker is reaping the same ones
        except pg.Error as exc:
            raise self.ledger.fault(exc, "cannot check on the other workers") from exc

    def _execute(self, query: str, params: tuple[Any, ...] = ()) -> psycopg.Cursor[Any]:
        """Run one statement on the lease's connection; once more on a new one if the old one broke.

        A connection the server killed (an idle-connection reaper, a restart) says so only when
        used: the statements here are idempotent, so the lease lives on through it.
        """
        with self._lock:
            try:
                return self._connection().execute(query, params)
            except self.ledger._pg.OperationalError:
                if not self._broken():
                    raise
            return self._connection().execute(query, params)

    def _broken(self) -> bool:
        return self._db is None or self._db.broken or self._db.closed

    def _connection(self) -> psycopg.Connection[Any]:
        """The lease's connection, a new one if the old one broke (the caller holds the lock)."""
        if self._broken():
            if self._db is not None:
                self._db.close()
            self._db = self.ledger.connect("cannot renew this worker's lease")
        assert self._db is not None
        return self._db

    def session_since(self) -> dt.datetime:
        """When the job's current session began (database clock): the earliest start among its
        live workers (this one too) and the workers that overlapped them, one after another."""
        self.check()
        try:
            spans = self._execute(_SPANS, (self.job_id,)).fetchall()
        except self.ledger._pg.Error as exc:
            raise self.ledger.fault(exc, "cannot read the job's workers") from exc
        since: dt.datetime = min((started for started, end in spans if end is None), default=spans[0][0])
        for started, end in spans:  # latest start first: each overlap reaches further back
            if started < since and (end is None or end >= since):
                since = started
        return since

    def kept_failures(self, count: int, since: dt.datetime) -> None:
        """Say that --retry-failed leaves alone the `count` failures of the current session."""
        if count and self.out is not None:
            print(
                f"--retry-failed: {count} failed item{'s' * (count != 1)} of job {self.job_id!r} "
                f"stay failed: the job's live workers recorded {'them' if count != 1 else 'it'} since "
                f"{since.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC, in this session of the job. The "
                "failures from before it go back to pending; to send these again, run with "
                "--retry-failed once every worker of the job has finished",
                file=self.out,
                flush=True,
            )

    def check(self) -> None:
        """Raise unless this worker may still claim and send: its lease holds, as far as it knows."""
        if self.lost:
            raise LedgerError(
                f"{self.ledger.location}: this worker's lease on job {self.job_id!r} ran out (it was "
                "cut off from the database or stalled) and its items went to the other workers, so it "
                "stopped. Nothing is lost; run the same command again to rejoin the job"
            )
        if time.monotonic() > self.trusted_until:
            raise LedgerError(
                f"{self.ledger.location}: this worker could not renew its lease on job {self.job_id!r} "
                f"for {self.lease_s - self.margin_s:g}s, so it stopped sending before another worker "
                "takes its items over. Nothing is lost; once the database is reachable, run the same "
                "command again"
            )

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.margin_s)  # one stuck on a dead network is left behind (a daemon)
        beating = self._thread is not None and self._thread.is_alive()
        try:
            if beating or not self._leave(self._db):
                # Its connection is gone (killed, or the server restarted): leave through a new
                # one, so that a rerun need not wait out this lease; else the lease runs out.
                with contextlib.suppress(LedgerError), self.ledger.connect("cannot leave the job") as db:
                    self._leave(db)
        finally:
            self.ledger.worker_id, self.ledger.lease = None, None
            if self._db is not None and not beating:
                self._db.close()

    def _leave(self, db: psycopg.Connection[Any] | None) -> bool:
        """Give back what this worker still holds and mark it left; False if the database is away."""
        if db is None:
            return False
        try:
            with self._lock if db is self._db else contextlib.nullcontext(), db.transaction():
                # What it still holds (claimed items a stop left in flight) goes back at once.
                db.execute("UPDATE items SET worker_id = NULL WHERE worker_id = %s", (self.id,))
                db.execute(
                    "UPDATE workers SET state = 'left', ended_at = clock_timestamp()"
                    " WHERE id = %s AND state = 'live'",
                    (self.id,),
                )
        except self.ledger._pg.Error:
            return False
        return True
