"""A worker's registration and lease: how many `batchvoid run` processes share one job safely.

Joining a job inserts a `workers` row whose lease ends `lease_s` seconds later on the
database's clock; a heartbeat thread renews it every quarter lease, and reaps: any worker
whose lease ran out is marked dead in the same statement that gives its items back to the
queue (their state kept: an in-flight item is resent with its idempotency key). No leader,
no worker's own clock: only the database's `clock_timestamp()` decides who is dead.

A worker trusts its own lease only until the send time of its last good heartbeat plus the
lease less a margin (as River does with its leader): past that, `check` refuses to claim and
the shared pace refuses to send, so a worker cut off from the database stops before a peer
can take its items over. A heartbeat that finds the worker no longer live (it was reaped)
makes it stop too; its later writes are fenced off (see the ledger's `apply`).

On PostgreSQL this replaces the run lock: `--max-workers N` refuses a worker beyond N live
ones (exit 4), and N = 1 is SQLite's one run per job.
"""

from __future__ import annotations

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
            print(
                f"Joining job {self.job_id!r} with {peers} live worker{'s' * (peers != 1)}.",
                file=self.out,
                flush=True,
            )
        return self

    def _register(self) -> int:
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
                    "SELECT host, pid FROM workers WHERE job_id = %s AND state = 'live' ORDER BY id",
                    (self.job_id,),
                )
                live = cur.fetchall()
                if self.max_workers is not None and len(live) >= self.max_workers:
                    who = ", ".join(f"pid {pid} on {host}" for host, pid in live[:5])
                    raise LedgerLockedError(
                        f"job {self.job_id!r} in {self.ledger.location} already has {len(live)} live "
                        f"worker{'s' * (len(live) != 1)} ({who}), and --max-workers is {self.max_workers}. "
                        "Nothing was sent. Let one finish, or raise --max-workers; `batchvoid status "
                        f"--ledger URL --job-id {self.job_id}` shows them"
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
        return len(live)

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            if not self.beat():
                return

    def beat(self) -> bool:
        """Renew the lease, then reap; False once this worker was found reaped (it must stop)."""
        t0 = time.monotonic()
        try:
            with self._lock:
                assert self._db is not None
                renewed = self._db.execute(
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
            pass  # the database is away: the trust horizon runs out, and the run stops
        return True

    def reap(self) -> None:
        """Mark the workers whose lease ran out dead, and give their items back: one statement."""
        pg = self.ledger._pg
        try:
            with self._lock:
                assert self._db is not None
                self._db.execute(_REAP)
        except (pg.errors.DeadlockDetected, pg.errors.SerializationFailure, pg.errors.LockNotAvailable):
            pass  # another worker is reaping the same ones
        except pg.Error as exc:
            raise self.ledger.fault(exc, "cannot check on the other workers") from exc

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
            self._thread.join()
        try:
            with self._lock:
                assert self._db is not None
                with self._db.transaction():
                    # What it still holds (claimed items a stop left in flight) goes back at once.
                    self._db.execute("UPDATE items SET worker_id = NULL WHERE worker_id = %s", (self.id,))
                    self._db.execute(
                        "UPDATE workers SET state = 'left', ended_at = clock_timestamp()"
                        " WHERE id = %s AND state = 'live'",
                        (self.id,),
                    )
        except self.ledger._pg.Error:
            pass  # the database is away: the lease runs out, and a peer reaps this worker
        finally:
            self.ledger.worker_id, self.ledger.lease = None, None
            if self._db is not None:
                self._db.close()
