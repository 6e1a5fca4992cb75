"""A --batch job's steps: parts, uploads, batches, following, joining, each exactly once.

Every run of the same command does what is due and records it (see
:mod:`~batchrun.batch.ledger`): rows in no part yet are written into new parts; parts
not submitted are uploaded and their batches created (or found, when a lost answer made
one); submitted batches are read, and those that ended are downloaded and joined back to
their rows, whose results go into the journal's log like a direct job's. Without
``--no-wait`` the batches are followed until they end; with it each is read once.

The enqueued-token limit (``--batch-queue-tokens``, or the one a refusal stated; see
:mod:`~batchrun.batch.queue`) cuts parts to fit it, and a part is submitted only when the
job's unfinished parts leave room for it: the next goes when an earlier one ends, on a
later ``--no-wait`` run too. A batch refused for the limit puts its rows in new parts, once.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

from batchrun.batch.api import RUNNING_BATCHES, BatchApi, Refused, Unsure, ended_at
from batchrun.batch.join import answer_records, fail_invalid_batch, fail_unanswered, settle_line
from batchrun.batch.ledger import (
    CREATING,
    JOINED,
    RECORDED,
    REFUSED,
    REQUEUED,
    SUBMITTED,
    UPLOADED,
    Part,
)
from batchrun.batch.lines import batch_url
from batchrun.batch.parts import PartBook
from batchrun.batch.queue import has_room, queue_refusal, stated_queue_limit
from batchrun.config import Settings
from batchrun.endpoints import Endpoint
from batchrun.report import RESUME, Outcome, RowResult
from batchrun.sending.journal import Journal
from batchrun.sending.runner import Progress
from batchrun.sending.states import IN_JOURNAL, Event

POLL_FIRST, POLL_GROWTH, POLL_CAP = 1.0, 1.5, 30.0
# Rows of a part joined at a time: what joining holds, whatever the part's size.
JOIN_ROWS = 5_000
ENDED_BATCHES = frozenset({"completed", "failed", "expired", "cancelled"})
T = TypeVar("T")


def in_lists(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of at most ``size``."""
    rest = iter(items)
    while chunk := list(itertools.islice(rest, size)):
        yield chunk


class NoProgress:
    """Progress nobody watches."""

    def start(self, total: int) -> None:
        """Nothing to show."""

    def update(self, event: str, row: RowResult) -> None:
        """Nothing to show."""


class BatchJob:
    """One run of a --batch job over the parts its :class:`PartBook` planned: :meth:`run`
    does the steps that are due; :mod:`~batchrun.batch.outcomes` then writes the rows."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        api: BatchApi,
        endpoint: Endpoint,
        progress: Progress | None,
        *,
        mask: Callable[[str], str],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.book = PartBook(settings, journal)
        self.ledger = self.book.ledger
        self.api = api
        self.endpoint = endpoint
        self.progress: Progress = progress or NoProgress()
        self.mask = mask
        self._sleep = sleep
        self.url = batch_url(settings.endpoint)
        # What to leave out of the command that collects: a rerun with --fresh starts
        # afresh and submits every row again.
        self.unless = RESUME[settings.fresh]
        self.submitted: list[str] = []  # batch ids created by this run
        self.sent_parts: set[int] = set()  # the parts whose batches this run created
        self.found: list[str] = []  # batch ids a run before created, found by this one
        self.finished: list[str] = []  # batch ids joined by this run
        self.why_not: dict[int, str] = {}  # part -> why it is not submitted yet
        self.due: list[Part] = []  # parts to submit, in order, as the queue has room
        self.requeued: list[str] = []  # batch ids refused for the queue, rows sent again
        # Other batches that held the queue at the last look, while the first part made
        # of refused rows waited for room (see room_since); 0 once it went.
        self.held = 0
        self.stopped = ""  # why the run stopped early (a systemic error, an interrupt)

    @property
    def parts(self) -> list[Part]:
        """Every part of the job this run knows, by number."""
        return self.book.parts

    async def run(self) -> None:
        """Do every step that is due; returns when done (or, with --no-wait, checked)."""
        self.progress.start(self.book.handled)
        running = [part for part in self.parts if part.state == SUBMITTED]
        self.due = [part for part in self.parts if part.state in (RECORDED, UPLOADED, CREATING)]
        await self.follow(running)

    async def submit_due(self, running: list[Part]) -> list[Part]:
        """Submit the due parts, in order, while the queue has room; those submitted."""
        submitted: list[Part] = []
        while self.due:
            part = self.due[0]
            if self.book.queue_limit is not None:
                tokens = self.book.part_tokens
                enqueued = sum(tokens(other) for other in running + submitted)
                if not has_room(tokens(part), enqueued, self.book.queue_limit):
                    break
                if self.first_second_chance(part, enqueued) and not await self.room_since():
                    break
            self.due.pop(0)
            await self.submit(part)
            if part.state == SUBMITTED:
                submitted.append(part)
        return submitted

    def holding(self) -> int:
        """How many other batches hold back the rows the queue refused (0: none)."""
        return self.held if self.due else 0

    def first_second_chance(self, part: Part, enqueued: int) -> bool:
        """Whether ``part`` is the first made of refused rows, due while none of this
        job's batches holds the queue: the refusal was the queue being full of others'."""
        return (
            part.requeued
            and not enqueued
            and not any(other.requeued and other.batch_id for other in self.parts)
        )

    async def room_since(self) -> bool:
        """Whether the queue may have room again since the refusal: nothing else runs, or a
        batch has ended since (the list, ``GET /batches``, says when each ended). True when
        the list cannot tell (unreadable, or the refusal is older than its newest page):
        the part then goes, its one second chance."""
        batches = await self.api.newest()
        refused = {part.batch_id for part in self.parts if part.state == REQUEUED}
        if batches is None:
            return True
        refused_at = [ended_at(batch) for batch in batches if batch.get("id") in refused]
        if not refused_at or refused_at[0] is None:
            return True
        others = [batch for batch in batches if batch.get("id") not in refused]
        running = [batch for batch in others if batch.get("status") in RUNNING_BATCHES]
        since = max(filter(None, refused_at))
        made_room = not running or any((ended_at(batch) or 0) >= since for batch in others)
        self.held = 0 if made_room else len(running)
        return made_room

    async def submit(self, part: Part) -> None:
        """Upload the part (unless done) and create its batch (or adopt the one a lost
        answer made)."""
        try:
            if part.state == RECORDED:
                name = f"batchrun-{self.journal.job_id}-{part.number}.jsonl"
                part.file_id = await self.api.upload(self.book.files[part.number], name)
                part.state = UPLOADED
                self.ledger.save(part)
            assert part.file_id is not None
            job_id = self.journal.job_id
            batch = None
            if part.state == CREATING:
                since = part.creating_at or 0.0
                batch = await self.api.find(part.file_id, job_id, part.number, since)
            found = batch is not None
            if batch is None:
                part.state = CREATING
                part.creating_at = part.creating_at or time.time()
                self.ledger.save(part)  # before the POST: a lost answer is looked for
                batch = await self.api.create(
                    part.file_id, self.url, job_id, part.number, part.creating_at
                )
        except Refused as refusal:
            self.refuse(part, f"batch not submitted: {refusal}")
            return
        except Unsure as unsure:
            self.why_not[part.number] = str(unsure)
            return
        part.batch_id = str(batch["id"])
        part.batch_status = str(batch.get("status") or "")
        part.latest = batch
        part.state = SUBMITTED
        self.ledger.save(part)
        if found:  # its create was sent by a run before this one (killed before it knew)
            self.found.append(part.batch_id)
            return
        self.submitted.append(part.batch_id)
        self.sent_parts.add(part.number)

    def refuse(self, part: Part, reason: str) -> None:
        """The server refused the part's file or batch: its rows fail (--retry-failed
        puts them in a new part)."""
        for rows in self.slices(self.ledger.keys(part.number)):
            for row in rows.values():
                row.status, row.response = None, ""
                row.fail(Outcome.FAILED, reason)
            self.record(rows)
        self.end(part, REFUSED)

    def rows_of(self, keys: list[str]) -> dict[str, RowResult]:
        """The rows of a part's ``keys``, in its lines' order, as the journal knew them
        when the job began (a row is in one unfinished part at a time: nothing since
        changed it)."""
        entries = self.journal.lookup(keys)
        rows = {}
        for position, key in enumerate(keys):
            rows[key] = row = RowResult(position, key=key)
            if (entry := entries.get(key)) is not None:
                row.restore(entry.result, entry.state)
        return rows

    async def follow(self, running: list[Part]) -> None:
        """Submit the due parts the queue has room for, then read each batch until it ends
        (once, with --no-wait), joining those that did; a part that ended makes room for
        the next due one at once."""
        if self.settings.no_wait:
            # Batches that ended since the last run are collected first: they free room.
            still = [part for part in running if not await self.check(part)]
            for part in await self.submit_due(still):
                await self.check(part)
            return
        delay = POLL_FIRST
        waiting = running + await self.submit_due(running)
        while waiting or self.due:
            still = []
            for part in waiting:
                if not await self.check(part):
                    still.append(part)
            ended = len(still) < len(waiting)
            waiting = still
            if self.due and (ended or not waiting):
                # A part ended (room), or parts wait for other jobs' batches to end.
                submitted = await self.submit_due(waiting)
                waiting += submitted
                if submitted:
                    delay = POLL_FIRST
                    continue
            if not waiting and not self.due:
                return
            await self._sleep(delay)
            delay = min(delay * POLL_GROWTH, POLL_CAP)

    async def check(self, part: Part) -> bool:
        """Read the part's batch and join it if it ended; whether to stop following it
        (joined, or its results cannot be downloaded now: the next run tries again)."""
        assert part.batch_id is not None
        answer = await self.api.retrieve(part.batch_id)
        if answer is not None and answer.status == 404:
            self.refuse(part, f"batch {part.batch_id} is gone ({answer.message})")
            return True
        batch = answer.data if answer is not None and answer.status == 200 else None
        if not isinstance(batch, dict):
            reason = answer.message if answer is not None else "no answer"
            self.why_not[part.number] = f"cannot read batch {part.batch_id} ({reason})"
            return False
        part.latest = batch
        status = str(batch.get("status") or "")
        part.batch_status = status
        if status not in ENDED_BATCHES:
            return False
        try:
            await self.collect(part, batch)
        except Unsure as unsure:
            self.why_not[part.number] = (
                f"{unsure}; run the same command again{self.unless} to collect"
            )
        return True

    async def collect(self, part: Part, batch: dict[str, Any]) -> None:
        """Download an ended batch's files and join them to the part's rows, a slice of
        rows at a time (each slice's results recorded before the next is read)."""
        status = str(batch.get("status"))
        errors = batch.get("errors")
        listed = errors.get("data") if isinstance(errors, dict) else None
        refusal = queue_refusal(batch)
        if refusal is not None and not part.requeued:
            self.requeue(part, refusal)
            return
        keys = self.ledger.keys(part.number)
        if status == "failed" and isinstance(listed, list) and listed:
            for rows in self.slices(keys):
                fail_invalid_batch(rows, keys, listed)
                self.record(rows)
        else:
            answered: set[str] = set()
            wanted = set(keys)
            for name in ("output_file_id", "error_file_id"):
                file_id = batch.get(name)
                if isinstance(file_id, str) and file_id:
                    target = self.book.folder / f"{part.number}-{name}.jsonl"
                    await self.api.download(file_id, target)
                    with target.open("rb") as lines:
                        for records in in_lists(answer_records(lines), JOIN_ROWS):
                            mine = [(key, line) for key, line in records if key in wanted]
                            rows = self.rows_of([key for key, _ in mine])
                            for key, line in mine:
                                settle_line(rows[key], line, self.endpoint, self.mask)
                            answered.update(rows)
                            wanted.difference_update(rows)
                            self.record(rows)
                    target.unlink()
            for rows in self.slices([key for key in keys if key not in answered]):
                fail_unanswered(rows.values(), str(part.batch_id), status)
                self.record(rows)
        self.finished.append(str(part.batch_id))
        self.end(part, JOINED)

    def slices(self, keys: list[str]) -> Iterator[dict[str, RowResult]]:
        """The rows of ``keys``, JOIN_ROWS at a time."""
        for chunk in in_lists(keys, JOIN_ROWS):
            yield self.rows_of(chunk)

    def requeue(self, part: Part, message: str) -> None:
        """The queue refused the part's batch (nothing of it ran): learn the limit it
        states, and put the part's rows in new parts, cut to it, that wait for room."""
        stated = stated_queue_limit(message)
        limit = self.book.queue_limit
        if stated is not None and (limit is None or stated < limit):
            self.book.queue_limit = stated
            self.ledger.save_queue_limit(stated)
        self.requeued.append(str(part.batch_id))
        # Ended first: a crash before the new parts are recorded leaves the rows in no
        # part and without a result, so the next run puts them in new parts itself.
        part.state = REQUEUED
        self.ledger.save(part)
        new, refused = self.book.cut_again(part)
        self.due[:0] = new  # before parts not yet submitted: they are older rows
        for key, reason in refused:
            row = RowResult(0, key=key)  # never sent in any batch: nothing to keep
            row.fail(Outcome.INVALID, reason, Event.INVALID)
            self.record({key: row})
        self.journal.flush()

    def record(self, rows: dict[str, RowResult]) -> None:
        """Record the rows' results (committed with the journal's next batch)."""
        for key, row in rows.items():
            self.journal.record(key, IN_JOURNAL[row.state], row.to_journal())
            self.progress.update("done", row)

    def end(self, part: Part, state: str) -> None:
        """Record the part as ended, once every row's result is committed (in that order:
        a crash between the two joins the part again, with the same results)."""
        self.journal.flush()
        part.state = state
        self.ledger.save(part)

    def finish(self, stopped: str) -> list[Part]:
        """Note why the run stopped (for the rows it did not reach); the parts whose
        batches still run."""
        self.stopped = stopped
        return [part for part in self.parts if part.state == SUBMITTED]

    def close(self) -> None:
        """Remove the part files, downloads and index (a rerun writes them again)."""
        self.book.close()
