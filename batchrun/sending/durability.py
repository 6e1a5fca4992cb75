"""How a job makes its rows durable: what is in the journal before a request may leave.

Three strategies, chosen per row (``Execution.durability``) by whether it has a journal
entry, whether the machine's boot can be told apart (:mod:`batchrun.sending.boot`) and
whether what its request made can be looked up by its run tag
(:meth:`~batchrun.endpoints.Endpoint.can_look`):

- :class:`ReservedAhead` — a row with no journal entry yet, where the machine's boot can be
  told apart (Linux, macOS): reserved a block ahead (synced) and marked as it is sent (not
  synced: the mark outlives a killed process, and the reservation a power cut), so a rerun
  on the same boot knows which rows left and when; a row's state is committed as soon
  after its answer;
- :class:`MarkedAhead` — otherwise, where what it made can be looked up (runs, stored chat
  completions): rows are marked ``sending`` a block ahead, so a mark costs one
  transaction per block, and a row marked but never sent costs a rerun only a read;
- :class:`~batchrun.sending.as_sent.MarkedAsSent` — otherwise (responses, chat without
  ``store``): such a row would fail as "may exist", so only rows about to be sent are
  marked, those of every worker sending at this moment in one synced transaction (a group
  commit), and a row's state is committed as soon after its answer.

All write through one :class:`JournalWrites`, which knows which rows are marked and
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
from batchrun.sending.states import IN_JOURNAL, MARKABLE, RESERVED

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

    def marks(
        self, rows: list[RowResult], *, stamp: bool = True
    ) -> list[tuple[str, dict[str, Any]]]:
        """The ``sending`` entries of ``rows``, as :meth:`Journal.mark_sending` takes them
        (raises when the journal failed before: nothing more may be marked). ``stamp``:
        the rows are sent from now on (their ``sent_at``, where a look starts and an unsure
        row's wait is counted from); not for a reservation."""
        if stamp:
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

    __slots__ = ("_committer", "_deferred", "_marking", "due", "takes", "writes")

    def __init__(
        self,
        writes: JournalWrites,
        due: Iterable[RowResult],
        takes: Callable[[RowResult], bool] = lambda row: True,
    ) -> None:
        self.writes = writes
        # Rows to create in input order, for marking a block ahead: those it ``takes``
        # (the rows this strategy makes durable, asked when the block is taken).
        self.due = collections.deque(due)
        self.takes = takes
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
                not self._counted(upcoming)
                and upcoming.index not in self._marking
                and upcoming is not row
                and upcoming.state in MARKABLE
                and self.takes(upcoming)
            ):
                rows.append(upcoming)
        return rows

    def _counted(self, row: RowResult) -> bool:
        """Whether ``row``'s entry of this kind is committed already."""
        return row.index in self.writes.marked

    def _count(self, rows: list[RowResult]) -> None:
        """The block of ``rows`` is committed: count them."""
        self.writes.marked_now(rows)

    def _work(self, rows: list[RowResult]) -> Callable[[], None]:
        """The commit of a block of ``rows``, for the committer thread: their marks."""
        return functools.partial(self.writes.journal.mark_sending, self.writes.marks(rows))

    def _start(self, rows: list[RowResult]) -> Block:
        """Commit the marks of ``rows`` (taken now, on the loop) on the committer thread."""
        work = self._work(rows)
        if self._committer is None:
            self._committer = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="batchrun-mark"
            )
        loop = asyncio.get_running_loop()
        block = Block(rows, self._committer.submit(work), loop.create_future())
        block.done.add_done_callback(retrieved)
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
            self._count(block.rows)
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


class ReservedAhead(MarkedAhead):
    """Durability for rows without a journal entry, where this machine's boot can be told
    apart (see :mod:`batchrun.sending.boot`): reserved a block ahead, then marked as they
    are sent.

    Ordering guarantee: before a row's request leaves, (1) its ``reserved`` entry, which
    names the machine's boot, is committed and synced, in one transaction with the next
    rows due (up to MARK_AHEAD, on the committer thread, as :class:`MarkedAhead` marks);
    (2) its ``sending`` entry is committed, not synced, in one transaction with those of
    every worker sending in the same turn of the job's loop. Its state once answered goes
    into the next such transaction (within COMMIT_WINDOW, or at :meth:`commit_now`).

    An unsynced commit outlives a killed process (the system holds it), not a power cut:
    so a rerun on the same boot finds a reserved row never sent (no entry, it is sent),
    and a rerun on another boot finds it unsure, as a marked one (its ``sending`` entry
    may have been lost). A killed job leaves "may exist" only the rows whose request may
    have been in flight, as :class:`~batchrun.sending.as_sent.MarkedAsSent` does, for a
    synced transaction per MARK_AHEAD rows instead of one per turn of the loop. After the
    machine starts again, up to MARK_AHEAD rows reserved and never sent may exist to the
    rerun. Only rows without a journal entry may be reserved (``takes``): a reservation
    replaces the entry, and one over a row that may have been sent would read as "never
    sent" on this boot.
    """

    __slots__ = ("_boot", "_flush_at", "_turn", "_turn_at", "_turn_done", "reserved")

    def __init__(
        self,
        writes: JournalWrites,
        due: Iterable[RowResult],
        takes: Callable[[RowResult], bool],
        boot: str,
    ) -> None:
        super().__init__(writes, due, takes)
        self._boot = boot
        # Rows whose reservation is committed.
        self.reserved: set[int] = set()
        # Rows to mark ``sending`` at the end of this turn of the loop, and who waits.
        self._turn: list[RowResult] = []
        self._turn_done: asyncio.Future[None] | None = None
        self._turn_at: asyncio.Handle | None = None
        self._flush_at: asyncio.TimerHandle | None = None

    def _counted(self, row: RowResult) -> bool:
        return row.index in self.reserved or row.index in self.writes.marked

    def _count(self, rows: list[RowResult]) -> None:
        self.reserved.update(row.index for row in rows)

    def _work(self, rows: list[RowResult]) -> Callable[[], None]:
        boot = self._boot
        marks = self.writes.marks(rows, stamp=False)
        entries = [(key, {**entry, "boot": boot}) for key, entry in marks]
        return functools.partial(self.writes.journal.mark_sending, entries, word=RESERVED)

    async def mark(self, row: RowResult) -> None:
        """Before ``row`` is sent: reserve it (or wait for its block), then mark it
        ``sending`` with this turn's workers, and wait for that commit."""
        if row.index not in self.reserved:
            await super().mark(row)
        self._turn.append(row)
        if self._turn_done is None:
            loop = asyncio.get_running_loop()
            self._turn_done = loop.create_future()
            self._turn_done.add_done_callback(retrieved)
            self._turn_at = loop.call_soon(self._commit_turn)
        await asyncio.shield(self._turn_done)

    def _commit_turn(self) -> None:
        """Commit this turn's ``sending`` marks, and the states buffered, here: unsynced,
        it takes a few microseconds."""
        rows, done = self._turn, self._turn_done
        self._turn, self._turn_done, self._turn_at = [], None, None
        assert done is not None
        try:
            marks = self.writes.marks(rows)
            self.writes.journal.mark_sending(marks, synced=False)
        except sqlite3.Error as error:
            done.set_exception(error)  # none of these rows is sent
            return
        self.writes.marked_now(rows)
        done.set_result(None)
        if self._flush_at is not None:  # the states buffered went with the marks
            self._flush_at.cancel()
            self._flush_at = None

    def record(self, row: RowResult) -> None:
        """A row's new state, committed with the next turn's marks, or within
        COMMIT_WINDOW (or a kill would turn a finished row into one that "may exist")."""
        super().record(row)
        if self._flush_at is None and self._turn_at is None and not self.writes.failed:
            loop = asyncio.get_running_loop()
            self._flush_at = loop.call_later(COMMIT_WINDOW, self._flush)

    def _flush(self) -> None:
        self._flush_at = None
        if self.writes.failed:
            return
        try:
            self.writes.journal.flush()
        except sqlite3.Error as error:
            self.writes.fail(error)

    def commit_now(self) -> None:
        """At the end of the chunk: end the block commit under way, and commit the states
        that wait, here. Marks of a turn not committed yet are dropped: their workers
        were cut off, and their rows are not sent."""
        super().commit_now()
        if self._turn_at is not None and self._turn_done is not None:  # set together
            self._turn_at.cancel()
            self._turn_done.cancel()
            self._turn, self._turn_done, self._turn_at = [], None, None
        if self._flush_at is not None:
            self._flush_at.cancel()
        self._flush()


@dataclasses.dataclass(frozen=True, slots=True)
class Block:
    """Rows marked ahead in one transaction: its commit on the committer thread, and the
    future the rows' workers wait on."""

    rows: list[RowResult]
    commit: concurrent.futures.Future[None]
    done: asyncio.Future[None]


def retrieved(future: asyncio.Future[None]) -> None:
    """Mark a group commit's outcome as seen, even if every waiter was cancelled."""
    if not future.cancelled():
        future.exception()
