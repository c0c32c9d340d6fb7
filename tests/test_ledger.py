"""The ledger: atomic ingest, duplicates, the per-provider work queue, group-committed writes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio
import pytest

from batchvoid import jobfile
from batchvoid.config import Config
from batchvoid.errors import JobFileError, LedgerError
from batchvoid.keys import idempotency_key
from batchvoid.ledger import Job, LedgerWriter, NewJob, SqliteLedger, now, open_ledger
from batchvoid.ledger.ops import Attempt, Finish, Release
from batchvoid.ledger.sqlite import SCHEMA_VERSION
from batchvoid.models import DONE, UNDONE, Item, ItemState
from tests.conftest import write


def ingest(ledger: SqliteLedger, path: Path, profiles: Config, job_id: str = "job") -> Job:
    result = ledger.ingest(new_job(path, profiles, job_id))
    if not result.recorded:
        raise jobfile.refusal(path, result.errors, result.error_count)
    job = ledger.job(job_id)
    assert job is not None
    return job


def new_job(path: Path, profiles: Config, job_id: str = "job") -> NewJob:
    return NewJob(job_id, str(path), "sha", "fp", jobfile.read(path, profiles.profiles))


def test_ingest_records_items_with_keys_and_reports_duplicates(tmp_path: Path, profiles: Config) -> None:
    """Every row becomes a pending item with its idempotency key; a repeated pair is recorded once."""
    path = write(
        tmp_path / "j.csv", "provider,invoice_id,customer\nrapyd,a,x\nmaple,b,\nrapyd,a,y\nrapyd,c,\n"
    )
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        result = ledger.ingest(new_job(path, profiles))
        assert (result.items, result.duplicates) == (3, 1)
        assert [(d.line, d.first_line) for d in result.first_duplicates] == [(4, 2)]
        job = ledger.job("job")
        assert job is not None
        assert (job.items, job.duplicates) == (3, 1)
        items = list(ledger.items(job))
        assert [(i["line"], i["provider"], i["invoice_id"], i["state"]) for i in items] == [
            (2, "rapyd", "a", "pending"),
            (3, "maple", "b", "pending"),
            (5, "rapyd", "c", "pending"),
        ]
        assert items[0]["idempotency_key"] == idempotency_key("job", "rapyd", "a")
        assert items[0]["metadata"] == '{"customer":"x"}'
        assert [d.line for d in ledger.duplicates(job)] == [4]


def test_a_file_with_bad_rows_leaves_nothing_behind(tmp_path: Path, profiles: Config) -> None:
    """Bad rows refuse the whole file, listing each with its line, and nothing is recorded."""
    body = "provider,invoice_id\nrapyd,a\n" + "rapid,b\n" * 30 + "rapyd,\n"
    path = write(tmp_path / "j.csv", body)
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        with pytest.raises(JobFileError) as caught:
            ingest(ledger, path, profiles)
        assert caught.value.error_count == 31
        message = str(caught.value)
        assert message.startswith(f"{path}: 31 bad rows; nothing was sent.")
        assert f"{path} line 3: unknown provider 'rapid'" in message
        assert "... and 11 more" in message
        assert ledger.job("job") is None
        assert ledger.jobs() == []


def test_a_bad_row_after_many_chunks_refuses_the_whole_file(tmp_path: Path, profiles: Config) -> None:
    """A bad row at line 80,000, after many inserted chunks, leaves no job and no item behind."""
    good = "".join(f"rapyd,inv{n}\n" for n in range(79_998))
    path = write(tmp_path / "j.csv", "provider,invoice_id\n" + good + "rapyd,a b\n" + "rapyd,tail\n")
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        with pytest.raises(JobFileError) as caught:
            ingest(ledger, path, profiles)
        assert caught.value.error_count == 1
        assert f"{path} line 80000: invoice_id 'a b'" in str(caught.value)
        assert ledger.jobs() == []
    with sqlite3.connect(tmp_path / "l.sqlite") as db:
        assert db.execute("SELECT count(*) FROM items").fetchone() == (0,)


def test_duplicates_across_chunks_are_recorded_once_with_their_first_line(
    tmp_path: Path, profiles: Config
) -> None:
    """A pair repeated within a chunk, across a chunk boundary and chunks later keeps its first line."""
    lines = [f"rapyd,inv{n}" for n in range(2_500)]
    lines[999] = lines[1_000] = "maple,same"  # the last row of the first chunk and the first of the next
    lines[2_400] = "maple,same"
    lines[10] = lines[20] = "rapyd,twice"
    path = write(tmp_path / "j.csv", "provider,invoice_id\n" + "\n".join(lines) + "\n")
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
        assert (job.items, job.duplicates) == (2_500 - 3, 3)
        assert [(d.line, d.first_line) for d in ledger.duplicates(job)] == [
            (22, 12),
            (1002, 1001),
            (2402, 1001),
        ]


def test_claims_are_per_provider_in_file_order(tmp_path: Path, profiles: Config) -> None:
    """Each provider's unfinished items are claimed in line order, a batch at a time, finished ones skipped."""
    lines = "".join(f"{'rapyd' if n % 3 else 'maple'},inv{n}\n" for n in range(20))
    path = write(tmp_path / "j.csv", "provider,invoice_id\n" + lines)
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
        first = ledger.claim(job, "rapyd", 0, 5)
        assert [w.item.invoice_id for w in first] == ["inv1", "inv2", "inv4", "inv5", "inv7"]
        (eight,) = (row["id"] for row in ledger.items(job) if row["invoice_id"] == "inv8")
        ledger.claim(job, "rapyd", first[-1].item.line, 1)  # inv8, which finishes
        ledger.apply([Finish(eight, ItemState.VOIDED, None, 200, None, 1)])
        second = ledger.claim(job, "rapyd", first[-1].item.line, 5)
        assert [w.item.invoice_id for w in second] == ["inv10", "inv11", "inv13", "inv14", "inv16"]
        assert all(w.item.provider == "maple" for w in ledger.claim(job, "maple", 0, 100))


def test_a_claim_is_committed_and_tells_what_a_stopped_run_left_in_flight(
    tmp_path: Path, profiles: Config
) -> None:
    """Claimed items are in flight for any other reader at once; items left in flight before are claimed as maybe sent."""
    path = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,a\nrapyd,b\nrapyd,c\n")
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
        other = sqlite3.connect(tmp_path / "l.sqlite")
        a, b = ledger.claim(job, "rapyd", 0, 2)
        assert other.execute("SELECT invoice_id, state FROM items ORDER BY line").fetchall() == [
            ("a", "in_flight"),
            ("b", "in_flight"),
            ("c", "pending"),
        ]
        assert (a.maybe_sent, b.maybe_sent) == (False, False)
        # The run dies here. The next one claims both again, as maybe sent, and c as not.
        again = ledger.claim(job, "rapyd", 0, 10)
        assert [(w.item.invoice_id, w.maybe_sent) for w in again] == [("a", True), ("b", True), ("c", False)]
        other.close()


@pytest.mark.anyio
async def test_writer_commits_outcomes_in_batches_and_on_exit(tmp_path: Path, profiles: Config) -> None:
    """Ops recorded without waiting are all committed by the time the writer closes: finish, attempt, release."""
    path = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,a\nrapyd,b\nrapyd,c\n")
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
        a, b, c = ledger.claim(job, "rapyd", 0, 10)
        async with LedgerWriter(ledger) as writer:
            writer.record(Attempt(a.id, 1, now(), "retryable", 503, 12, "busy"))
            writer.record(Finish(a.id, ItemState.VOIDED, None, 200, "op-1", 2))
            writer.record(Release(b.id, 1, False))  # answered 429, not sent again: pending
            writer.record(Release(c.id, 1, True))  # timed out: may have been voided
        other = sqlite3.connect(tmp_path / "l.sqlite")
        assert other.execute(
            "SELECT invoice_id, state, attempts, reference FROM items ORDER BY line"
        ).fetchall() == [
            ("a", "voided", 2, "op-1"),
            ("b", "pending", 1, None),
            ("c", "in_flight", 1, None),
        ]
        assert other.execute("SELECT attempt, outcome, http_status, latency_ms FROM attempts").fetchall() == [
            (1, "retryable", 503, 12)
        ]
        other.close()


@pytest.mark.anyio
async def test_many_outcomes_share_commits(tmp_path: Path, profiles: Config) -> None:
    """Hundreds of outcomes recorded by concurrent workers are committed in far fewer transactions."""
    path = write(tmp_path / "j.csv", "provider,invoice_id\n" + "".join(f"rapyd,i{n}\n" for n in range(300)))
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
        work = ledger.claim(job, "rapyd", 0, 300)
        commits = 0
        apply = ledger.apply

        def counting(ops: object) -> None:
            nonlocal commits
            commits += 1
            apply(ops)  # type: ignore[arg-type]

        ledger.apply = counting  # type: ignore[method-assign]

        async def finish(writer: LedgerWriter, item: int) -> None:
            await anyio.sleep(0)
            writer.record(Finish(item, ItemState.VOIDED, None, 200, None, 1))

        async with LedgerWriter(ledger) as writer, anyio.create_task_group() as tg:
            for w in work:
                tg.start_soon(finish, writer, w.id)
        assert ledger.counts(job) == {("rapyd", ItemState.VOIDED): 300}
        assert commits < 30


@pytest.mark.anyio
async def test_a_failed_commit_stops_the_writer(tmp_path: Path, profiles: Config) -> None:
    """A commit that fails (a full disk) makes the next record raise, and the writer's exit too."""
    path = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,a\nrapyd,b\n")
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
        a, b = ledger.claim(job, "rapyd", 0, 10)

        def full(ops: object) -> None:
            raise LedgerError("l.sqlite: cannot record progress: the disk that holds it is full")

        ledger.apply = full  # type: ignore[method-assign]
        writer = LedgerWriter(ledger)
        async with writer:
            writer.record(Finish(a.id, ItemState.VOIDED, None, 200, None, 1))
            while writer.error is None:  # the commit fails on the writer's thread
                await anyio.sleep(0)
            with pytest.raises(LedgerError, match="disk that holds it is full"):
                writer.record(Finish(b.id, ItemState.VOIDED, None, 200, None, 1))
            writer.error = None  # (else leaving raises it too: as the next test shows)

        with pytest.raises(LedgerError, match="disk that holds it is full"):
            async with LedgerWriter(ledger) as writer:
                writer.record(Finish(b.id, ItemState.VOIDED, None, 200, None, 1))


def test_a_file_that_is_not_a_ledger_is_refused_untouched(tmp_path: Path) -> None:
    """Pointing --ledger at some other file is a clear error, and the file is left exactly as it was."""
    path = write(tmp_path / "notes.txt", "these are my notes, not a database" * 100)
    before = path.read_bytes()
    with pytest.raises(
        LedgerError, match=r"not a batchvoid ledger \(not an SQLite database\); it was not changed"
    ):
        open_ledger(path)
    assert path.read_bytes() == before


def test_another_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    """An SQLite file that is not a ledger gets no ledger tables written into it."""
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER)")
    before = path.read_bytes()
    with pytest.raises(LedgerError, match="an SQLite database, but not a batchvoid ledger"):
        open_ledger(path)
    assert path.read_bytes() == before


def test_a_ledger_from_a_newer_batchvoid_is_refused_untouched(tmp_path: Path) -> None:
    """A newer schema is refused before anything is written: the file's bytes stay the same."""
    open_ledger(tmp_path / "l.sqlite").close()
    with sqlite3.connect(tmp_path / "l.sqlite") as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()
    before = (tmp_path / "l.sqlite").read_bytes()
    with pytest.raises(
        LedgerError, match=r"written by a newer batchvoid \(ledger schema 99.*it was not changed"
    ):
        open_ledger(tmp_path / "l.sqlite")
    with pytest.raises(LedgerError, match="newer batchvoid"):
        open_ledger(tmp_path / "l.sqlite", readonly=True)
    assert (tmp_path / "l.sqlite").read_bytes() == before


def test_a_batch_keeps_each_items_own_outcome(tmp_path: Path, profiles: Config) -> None:
    """Ops applied grouped by kind leave every item in the state its own op gave it, with its requests counted."""
    path = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,a\nrapyd,b\nrapyd,c\nrapyd,d\n")
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
        a, b, c, d = (w.id for w in ledger.claim(job, "rapyd", 0, 10))
        t = now()
        ledger.apply(
            [
                Finish(a, ItemState.VOIDED, None, 200, None, 1),
                Attempt(b, 1, t, "retryable", 503, 1, None),
                Release(c, 0, False),  # claimed, never sent
                Finish(b, ItemState.VOIDED, None, 200, None, 2),
                Release(d, 2, True),  # a timeout: may have been voided
            ]
        )
        got = {row["invoice_id"]: (row["state"], row["attempts"]) for row in ledger.items(job)}
    assert got == {"a": ("voided", 1), "b": ("voided", 2), "c": ("pending", 0), "d": ("in_flight", 2)}


def test_every_state_is_unfinished_done_or_undone() -> None:
    """An item state is exactly one of: unfinished (pending, in flight), done (void at the provider) or undone (failed)."""
    unfinished = {state for state in ItemState if not state.is_final}
    assert unfinished == {ItemState.PENDING, ItemState.IN_FLIGHT}
    assert {state for state in ItemState if state.is_done} == DONE
    assert {ItemState.VOIDED, ItemState.ALREADY_VOID} == DONE
    assert {ItemState.FAILED} == UNDONE
    assert unfinished | DONE | UNDONE == set(ItemState)
    assert not DONE & UNDONE


def test_failure_reasons_and_redrive_read_the_undone_items(tmp_path: Path, profiles: Config) -> None:
    """The failed items, and only they, are counted in the failure reasons and put back to pending by a redrive."""
    path = write(tmp_path / "j.csv", "provider,invoice_id\n" + "".join(f"rapyd,i{n}\n" for n in range(5)))
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
        states = ["failed", "failed", "voided", "already_void", "pending"]
        db = sqlite3.connect(tmp_path / "l.sqlite")
        for n, state in enumerate(states):
            db.execute("UPDATE items SET state = ?, reason = 'no' WHERE invoice_id = ?", (state, f"i{n}"))
        db.commit()
        db.close()
        assert ledger.failure_reasons(job, 5) == [("rapyd", "no", 2)]
        assert ledger.redrive(job) == {"rapyd": 2}
        assert ledger.counts(job) == {
            ("rapyd", ItemState.PENDING): 3,
            ("rapyd", ItemState.VOIDED): 1,
            ("rapyd", ItemState.ALREADY_VOID): 1,
        }


def test_a_state_this_batchvoid_does_not_know_is_a_ledger_error(tmp_path: Path, profiles: Config) -> None:
    """An item state no batchvoid writes (a hand edit, say the 'skipped' old docs named) is a LedgerError naming it, not a traceback."""
    path = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,a\n")
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
        db = sqlite3.connect(tmp_path / "l.sqlite")
        db.execute("UPDATE items SET state = 'skipped'")
        db.commit()
        db.close()
        with pytest.raises(LedgerError, match=r"state 'skipped', which this batchvoid does not know"):
            ledger.counts(job)


def test_an_error_met_while_reading_rows_is_a_ledger_error(tmp_path: Path, profiles: Config) -> None:
    """An SQLite error raised only as later rows are read (as a damaged page is) is a LedgerError, not a traceback."""
    path = write(tmp_path / "j.csv", "provider,invoice_id\n" + "".join(f"rapyd,inv{n}\n" for n in range(50)))
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        ingest(ledger, path, profiles)

        def fails_on_row_10(line: int) -> int:
            if line > 10:
                raise ValueError("page 7 is damaged")
            return line

        ledger._db.create_function("fails_on_row_10", 1, fails_on_row_10)
        cursor = ledger._sql(ledger._db, "SELECT fails_on_row_10(line) FROM items ORDER BY id", ())
        with pytest.raises(LedgerError, match=r"l\.sqlite: cannot read it: user-defined function raised"):
            list(cursor)


def test_an_sqlite_too_old_for_the_set_based_writes_is_refused_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Python whose SQLite lacks UPDATE ... FROM gets one LedgerError naming both versions, and no file is made."""
    from batchvoid.ledger import sqlite as backend

    monkeypatch.setattr(backend.sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(backend.sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(
        LedgerError, match=r"SQLite is 3\.31\.1, and a batchvoid ledger needs 3\.33\.0 or newer"
    ):
        open_ledger(tmp_path / "l.sqlite")
    assert not (tmp_path / "l.sqlite").exists()


def test_provider_words_that_are_not_valid_unicode_are_recorded_replaced(
    tmp_path: Path, profiles: Config
) -> None:
    """A reason holding a lone surrogate (bytes no codec made sense of) is recorded with it replaced, not lost."""
    path = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,a\n")
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
        (a,) = ledger.claim(job, "rapyd", 0, 10)
        ledger.apply([Finish(a.id, ItemState.FAILED, "HTTP 400: bad \udcff byte", 400, None, 1)])
        (row,) = ledger.items(job)
    assert (row["state"], row["reason"]) == ("failed", "HTTP 400: bad ? byte")


def test_the_work_indexes_are_there_after_any_ingest(tmp_path: Path, profiles: Config) -> None:
    """An ingest into an empty ledger builds its work indexes after the rows; recorded, refused or second, they are there."""

    def indexes() -> set[str]:
        with sqlite3.connect(tmp_path / "l.sqlite") as db:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'items_%'")
            names = {name for (name,) in rows}
        db.close()
        return names

    bad = write(tmp_path / "bad.csv", "provider,invoice_id\nrapyd,a\nrapid,b\n")
    good = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,a\nmaple,b\n")
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        with pytest.raises(JobFileError):
            ingest(ledger, bad, profiles, "bad")
        assert "items_todo" in indexes()
        job = ingest(ledger, good, profiles)
        assert "items_todo" in indexes()
        ingest(ledger, good, profiles, "second")
        assert "items_todo" in indexes()
        assert [w.item.invoice_id for w in ledger.claim(job, "rapyd", 0, 10)] == ["a"]


def _ingest_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name == "batchvoid-ingest"]


def test_an_error_of_the_reading_thread_is_raised_and_records_nothing(
    tmp_path: Path, profiles: Config
) -> None:
    """Rows are read on a thread of their own: what it raises (a signal's RunInterrupted, say)
    after several chunks reaches the caller, nothing is recorded, and the thread is gone."""
    path = write(
        tmp_path / "j.csv", "provider,invoice_id\n" + "".join(f"rapyd,inv{n}\n" for n in range(30_000))
    )

    def rows_then_boom() -> object:
        for n, row in enumerate(jobfile.read(path, profiles.profiles)):
            if n == 22_000:
                raise KeyboardInterrupt  # a BaseException, as RunInterrupted is not
            yield row

    with open_ledger(tmp_path / "l.sqlite") as ledger:
        with pytest.raises(KeyboardInterrupt):
            ledger.ingest(NewJob("job", str(path), "sha", "fp", rows_then_boom()))  # type: ignore[arg-type]
        assert ledger.job("job") is None
        assert _ingest_threads() == []
        job = ingest(ledger, path, profiles)  # and the same file records whole afterwards
        assert job.items == 30_000


def test_an_insert_that_fails_while_the_reader_waits_stops_it_and_rolls_back(
    tmp_path: Path, profiles: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SQLite error on a chunk, with the reading thread blocked on a full queue, is a
    LedgerError; the thread ends rather than hanging, and nothing is recorded."""
    import threading

    from batchvoid.ledger import sqlite as backend

    path = write(
        tmp_path / "j.csv", "provider,invoice_id\n" + "".join(f"rapyd,inv{n}\n" for n in range(60_000))
    )
    made, reader_blocked = [0], threading.Event()
    chunk = backend._chunk

    def counted(items: list[object]) -> object:
        made[0] += 1
        if made[0] == backend._CHUNKS_AHEAD + 2:  # one taken, the queue full, this one waiting
            reader_blocked.set()
        return chunk(items)  # type: ignore[arg-type]

    monkeypatch.setattr(backend, "_chunk", counted)
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        ledger._db.create_function("reader_blocked", 0, lambda: reader_blocked.wait(10))
        ledger._db.execute(
            "CREATE TEMP TRIGGER boom BEFORE INSERT ON items WHEN NEW.line = 4000"
            " BEGIN SELECT reader_blocked(); SELECT RAISE(ABORT, 'disk I/O error'); END"
        )
        with pytest.raises(LedgerError, match="cannot record the job"):
            ingest(ledger, path, profiles)
        assert reader_blocked.is_set()
        assert ledger.job("job") is None
        assert _ingest_threads() == []
        ledger._db.execute("DROP TRIGGER boom")
        assert ingest(ledger, path, profiles).items == 60_000


def test_foreign_keys_are_checked_again_after_an_ingest(tmp_path: Path, profiles: Config) -> None:
    """The ingest turns the per-row foreign-key check off for its own rows only."""
    good = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,a\n")
    bad = write(tmp_path / "bad.csv", "provider,invoice_id\nrapid,a\n")
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        ingest(ledger, good, profiles)
        assert ledger._db.execute("PRAGMA foreign_keys").fetchone() == (1,)
        with pytest.raises(JobFileError):
            ingest(ledger, bad, profiles, "bad")
        assert ledger._db.execute("PRAGMA foreign_keys").fetchone() == (1,)
        with pytest.raises(sqlite3.IntegrityError):
            ledger._db.execute("INSERT INTO attempts (item, attempt, at, outcome) VALUES (999, 1, 'x', 'y')")


def test_an_ingest_counts_what_it_recorded_as_the_ledger_reads_it(
    tmp_path: Path, profiles: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counts and void dates a new run starts from (no scan of the items) are the ledger's own,
    with duplicates across chunks counted once, as their first row."""
    from batchvoid.ledger import sqlite as backend
    from batchvoid.run import _recorded

    monkeypatch.setattr(backend, "_CHUNK", 100)
    lines = [f"campfire,c{n},2026-11-{1 + n % 3:02d}" for n in range(250)]
    lines += [f"rapyd,r{n}," for n in range(120)]
    lines[150] = "campfire,c5,2026-12-31"  # a duplicate, chunks later, with a date of its own
    lines[160] = "rapyd,r3,"
    path = write(tmp_path / "j.csv", "provider,invoice_id,void_date\n" + "\n".join(lines) + "\n")
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        result = ledger.ingest(new_job(path, profiles))
        job = ledger.job("job")
        assert job is not None
        assert result.void_dates is not None
        assert result.duplicates == 2
        assert _recorded(result.void_dates) == (ledger.counts(job), ledger.void_dates(job))


def _counted(path: Path, job: Job) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    """The job's counts table and a count of its items, straight from the file."""
    with sqlite3.connect(path) as db:
        table = db.execute("SELECT provider, state, n FROM item_counts WHERE job = ? AND n", (job.id,))
        kept = {(p, s): n for p, s, n in table}
        rows = db.execute(
            "SELECT provider, state, count(*) FROM items WHERE job = ? GROUP BY 1, 2", (job.id,)
        )
        real = {(p, s): n for p, s, n in rows}
    db.close()
    return kept, real


def test_the_counts_follow_every_change_of_state(tmp_path: Path, profiles: Config) -> None:
    """Ingest, claims, outcomes, releases, a failure's redrive and a rolled-back batch: the counts
    table always says what a count of the items says, and `counts` reads it."""
    lines = "".join(f"rapyd,r{n}\nmaple,m{n}\n" for n in range(6)) + "rapyd,r1\n"  # and a duplicate
    path = write(tmp_path / "j.csv", "provider,invoice_id\n" + lines)
    db_path = tmp_path / "l.sqlite"
    with open_ledger(db_path) as ledger:
        job = ingest(ledger, path, profiles)
        other = ingest(ledger, path, profiles, "other")  # another job's items are counted apart
        steps = [_counted(db_path, job)]
        r = [w.id for w in ledger.claim(job, "rapyd", 0, 4)]
        m = [w.id for w in ledger.claim(job, "maple", 0, 2)]
        steps.append(_counted(db_path, job))
        ledger.apply(
            [
                Finish(r[0], ItemState.VOIDED, None, 200, None, 1),
                Finish(r[1], ItemState.FAILED, "paid", 409, None, 1),
                Finish(m[0], ItemState.ALREADY_VOID, None, 409, None, 1),
                Release(r[2], 0, False),
                Release(r[3], 1, True),
                Release(m[1], 1, True),
            ]
        )
        steps.append(_counted(db_path, job))
        with sqlite3.connect(db_path) as db:  # the release after the outcome fails: all rolled back
            db.execute(
                f"CREATE TRIGGER boom BEFORE UPDATE OF state ON items WHEN OLD.id = {r[3]}"
                " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        db.close()
        with pytest.raises(LedgerError):
            ledger.apply([Finish(m[1], ItemState.VOIDED, None, 200, None, 1), Release(r[3], 0, False)])
        steps.append(_counted(db_path, job))
        assert ledger.redrive(job) == {"rapyd": 1}
        steps.append(_counted(db_path, job))
        for kept, real in steps:
            assert kept == real
        assert ledger.counts(job) == {(p, ItemState(s)): n for (p, s), n in steps[-1][1].items()}
        assert steps[-1][1] == {
            ("rapyd", "voided"): 1,
            ("rapyd", "pending"): 4,
            ("rapyd", "in_flight"): 1,
            ("maple", "already_void"): 1,
            ("maple", "in_flight"): 1,
            ("maple", "pending"): 4,
        }
        assert _counted(db_path, other)[0] == {("rapyd", "pending"): 6, ("maple", "pending"): 6}


def test_a_version_3_ledger_gains_its_counts_in_place(tmp_path: Path, profiles: Config) -> None:
    """A ledger from before the counts table is read as it is, then upgraded with its counts made
    from its items; the state index it had is gone."""
    path = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,a\nrapyd,b\nmaple,c\n")
    db_path = tmp_path / "l.sqlite"
    with open_ledger(db_path) as ledger:
        job = ingest(ledger, path, profiles)
        a, _ = (w.id for w in ledger.claim(job, "rapyd", 0, 10))
        ledger.apply([Finish(a, ItemState.VOIDED, None, 200, None, 1)])
    with sqlite3.connect(db_path) as db:  # what batchvoid wrote at schema 3
        db.execute("DROP TRIGGER items_counted")
        db.execute("DROP TABLE item_counts")
        db.execute("CREATE INDEX items_state ON items (job, state, provider)")
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    db.close()
    expected = {
        ("rapyd", ItemState.VOIDED): 1,
        ("rapyd", ItemState.IN_FLIGHT): 1,
        ("maple", ItemState.PENDING): 1,
    }
    with open_ledger(db_path, readonly=True) as old:
        assert old.counts(job) == expected
    with open_ledger(db_path) as upgraded:
        assert upgraded.counts(job) == expected
        kept, real = _counted(db_path, job)
        assert kept == real
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'items_state'").fetchone() is None
        assert db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall() == [
            ("items_counted",)
        ]
    db.close()


def test_a_new_item_is_recorded_without_its_key_and_times_and_read_with_them(
    tmp_path: Path, profiles: Config
) -> None:
    """An item's key is derived, not stored, and its times are its job's until it changes: the
    claim hands out the key, and the report's rows carry all three."""
    path = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,a\nrapyd,b\n")
    db_path = tmp_path / "l.sqlite"
    with open_ledger(db_path) as ledger:
        job = ingest(ledger, path, profiles)
        with sqlite3.connect(db_path) as db:
            stored = db.execute("SELECT idempotency_key, created_at, updated_at FROM items").fetchall()
        db.close()
        assert stored == [(None, None, None)] * 2
        (a,) = ledger.claim(job, "rapyd", 0, 1)
        assert a.idempotency_key == idempotency_key("job", "rapyd", "a")
        claimed, pending = ledger.items(job)
        assert claimed["idempotency_key"] == a.idempotency_key
        assert pending["idempotency_key"] == idempotency_key("job", "rapyd", "b")
        assert pending["created_at"] == pending["updated_at"] == claimed["created_at"] == job.created_at
        assert claimed["updated_at"] > job.created_at  # the claim's time


def test_an_ingest_leaves_its_checkpoint_behind_it_and_the_run_its_own(
    tmp_path: Path, profiles: Config
) -> None:
    """The ingest's commit copies nothing from the WAL (a thread does, after it); the run that
    follows checkpoints as SQLite does by default, or its WAL would grow without end."""
    path = write(tmp_path / "j.csv", "provider,invoice_id\n" + "".join(f"rapyd,i{n}\n" for n in range(3000)))
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        checkpoints: list[str] = []
        ledger._db.set_trace_callback(lambda sql: checkpoints.append(sql) if "checkpoint" in sql else None)
        ingest(ledger, path, profiles)
        assert checkpoints == ["PRAGMA wal_autocheckpoint=0", "PRAGMA wal_autocheckpoint=1000"]
        assert ledger._db.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
        assert ledger._checkpointer is not None
        ledger._checkpointer.join()
    with sqlite3.connect(tmp_path / "l.sqlite") as db:
        assert db.execute("SELECT count(*) FROM items").fetchone() == (3000,)
    db.close()


def test_the_idempotency_key_of_an_item_never_changes() -> None:
    """Keys are derived when an item is claimed, so a job recorded by one batchvoid is resumed
    by the next with the same keys only if the function gives what it always gave."""
    assert idempotency_key("march.csv", "rapyd", "inv_1") == (
        "bv1-808d95f1b83104fbcfc49823b9cdccada9d998886c8e74d7"
    )


def test_a_version_4_ledger_keeps_its_stored_keys_and_times_and_takes_new_jobs(
    tmp_path: Path, profiles: Config
) -> None:
    """Version 5 lets an item's key and times be NULL: a version-4 ledger's items table is made
    anew with every row, key and time as it was, its index, trigger and history intact."""
    path = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,a\nrapyd,b\nmaple,c\n")
    db_path = tmp_path / "l.sqlite"
    with open_ledger(db_path) as ledger:
        job = ingest(ledger, path, profiles)
        a, _ = (w.id for w in ledger.claim(job, "rapyd", 0, 10))
        ledger.apply(
            [Attempt(a, 1, now(), "throttled", 429, 5, None), Finish(a, ItemState.VOIDED, None, 200, None, 2)]
        )
    with sqlite3.connect(db_path) as db:  # what batchvoid wrote at schema 4
        (table,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'items'").fetchone()
        for column in ("idempotency_key TEXT", "created_at TEXT", "updated_at TEXT"):
            assert f"{column}," in table
            table = table.replace(f"{column},", f"{column} NOT NULL,")
        db.execute("PRAGMA foreign_keys=OFF")
        db.execute(table.replace('"items"', "old_items").replace("TABLE items", "TABLE old_items"))
        db.execute(
            "UPDATE items SET idempotency_key = 'stored-' || invoice_id,"
            " created_at = '2026-01-01T00:00:00Z', updated_at = coalesce(updated_at, '2026-01-01T00:00:00Z')"
        )
        db.execute("INSERT INTO old_items SELECT * FROM items")
        db.execute("DROP TABLE items")
        db.execute("ALTER TABLE old_items RENAME TO items")
        db.execute(
            "CREATE INDEX items_todo ON items (job, provider, line) WHERE state IN ('pending', 'in_flight')"
        )
        db.execute(
            "CREATE TRIGGER items_counted AFTER UPDATE OF state ON items WHEN OLD.state IS NOT NEW.state BEGIN"
            " UPDATE item_counts SET n = n - 1 WHERE job = OLD.job AND provider = OLD.provider AND state = OLD.state;"
            " INSERT INTO item_counts VALUES (NEW.job, NEW.provider, NEW.state, 1) ON CONFLICT DO UPDATE SET n = n + 1;"
            " END"
        )
        db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    db.close()
    with open_ledger(db_path) as upgraded:
        (b,) = upgraded.claim(job, "rapyd", 0, 10)
        assert (b.item.invoice_id, b.idempotency_key, b.maybe_sent) == ("b", "stored-b", True)
        rows = {row["invoice_id"]: row for row in upgraded.items(job)}
        assert rows["a"]["state"] == "voided"
        assert rows["c"]["idempotency_key"] == "stored-c"
        assert rows["c"]["created_at"] == rows["c"]["updated_at"] == "2026-01-01T00:00:00Z"
        other = ingest(upgraded, path, profiles, job_id="april")  # no key or time: NULL is allowed now
        assert [w.idempotency_key for w in upgraded.claim(other, "maple", 0, 10)] == [
            idempotency_key("april", "maple", "c")
        ]
        assert upgraded.counts(job)[("rapyd", ItemState.VOIDED)] == 1
        kept, real = _counted(db_path, job)
        assert kept == real
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("5",)
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        history = "SELECT invoice_id, outcome FROM attempts JOIN items ON items.id = attempts.item"
        assert db.execute(history).fetchall() == [("a", "throttled")]
        assert db.execute(
            "SELECT count(*) FROM sqlite_master WHERE name IN ('items_todo', 'items_counted')"
        ).fetchone() == (2,)
        assert "items_v5" not in str(db.execute("SELECT name, sql FROM sqlite_master").fetchall())
    db.close()


def test_an_upgrade_that_fails_half_way_leaves_the_ledger_as_it_was(
    tmp_path: Path, profiles: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upgrade is one transaction: a fault after the items were copied (a full disk) is a
    LedgerError, and the ledger keeps its old version, its items table and its rows."""
    from batchvoid.ledger import sqlite as backend

    path = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,a\nmaple,b\n")
    db_path = tmp_path / "l.sqlite"
    with open_ledger(db_path) as ledger:
        ingest(ledger, path, profiles)
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
        before = db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    db.close()
    full = "INSERT INTO items SELECT * FROM items"  # after the copy, a fault: every id is taken
    monkeypatch.setitem(backend._MIGRATIONS, 5, (*backend._MIGRATIONS[5], full))
    with pytest.raises(LedgerError, match=r"cannot set it up: UNIQUE constraint failed: items\.id"):
        open_ledger(db_path)
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("4",)
        assert db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == before
        assert db.execute("SELECT invoice_id FROM items ORDER BY line").fetchall() == [("a",), ("b",)]
    db.close()


def test_a_read_while_the_writer_commits_sees_only_what_was_committed(
    tmp_path: Path, profiles: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """status, report and plan read the last commit: never a batch half written by the writer thread (which then failed)."""
    import threading

    from batchvoid.ledger import sqlite as backend

    path = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,a\nrapyd,b\n")
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
        a, b = ledger.claim(job, "rapyd", 0, 10)
        committed = (ledger.counts(job), [row["state"] for row in ledger.items(job)])
        assert committed == ({("rapyd", ItemState.IN_FLIGHT): 2}, ["in_flight", "in_flight"])
        midway, go_on = threading.Event(), threading.Event()
        encode, encoded = backend._json, []

        def pausing(rows: list[tuple[object, ...]]) -> str:
            encoded.append(rows)
            if len(encoded) == 2:  # the batch's Finish is written, its Release not yet: mid-transaction
                midway.set()
                go_on.wait(10)
                raise sqlite3.OperationalError("disk I/O error")  # and the batch rolls back
            return encode(rows)

        monkeypatch.setattr(backend, "_json", pausing)
        failed: list[BaseException] = []

        def write_batch() -> None:
            try:
                ledger.apply([Finish(a.id, ItemState.VOIDED, None, 200, None, 1), Release(b.id, 1, True)])
            except LedgerError as exc:
                failed.append(exc)

        writer = threading.Thread(target=write_batch)
        writer.start()
        try:
            assert midway.wait(10)
            during = (ledger.counts(job), [row["state"] for row in ledger.items(job)])
        finally:
            go_on.set()
            writer.join(10)
        assert len(failed) == 1  # the batch was never committed ...
        assert during == committed  # ... and no read saw any of it
        assert (ledger.counts(job), [row["state"] for row in ledger.items(job)]) == committed


def test_touched_counts_outcomes_but_not_pending_items_nor_redirects(
    tmp_path: Path, profiles: Config
) -> None:
    """What binds a profile to its target: a void, a provider's rejection, an item in flight; not a 301 or a pending item."""
    path = write(
        tmp_path / "j.csv",
        "provider,invoice_id\nrapyd,voided\nrapyd,moved\nrapyd,paid\nrapyd,flying\nmaple,m\n",
    )
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
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


def test_chunks_with_and_without_optional_columns_record_every_value(
    tmp_path: Path, profiles: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk whose rows name no company, store or metadata goes in with fewer columns than one
    whose rows do: either way each item holds what its row said, its void date and its key."""
    from batchvoid.ledger import sqlite as backend

    monkeypatch.setattr(backend, "_CHUNK", 100)
    rows: list[dict[str, str]] = [{"provider": "campfire", "invoice_id": f"c{n}"} for n in range(100)]
    rows += [{"provider": "rapyd", "invoice_id": f"r{n}", "void_date": "2026-11-02"} for n in range(100)]
    rows.append({"provider": "maple", "invoice_id": "m1", "company_id": "cmp_9"})
    rows += [{"provider": "sellapp", "invoice_id": f"s{n}", "store": "main", "note": "x"} for n in range(50)]
    path = write(tmp_path / "j.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    read = [item for item in jobfile.read(path, profiles.profiles) if isinstance(item, Item)]
    assert len(read) == len(rows)
    with open_ledger(tmp_path / "l.sqlite") as ledger:
        ledger.ingest(new_job(path, profiles))
        job = ledger.job("job")
        assert job is not None
        recorded = list(ledger.items(job))
    assert [
        Item(
            row["line"],
            row["provider"],
            row["invoice_id"],
            row["void_date"],
            row["company_id"],
            row["store"],
            json.loads(row["metadata"]) if row["metadata"] else {},
        )
        for row in recorded
    ] == read
    assert [row["idempotency_key"] for row in recorded] == [
        idempotency_key("job", item.provider, item.invoice_id) for item in read
    ]
    assert recorded[0]["void_date"] is not None  # Campfire's default date, given to rows without one
