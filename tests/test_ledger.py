"""The ledger: atomic ingest, duplicates, the per-provider work queue, group-committed writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from batchvoid import jobfile
from batchvoid.config import Config
from batchvoid.errors import JobFileError, LedgerError
from batchvoid.keys import idempotency_key
from batchvoid.ledger import Job, Ledger, LedgerWriter
from batchvoid.models import DONE, UNDONE, ItemState
from tests.conftest import write


def ingest(ledger: Ledger, path: Path, profiles: Config, job_id: str = "job") -> Job:
    ledger.ingest(
        job_id=job_id,
        job_file=str(path),
        job_sha256="sha",
        config_fingerprint="fp",
        rows=jobfile.read(path, profiles.profiles),
    )
    job = ledger.job(job_id)
    assert job is not None
    return job


def test_ingest_records_items_with_keys_and_reports_duplicates(tmp_path: Path, profiles: Config) -> None:
    """Every row becomes a pending item with its idempotency key; a repeated pair is recorded once."""
    path = write(
        tmp_path / "j.csv", "provider,invoice_id,customer\nrapyd,a,x\nmaple,b,\nrapyd,a,y\nrapyd,c,\n"
    )
    with Ledger(tmp_path / "l.sqlite") as ledger:
        result = ledger.ingest(
            job_id="job",
            job_file=str(path),
            job_sha256="s",
            config_fingerprint="f",
            rows=jobfile.read(path, profiles.profiles),
        )
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
    with Ledger(tmp_path / "l.sqlite") as ledger:
        with pytest.raises(JobFileError) as caught:
            ingest(ledger, path, profiles)
        assert caught.value.error_count == 31
        message = str(caught.value)
        assert message.startswith(f"{path}: 31 bad rows; nothing was sent.")
        assert f"{path} line 3: unknown provider 'rapid'" in message
        assert "... and 11 more" in message
        assert ledger.job("job") is None
        assert ledger.jobs() == []


def test_todo_pages_are_per_provider_in_file_order(tmp_path: Path, profiles: Config) -> None:
    """Each provider's unfinished items come out in line order, a page at a time, finished ones skipped."""
    lines = "".join(f"{'rapyd' if n % 3 else 'maple'},inv{n}\n" for n in range(20))
    path = write(tmp_path / "j.csv", "provider,invoice_id\n" + lines)
    with Ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
        first = ledger.todo_page(job, "rapyd", 0, 5)
        assert [w.item.invoice_id for w in first] == ["inv1", "inv2", "inv4", "inv5", "inv7"]
        ledger.apply([("UPDATE items SET state = 'voided' WHERE invoice_id = 'inv8'", ())])
        second = ledger.todo_page(job, "rapyd", first[-1].item.line, 5)
        assert [w.item.invoice_id for w in second] == ["inv10", "inv11", "inv13", "inv14", "inv16"]
        assert all(w.item.provider == "maple" for w in ledger.todo_page(job, "maple", 0, 100))


@pytest.mark.anyio
async def test_writer_commits_in_flight_before_returning_and_outcomes_on_exit(
    tmp_path: Path, profiles: Config
) -> None:
    """begin() returns only once 'in flight' is committed; queued outcomes are committed on exit."""
    path = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,a\nrapyd,b\n")
    with Ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
        a, b = ledger.todo_page(job, "rapyd", 0, 10)
        other = sqlite3.connect(tmp_path / "l.sqlite")

        def state(invoice: str) -> tuple[str, int]:
            return other.execute(
                "SELECT state, attempts FROM items WHERE invoice_id = ?", (invoice,)
            ).fetchone()

        async with LedgerWriter(ledger) as writer:
            await writer.begin(a)
            assert state("a") == ("in_flight", 1)  # visible to another connection: committed
            writer.attempt(a, 1, "voided", 200, 12, "")
            writer.finish(a, ItemState.VOIDED, "", 200, "op-1")
            await writer.begin(b)
            writer.release(b)
        assert state("a") == ("voided", 1)
        assert state("b") == ("pending", 1)
        assert other.execute("SELECT outcome, http_status, latency_ms FROM attempts").fetchall() == [
            ("voided", 200, 12)
        ]
        other.close()


@pytest.mark.anyio
async def test_many_concurrent_begins_share_commits(tmp_path: Path, profiles: Config) -> None:
    """Hundreds of workers marking items in flight at once are served by far fewer commits."""
    path = write(tmp_path / "j.csv", "provider,invoice_id\n" + "".join(f"rapyd,i{n}\n" for n in range(300)))
    with Ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
        work = ledger.todo_page(job, "rapyd", 0, 300)
        commits = 0
        apply = ledger.apply

        def counting(ops: object) -> None:
            nonlocal commits
            commits += 1
            apply(ops)  # type: ignore[arg-type]

        ledger.apply = counting  # type: ignore[method-assign]
        async with LedgerWriter(ledger) as writer, anyio.create_task_group() as tg:
            for w in work:
                tg.start_soon(writer.begin, w)
        assert ledger.counts(job) == {("rapyd", ItemState.IN_FLIGHT): 300}
        assert commits < 30


def test_a_file_that_is_not_a_ledger_is_refused_untouched(tmp_path: Path) -> None:
    """Pointing --ledger at some other file is a clear error, and the file is left exactly as it was."""
    path = write(tmp_path / "notes.txt", "these are my notes, not a database" * 100)
    before = path.read_bytes()
    with pytest.raises(
        LedgerError, match=r"not a batchvoid ledger \(not an SQLite database\); it was not changed"
    ):
        Ledger(path)
    assert path.read_bytes() == before


def test_another_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    """An SQLite file that is not a ledger gets no ledger tables written into it."""
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER)")
    before = path.read_bytes()
    with pytest.raises(LedgerError, match="an SQLite database, but not a batchvoid ledger"):
        Ledger(path)
    assert path.read_bytes() == before


def test_a_ledger_from_a_newer_batchvoid_is_refused_untouched(tmp_path: Path) -> None:
    """A newer schema is refused before anything is written: the file's bytes stay the same."""
    Ledger(tmp_path / "l.sqlite").close()
    with sqlite3.connect(tmp_path / "l.sqlite") as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()
    before = (tmp_path / "l.sqlite").read_bytes()
    with pytest.raises(
        LedgerError, match=r"written by a newer batchvoid \(ledger schema 99.*it was not changed"
    ):
        Ledger(tmp_path / "l.sqlite")
    with pytest.raises(LedgerError, match="newer batchvoid"):
        Ledger.open_readonly(tmp_path / "l.sqlite")
    assert (tmp_path / "l.sqlite").read_bytes() == before


def test_a_batch_keeps_each_items_own_order(tmp_path: Path, profiles: Config) -> None:
    """Batched statements run grouped by kind, yet every item ends in the state its last op gave it."""
    from batchvoid import ledger as ledger_module

    path = write(tmp_path / "j.csv", "provider,invoice_id\nrapyd,a\nrapyd,b\nrapyd,c\nrapyd,d\n")
    with Ledger(tmp_path / "l.sqlite") as ledger:
        job = ingest(ledger, path, profiles)
        a, b, c, d = (w.id for w in ledger.todo_page(job, "rapyd", 0, 10))
        t = ledger_module.now()
        ledger.apply(
            [
                (
                    ledger_module._FINISH,
                    ("voided", None, 200, None, t, a),
                ),  # a finishes first in the batch...
                (ledger_module._BEGIN, (t, b)),  # ...then b is begun, retried and finished
                (ledger_module._ATTEMPT, (b, 1, t, "retryable", 503, 1, None)),
                (ledger_module._BEGIN, (t, b)),
                (ledger_module._ATTEMPT, (b, 2, t, "voided", 200, 1, None)),
                (ledger_module._FINISH, ("voided", None, 200, None, t, b)),
                (ledger_module._BEGIN, (t, c)),
                (ledger_module._RELEASE, (t, c)),
                (ledger_module._BEGIN, (t, d)),
            ]
        )
        got = {row["invoice_id"]: (row["state"], row["attempts"]) for row in ledger.items(job)}
    assert got == {"a": ("voided", 0), "b": ("voided", 2), "c": ("pending", 1), "d": ("in_flight", 1)}


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
    with Ledger(tmp_path / "l.sqlite") as ledger:
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
    with Ledger(tmp_path / "l.sqlite") as ledger:
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
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ingest(ledger, path, profiles)

        def fails_on_row_10(line: int) -> int:
            if line > 10:
                raise ValueError("page 7 is damaged")
            return line

        ledger._db.create_function("fails_on_row_10", 1, fails_on_row_10)
        cursor = ledger._sql(ledger._db, "SELECT fails_on_row_10(line) FROM items ORDER BY id", ())
        with pytest.raises(LedgerError, match=r"l\.sqlite: cannot read it: user-defined function raised"):
            list(cursor)
