"""A --batch job run: its HTTP session, Ctrl-C, and the summary it ends with."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING

from batchrun.batch.lines import ConversationTurns, batch_problem
from batchrun.report import Outcome, RowResult, Summary
from batchrun.sending.control import StopSending
from batchrun.sending.runner import Progress
from batchrun.sending.session import job_summary, open_sending, run_blocking
from batchrun.sending.states import Event

if TYPE_CHECKING:
    from batchrun.job import Job


def mark_unbatchable(rows: list[RowResult]) -> None:
    """Rows valid for a direct request that a batch cannot carry become invalid."""
    turns = ConversationTurns()
    for row in rows:
        if row.outcome is not None:
            continue
        body = row.body or {}
        if problem := batch_problem(body) or turns.problem(body):
            row.fail(Outcome.INVALID, problem, Event.INVALID)


async def run_batch_rows_async(
    rows: list[RowResult],
    job: Job,
    *,
    progress: Progress | None = None,
    handle_signals: bool = False,
) -> Summary:
    """Move a --batch job on (see :mod:`~batchrun.batch.job`); the summary."""
    from batchrun.batch.api import BatchApi
    from batchrun.batch.job import BatchJob

    started = time.monotonic()
    settings, endpoint, journal = job.settings, job.endpoint, job.sending_journal
    mark_unbatchable(rows)
    async with open_sending(job) as sending:
        reader, sender = sending.reader, sending.sender
        control = sender.control
        api = BatchApi(
            reader.client,
            reader,
            sender.create_limiter,
            control,
            max_retries=settings.max_retries,
        )
        batch = BatchJob(rows, settings, journal, api, endpoint, progress, mask=reader.client.mask)
        task = asyncio.create_task(batch.run())

        def on_signal() -> None:
            # Every step is recorded before it takes effect, so stopping at any await is
            # safe: the next run finds each part where this one left it.
            control.interrupt()
            task.cancel()

        caller_cancelled = False
        try:
            with contextlib.ExitStack() as signals:
                if handle_signals:
                    from batchrun.sending.signals import on_interrupt

                    signals.enter_context(on_interrupt(asyncio.get_running_loop(), on_signal))
                try:
                    await task
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    caller_cancelled = current is not None and current.cancelling() > 0
                    if not task.done():
                        task.cancel()
                        await asyncio.wait({task})
                except StopSending:
                    pass  # a systemic error or an interrupt: control says which
            running = batch.finish(control.reason or "")
        finally:
            batch.close()
    if caller_cancelled:
        raise asyncio.CancelledError
    summary = job_summary(rows, started, control, endpoint, True, batch.from_journal)
    return dataclasses.replace(
        summary, batch=batch.summary_text(running), batches_running=len(running)
    )


def run_batch_rows(
    rows: list[RowResult],
    job: Job,
    *,
    progress: Progress | None = None,
    handle_signals: bool = False,
) -> Summary:
    """:func:`run_batch_rows_async` as a blocking call (on a thread of its own inside a
    running event loop, as in a notebook)."""
    return run_blocking(
        run_batch_rows_async(rows, job, progress=progress, handle_signals=handle_signals)
    )
