"""How a lane waits: for the answer holding its thread, for a row the server may still
be making, for its row's run to finish (see :mod:`batchrun.sending.runner`).

Each wait runs as a follower task of the execution, so its worker goes on with other
lanes; when the wait ends, the lane goes back on the queue or is stopped with a reason.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from batchrun.config import Settings
from batchrun.endpoints import Endpoint
from batchrun.report import Outcome, RowResult
from batchrun.sending.control import Control, StopSending
from batchrun.sending.plan import JobPlan
from batchrun.sending.reads import POLL_CAP, POLL_FIRST, Reader
from batchrun.sending.sender import RowSender
from batchrun.sending.states import Event
from batchrun.sending.steps import LaneBusy, Unsure

if TYPE_CHECKING:
    from batchrun.sending.runner import Lane, Progress

# The longest pause between looks for what an unsure row may have made.
UNSURE_POLL_CAP = 10.0


# The status shown for a row whose answer the server no longer has (a 404 when followed).
GONE = "not found"


class Waiting(Protocol):
    """What a lane's waits use of the execution (:class:`~batchrun.sending.runner.Execution`)."""

    plan: JobPlan
    settings: Settings
    sender: RowSender
    reader: Reader
    control: Control
    endpoint: Endpoint
    progress: Progress
    queue: asyncio.Queue[Lane | None]
    _clock: Callable[[], float]

    def stop_lane(self, lane: Lane, start: int, reason: str) -> None: ...
    def advance(self, lane: Lane) -> None: ...
    def record(self, row: RowResult) -> None: ...
    def unexpected(self, row: RowResult, error: Exception) -> None: ...
    def unsure_reason(self, row: RowResult) -> str: ...
    async def wait_unnamed(self, lane: Lane) -> None: ...
    async def finish(self, row: RowResult, *, deadline: float) -> None: ...


class LaneWaits:
    """The waits of an execution's lanes (a part of :class:`~batchrun.sending.runner.Execution`)."""

    async def wait_for_thread(self: Waiting, lane: Lane, busy: LaneBusy) -> None:
        """The lane is busy with another run: wait for it, then send the lane's row."""
        row = lane.row
        if lane.busy_until is None:
            lane.busy_until = self._clock() + self.settings.wait_timeout
            lane.waits = 0
        try:
            if busy.holder is None:
                await self.wait_unnamed(lane)
                return
            holder = busy.holder
            run = await self.reader.follow(row, holder, deadline=lane.busy_until)
        except StopSending as stop:
            self.stop_lane(lane, lane.position, f"not sent: job stopped ({stop})")
            return
        except asyncio.CancelledError:
            self.stop_lane(lane, lane.position, f"not sent: job stopped ({self.control.reason})")
            raise
        status = (run or {}).get("status")
        if run is None:
            reason = (
                f"not sent: thread {row.thread_id} is busy with run {holder}, which "
                "cannot be read; rerun to send it"
            )
        elif status == "requires_action":
            reason = self.endpoint.blocked_reason(holder, row.thread_id)
        elif self.endpoint.stopped(str(status)) or self._clock() < lane.busy_until:
            self.queue.put_nowait(lane)  # the thread is free: send the row now
            return
        else:
            reason = self.endpoint.busy_reason(holder, row.thread_id)
        self.stop_lane(lane, lane.position, reason)

    async def wait_unsure(self: Waiting, lane: Lane, unsure: Unsure) -> None:
        """The lane's row may have been made, and the server may still be making it: look
        again after a pause (growing), until it is found or the server can no longer be
        at it. The lane's later rows wait; a job stopped first leaves the row unsure."""
        row = lane.row
        if lane.looks == 0:
            self.progress.update("unsure", row)
        try:
            left = unsure.until - self.sender.clock()
            pause = min(POLL_FIRST * 1.5**lane.looks, UNSURE_POLL_CAP, left)
            await self.reader.pause(max(pause, 0.0))
        except asyncio.CancelledError:
            self.stop_lane(lane, lane.position, self.unsure_reason(row))
            raise
        lane.looks += 1
        if self.control.reason is not None:
            self.stop_lane(lane, lane.position, self.unsure_reason(row))
            return
        self.queue.put_nowait(lane)

    def unsure_reason(self: Waiting, row: RowResult) -> str:
        """Why a row left unsure is not sent: it is looked for by the next run."""
        word = self.endpoint.answer_word
        before = f" ({row.error})" if row.error else ""
        return (
            f"not sent: a {word} may have been created{before} and the server may still be "
            f"making it; rerun to look for it again (it is never sent twice)"
        )

    async def wait_unnamed(self: Waiting, lane: Lane) -> None:
        """The lane is busy and the server does not say with what (a locked conversation):
        wait a while, growing, then send again; give up at the lane's deadline."""
        assert lane.busy_until is not None
        left = lane.busy_until - self._clock()
        if left <= 0:
            self.stop_lane(lane, lane.position, self.endpoint.busy_reason("", lane.thread_id))
            return
        await self.reader.pause(min(POLL_FIRST * 1.5**lane.waits, POLL_CAP, left))
        lane.waits += 1
        self.queue.put_nowait(lane)

    async def follow(self: Waiting, lane: Lane) -> None:
        """Wait for a row's run to stop, then let the lane go on (or block it)."""
        row = lane.row
        once = row.index in self.plan.look_once
        deadline = self._clock() + (0.0 if once else self.settings.wait_timeout)
        try:
            if self.settings.wait:
                await self.finish(row, deadline=deadline)
                self.record(row)
            else:
                run = await self.reader.follow(row, row.run_id, deadline=deadline)
                row.run_status = str((run or {}).get("status", row.run_status))
        except StopSending:
            pass
        except asyncio.CancelledError:
            # Stopping (Ctrl-C): the run exists and the journal says so; the lane's later
            # rows are not sent, and the lane must count as finished or the stop would hang.
            reason = f"not sent: job stopped ({self.control.reason})"
            self.stop_lane(lane, lane.position + 1, reason)
            raise
        except sqlite3.Error:
            raise
        except Exception as error:
            self.unexpected(row, error)
        if row.run_status == GONE:
            pass  # its answer is gone: nothing holds the lane
        elif row.run_status == "requires_action":
            lane.blocked = self.endpoint.blocked_reason(row.run_id, row.thread_id)
        elif not self.endpoint.stopped(row.run_status):
            lane.blocked = self.endpoint.busy_reason(row.run_id, row.thread_id)
        self.progress.update("done", row)
        self.advance(lane)

    async def finish(self: Waiting, row: RowResult, *, deadline: float) -> None:
        """--wait: follow the row's run to its end; --reply: fetch what it said."""
        word = self.endpoint.answer_word
        run = await self.reader.follow(row, row.run_id, deadline=deadline)
        if run is None:
            # Gone (deleted, another server, a restart that forgot it): following it again
            # on every rerun would never end, nor would its lane's wait.
            gone = await self.reader.read(self.endpoint.follow_path(row, row.run_id))
            if gone is not None and gone.status == 404:
                row.run_status = GONE
                row.fail(
                    Outcome.FAILED,
                    f"the {word} {row.run_id} is no longer found ({gone.message}); check the "
                    "server, then rerun with --retry-failed to send the row again",
                )
                return
            row.outcome, row.error = Outcome.PENDING, f"could not read the {word}'s status"
            row.move(Event.GOING)
            return
        self.endpoint.settle(row, run, wait=True)
        if not self.endpoint.stopped(row.run_status):
            row.outcome = Outcome.PENDING
            row.error = (
                f"{word} still {row.run_status} after --wait-timeout; rerun with --wait to "
                "keep waiting"
            )
            if row.ghost and row.run_status == "queued":
                row.error = (
                    "run still queued after --wait-timeout: it was made although its create "
                    "failed and may never start; check the server (a rerun looks at it "
                    "once, without waiting again)"
                )
        elif row.run_status == "completed" and self.settings.reply:
            row.reply = await self.reader.reply(row)
        if row.ghost:
            row.error = "; ".join(part for part in (row.error, row.ghost) if part)
