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
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from batchrun.batch.api import BatchApi, Refused, Unsure
from batchrun.batch.join import fail_invalid_batch, fail_unanswered, join_lines
from batchrun.batch.ledger import (
    CREATING,
    JOINED,
    RECORDED,
    REFUSED,
    REQUEUED,
    SUBMITTED,
    UPLOADED,
    Part,
    PartLedger,
)
from batchrun.batch.lines import PartWriter, batch_line, batch_url, too_large
from batchrun.batch.queue import has_room, queue_refusal, stated_queue_limit
from batchrun.config import Settings
from batchrun.endpoints import Endpoint
from batchrun.endpoints.prepare import sent_body
from batchrun.report import Outcome, RowResult
from batchrun.sending.journal import Journal
from batchrun.sending.runner import Progress
from batchrun.sending.states import FAILED, IN_JOURNAL, Event
from batchrun.sending.tokens import charged_tokens

POLL_FIRST, POLL_GROWTH, POLL_CAP = 1.0, 1.5, 30.0
ENDED_BATCHES = frozenset({"completed", "failed", "expired", "cancelled"})


class NoProgress:
    """Progress nobody watches."""

    def start(self, total: int) -> None:
        """Nothing to show."""

    def update(self, event: str, row: RowResult) -> None:
        """Nothing to show."""


class BatchJob:
    """One run of a --batch job over its prepared rows (invalid rows already marked)."""

    def __init__(
        self,
        rows: list[RowResult],
        settings: Settings,
        journal: Journal,
        api: BatchApi,
        endpoint: Endpoint,
        progress: Progress | None,
        *,
        mask: Callable[[str], str],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rows = rows
        self.settings = settings
        self.journal = journal
        self.ledger = PartLedger(journal)
        self.api = api
        self.endpoint = endpoint
        self.progress: Progress = progress or NoProgress()
        self.mask = mask
        self._sleep = sleep
        self.url = batch_url(settings.endpoint)
        self.by_key = {row.key: row for row in rows if row.key and row.outcome is None}
        self.parts: list[Part] = []
        self.files: dict[int, Path] = {}
        self.folder = Path(tempfile.mkdtemp(prefix="batchrun-batch-"))
        self.from_journal = 0
        self.submitted: list[str] = []  # batch ids created by this run
        self.found: list[str] = []  # batch ids a run before created, found by this one
        self.finished: list[str] = []  # batch ids joined by this run
        self.why_not: dict[int, str] = {}  # part -> why it is not submitted yet
        # The enqueued-token limit: the flag's, or the one a refusal stated (the lower).
        self.queue_limit = settings.batch_queue_tokens
        self.tokens: dict[int, int] = {}  # part -> the tokens it holds in the queue
        self.due: list[Part] = []  # parts to submit, in order, as the queue has room
        self.requeued: list[str] = []  # batch ids refused for the queue, rows sent again

    def tag(self, key: str) -> str | None:
        """A line's run tag: the row's key and the job's id (as a direct job tags)."""
        return f"{key}.{self.journal.job_id}" if self.settings.run_tag else None

    async def run(self) -> None:
        """Do every step that is due; returns when done (or, with --no-wait, checked)."""
        self.plan()
        handled = [key for part in self.parts if not part.ended for key in part.keys]
        self.progress.start(sum(key in self.by_key for key in handled))
        running = [part for part in self.parts if part.state == SUBMITTED]
        self.due = [part for part in self.parts if part.state in (RECORDED, UPLOADED, CREATING)]
        await self.follow(running)

    async def submit_due(self, running: list[Part]) -> list[Part]:
        """Submit the due parts, in order, while the queue has room; those submitted."""
        submitted: list[Part] = []
        while self.due:
            part = self.due[0]
            enqueued = sum(self.part_tokens(other) for other in running + submitted)
            if not has_room(self.part_tokens(part), enqueued, self.queue_limit):
                break
            self.due.pop(0)
            await self.submit(part)
            if part.state == SUBMITTED:
                submitted.append(part)
        return submitted

    def part_tokens(self, part: Part) -> int:
        """What the part's lines are charged in the queue (counted once per run)."""
        if part.number not in self.tokens:
            self.tokens[part.number] = sum(
                charged_tokens(sent_body(row, self.settings, self.tag(key)))
                for key, row in self.part_rows(part).items()
            )
        return self.tokens[part.number]

    def plan(self) -> None:
        """Restore results from the journal; put rows that need sending into new parts."""
        entries = self.journal.load()
        self.parts = self.ledger.parts()
        stated = self.ledger.queue_limit()
        if stated is not None:
            self.queue_limit = min(stated, self.queue_limit or stated)
        busy = {key for part in self.parts if not part.ended for key in part.keys}
        fresh: list[RowResult] = []
        for key, row in self.by_key.items():
            entry = entries.get(key)
            if entry is not None:
                row.restore(entry.result, entry.state)
            if key in busy:
                continue
            if entry is None or (entry.state == FAILED and self.settings.retry_failed):
                fresh.append(row)
            else:
                self.from_journal += 1
        if fresh:
            first = max((part.number for part in self.parts), default=0) + 1
            new = self.write_parts(fresh, first)
            self.ledger.add(new)  # recorded before any upload
            self.parts.extend(new)

    def write_parts(
        self, rows: list[RowResult], first: int, *, requeued: bool = False
    ) -> list[Part]:
        """Write ``rows`` as batch lines into part files (split at the limits)."""
        limit = self.queue_limit
        with PartWriter(self.part_path, first, limit) as writer:
            for row in rows:
                assert row.key is not None
                body = sent_body(row, self.settings, self.tag(row.key))
                line = batch_line(row.key, self.url, body)
                tokens = charged_tokens(body) if limit is not None else 0
                if problem := too_large(line):
                    row.fail(Outcome.INVALID, problem, Event.INVALID)
                    continue
                if limit is not None and tokens > limit:
                    row.fail(
                        Outcome.INVALID,
                        f"the row is charged {tokens:,} tokens, more than the batch queue "
                        f"holds ({limit:,} enqueued tokens): send it without --batch",
                        Event.INVALID,
                    )
                    continue
                writer.add(row.key, line, tokens)
        parts = []
        for written in writer.parts:
            self.files[written.number] = written.path
            if limit is not None:
                self.tokens[written.number] = written.tokens
            parts.append(Part(written.number, written.keys, requeued=requeued))
        return parts

    def part_path(self, number: int) -> Path:
        return self.folder / f"part-{number}.jsonl"

    def part_file(self, part: Part) -> Path:
        """The part's input file: written by this run, or again from its rows' keys."""
        path = self.files.get(part.number)
        if path is None:
            path = self.part_path(part.number)
            with path.open("wb") as stream:
                for key in part.keys:
                    row = self.by_key.get(key)
                    if row is not None:
                        body = sent_body(row, self.settings, self.tag(key))
                        stream.write(batch_line(key, self.url, body))
        return path

    async def submit(self, part: Part) -> None:
        """Upload the part (unless done) and create its batch (or adopt the one a lost
        answer made)."""
        try:
            if part.state == RECORDED:
                name = f"batchrun-{self.journal.job_id}-{part.number}.jsonl"
                part.file_id = await self.api.upload(self.part_file(part), name)
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
        for key in part.keys:
            if (row := self.by_key.get(key)) is not None:
                row.sent_now += 1

    def refuse(self, part: Part, reason: str) -> None:
        """The server refused the part's file or batch: its rows fail (--retry-failed
        puts them in a new part)."""
        for row in self.part_rows(part).values():
            row.status, row.response = None, ""
            row.fail(Outcome.FAILED, reason)
        self.settle(part, REFUSED)

    def part_rows(self, part: Part) -> dict[str, RowResult]:
        return {key: row for key in part.keys if (row := self.by_key.get(key)) is not None}

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
        while waiting:
            still = []
            for part in waiting:
                if not await self.check(part):
                    still.append(part)
            ended = len(still) < len(waiting)
            waiting = still
            if ended and self.due:
                waiting += await self.submit_due(waiting)
                delay = POLL_FIRST
                continue
            if not waiting:
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
            self.why_not[part.number] = f"{unsure}; run the same command again to collect"
        return True

    async def collect(self, part: Part, batch: dict[str, Any]) -> None:
        """Download an ended batch's files and join them to the part's rows."""
        rows = self.part_rows(part)
        status = str(batch.get("status"))
        errors = batch.get("errors")
        listed = errors.get("data") if isinstance(errors, dict) else None
        refusal = queue_refusal(batch)
        if refusal is not None and not part.requeued:
            self.requeue(part, refusal)
            return
        if status == "failed" and isinstance(listed, list) and listed:
            fail_invalid_batch(rows, part.keys, listed)
        else:
            answered: set[str] = set()
            for name in ("output_file_id", "error_file_id"):
                file_id = batch.get(name)
                if isinstance(file_id, str) and file_id:
                    target = self.folder / f"{part.number}-{name}.jsonl"
                    await self.api.download(file_id, target)
                    with target.open("rb") as lines:
                        answered |= join_lines(rows, lines, self.endpoint, self.mask)
                    target.unlink()
            missing = [row for key, row in rows.items() if key not in answered]
            fail_unanswered(missing, str(part.batch_id), status)
        self.finished.append(str(part.batch_id))
        self.settle(part, JOINED)

    def requeue(self, part: Part, message: str) -> None:
        """The queue refused the part's batch (nothing of it ran): learn the limit it
        states, and put the part's rows in new parts, cut to it, that wait for room."""
        stated = stated_queue_limit(message)
        if stated is not None and (self.queue_limit is None or stated < self.queue_limit):
            self.queue_limit = stated
            self.ledger.save_queue_limit(stated)
        self.requeued.append(str(part.batch_id))
        # Ended first: a crash before the new parts are recorded leaves the rows in no
        # part and without a result, so the next run puts them in new parts itself.
        part.state = REQUEUED
        self.ledger.save(part)
        rows = list(self.part_rows(part).values())
        first = max(other.number for other in self.parts) + 1
        new = self.write_parts(rows, first, requeued=True)
        self.ledger.add(new)
        self.parts.extend(new)
        self.due[:0] = new  # before parts not yet submitted: they are older rows
        for row in rows:
            if row.outcome is Outcome.INVALID:  # more tokens than the queue holds
                assert row.key is not None
                self.journal.record(row.key, IN_JOURNAL[row.state], row.to_journal())
                self.progress.update("done", row)
        self.journal.flush()

    def settle(self, part: Part, state: str) -> None:
        """Record the part's rows' results, then the part as ended (in that order: a crash
        between the two joins the part again, with the same results)."""
        for row in self.part_rows(part).values():
            assert row.key is not None
            self.journal.record(row.key, IN_JOURNAL[row.state], row.to_journal())
            self.progress.update("done", row)
        self.journal.flush()
        part.state = state
        self.ledger.save(part)

    def finish(self, stopped: str) -> list[Part]:
        """Give every row not joined its outcome; the parts whose batches still run."""
        running = []
        for part in self.parts:
            if part.ended:
                continue
            rows = self.part_rows(part).values()
            if part.state == SUBMITTED:
                running.append(part)
                text = self.pending_text(part)
                for row in rows:
                    row.outcome, row.error = Outcome.PENDING, text
                    row.move(Event.GOING)
                continue
            why = self.why_not.get(part.number) or stopped or "not submitted"
            if why == "not submitted" and part in self.due and self.queue_limit is not None:
                why = f"waiting for room in the batch queue ({self.queue_limit:,} enqueued tokens)"
            for row in rows:
                row.status, row.response = None, ""
                why = f"not sent: {why}; rerun the same command to go on"
                row.fail(Outcome.NOT_SENT, why, Event.LEFT)
        for row in self.by_key.values():
            if row.outcome is None:
                row.fail(Outcome.NOT_SENT, f"not sent: {stopped or 'stopped'}", Event.LEFT)
        return running

    def pending_text(self, part: Part) -> str:
        """``in batch batch_... (in_progress, 120/1000 done); run the same command ...``."""
        batch = part.latest
        counts = batch.get("request_counts")
        status = batch.get("status") or part.batch_status or "status unknown"
        progress = ""
        if isinstance(counts, dict):
            done = int(counts.get("completed") or 0) + int(counts.get("failed") or 0)
            total = int(counts.get("total") or 0) or len(part.keys)
            progress = f", {done}/{total} done"
        if why := self.why_not.get(part.number):
            return f"in batch {part.batch_id} ({status}{progress}); {why}"
        return (
            f"in batch {part.batch_id} ({status}{progress}); run the same command again to collect"
        )

    def summary_text(self, running: list[Part]) -> str:
        """What the batches did, for the summary line."""
        pieces = []
        if self.submitted:
            pieces.append(f"{len(self.submitted)} submitted ({', '.join(self.submitted)})")
        if self.found:
            pieces.append(
                f"{len(self.found)} found, submitted by the run before ({', '.join(self.found)})"
            )
        mine = {*self.submitted, *self.found}
        waiting = [str(p.batch_id) for p in running if p.batch_id not in mine]
        if waiting:
            pieces.append(f"{len(waiting)} running ({', '.join(waiting)})")
        if mine or waiting or self.finished:
            pieces.append(f"{len(self.finished)} finished")
        if self.requeued:
            pieces.append(
                f"{len(self.requeued)} refused for the enqueued-token limit and sent again "
                f"({', '.join(self.requeued)})"
            )
        text = ", ".join(pieces)
        if running:
            text += "; run again to collect"
        return text

    def close(self) -> None:
        """Remove the part files and downloads (a rerun writes them again as needed)."""
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)
