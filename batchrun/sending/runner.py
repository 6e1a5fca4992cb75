"""Run a job's plan: lanes per thread, a fixed pool of workers, followers, stopping.

Rows that share a thread (a conversation, for responses) form a *lane* and go in input
order, each after the previous run on it has stopped; lanes go in parallel; a row with
neither is a lane of its own. ``concurrency`` workers take the next
step of some lane from a queue. A step that has to wait for a run (``--wait``, a later row
on the same thread, a thread busy with another run, or a row the server may still be
making after an unanswered create) is handed to a follower task, so
the worker moves on to create other runs meanwhile. Workers and followers live in one
:class:`asyncio.TaskGroup`: a follower that fails stops the job instead of hanging it.

A row left for the next run (not sent, or maybe sent and unconfirmed) stops its lane: a
later row on its thread must not overtake it. The followers' waits are in
:mod:`batchrun.sending.lane_waits`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from batchrun.config import Settings
from batchrun.endpoints import Endpoint
from batchrun.report import Outcome, RowResult
from batchrun.sending.as_sent import MarkedAsSent
from batchrun.sending.boot import boot_id
from batchrun.sending.control import Control, StopSending
from batchrun.sending.durability import JournalWrites, MarkedAhead, ReservedAhead
from batchrun.sending.journal import Journal
from batchrun.sending.lane_waits import LaneWaits
from batchrun.sending.plan import JobPlan, held_reason
from batchrun.sending.reads import Reader
from batchrun.sending.sender import RowSender
from batchrun.sending.states import HOLDS_LANE, Event, RowState
from batchrun.sending.steps import LaneBusy, Unsure


class Progress(Protocol):
    """Receives progress: the number of rows to handle, then events per row."""

    def start(self, total: int) -> None:
        """``total`` more rows will be handled (sent or followed) by this job: called once
        for each chunk of the sheet as the job comes to it."""

    def update(self, event: str, row: RowResult) -> None:
        """``event`` is ``"created"`` (a run exists), ``"unsure"`` (what the row asked for
        may exist and the server may still be making it: looked for again until found or
        until it cannot be, nothing sent meanwhile) or ``"done"`` (the row is finished)."""


class _Silent:
    def start(self, total: int) -> None:
        pass

    def update(self, event: str, row: RowResult) -> None:
        pass


@dataclass(eq=False)
class Lane:
    """The rows of one thread that this job must still handle, in input order."""

    thread_id: str
    rows: list[RowResult]
    position: int = 0
    blocked: str = ""
    # Monotonic deadline for waiting on other runs of the thread (set at the first wait).
    busy_until: float | None = None
    # Waits so far for a lane busy with something unnamed (a locked conversation).
    waits: int = 0
    # Looks so far for what the lane's row may have made (see wait_unsure).
    looks: int = 0

    @property
    def row(self) -> RowResult:
        """The row this lane is at."""
        return self.rows[self.position]


def left_for_next_run(row: RowResult) -> bool:
    """Whether a row ended this job unsent or unconfirmed, so later rows must wait."""
    return row.outcome in (Outcome.FAILED, Outcome.NOT_SENT) and row.state in HOLDS_LANE


class Execution(LaneWaits):
    """One job's sending phase."""

    def __init__(
        self,
        plan: JobPlan,
        sender: RowSender,
        reader: Reader,
        journal: Journal,
        settings: Settings,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        writes: JournalWrites | None = None,
        held: dict[str, str] | None = None,
    ) -> None:
        """``writes``: the job's journal writes, shared by the executions of its chunks;
        ``held``: threads whose lane an earlier chunk left blocked, with why."""
        self.plan = plan
        self.sender = sender
        self.reader = reader
        self.endpoint: Endpoint = sender.endpoint
        self.control = sender.control
        self.journal = journal
        self.settings = settings
        self.progress: Progress = progress or _Silent()
        self._clock = clock
        self.queue: asyncio.Queue[Lane | None] = asyncio.Queue()
        self.lanes_left = 0
        self.followers: set[asyncio.Task[None]] = set()
        self._lanes: list[Lane] = []
        self._group: asyncio.TaskGroup | None = None
        self.writes = writes or JournalWrites(journal, self.control.abort)
        self.held = {} if held is None else held
        # Each row's strategy, chosen once (see durability): every mark and state of a row
        # goes through the one that marked it, whatever is learnt about the server later.
        self._durability: dict[int, MarkedAhead | MarkedAsSent] = {}
        due = [row for row in plan.rows if row.index in plan.to_create]
        self.ahead = MarkedAhead(self.writes, due, lambda row: self.durability(row) is self.ahead)
        boot = boot_id()
        self.reserved = (
            None
            if boot is None
            else ReservedAhead(
                self.writes, due, lambda row: self.durability(row) is self.reserved, boot
            )
        )
        self.as_sent = MarkedAsSent(self.writes)

    def lanes(self) -> list[Lane]:
        """Lanes of the rows this job handles, ordered by each thread's first row."""
        lanes: dict[object, Lane] = {}
        wanted = self.plan.to_create | self.plan.to_follow
        for row in self.plan.rows:
            if row.index in wanted:
                key = row.thread_id or row.index  # no thread or conversation: its own lane
                lane = lanes.get(key)
                if lane is None:
                    blocked = self.held.get(row.thread_id, "") if row.thread_id else ""
                    lane = lanes[key] = Lane(row.thread_id, [], blocked=blocked)
                lane.rows.append(row)
        self._lanes = list(lanes.values())
        return self._lanes

    def held_lanes(self) -> dict[str, str]:
        """Threads whose lane this execution left blocked, with why: the later rows of
        the thread, in the sheet's next chunks, are held back the same way."""
        return {
            lane.thread_id: lane.blocked for lane in self._lanes if lane.thread_id and lane.blocked
        }

    def stop_all(self) -> None:
        """The job has stopped before this chunk: its rows are not sent, as :meth:`run`
        would leave them, without starting a worker."""
        lanes = self.lanes()
        self.lanes_left = len(lanes)
        self.progress.start(sum(len(lane.rows) for lane in lanes))
        for lane in lanes:
            self.stop_lane(lane, 0, f"not sent: job stopped ({self.control.reason})")

    async def run(self) -> None:
        """Send every lane; returns when all are handled or the job was stopped."""
        lanes = self.lanes()
        self.lanes_left = len(lanes)
        self.progress.start(sum(len(lane.rows) for lane in lanes))
        if not lanes:
            return
        for lane in lanes:
            self.queue.put_nowait(lane)
        async with asyncio.TaskGroup() as group:
            self._group = group
            for _ in range(self.settings.concurrency):
                group.create_task(self.worker())

    async def worker(self) -> None:
        """Take lane steps off the queue until every lane is handled."""
        while (lane := await self.queue.get()) is not None:
            await self.step(lane)

    async def step(self, lane: Lane) -> None:
        """The lane's current row: create its run, then follow it or move on."""
        row = lane.row
        if self.control.reason is not None:
            self.stop_lane(lane, lane.position, f"not sent: job stopped ({self.control.reason})")
            return
        if lane.blocked:
            self.stop_lane(lane, lane.position, lane.blocked)
            return
        if row.index in self.plan.to_create:
            busy = await self.create(lane, row)
            if isinstance(busy, Unsure):
                self.spawn(self.wait_unsure(lane, busy))
                return
            if busy is not None:
                self.spawn(self.wait_for_thread(lane, busy))
                return
        if row.outcome is Outcome.OK and self.must_follow(lane):
            self.spawn(self.follow(lane))
            return
        self.progress.update("done", row)
        self.advance(lane)

    async def create(self, lane: Lane, row: RowResult) -> LaneBusy | Unsure | None:
        try:
            busy = await self.sender.create(row, look_first=row.index in self.plan.look_first)
        except StopSending as stop:
            row.fail(Outcome.NOT_SENT, f"not sent: job stopped ({stop})", Event.LEFT)
            busy = None
        except sqlite3.Error:
            raise  # the journal failed: nothing more may be sent
        except Exception as error:  # a bug must not stop the job: the row says it
            self.unexpected(row, error)
            busy = None
        if isinstance(busy, Unsure):
            self.record(row)  # unsure until then, also for a rerun after a kill
        if busy is not None:
            return busy
        if self.owes_reply(row):
            row.move(Event.GOING)
        self.record(row)
        self.progress.update("created", row)
        if left_for_next_run(row):
            lane.blocked = (
                # Failed "may exist": only --retry-failed moves it on, so a rerun would not.
                held_reason(row, self.endpoint.lane)
                if row.state is RowState.FAILED_UNSURE
                else f"not sent: an earlier row on {self.endpoint.lane} {row.thread_id} was "
                "left for the next run; rerun to send them in order"
            )
        return None

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        assert self._group is not None
        task = self._group.create_task(coroutine)
        self.followers.add(task)
        task.add_done_callback(self.followers.discard)

    def must_follow(self, lane: Lane) -> bool:
        if lane.row.state is RowState.CREATED and self.settings.wait:
            return True  # its final status, or its reply, is still to be read
        if self.endpoint.stopped(lane.row.run_status):
            return False
        return lane.position + 1 < len(lane.rows)

    def owes_reply(self, row: RowResult) -> bool:
        """--reply: the row's answer completed at once (an adopted run), and its reply, read
        apart from it, is not read yet: not done until it is."""
        return (
            self.settings.reply
            and row.state is RowState.DONE
            and row.run_status == "completed"
            and self.endpoint.reply_path(row) is not None
        )

    def unexpected(self, row: RowResult, error: Exception) -> None:
        """Fail a row on an unexpected error; it may have been sent, so it is reconciled
        before any later attempt (``--retry-failed``)."""
        text = self.sender.client.mask(f"{type(error).__name__}: {error}")
        row.fail(Outcome.FAILED, f"internal error: {text}")
        row.move(Event.MAYBE_ARRIVED)
        self.record(row)

    def advance(self, lane: Lane) -> None:
        lane.position += 1
        if lane.position < len(lane.rows):
            self.queue.put_nowait(lane)
        else:
            self.lane_finished()

    def stop_lane(self, lane: Lane, start: int, reason: str) -> None:
        lane.blocked = lane.blocked or reason
        for row in lane.rows[start:]:
            if row.outcome is None or row.index in self.plan.to_create:
                row.fail(Outcome.NOT_SENT, reason, Event.LEFT)
            self.progress.update("done", row)
        self.lane_finished()

    def lane_finished(self) -> None:
        self.lanes_left -= 1
        if self.lanes_left == 0:
            for _ in range(self.settings.concurrency):
                self.queue.put_nowait(None)  # every worker ends

    def durability(self, row: RowResult) -> MarkedAhead | MarkedAsSent:
        """How ``row`` is made durable (see :mod:`batchrun.sending.durability`): reserved a
        block ahead where it has no journal entry yet and the machine's boot is known;
        else marked a block ahead where what it makes can be looked up; else marked as it
        is sent. Chosen on first asking, then kept."""
        strategy = self._durability.get(row.index)
        if strategy is None:
            if self.reserved is not None and row.index in self.plan.no_entry:
                strategy = self.reserved
            elif self.sender.can_look(row):
                strategy = self.ahead
            else:
                strategy = self.as_sent
            self._durability[row.index] = strategy
        return strategy

    async def mark(self, row: RowResult) -> None:
        """Before ``row`` is first sent: mark it ``sending`` in the journal, durably."""
        if row.index not in self.writes.marked:
            await self.durability(row).mark(row)

    def record(self, row: RowResult) -> None:
        """Write a row's state to the journal: what the next job does with it."""
        self.durability(row).record(row)

    def commit_now(self) -> None:
        """At the end of the chunk: end the block commits under way, and commit what
        waits for the commit window."""
        self.ahead.commit_now()
        if self.reserved is not None:
            self.reserved.commit_now()
        self.as_sent.commit_now()


def finish_rows(plan: JobPlan, control: Control, *, wait: bool) -> None:
    """Give every row still open an outcome (rows a stop caught in flight or unreached)."""
    reason = control.reason or "stopped"
    handled = plan.to_create | plan.to_follow
    for row in plan.rows:
        if row.outcome is None:
            # Cut off mid-request (a second Ctrl-C), or stopped while what an earlier
            # request made was not found yet, it is unsure: the rerun looks first.
            why = f"not sent: job stopped ({reason}); rerun to send it"
            if row.unsure:
                why = (
                    f"not sent: job stopped ({reason}); it may have been created: rerun to "
                    "look for it again (it is never sent twice)"
                )
            row.fail(Outcome.NOT_SENT, why, Event.LEFT)
        elif (
            wait
            and row.outcome is Outcome.OK
            and row.index in handled
            and row.state is RowState.CREATED
        ):
            row.outcome = Outcome.PENDING
            row.move(Event.GOING)
            row.error = f"run still {row.run_status}: the job stopped ({reason}); rerun to wait"


@contextlib.contextmanager
def journal_guard(execution: Execution) -> Any:
    """Turn a journal failure into a stopped job (output still written), and anything else
    into what it is."""
    try:
        yield
    except BaseExceptionGroup as group:
        failed, rest = group.split(sqlite3.Error)
        if failed is None or rest is not None:
            raise
        execution.writes.fail(failed.exceptions[0])
