"""A --batch run's rows as they are written out, and what its batches did, in words.

Once the run has done what was due, the sheet streams by again beside the journal's
results (read afresh: the batches this run joined are in it) and the run's own view of
its parts: a row of a batch still running is ``pending``, a row of a part not submitted is
``not sent`` saying why, a row a batch can never carry is ``invalid``. Each chunk is
counted and handed on (to be written) in input order; nothing of it is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from batchrun.batch.job import BatchJob
from batchrun.batch.ledger import SUBMITTED, Part
from batchrun.batch.lines import ConversationTurns, mark_unbatchable
from batchrun.report import Outcome, RowResult
from batchrun.sending.journal import Entry
from batchrun.sending.states import Event
from batchrun.sending.tally import Tally


def write_outcomes(
    job: BatchJob,
    chunks: Iterable[list[RowResult]],
    tally: Tally,
    on_chunk: Callable[[list[RowResult]], None] | None,
) -> None:
    """Give every row of ``chunks`` its outcome, count it into ``tally`` and hand each
    chunk to ``on_chunk``."""
    job.journal.refresh()
    parts = {part.number: part for part in job.parts}
    turns = ConversationTurns()
    for rows in chunks:
        mark_unbatchable(rows, turns)
        valid = [row for row in rows if row.key is not None and row.outcome is None]
        keys = [str(row.key) for row in valid]
        entries = job.journal.lookup(keys)
        places = job.book.index.parts_of(keys)
        refused = job.book.index.refused(keys)
        for row, key in zip(valid, keys, strict=True):
            if key in refused:
                row.fail(Outcome.INVALID, refused[key], Event.INVALID)
                continue
            number = places.get(key)
            part = parts.get(number) if number is not None else None
            settle_row(job, row, entries.get(key), part)
        tally.add(rows, count_runs=True)
        if on_chunk is not None:
            on_chunk(rows)


def settle_row(job: BatchJob, row: RowResult, entry: Entry | None, part: Part | None) -> None:
    """The row's outcome: its result in the journal, unless its part is unfinished."""
    if entry is not None:
        row.restore(entry.result, entry.state)
    if part is not None and part.number in job.sent_parts:
        row.sent_now += 1
    if part is not None and not part.ended:
        if part.state == SUBMITTED:
            row.outcome, row.error = Outcome.PENDING, pending_text(job, part)
            row.move(Event.GOING)
            return
        row.status, row.response = None, ""
        why = f"not sent: {left_text(job, part)}; rerun the same command{job.unless} to go on"
        row.fail(Outcome.NOT_SENT, why, Event.LEFT)
    elif entry is None:
        row.fail(Outcome.NOT_SENT, f"not sent: {job.stopped or 'stopped'}", Event.LEFT)


def left_text(job: BatchJob, part: Part) -> str:
    """Why a part is not submitted yet."""
    why = job.why_not.get(part.number) or job.stopped or "not submitted"
    if why == "not submitted" and part in job.due and job.book.queue_limit is not None:
        why = f"waiting for room in the batch queue ({job.book.queue_limit:,} enqueued tokens"
        why += f", held by {_batches(job.held)} of other jobs)" if job.holding() else ")"
    return why


def pending_text(job: BatchJob, part: Part) -> str:
    """``in batch batch_... (in_progress, 120/1000 done); run the same command ...``."""
    batch = part.latest
    counts = batch.get("request_counts")
    status = batch.get("status") or part.batch_status or "status unknown"
    progress = ""
    if isinstance(counts, dict):
        done = int(counts.get("completed") or 0) + int(counts.get("failed") or 0)
        total = int(counts.get("total") or 0) or part.size
        progress = f", {done}/{total} done"
    if why := job.why_not.get(part.number):
        return f"in batch {part.batch_id} ({status}{progress}); {why}"
    return (
        f"in batch {part.batch_id} ({status}{progress}); run the same command again{job.unless} "
        "to collect"
    )


def summary_text(job: BatchJob, running: list[Part]) -> str:
    """What the batches did, for the summary line."""
    pieces = []
    if job.submitted:
        pieces.append(f"{len(job.submitted)} submitted ({', '.join(job.submitted)})")
    if job.found:
        pieces.append(
            f"{len(job.found)} found, submitted by the run before ({', '.join(job.found)})"
        )
    mine = {*job.submitted, *job.found}
    waiting = [str(p.batch_id) for p in running if p.batch_id not in mine]
    if waiting:
        pieces.append(f"{len(waiting)} running ({', '.join(waiting)})")
    if mine or waiting or job.finished:
        pieces.append(f"{len(job.finished)} finished")
    if job.requeued:
        pieces.append(
            f"{len(job.requeued)} refused for the enqueued-token limit and sent again "
            f"({', '.join(job.requeued)})"
        )
    if held := job.holding():
        pieces.append(f"waiting for {_batches(held)} of other jobs to make room in the queue")
    text = ", ".join(pieces)
    if running or held:
        text += f"; run again{job.unless} to collect"
    return text


def _batches(count: int) -> str:
    return "1 batch" if count == 1 else f"{count:,} batches"
