"""The run lock: one live run per (ledger, job), so two cron runs of a job never both send.

Two parts, each doing what it is good at:

- an exclusive `flock` on `<ledger>.<job>.lock`, held for the whole run. The kernel drops it
  when the process dies, even by `kill -9`, so whether a run is alive is never guessed from
  a pid that may have been reused. SQLite's WAL mode already requires every process using
  the ledger to be on one host, where `flock` is exact;
- a row in the ledger's `locks` table (pid, host, start time), so the run that is refused can
  name the one that holds the job, and the run that takes over a dead one's job can say so.

The lock file is removed on release while still locked, and a lock is only trusted once the
path is checked to still be the file that was locked, so removing it never lets two runs in.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self, TextIO

from batchvoid.errors import LedgerError, LedgerLockedError
from batchvoid.ledger.api import Holder, now

if TYPE_CHECKING:
    from batchvoid.ledger.sqlite import SqliteLedger

_ATTEMPTS = 5  # a release between our open() and flock() removes the file: try again


def lock_path(ledger: Path, job_id: str) -> Path:
    """Where the run lock of `job_id` on `ledger` lives: next to the ledger, while a run holds it."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id)[:60]
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:8]  # "a/b" and "a_b" are two jobs
    return ledger.with_name(f"{ledger.name}.{safe}-{digest}.lock")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class RunLock:
    """Holds the run lock of one job on one ledger, as a context manager.

    Raises `LedgerLockedError` on entry when another live process holds it. A lock left by a
    process that died is taken over, with a warning on `out`.
    """

    def __init__(self, ledger: SqliteLedger, job_id: str, *, out: TextIO | None = None) -> None:
        self._ledger = ledger
        self._job_id = job_id
        self._out = out
        self.path = lock_path(ledger.path, job_id)
        self.holder = Holder(os.getpid(), socket.gethostname(), now())
        self.taken_over: Holder | None = None  # the dead run whose lock this one took
        self._fd: int | None = None

    def __enter__(self) -> Self:
        self._fd = self._lock_file()
        try:
            self.taken_over = self._ledger.lock_holder(self._job_id)
            self._ledger.record_lock(self._job_id, self.holder)
        except BaseException:
            self._unlock()
            raise
        if self.taken_over is not None and self._out is not None:
            print(f"warning: {self._stale_message(self.taken_over)}", file=self._out, flush=True)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._ledger.clear_lock(self._job_id, self.holder)
        except LedgerError:
            pass  # a full disk, a lost ledger: the run says so; the next run takes the stale row over
        finally:
            self._unlock()

    def _lock_file(self) -> int:
        for _ in range(_ATTEMPTS):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise LedgerError(f"{self.path}: cannot create the run lock: {exc.strerror}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise LedgerLockedError(self._locked_message()) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                return fd
            os.close(fd)  # the holder released and removed the file meanwhile: lock the new one
        raise LedgerError(f"{self.path}: the run lock keeps changing under this run; try again")

    def _unlock(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still locked: a run waiting on this file will retry
        os.close(fd)  # closing releases the flock

    def _locked_message(self) -> str:
        holder = self._ledger.lock_holder(self._job_id)
        who = (
            "another process"
            if holder is None
            else f"pid {holder.pid} on host {holder.host} (running since {holder.started_at})"
        )
        return (
            f"job {self._job_id!r} in {self._ledger.path} is being run right now by {who}. "
            "Nothing was sent. Let that run finish (or stop it), then run the same command again; "
            f"`batchvoid status --ledger {self._ledger.path} --job-id {self._job_id}` shows its progress"
        )

    def _stale_message(self, dead: Holder) -> str:
        return (
            f"job {self._job_id!r} in {self._ledger.path} was left locked by pid {dead.pid} on host "
            f"{dead.host} (since {dead.started_at}), which is no longer running: taking the job over. "
            "Items it left in flight are sent again with the same idempotency key"
        )


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)
