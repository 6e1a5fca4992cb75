"""Run a prepared batch: lanes per thread, a fixed pool of workers, the journal, stopping.

Rows that share a thread form a *lane* and go in input order, each after the previous
run on that thread has stopped; lanes go in parallel. ``concurrency`` workers take the
next step of some lane from a queue. A step that has to wait for a run (``--wait``, or a
later row on the same thread) is handed to a follower task, so the worker moves on to
create other runs while that one finishes.

"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from batchrun.config import Settings
from batchrun.journal import CREATED, DONE, FAILED, SENDING, Entry, Journal
from batchrun.report import STOPPED_RUN_STATUSES, Outcome, RowResult, Summary, summarize

if TYPE_CHECKING:
    from batchrun.sender import RowSender


class Progress(Protocol):
    """Receives progress: the number of rows to handle, then events per row."""

    def start(self, total: int) -> None:
        """``total`` rows will be handled (sent or followed) by this job."""

    def update(self, event: str, row: RowResult) -> None:
        """``event`` is ``"created"`` (a run exists) or ``"done"`` (the row is finished)."""


class _Silent:
    def start(self, total: int) -> None:
        pass

    def update(self, event: str, row: RowResult) -> None:
        pass


# How long in-flight requests may finish after Ctrl-C or SIGTERM before they are cut off.
INTERRUPT_GRACE = 10.0
# Rows marked ``sending`` in one journal transaction, ahead of being sent.
MARK_AHEAD = 256


@dataclass
class Lane:
    """The rows of one thread that this job must still handle, in input order."""

    thread_id: str
    rows: list[RowResult]
    blocked: str = ""


@dataclass
class Batch:
    """Rows of one job and what each still needs."""

    rows: list[RowResult]
    to_create: set[int] = field(default_factory=set)
    to_finish: set[int] = field(default_factory=set)
    reconcile_first: set[int] = field(default_factory=set)


def plan_batch(rows: list[RowResult], journal: Journal, settings: Settings) -> Batch:
    """Decide per row, from the journal, what this job must do."""
    entries = journal.load()
    batch = Batch(rows)
    for row in rows:
        if row.outcome is Outcome.INVALID or row.key is None:
            continue
        entry: Entry | None = entries.get(row.key)
        if entry is None:
            batch.to_create.add(row.index)
            continue
        row.restore(entry.result)
        if entry.state == SENDING:
            batch.to_create.add(row.index)
            batch.reconcile_first.add(row.index)
        elif entry.state == FAILED and settings.retry_failed:
            batch.to_create.add(row.index)
            if row.ambiguous:
                batch.reconcile_first.add(row.index)
        elif (
            entry.state == CREATED and settings.wait and row.run_status not in STOPPED_RUN_STATUSES
        ):
            batch.to_finish.add(row.index)
            row.outcome, row.error = Outcome.OK, ""  # "pending" last time: follow it again
    return batch


class Execution:
    """One job's sending phase."""

    def __init__(
        self,
        batch: Batch,
        sender: RowSender,
        journal: Journal,
        settings: Settings,
        progress: Progress | None = None,
    ) -> None:
        self.batch = batch
        self.sender = sender
        self.control = sender.control
        self.journal = journal
        self.settings = settings
        self.progress: Progress = progress or _Silent()
        self.queue: asyncio.Queue[tuple[Lane, int]] = asyncio.Queue()
        self.lanes_left = 0
        self.all_done = asyncio.Event()
        self.followers: set[asyncio.Task[None]] = set()
        # Rows to create in input order, for marking ``sending`` a block ahead.
        self.due = collections.deque(r for r in batch.rows if r.index in batch.to_create)
        self.marked: set[int] = set()

    def lanes(self) -> list[Lane]:
        """Lanes of the rows this job handles, ordered by each thread's first row."""
        lanes: dict[str, Lane] = {}
        wanted = self.batch.to_create | self.batch.to_finish
        for row in self.batch.rows:
            if row.index in wanted:
                lane = lanes.get(row.thread_id)
                if lane is None:
                    lane = lanes[row.thread_id] = Lane(row.thread_id, [])
                lane.rows.append(row)
        return list(lanes.values())

    async def run(self) -> None:
        """Send every lane; returns when all are handled or the job was stopped."""
        lanes = self.lanes()
        self.lanes_left = len(lanes)
        self.progress.start(sum(len(lane.rows) for lane in lanes))
        if not lanes:
            return
        for lane in lanes:
            self.queue.put_nowait((lane, 0))
        workers = [asyncio.create_task(self.worker()) for _ in range(self.settings.concurrency)]
        done = asyncio.create_task(self.all_done.wait())
        try:
            # A worker only ends by raising: surface that instead of waiting forever.
            finished, _ = await asyncio.wait({done, *workers}, return_when=asyncio.FIRST_COMPLETED)
            for task in finished - {done}:
                task.result()
        finally:
            done.cancel()
            for task in [*workers, *self.followers]:
                task.cancel()
            await asyncio.gather(*workers, *self.followers, return_exceptions=True)

    async def worker(self) -> None:
        """Take lane steps off the queue until cancelled."""
        from batchrun.sender import StopSending

        while True:
            lane, position = await self.queue.get()
            row = lane.rows[position]
            if self.control.reason is not None:
                self.stop_lane(lane, position, f"not sent: job stopped ({self.control.reason})")
                continue
            if lane.blocked:
                self.stop_lane(lane, position, lane.blocked)
                continue
            if row.index in self.batch.to_create:
                try:
                    await self.sender.create(
                        row, reconcile_first=row.index in self.batch.reconcile_first
                    )
                except StopSending as stop:
                    self.stop_lane(lane, position, f"not sent: job stopped ({stop})")
                    continue
                except sqlite3.Error:
                    raise  # the journal failed: nothing more may be sent (see jobs.run_file)
                except Exception as error:  # a bug must not stop the job: the row says it
                    self.unexpected(row, error)
                self.record(row)
                self.progress.update("created", row)
            if row.outcome is Outcome.OK and self.must_follow(lane, position):
                task = asyncio.create_task(self.follow(lane, position))
                self.followers.add(task)
                task.add_done_callback(self.followers.discard)
            else:
                self.progress.update("done", row)
                self.advance(lane, position)

    def mark_ahead(self, row: RowResult) -> None:
        """Before ``row`` is first sent: mark it, and the next rows due, ``sending``.

        One transaction per block instead of one per row. A row marked but never sent
        costs a rerun only a read of its thread's runs.
        """
        if row.index in self.marked:
            return
        block = [row]
        while len(block) < MARK_AHEAD and self.due:
            upcoming = self.due.popleft()
            if upcoming.index not in self.marked and upcoming is not row:
                block.append(upcoming)
        now = time.time()
        for marked in block:
            marked.sent_at = marked.sent_at or now
        self.journal.mark_sending([(r.key or "", r.to_journal()) for r in block])
        # Only once committed: a row whose mark failed must never count as marked.
        self.marked.update(marked.index for marked in block)

    def must_follow(self, lane: Lane, position: int) -> bool:
        row = lane.rows[position]
        if row.run_status in STOPPED_RUN_STATUSES:
            return False
        return self.settings.wait or position + 1 < len(lane.rows)

    async def follow(self, lane: Lane, position: int) -> None:
        """Wait for a row's run to stop, then let the lane go on (or block it)."""
        from batchrun.sender import StopSending

        row = lane.rows[position]
        deadline = time.monotonic() + self.settings.wait_timeout
        try:
            if self.settings.wait:
                await self.sender.finish(row, deadline=deadline)
                self.record(row)
            else:
                run = await self.sender.follow_run(row.thread_id, row.run_id, deadline=deadline)
                row.run_status = str((run or {}).get("status", row.run_status))
        except StopSending:
            pass
        except Exception as error:
            self.unexpected(row, error)
        except asyncio.CancelledError:
            # Stopping (Ctrl-C): the run exists and the journal says so; the lane's later
            # rows are not sent, and the lane must count as finished or the stop would hang.
            self.stop_lane(lane, position + 1, f"not sent: job stopped ({self.control.reason})")
            raise
        if row.run_status == "requires_action":
            lane.blocked = (
                f"not sent: run {row.run_id} on this thread waits for tool outputs "
                "(requires_action)"
            )
        elif row.run_status not in STOPPED_RUN_STATUSES:
            lane.blocked = (
                f"not sent: thread {row.thread_id} still busy with run {row.run_id} "
                "after --wait-timeout; rerun to send it"
            )
        self.progress.update("done", row)
        self.advance(lane, position)

    def unexpected(self, row: RowResult, error: Exception) -> None:
        """Fail a row on an unexpected error; it may have been sent, so it is reconciled
        before any later attempt (``--retry-failed``)."""
        text = self.sender.client.mask(f"{type(error).__name__}: {error}")
        row.fail(Outcome.FAILED, f"internal error: {text}")
        row.ambiguous = True
        self.record(row)

    def advance(self, lane: Lane, position: int) -> None:
        if position + 1 < len(lane.rows):
            self.queue.put_nowait((lane, position + 1))
        else:
            self.lane_finished()

    def stop_lane(self, lane: Lane, position: int, reason: str) -> None:
        for row in lane.rows[position:]:
            if row.outcome is None or row.index in self.batch.to_create:
                row.fail(Outcome.NOT_SENT, reason)
                row.retry_next = True
            self.progress.update("done", row)
        self.lane_finished()

    def lane_finished(self) -> None:
        self.lanes_left -= 1
        if self.lanes_left <= 0:
            self.all_done.set()

    def record(self, row: RowResult) -> None:
        """Write a row's state to the journal, as final as it is."""
        if row.key is None:
            return
        if row.outcome is Outcome.OK or row.outcome is Outcome.RUN_FAILED:
            # "done" only once followed to its end; a run created without --wait may still
            # be followed by a later --wait job.
            ended = self.settings.wait and row.run_status in STOPPED_RUN_STATUSES
            self.journal.record(row.key, DONE if ended else CREATED, row.to_journal())
        elif row.outcome is Outcome.PENDING:
            self.journal.record(row.key, CREATED, row.to_journal())
        elif row.retry_next or row.outcome is Outcome.NOT_SENT:
            if row.ambiguous or row.index in self.batch.reconcile_first:
                self.journal.record(row.key, SENDING, row.to_journal())
            else:
                self.journal.forget([row.key])
        elif row.outcome is Outcome.FAILED:
            self.journal.record(row.key, FAILED, row.to_journal())


def finish_rows(batch: Batch, control_reason: str | None, *, wait: bool) -> None:
    """Give every row still open an outcome (rows a stop caught in flight or unreached)."""
    reason = control_reason or "stopped"
    handled = batch.to_create | batch.to_finish
    for row in batch.rows:
        if row.outcome is None:
            # Cut off mid-request (a second Ctrl-C): it may have arrived, so keep it
            # "sending" for the rerun to reconcile.
            row.ambiguous = row.ambiguous or row.attempts > 0
            row.fail(Outcome.NOT_SENT, f"not sent: job stopped ({reason}); rerun to send it")
            row.retry_next = True
        elif (
            wait
            and row.outcome is Outcome.OK
            and row.index in handled
            and row.run_status not in STOPPED_RUN_STATUSES
        ):
            row.outcome = Outcome.PENDING
            row.error = f"run still {row.run_status}: the job stopped ({reason}); rerun to wait"


@contextlib.asynccontextmanager
async def open_sender(settings: Settings) -> AsyncIterator[RowSender]:
    """An HTTP session and sender for ``settings`` (starting the simulator if asked)."""
    import aiohttp

    from batchrun.client import ApiClient
    from batchrun.sender import Control, RowSender, StopSending
    from batchrun.shared_limiter import limiters_for

    async with contextlib.AsyncExitStack() as stack:
        if settings.simulate:
            from batchrun.simulator import SimulatorConfig, serve_async

            base_url = await stack.enter_async_context(serve_async(SimulatorConfig(port=0)))
            settings = settings.with_base_url(base_url)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
        )
        control = Control()
        # In-process limiters, or budgets shared through Redis (--limiter-url): losing
        # Redis stops the job as a systemic error, with the unsent rows left for the next run.
        create_limiter, read_limiter = await stack.enter_async_context(
            limiters_for(settings, on_lost=control.abort, stop=StopSending)
        )
        yield RowSender(
            ApiClient(session, settings),
            settings,
            control,
            create_limiter=create_limiter,
            read_limiter=read_limiter,
            on_sending=lambda row: None,
        )


async def execute(
    batch: Batch,
    settings: Settings,
    journal: Journal,
    *,
    progress: Progress | None = None,
    handle_signals: bool = False,
) -> tuple[str | None, bool, tuple[str, ...]]:
    """Send the batch; returns (systemic abort reason, interrupted?, notes)."""
    async with open_sender(settings) as sender:
        execution = Execution(batch, sender, journal, settings, progress)
        sender.on_sending = execution.mark_ahead
        task = asyncio.create_task(execution.run())
        interrupted = False
        if handle_signals:
            loop = asyncio.get_running_loop()
            presses = 0

            def on_signal() -> None:
                nonlocal presses, interrupted
                presses += 1
                interrupted = True
                sender.control.interrupt()
                for follower in list(execution.followers):
                    follower.cancel()
                if presses > 1:
                    task.cancel()
                else:
                    loop.call_later(INTERRUPT_GRACE, task.cancel)

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
        control = sender.control
        finish_rows(batch, control.reason, wait=settings.wait)
        for row in batch.rows:
            if row.outcome is Outcome.NOT_SENT and row.index in batch.to_create:
                execution.record(row)
        aborted = control.reason if control.systemic else None
        return aborted, interrupted, tuple(control.notes)


def run_rows(
    rows: list[RowResult],
    settings: Settings,
    journal: Journal,
    *,
    progress: Progress | None = None,
    handle_signals: bool = False,
) -> Summary:
    """Send prepared rows (a blocking call); the summary of the job."""
    started = time.monotonic()
    batch = plan_batch(rows, journal, settings)
    with event_loop() as loop:
        aborted, interrupted, notes = loop.run(
            execute(batch, settings, journal, progress=progress, handle_signals=handle_signals)
        )
    return summarize(
        rows,
        time.monotonic() - started,
        aborted=aborted,
        interrupted=interrupted,
        notes=notes,
        count_runs=settings.wait,
    )


def event_loop() -> asyncio.Runner:
    """A runner on uvloop where it is installed (Linux, macOS), else on asyncio's loop.

    uvloop's loop costs less CPU per request than asyncio's, and sending at low latency
    is bound by that CPU.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
