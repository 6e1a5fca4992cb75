"""How a job makes its rows durable: what is in the journal before a request may leave.

Two strategies, one per kind of row, chosen by whether what a row's request made can be
looked up by its run tag (:meth:`~batchrun.endpoints.Endpoint.can_look`):

- :class:`MarkedAhead` — it can (runs, stored chat completions): rows are marked
  ``sending`` a block ahead, so a mark costs one transaction per block, and a row marked
  but never sent costs a rerun only a read;
- :class:`MarkedAsSent` — it cannot (responses, chat without ``store``): such a row would
  fail as "may exist", so only rows about to be sent are marked, those of every worker
  sending at this moment in one transaction (a group commit), and a row's state is
  committed as soon after its answer.

Both write through one :class:`JournalWrites`, which knows which rows are marked and
whether the journal has failed (after which nothing more is written, nor sent).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import functools
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

from batchrun.report import RowResult
from batchrun.sending.journal import Journal
from batchrun.sending.states import IN_JOURNAL, MARKABLE

# Rows marked ``sending`` in one journal transaction, ahead of being sent.
MARK_AHEAD = 256
# Where rows are marked as they go, how long marks and states gather for one transaction:
# a worker's first send waits this long at most, and a commit serves many rows.
COMMIT_WINDOW = 0.002


class JournalWrites:
    """A job's writes to its journal: the rows marked so far, and whether it failed."""

    __slots__ = ("failed", "journal", "marked", "on_failure")

    def __init__(self, journal: Journal, on_failure: Callable[[str], None]) -> None:
        self.journal = journal
        self.marked: set[int] = set()
        self.failed = False
        self.on_failure = on_failure

    def fail(self, error: BaseException) -> None:
        """The journal failed: write nothing more, and stop the job (once)."""
        if not self.failed:
            self.failed = True
            self.on_failure(f"the journal {self.journal.path} failed: {error}")

    def mark(self, rows: list[RowResult]) -> None:
        """Commit ``rows`` as ``sending`` (synced to disk), then count them marked."""
        self.journal.mark_sending(self.marks(rows))
        self.marked_now(rows)

    def marks(self, rows: list[RowResult]) -> list[tuple[str, dict[str, Any]]]:
        """The ``sending`` entries of ``rows``, as :meth:`Journal.mark_sending` takes them
        (raises when the journal failed before: nothing more may be marked)."""
        now = time.time()
        for row in rows:
            row.sent_at = row.sent_at or now
        if self.failed:
            raise sqlite3.OperationalError("the journal failed before")
        return [(row.key or "", row.to_journal()) for row in rows]

    def marked_now(self, rows: list[RowResult]) -> None:
        """Count ``rows`` marked: only once their marks are committed (a row whose mark
        failed must never count as marked)."""
        self.marked.update(row.index for row in rows)

    def record(self, row: RowResult) -> None:
        """Buffer a row's state (what the next job does with it) for the next commit."""
        if row.key is not None and not self.failed:
            self.journal.record(row.key, IN_JOURNAL[row.state], row.to_journal())


class MarkedAhead:
    """Durability for rows whose answer can be looked up: marked ``sending`` a block ahead.

    Ordering guarantee: before a row's first request leaves, its ``sending`` entry is
    committed and synced, in one transaction with the next rows due (up to MARK_AHEAD, in
    input order). Its later state goes into the journal's batched commits (at most
    FLUSH_SECONDS later, and at the end of the job), always after its ``sending`` entry;
    a row marked but never sent is recorded forgotten (no entry) the same way. So a crash
    leaves every row either without an entry (never sent), ``sending`` (the rerun looks
    for its answer before sending), or in its recorded state.

    A block's commit runs on a thread of its own (SQLite lets go of the GIL while it
    syncs), so the job's loop goes on sending rows already marked while the disk syncs;
    the rows of the block wait for it, and a state recorded for one of them meanwhile (a
    look settled it, the job stopped) is written once the block is committed, after its
    mark.
    """

    __slots__ = ("_committer", "_deferred", "_marking", "due", "writes")

    def __init__(self, writes: JournalWrites, due: Iterable[RowResult]) -> None:
        self.writes = writes
        # Rows to create in input order, for marking a block ahead.
        self.due = collections.deque(due)
        # Rows of a block whose commit is under way, by index: that block.
        self._marking: dict[int, Block] = {}
        # States recorded for rows of a block under way, written when it is committed.
        self._deferred: list[RowResult] = []
        self._committer: concurrent.futures.ThreadPoolExecutor | None = None

    async def mark(self, row: RowResult) -> None:
        """Before ``row`` is first sent: mark it and the next rows due, one transaction
        (or wait for the block under way that marks it).

        A row due whose state is already final (adopted by a look, failed) is never
        marked: the mark would come after its state in the log, and win on replay."""
        block = self._marking.get(row.index)
        if block is None:
            block = self._start(self._take(row))
        await asyncio.shield(block.done)

    def _take(self, row: RowResult) -> list[RowResult]:
        """``row`` and the next rows due that may be marked, up to MARK_AHEAD."""
        rows = [row]
        while len(rows) < MARK_AHEAD and self.due:
            upcoming = self.due.popleft()
            if (
                upcoming.index not in self.writes.marked
                and upcoming.index not in self._marking
                and upcoming is not row
                and upcoming.state in MARKABLE
            ):
                rows.append(upcoming)
        return rows

    def _start(self, rows: list[RowResult]) -> Block:
        """Commit the marks of ``rows`` (taken now, on the loop) on the committer thread."""
        marks = self.writes.marks(rows)
        if self._committer is None:
            self._committer = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="batchrun-mark"
            )
        loop = asyncio.get_running_loop()
        work = functools.partial(self.writes.journal.mark_sending, marks)
        block = Block(rows, self._committer.submit(work), loop.create_future())
        block.done.add_done_callback(_retrieved)
        for member in rows:
            self._marking[member.index] = block
        block.commit.add_done_callback(lambda _: loop.call_soon_threadsafe(self._ended, block))
        return block

    def _ended(self, block: Block) -> None:
        """The block's commit has ended: its rows count as marked (or its error goes to
        those waiting for it), and the states recorded for them meanwhile are written."""
        if block.done.done():
            return  # commit_now took its end already
        for member in block.rows:
            self._marking.pop(member.index, None)
        error = block.commit.exception()
        if error is None:
            self.writes.marked_now(block.rows)
            block.done.set_result(None)
        else:
            block.done.set_exception(error)
        waiting, self._deferred = self._deferred, []
        for row in waiting:
            self.record(row)

    def record(self, row: RowResult) -> None:
        """A row's new state, committed with the journal's next batch (after its mark,
        when its block is being committed)."""
        if row.index in self._marking:
            self._deferred.append(row)
        else:
            self.writes.record(row)

    def commit_now(self) -> None:
        """At the end of the chunk: wait here for a block commit under way (a worker cut
        off may have left it), and write the states that waited for it."""
        if self._committer is None:
            return
        self._committer.shutdown(wait=True)
        self._committer = None
        for block in list(self._marking.values()):
            self._ended(block)


@dataclasses.dataclass(frozen=True, slots=True)
class Block:
    """Rows marked ahead in one transaction: its commit on the committer thread, and the
    future the rows' workers wait on."""

    rows: list[RowResult]
    commit: concurrent.futures.Future[None]
    done: asyncio.Future[None]


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
            done.add_done_callback(_retrieved)
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


def _retrieved(future: asyncio.Future[None]) -> None:
    """Mark a group commit's outcome as seen, even if every waiter was cancelled."""
    if not future.cancelled():
        future.exception()
