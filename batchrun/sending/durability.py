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
import sqlite3
import time
from collections.abc import Callable, Iterable

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
        now = time.time()
        for row in rows:
            row.sent_at = row.sent_at or now
        if self.failed:
            raise sqlite3.OperationalError("the journal failed before")
        self.journal.mark_sending([(row.key or "", row.to_journal()) for row in rows])
        # Only once committed: a row whose mark failed must never count as marked.
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
    """

    __slots__ = ("due", "writes")

    def __init__(self, writes: JournalWrites, due: Iterable[RowResult]) -> None:
        self.writes = writes
        # Rows to create in input order, for marking a block ahead.
        self.due = collections.deque(due)

    async def mark(self, row: RowResult) -> None:
        """Before ``row`` is first sent: mark it and the next rows due, one transaction.

        A row due whose state is already final (adopted by a look, failed) is never
        marked: the mark would come after its state in the log, and win on replay."""
        block = [row]
        while len(block) < MARK_AHEAD and self.due:
            upcoming = self.due.popleft()
            if (
                upcoming.index not in self.writes.marked
                and upcoming is not row
                and upcoming.state in MARKABLE
            ):
                block.append(upcoming)
        self.writes.mark(block)

    def record(self, row: RowResult) -> None:
        """A row's new state, committed with the journal's next batch."""
        self.writes.record(row)


class MarkedAsSent:
    """Durability for rows whose answer cannot be looked up: marked as they are sent.

    Ordering guarantee: before a row's request leaves, its ``sending`` entry is committed
    and synced, in one transaction with the marks of every other worker sending within
    COMMIT_WINDOW (the worker waits for that commit). Its state once answered is committed
    by the next such transaction (within COMMIT_WINDOW, or at :meth:`commit_now`), always
    after its ``sending`` entry, so a kill leaves it ``sending`` ("may exist") only while
    its request may have been in flight. A failed commit fails the marks waiting for it,
    so none of those rows is sent.
    """

    __slots__ = ("_commit_at", "_marked_now", "_to_mark", "writes")

    def __init__(self, writes: JournalWrites) -> None:
        self.writes = writes
        self._to_mark: list[RowResult] = []
        self._marked_now: asyncio.Future[None] | None = None
        self._commit_at: asyncio.TimerHandle | None = None

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
        """At the end of the job: commit what waits for the commit window."""
        if self._commit_at is not None:
            self._commit_at.cancel()
            self._commit()

    def _commit_soon(self) -> None:
        if self._commit_at is None:
            loop = asyncio.get_running_loop()
            self._commit_at = loop.call_later(COMMIT_WINDOW, self._commit)

    def _commit(self) -> None:
        """One transaction for the marks and states of this moment: synced when it holds
        marks (which must outlive a power cut), as the journal's batches otherwise."""
        self._commit_at = None
        rows, done = self._to_mark, self._marked_now
        self._to_mark, self._marked_now = [], None
        if done is not None:
            done.add_done_callback(_retrieved)
        try:
            if rows:
                self.writes.mark(rows)
            elif not self.writes.failed:
                self.writes.journal.flush()
        except sqlite3.Error as error:
            if done is not None:
                done.set_exception(error)
            else:
                self.writes.fail(error)
            return
        if done is not None:
            done.set_result(None)


def _retrieved(future: asyncio.Future[None]) -> None:
    """Mark a group commit's outcome as seen, even if every waiter was cancelled."""
    if not future.cancelled():
        future.exception()
