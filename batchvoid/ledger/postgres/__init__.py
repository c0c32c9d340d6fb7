"""The PostgreSQL ledger: one job shared by many `batchvoid run` workers, on many machines.

Selected by a `postgresql://` (or `postgres://`) URL as `--ledger` or BATCHVOID_LEDGER. It holds
the tables of the SQLite ledger in the schema `batchvoid` of that database, created and
versioned here, plus what sharing needs (see schema.sql and SCALE-OUT.md, the design brief):

- **Join.** The first worker records the job (under a transaction-scoped advisory lock, in one
  transaction); a worker that finds it recorded, or waits on that lock, joins it.
- **Claims** take a batch of one provider's unowned items with `FOR UPDATE SKIP LOCKED`, from
  the lane's own cursor (line), rescanning from the start once the cursor runs dry, so that
  reaped or released items are found. Each claim bumps the item's `claim` epoch and records
  the worker as its owner; its state moves to in flight, as in SQLite.
- **Fenced writes.** A Finish or Release writes only where the item is still owned by this
  worker under the same epoch: a worker that lost its lease never overwrites the new owner's
  outcome (its write is a no-op; its attempt rows stay, as history).
- **Leases** (`lease`) live in the database's clock; any worker reaps the dead in one
  statement, which gives their items back with their state kept, so an in-flight item is
  resent with its idempotency key and a void that happened counts as done.
- **Exit.** A claim that finds nothing waits while a live peer holds items of the provider
  (they may come back), and returns nothing only when nothing is left that this worker or a
  live peer could send: the worker's exit status then speaks for the job.
- **Limits** (`pace`) are one schedule per provider account in the database.
- **Runs.** Each worker's run is a record of the job (`runs`), tied to its worker row: a run
  with no end is running while that worker lives, and died once it is reaped. The run's id is
  on every attempt it sends and every outcome it writes.

Three connections per worker: the work (claims, writes, queries), the heartbeat, the limiter.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Self, TextIO

from batchvoid.errors import LedgerError
from batchvoid.keys import idempotency_key
from batchvoid.ledger.api import (
    JOB_FIELDS,
    MAX_ERRORS_SHOWN,
    Duplicate,
    Holder,
    Ingest,
    Job,
    NewJob,
    NewRun,
    Rows,
    Run,
    RunEnd,
    WorkerRow,
    now,
)
from batchvoid.ledger.location import shown
from batchvoid.ledger.ops import Attempt, Finish, Op, Release
from batchvoid.models import UNACTED_REDIRECTS, UNDONE, Item, ItemState, RowError, WorkItem

if TYPE_CHECKING:
    import psycopg

    from batchvoid.config import Profile
    from batchvoid.ledger.postgres.lease import WorkerLease
    from batchvoid.ledger.postgres.pace import LimiterConnection
    from batchvoid.pace import Pace

SCHEMA_VERSION = 2
SCHEMA = "batchvoid"
_SCHEMA_SQL = files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")
# What brings a schema of the version before up to each version, in place (schema.sql holds
# the tables as they are now, for a new ledger).
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE items ADD COLUMN run TEXT",
        "ALTER TABLE attempts ADD COLUMN run TEXT",
        *(s for s in _SCHEMA_SQL.split(";") if "EXISTS runs" in s or "EXISTS attempts_throttled" in s),
    ),
}
assert len(_MIGRATIONS[2]) == 5, "schema.sql lost the runs table or its indexes"
_SETUP_LOCK = 0x62_76_00_01  # the advisory lock id of the schema's setup
_HAS_META = f"SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = '{SCHEMA}' AND tablename = 'meta')"  # noqa: S608 - a constant
_PEER_POLL_S = 0.5  # how often a lane with nothing to claim looks again while a live peer holds items
# Items a worker claims at a time, at most, whatever its lane asks: a lane alone claims a second
# of work (256 without a limit), which among peers would leave them idle and end the job on one
# worker's long tail; and a dead worker's claim is what gets resent.
SHARED_CLAIM_MAX = 16
_ITEM_COLUMNS = (
    "id, job, provider, invoice_id, line, void_date, company_id, store, metadata, idempotency_key,"
    " state, reason, attempts, http_status, reference, created_at, updated_at"
)
_PENDING, _IN_FLIGHT = str(ItemState.PENDING), str(ItemState.IN_FLIGHT)
_ITEMS_PAGE = 2000  # items a report reads from the server at a time

_CLAIM = """
WITH picked AS MATERIALIZED (
    SELECT id, state AS was FROM items
    WHERE job = %(job)s AND provider = %(provider)s AND worker_id IS NULL
      AND state IN ('pending', 'in_flight') AND line > %(after)s
    ORDER BY line LIMIT %(limit)s FOR UPDATE SKIP LOCKED
)
UPDATE items SET worker_id = %(me)s, claim = items.claim + 1, state = 'in_flight', updated_at = %(at)s
FROM picked WHERE items.id = picked.id
RETURNING items.id, items.line, items.invoice_id, items.void_date, items.company_id, items.store,
    items.metadata, items.idempotency_key, items.attempts, picked.was, items.claim
"""
_PEERS_HOLD = """
SELECT EXISTS (SELECT 1 FROM items JOIN workers w ON w.id = items.worker_id
    WHERE items.job = %(job)s AND items.provider = %(provider)s AND items.worker_id <> %(me)s
      AND items.state IN ('pending', 'in_flight') AND w.state = 'live')
"""
_UNOWNED_LEFT = """
SELECT EXISTS (SELECT 1 FROM items WHERE job = %(job)s AND provider = %(provider)s
    AND worker_id IS NULL AND state IN ('pending', 'in_flight'))
"""
# An outcome's time is the database's clock (as the ledger writes a time), so that a redrive
# can tell it from a session's start whatever the workers' clocks say.
_FINISH = """
WITH f AS (SELECT * FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::text[], %s::int[], %s::text[],
    %s::int[]) AS f (id, claim, state, reason, http_status, reference, sent)),
done AS (
    UPDATE items SET state = f.state, reason = f.reason, http_status = f.http_status,
        reference = coalesce(f.reference, items.reference), attempts = items.attempts + f.sent,
        updated_at = to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"+00:00"'),
        worker_id = NULL, run = %s
    FROM f WHERE items.id = f.id AND items.worker_id = %s AND items.claim = f.claim
    RETURNING 1)
UPDATE workers SET done = done + (SELECT count(*) FROM done) WHERE id = %s
"""
_RELEASE = """
UPDATE items SET state = f.state, attempts = items.attempts + f.sent, updated_at = %s, worker_id = NULL,
    run = %s
FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::int[]) AS f (id, claim, state, sent)
WHERE items.id = f.id AND items.worker_id = %s AND items.claim = f.claim AND items.state = 'in_flight'
"""
_ATTEMPT = """
INSERT INTO attempts (item, attempt, at, outcome, http_status, latency_ms, detail, worker_id, run)
SELECT *, %s, %s
FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::text[], %s::int[], %s::int[], %s::text[])
"""


def _text(value: object) -> object:
    """Text that PostgreSQL takes: no NUL, no lone surrogate (a provider's words may hold either)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode()
    return value


def one(cur: psycopg.Cursor[Any]) -> Any:
    """The one row a statement returns."""
    row = cur.fetchone()
    assert row is not None
    return row


def _driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise LedgerError(
            "a postgresql:// ledger needs the PostgreSQL driver, which is not installed: "
            "pip install 'batchvoid[postgresql]' (psycopg 3)"
        ) from None
    return psycopg


class PostgresLedger:
    """A batchvoid ledger in a PostgreSQL database. Use as a context manager."""

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.url = url
        self.readonly = readonly
        self._pg = _driver()
        self._lock = threading.RLock()  # the writer thread's commits, the lanes' claims, the rest
        self._db = self.connect("cannot connect to it")
        self.worker_id: int | None = None  # once this process joined a job as a worker (guard)
        self.lease: WorkerLease | None = None
        self._claims: dict[int, int] = {}  # item id -> the claim epoch this worker holds it by
        self.stopping = threading.Event()  # set by a signal (see guard): a claim stops waiting on peers
        self.limits: LimiterConnection | None = None  # the shared pace's connection, once a lane needs it
        self._run: str | None = None  # the run begun on this ledger: its id stamps its writes
        self.version = SCHEMA_VERSION  # of the schema found (a read-only look takes an older one)
        try:
            self._prepare_schema()
        except BaseException:
            self._db.close()
            raise

    # -- connections and faults ------------------------------------------------------------

    @property
    def location(self) -> str:
        return shown(self.url)

    def connect(self, doing: str) -> psycopg.Connection[Any]:
        """A new autocommit connection, its search path set to batchvoid's schema."""
        try:
            db = self._pg.connect(self.url, autocommit=True, connect_timeout=10, application_name="batchvoid")
            db.execute(f"SET search_path TO {SCHEMA}")
            db.execute("SET statement_timeout = '60s'")  # no held transaction pins the queue's vacuum
            if self.readonly:
                db.execute("SET default_transaction_read_only = on")
        except self._pg.Error as exc:
            raise self.fault(exc, doing) from exc
        return db  # type: ignore[no-any-return]

    def fault(self, exc: Exception, doing: str) -> LedgerError:
        """A driver error as a LedgerError naming the database and what to check."""
        detail = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, self._pg.OperationalError):
            hint = (
                "check that the server is running and reachable, and the URL's user, database and "
                "password (PGPASSWORD or ~/.pgpass work too); nothing is lost: run the same command again"
            )
        else:
            hint = "nothing is lost: run the same command again once it is fixed"
        return LedgerError(f"{self.location}: {doing}: {detail}; {hint}")

    @contextmanager
    def _sql(self, doing: str, *, transaction: bool = False) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor on the work connection (in one transaction, if asked); faults said as `doing`."""
        with self._lock:
            try:
                if transaction:
                    with self._db.transaction(), self._db.cursor() as cur:
                        yield cur
                else:
                    with self._db.cursor() as cur:
                        yield cur
            except self._pg.Error as exc:
                raise self.fault(exc, doing) from exc

    def _prepare_schema(self) -> None:
        with self._sql("cannot read its batchvoid schema") as cur:
            cur.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.meta",))
            exists = one(cur)[0] is not None
        if self.readonly:
            if not exists:
                raise LedgerError(
                    f"{self.location}: no batchvoid ledger in this database (no schema {SCHEMA!r}): "
                    "check the URL; a `batchvoid run` with it creates one"
                )
        elif not exists:
            with self._sql("cannot set it up", transaction=True) as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
                # Another worker may have set it up while this one waited for the lock: then
                # touch nothing (its tables are in use, and CREATE INDEX would lock them).
                # (pg_tables, not to_regclass: the catalog cache may not have seen that commit yet)
                cur.execute(_HAS_META)
                if not one(cur)[0]:
                    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
                    cur.execute(_SCHEMA_SQL)
                    cur.execute("INSERT INTO meta VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),))
        with self._sql("cannot read its schema version") as cur:
            version = _version(cur)
        if version is not None and version < SCHEMA_VERSION and not self.readonly:
            with self._sql("cannot bring its batchvoid schema up to this version", transaction=True) as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SETUP_LOCK,))
                version = _version(cur)  # a worker starting at the same time may have done it
                assert version is not None
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        cur.execute(statement)
                cur.execute("UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
                version = SCHEMA_VERSION
        if version is None or version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.location}: its batchvoid schema is version {version}, and this batchvoid "
                f"reads versions up to {SCHEMA_VERSION}: run the batchvoid release that wrote it "
                "(or a newer one)"
            )
        self.version = version

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self.limits is not None:
            self.limits.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs ------------------------------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        jobs = self._jobs("SELECT * FROM jobs WHERE job_id = %s", (job_id,))
        return jobs[0] if jobs else None

    def jobs(self) -> list[Job]:
        return self._jobs("SELECT * FROM jobs ORDER BY id", ())

    def _jobs(self, query: str, params: Sequence[Any]) -> list[Job]:
        with self._sql("cannot read its jobs") as cur:
            cur.execute(query, params)
            names = [d.name for d in cur.description or ()]
            rows = cur.fetchall()
        return [Job(**{n: v for n, v in zip(names, row, strict=True) if n in JOB_FIELDS}) for row in rows]

    def targets(self, job: Job) -> dict[str, str]:
        with self._sql("cannot read the job's targets") as cur:
            cur.execute("SELECT profile, target FROM targets WHERE job = %s", (job.id,))
            return dict(cur.fetchall())

    def record_targets(self, job: Job, targets: Mapping[str, str], *, simulated: bool) -> None:
        with self._sql("cannot record the job's targets", transaction=True) as cur:
            cur.execute("UPDATE jobs SET simulated = %s WHERE id = %s", (int(simulated), job.id))
            cur.executemany(
                "INSERT INTO targets VALUES (%s, %s, %s)"
                " ON CONFLICT (job, profile) DO UPDATE SET target = excluded.target",
                [(job.id, profile, target) for profile, target in targets.items()],
            )

    def touched(self, job: Job) -> dict[str, dict[ItemState, int]]:
        with self._sql("cannot read the job's items") as cur:
            cur.execute(
                "SELECT provider, state, count(*) FROM items WHERE job = %s AND state <> 'pending'"
                " AND NOT (state = 'failed' AND coalesce(http_status, 0) = ANY(%s))"
                " GROUP BY provider, state",
                (job.id, list(UNACTED_REDIRECTS)),
            )
            touched: dict[str, dict[ItemState, int]] = {}
            for provider, state, n in cur:
                touched.setdefault(provider, {})[ItemState(state)] = n
            return touched

    def void_dates(self, job: Job) -> dict[str, dict[str, int]]:
        with self._sql("cannot read the job's void dates") as cur:
            cur.execute(
                "SELECT provider, void_date, count(*) FROM items WHERE job = %s AND void_date IS NOT NULL"
                " GROUP BY provider, void_date ORDER BY provider, void_date",
                (job.id,),
            )
            dates: dict[str, dict[str, int]] = {}
            for provider, date, n in cur:
                dates.setdefault(provider, {})[date] = n
        return dates

    def fill_void_dates(self, job: Job, dates: Mapping[str, str]) -> None:
        with self._sql("cannot record the job's void dates", transaction=True) as cur:
            for provider, date in dates.items():
                cur.execute(
                    "UPDATE items SET void_date = %s WHERE job = %s AND provider = %s AND void_date IS NULL"
                    " AND state IN ('pending', 'in_flight', 'failed')",
                    (date, job.id, provider),
                )

    def ingest(self, new: NewJob, accept: Callable[[set[str]], None] | None = None) -> Ingest:
        """Record a new job and all its items in one transaction, or nothing if any row is bad.

        Under a lock on the job's name: of workers starting together, the first records the job,
        and the others wait for its commit and then join it (`Ingest.joined`), reading no row.
        """
        try:
            return self._ingest(new, accept)
        except _Refused as refused:  # rolled back
            return refused.found

    def _ingest(self, new: NewJob, accept: Callable[[set[str]], None] | None) -> Ingest:
        with self._sql("cannot record the job", transaction=True) as cur:
            # No statement timeout: a file of millions of rows streams through one COPY for minutes,
            # and the workers that wait meanwhile to join the job wait on its lock as long.
            cur.execute("SET LOCAL statement_timeout = 0")
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('batchvoid.job:' || %s, 0))", (new.job_id,)
            )
            cur.execute("SELECT 1 FROM jobs WHERE job_id = %s", (new.job_id,))
            if cur.fetchone() is not None:
                return Ingest(0, 0, joined=True)
            cur.execute(
                "INSERT INTO jobs (job_id, job_file, job_sha256, config_fingerprint, created_at, simulated)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (new.job_id, new.job_file, new.job_sha256, new.config_fingerprint, now(), int(new.simulated)),
            )
            job = one(cur)[0]
            cur.executemany(
                "INSERT INTO targets VALUES (%s, %s, %s)",
                [(job, profile, target) for profile, target in new.targets.items()],
            )
            cur.execute(
                "CREATE TEMP TABLE stage (provider TEXT, invoice_id TEXT, line INTEGER, void_date TEXT,"
                " company_id TEXT, store TEXT, metadata TEXT, idempotency_key TEXT) ON COMMIT DROP"
            )
            found = self._copy_rows(cur, new)
            if found.error_count or not found.items:
                raise _Refused(found)
            created = now()
            cur.execute(
                "INSERT INTO items (job, provider, invoice_id, line, void_date, company_id, store, metadata,"
                " idempotency_key, created_at, updated_at)"
                " SELECT DISTINCT ON (provider, invoice_id) %s, provider, invoice_id, line, void_date,"
                " company_id, store, metadata, idempotency_key, %s, %s FROM stage"
                " ORDER BY provider, invoice_id, line",
                (job, created, created),
            )
            items = cur.rowcount
            cur.execute(
                "INSERT INTO duplicates SELECT %s, s.line, s.provider, s.invoice_id, f.first FROM stage s"
                " JOIN (SELECT provider, invoice_id, min(line) AS first FROM stage GROUP BY 1, 2) f"
                " USING (provider, invoice_id) WHERE s.line <> f.first",
                (job,),
            )
            duplicate_count = cur.rowcount
            cur.execute(
                "SELECT line, provider, invoice_id, first_line FROM duplicates WHERE job = %s"
                " ORDER BY line LIMIT %s",
                (job, MAX_ERRORS_SHOWN),
            )
            first = tuple(Duplicate(*row) for row in cur.fetchall())
            if accept is not None:
                cur.execute("SELECT DISTINCT provider FROM stage")
                accept({provider for (provider,) in cur.fetchall()})
            cur.execute(
                "UPDATE jobs SET items = %s, duplicates = %s WHERE id = %s", (items, duplicate_count, job)
            )
            return Ingest(items, duplicate_count, first)

    def _copy_rows(self, cur: psycopg.Cursor[Any], new: NewJob) -> Ingest:
        rows = 0
        error_count, errors = 0, list[RowError]()
        with cur.copy(
            "COPY stage (provider, invoice_id, line, void_date, company_id, store, metadata,"
            " idempotency_key) FROM STDIN"
        ) as copy:
            for row in new.rows:
                if isinstance(row, RowError):
                    error_count += 1
                    if len(errors) < MAX_ERRORS_SHOWN:
                        errors.append(row)
                elif not error_count:
                    rows += 1
                    copy.write_row(
                        (
                            row.provider,
                            row.invoice_id,
                            row.line,
                            row.void_date,
                            row.company_id,
                            row.store,
                            json.dumps(row.metadata, separators=(",", ":")) if row.metadata else None,
                            idempotency_key(new.job_id, row.provider, row.invoice_id),
                        )
                    )
        return Ingest(rows, 0, error_count=error_count, errors=tuple(errors))

    # -- runs ------------------------------------------------------------------------------

    def begin_run(self, job: Job, new: NewRun) -> Run:
        """Record that this worker's run of `job` begins; its writes carry the run's id."""
        at = now()
        with self._sql("cannot record the run", transaction=True) as cur:
            cur.execute(
                "UPDATE jobs SET started_at = %s, finished_at = NULL, runs = runs + 1 WHERE id = %s",
                (at, job.id),
            )
            cur.execute(
                "INSERT INTO runs (run_id, job, worker_id, username, host, pid, version, command,"
                " simulated, targets, started_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    new.run_id, job.id, self.worker_id, new.user, new.host, new.pid, new.version,
                    _text(new.command), new.simulated, json.dumps(dict(new.targets)), at,
                ),
            )  # fmt: skip
        self._run = new.run_id
        return Run(job.job_id, at, new, alive=True)

    def end_run(self, job: Job, run: Run, end: RunEnd) -> Run:
        """Record how this worker's run ended (whatever its result), with the 429s it recorded."""
        at = now()
        end = RunEnd(
            end.exit_status, end.counts, end.requests, {**end.throttled, **self.throttled(run.run_id)}
        )
        with self._sql("cannot record the end of the run", transaction=True) as cur:
            cur.execute("UPDATE jobs SET finished_at = %s WHERE id = %s", (at, job.id))
            cur.execute(
                "UPDATE runs SET finished_at = %s, exit_status = %s, counts = %s, requests = %s,"
                " throttled = %s WHERE run_id = %s",
                (at, end.exit_status, json.dumps(end.counts), json.dumps(end.requests),
                 json.dumps(end.throttled), run.run_id),
            )  # fmt: skip
        self._run = None
        return Run(run.job_id, run.started_at, run.new, at, end)

    def runs(self, job: Job) -> list[Run]:
        """Every worker's runs of the job, oldest first; one with no end is alive while its worker is."""
        if self.version < 2:  # a read-only look at a ledger from before run records
            return []
        with self._sql("cannot read the job's runs") as cur:
            cur.execute(
                "SELECT r.run_id, r.username, r.host, r.pid, r.version, r.command, r.simulated, r.targets,"
                " r.started_at, r.finished_at, r.exit_status, r.counts, r.requests, r.throttled,"
                " w.state = 'live' AND w.lease_until >= clock_timestamp()"
                " FROM runs r LEFT JOIN workers w ON w.id = r.worker_id WHERE r.job = %s"
                " ORDER BY r.started_at, r.run_id",
                (job.id,),
            )
            rows = cur.fetchall()
        runs = []
        for row in rows:
            new = NewRun(*row[:8])
            end = None if row[10] is None else RunEnd(*row[10:14])
            runs.append(Run(job.job_id, row[8], new, row[9], end, None if end else row[14]))
        return runs

    def throttled(self, run_id: str) -> dict[str, int]:
        """The 429 answers the run recorded in the attempt history, per provider."""
        if self.version < 2:
            return {}
        with self._sql("cannot read the run's attempts") as cur:
            cur.execute(
                "SELECT items.provider, count(*) FROM attempts JOIN items ON items.id = attempts.item"
                " WHERE attempts.run = %s AND attempts.http_status = 429 GROUP BY items.provider",
                (run_id,),
            )
            return dict(cur.fetchall())

    def duplicates(self, job: Job) -> list[Duplicate]:
        with self._sql("cannot read the job's duplicates") as cur:
            cur.execute(
                "SELECT line, provider, invoice_id, first_line FROM duplicates WHERE job = %s ORDER BY line",
                (job.id,),
            )
            return [Duplicate(*row) for row in cur.fetchall()]

    # -- work ------------------------------------------------------------------------------

    def pace(self, profile: Profile) -> Pace:
        """The lane's pace: the provider account's schedule in the database, for every worker."""
        from batchvoid.ledger.postgres.pace import SharedPace

        return SharedPace(self, profile)

    def claim(self, job: Job, provider: str, after_line: int, limit: int) -> list[WorkItem]:
        """Take up to `limit` unowned unfinished items of one provider, after `after_line` first.

        Returns nothing only once nothing is left that this worker or a live peer could send:
        while a live peer holds items of the provider, it waits (they may come back to the
        queue when that peer dies), reaping the dead as it goes.
        """
        me = self._me()
        limit = min(limit, SHARED_CLAIM_MAX)
        while True:
            rows = self._claim_page(job, provider, after_line, limit, me)
            if not rows and after_line > 0:  # the cursor ran dry: anything given back before it?
                rows = self._claim_page(job, provider, 0, limit, me)
            if rows:
                break
            if self.lease is not None:
                self.lease.reap()
            params = {"job": job.id, "provider": provider, "me": me}
            with self._sql("cannot take work from it") as cur:
                cur.execute(_UNOWNED_LEFT, params)
                if one(cur)[0]:
                    continue  # the reap gave some back
                cur.execute(_PEERS_HOLD, params)
                if not one(cur)[0]:
                    return []
            if self.stopping.wait(_PEER_POLL_S):
                return []  # the run is being stopped (a signal): it waits for nobody
            after_line = 0
        rows.sort(key=lambda row: row[1])
        taken = []
        for row in rows:
            self._claims[row[0]] = row[10]
            taken.append(
                WorkItem(
                    id=row[0],
                    item=Item(
                        row[1], provider, row[2], row[3], row[4], row[5], json.loads(row[6]) if row[6] else {}
                    ),
                    idempotency_key=row[7],
                    attempts=row[8],
                    maybe_sent=row[9] == _IN_FLIGHT,
                )
            )
        return taken

    def _claim_page(self, job: Job, provider: str, after: int, limit: int, me: int) -> list[Any]:
        if self.lease is not None:
            self.lease.check()
        with self._sql("cannot take work from it") as cur:
            cur.execute(
                _CLAIM,
                {"job": job.id, "provider": provider, "after": after, "limit": limit, "me": me, "at": now()},
            )
            return cur.fetchall()

    def _me(self) -> int:
        if self.worker_id is None:
            raise LedgerError(f"{self.location}: a run claims work only as a registered worker (guard)")
        return self.worker_id

    def apply(self, ops: Sequence[Op]) -> None:
        """Write a batch of ops in one transaction, each fenced by this worker's claim.

        A Finish or Release of an item this worker no longer holds (its lease ran out and a
        peer took the item over) writes nothing: the new owner's outcome stands.
        """
        me = self._me()
        at = now()
        attempts: list[list[Any]] = [[] for _ in range(7)]
        finishes: list[list[Any]] = [[] for _ in range(7)]
        releases: list[list[Any]] = [[] for _ in range(4)]
        for op in ops:
            if type(op) is Attempt:
                values: tuple[Any, ...] = (
                    op.item,
                    op.number,
                    op.at,
                    op.outcome,
                    op.http_status,
                    op.latency_ms,
                    op.detail,
                )
                columns = attempts
            elif type(op) is Finish:
                claim = self._claims.pop(op.item, -1)
                values = (op.item, claim, op.state.value, op.reason, op.http_status, op.reference, op.sent)
                columns = finishes
            else:
                assert type(op) is Release
                claim = self._claims.pop(op.item, -1)
                values = (op.item, claim, _IN_FLIGHT if op.maybe_sent else _PENDING, op.sent)
                columns = releases
            for column, value in zip(columns, values, strict=True):
                column.append(_text(value))
        with self._sql("cannot record progress", transaction=True) as cur:
            if attempts[0]:
                cur.execute(_ATTEMPT, (me, self._run, *attempts))
            if finishes[0]:
                cur.execute(_FINISH, (*finishes, self._run, me, me))
            if releases[0]:
                cur.execute(_RELEASE, (at, self._run, *releases, me))

    # -- operator queries ------------------------------------------------------------------

    @classmethod
    def open_readonly(cls, url: str) -> PostgresLedger:
        return cls(url, readonly=True)

    def counts(self, job: Job) -> dict[tuple[str, ItemState], int]:
        with self._sql("cannot read the job's counts") as cur:
            cur.execute(
                "SELECT provider, state, count(*) FROM items WHERE job = %s GROUP BY provider, state",
                (job.id,),
            )
            return {(provider, ItemState(state)): n for provider, state, n in cur.fetchall()}

    def items(self, job: Job, states: Collection[ItemState] | None = None, run: str | None = None) -> Rows:
        """The job's items in file order, streamed through a server-side cursor: a page at a time."""
        where, params = _job_filter(job, states, run)
        with self._lock:
            try:
                with self._db.transaction(), self._db.cursor(name="batchvoid_items") as cur:
                    cur.itersize = _ITEMS_PAGE
                    cur.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE {where} ORDER BY line", params)  # noqa: S608 - placeholders only
                    names: list[str] = []
                    for row in cur:
                        names = names or [d.name for d in cur.description or ()]
                        yield dict(zip(names, row, strict=True))
            except self._pg.Error as exc:
                raise self.fault(exc, "cannot read the job's items") from exc

    def duplicate_counts(self, job: Job) -> dict[str, int]:
        with self._sql("cannot read the job's duplicates") as cur:
            cur.execute(
                "SELECT provider, count(*) FROM duplicates WHERE job = %s GROUP BY provider", (job.id,)
            )
            return dict(cur.fetchall())

    def attempt_count(self, job: Job) -> int:
        with self._sql("cannot read the job's attempts") as cur:
            cur.execute("SELECT coalesce(sum(attempts), 0) FROM items WHERE job = %s", (job.id,))
            return int(one(cur)[0])

    def failure_reasons(self, job: Job, limit: int) -> list[tuple[str, str, int]]:
        where, params = _job_filter(job, UNDONE)
        with self._sql("cannot read the job's failures") as cur:
            cur.execute(
                "SELECT provider, coalesce(reason, ''), count(*) AS n FROM items"  # noqa: S608 - placeholders only
                f" WHERE {where} GROUP BY provider, reason ORDER BY n DESC, provider LIMIT %s",
                (*params, limit),
            )
            return [(provider, reason, n) for provider, reason, n in cur.fetchall()]

    def metadata_keys(self, job: Job, states: Collection[ItemState] | None = None) -> list[str]:
        where, params = _job_filter(job, states)
        with self._sql("cannot read the job's items") as cur:
            cur.execute(
                "SELECT m.key FROM items,"  # noqa: S608 - placeholders only
                " json_each(items.metadata::json) WITH ORDINALITY AS m (key, value, n)"
                f" WHERE {where} AND items.metadata IS NOT NULL"
                " GROUP BY m.key ORDER BY min(items.line), min(m.n)",
                params,
            )
            return [key for (key,) in cur.fetchall()]

    def redrive(self, job: Job) -> dict[str, int]:
        """Put the job's failed items back to pending, keeping keys and attempts (see SQLite's).

        As a worker, only those that failed before the job's current session began (see
        `lease.WorkerLease.session_since`): what its live workers failed since stays failed,
        and the worker says so. Redrives of one job take turns.
        """
        where, params = _job_filter(job, UNDONE)
        lease = self.lease
        since = None if lease is None else lease.session_since()
        with self._sql("cannot put the failed items back", transaction=True) as cur:
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('batchvoid.redrive:' || %s, 0))", (job.job_id,)
            )
            if lease is not None and since is not None:
                cur.execute(
                    f"SELECT count(*) FROM items WHERE {where} AND updated_at::timestamptz >= %s",  # noqa: S608 - placeholders only
                    (*params, since),
                )
                lease.kept_failures(one(cur)[0], since)
                where += " AND items.updated_at::timestamptz < %s"
                params.append(since)
            cur.execute(f"SELECT provider, count(*) FROM items WHERE {where} GROUP BY provider", params)  # noqa: S608 - placeholders only
            counts = dict(cur.fetchall())
            cur.execute(
                "INSERT INTO attempts (item, attempt, at, outcome, http_status, latency_ms, detail, run)"  # noqa: S608 - placeholders only
                " SELECT id, attempts, updated_at, state, http_status, NULL, reason, run"
                f" FROM items WHERE {where}",
                params,
            )
            cur.execute(
                "UPDATE items SET state = 'pending', reason = NULL, http_status = NULL, updated_at = %s"  # noqa: S608 - placeholders only
                f" WHERE {where}",
                (now(), *params),
            )
        return counts

    # -- workers ---------------------------------------------------------------------------

    def guard(
        self,
        job_id: str,
        out: TextIO | None = None,
        *,
        max_workers: int | None = None,
        stopping: threading.Event | None = None,
    ) -> WorkerLease:
        """This process as a worker of `job_id` (see `lease.WorkerLease`): join, or refuse at max_workers."""
        from batchvoid.ledger.postgres.lease import WorkerLease

        self.stopping = stopping or threading.Event()
        return WorkerLease(self, job_id, out=out, max_workers=max_workers)

    def lock_holder(self, job_id: str) -> Holder | None:
        """The oldest live worker of the job, if any."""
        workers = [w for w in self.workers(job_id) if w.state == "live"]
        if not workers:
            return None
        first = workers[0]
        return Holder(first.pid, first.host, first.since)

    def workers(self, job_id: str) -> list[WorkerRow]:
        """Every worker that joined the job, oldest first (live ones as the database's clock sees them)."""
        with self._sql("cannot read the job's workers") as cur:
            cur.execute(
                "SELECT id, host, pid,"
                " to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
                " CASE WHEN state = 'live' AND lease_until < clock_timestamp() THEN 'dead' ELSE state END,"
                " done, done / greatest(extract(epoch FROM coalesce(ended_at, least(clock_timestamp(),"
                " lease_until)) - started_at), 0.001)::float8 FROM workers WHERE job_id = %s ORDER BY id",
                (job_id,),
            )
            return [WorkerRow(*row) for row in cur.fetchall()]


def has_ledger(url: str) -> bool:
    """Whether the database holds a batchvoid ledger (an unreachable one is said as a LedgerError)."""
    ledger = PostgresLedger.__new__(PostgresLedger)
    ledger.url, ledger.readonly, ledger._pg = url, True, _driver()
    db = ledger.connect("cannot connect to it")
    try:
        row = db.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.meta",)).fetchone()
    finally:
        db.close()
    return row is not None and row[0] is not None


class _Refused(Exception):
    """Raised inside the ingest's transaction to roll it back: the job file has bad rows (or none)."""

    def __init__(self, found: Ingest) -> None:
        self.found = found


def _version(cur: psycopg.Cursor[Any]) -> int | None:
    cur.execute("SELECT value FROM meta WHERE key = 'schema_version'")
    row = cur.fetchone()
    return int(row[0]) if row else None


def _job_filter(
    job: Job, states: Collection[ItemState] | None, run: str | None = None
) -> tuple[str, list[object]]:
    """A WHERE clause (on `items`) for the job's items, those in `states`, those `run` last wrote."""
    where, params = "items.job = %s", list[object]([job.id])
    if states is not None:
        params.append([str(s) for s in sorted(states)])
        where += " AND items.state = ANY(%s)"
    if run is not None:
        params.append(run)
        where += " AND items.run = %s"
    return where, params
