"""Durability for rows whose answer cannot be looked up, where the machine's boot cannot be
told apart (see :mod:`batchrun.sending.durability`): each row marked as it is sent, in a
synced group commit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import sqlite3

from batchrun.report import RowResult
from batchrun.sending.durability import COMMIT_WINDOW, JournalWrites, retrieved


@dataclasses.dataclass(frozen=True, slots=True)
class InFlight:
    """A group commit under way: what it commits, and who waits for it."""

    commit: concurrent.futures.Future[None]
    rows: list[RowResult]
    done: asyncio.Future[None] | None


class MarkedAsSent:
    """Durability for rows whose answer cannot be looked up: marked as they are sent.

    Ordering guarantee: before a row's request leaves, its ``sending`` entry is committed
    and synced, in one transaction with the marks of every other worker sending within
    COMMIT_WINDOW, or while the commit before is under way (the worker waits for that
    commit). Its state once answered is committed by the next such transaction (within
    COMMIT_WINDOW, or at :meth:`commit_now`), always after its ``sending`` entry, so a kill
    leaves it ``sending`` ("may exist") only while its request may have been in flight. A
    failed commit fails the marks waiting for it, so none of those rows is sent.

    The commits run on a thread of their own, one at a time: the job's loop goes on
    sending marked rows and taking answers while the disk syncs (SQLite lets go of the
    GIL meanwhile), and the marks of that time make the next commit.
    """

    __slots__ = ("_commit_at", "_committer", "_in_flight", "_marked_now", "_to_mark", "writes")

    def __init__(self, writes: JournalWrites) -> None:
        self.writes = writes
        self._to_mark: list[RowResult] = []
        self._marked_now: asyncio.Future[None] | None = None
        self._commit_at: asyncio.TimerHandle | None = None
        self._committer: concurrent.futures.ThreadPoolExecutor | None = None
        # The commit under way on the committer thread, if any.
        self._in_flight: InFlight | None = None

    async def mark(self, row: RowResult) -> None:
        """Before ``row`` is sent: mark it in the next group commit, and wait for it."""
        self._to_mark.append(row)
        if self._marked_now is None:
            self._marked_now = asyncio.get_running_loop().create_future()
        self._commit_soon()
        await asyncio.shield(self._marked_now)

    def record(self, row: RowResult) -> None:
        """A row's new state, committed with the next group commit (or a kill would turn a
        finished row into one that "may exist")."""
        self.writes.record(row)
        if not self.writes.failed:
            self._commit_soon()

    def commit_now(self) -> None:
        """At the end of the job: wait for the commit under way, then commit what waits
        for the commit window, here."""
        if self._commit_at is not None:
            self._commit_at.cancel()
            self._commit_at = None
        if self._in_flight is not None:
            concurrent.futures.wait([self._in_flight.commit])
            self._ended(self._in_flight)
        if self._committer is not None:
            self._committer.shutdown(wait=True)
            self._committer = None
        rows, done = self._take()
        try:
            if rows:
                self.writes.mark(rows)
            elif not self.writes.failed:
                self.writes.journal.flush()
        except sqlite3.Error as error:
            self._failed(done, error)
            return
        if done is not None and not done.done():
            done.set_result(None)

    def _commit_soon(self) -> None:
        # While a commit is under way, what comes meanwhile waits for its end.
        if self._commit_at is None and self._in_flight is None:
            loop = asyncio.get_running_loop()
            self._commit_at = loop.call_later(COMMIT_WINDOW, self._commit)

    def _take(self) -> tuple[list[RowResult], asyncio.Future[None] | None]:
        rows, done = self._to_mark, self._marked_now
        self._to_mark, self._marked_now = [], None
        if done is not None:
            done.add_done_callback(retrieved)
        return rows, done

    def _commit(self) -> None:
        """Start one transaction for the marks and states of this moment, on the committer
        thread: synced when it holds marks (which must outlive a power cut), as the
        journal's batches otherwise."""
        self._commit_at = None
        rows, done = self._take()
        try:
            marks = self.writes.marks(rows) if rows else None
        except sqlite3.Error as error:
            self._failed(done, error)
            return
        if marks is None and self.writes.failed:
            return
        if self._committer is None:
            self._committer = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="batchrun-commit"
            )
        journal = self.writes.journal
        work = journal.flush if marks is None else functools.partial(journal.mark_sending, marks)
        in_flight = self._in_flight = InFlight(self._committer.submit(work), rows, done)
        loop = asyncio.get_running_loop()
        in_flight.commit.add_done_callback(
            lambda _: loop.call_soon_threadsafe(self._committed, in_flight)
        )

    def _committed(self, in_flight: InFlight) -> None:
        """Back on the job's loop: the commit started by :meth:`_commit` has ended. The
        marks that came meanwhile are committed next, at once: they waited long enough."""
        if self._in_flight is not in_flight:
            return  # commit_now took its end already
        self._ended(in_flight)
        if self._to_mark:
            self._commit()
        elif self.writes.journal.pending:
            self._commit_soon()

    def _ended(self, in_flight: InFlight) -> None:
        """Take the end of the commit ``in_flight``: its rows marked, or its error."""
        self._in_flight = None
        error = in_flight.commit.exception()
        if error is None:
            self.writes.marked_now(in_flight.rows)
            if in_flight.done is not None and not in_flight.done.done():
                in_flight.done.set_result(None)
        elif isinstance(error, sqlite3.Error):
            self._failed(in_flight.done, error)
        else:
            self._failed(in_flight.done, sqlite3.OperationalError(str(error)))

    def _failed(self, done: asyncio.Future[None] | None, error: sqlite3.Error) -> None:
        """A commit failed: the marks waiting for it fail (their rows are not sent), or,
        without marks, the job stops."""
        if done is not None and not done.done():
            done.set_exception(error)
        else:
            self.writes.fail(error)
