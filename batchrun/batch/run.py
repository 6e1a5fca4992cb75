"""A --batch job run: its HTTP session, Ctrl-C, and the summary it ends with."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from batchrun.report import RowResult, Summary
from batchrun.sending.control import StopSending
from batchrun.sending.runner import Progress
from batchrun.sending.session import job_notes, open_sending, run_blocking
from batchrun.sending.tally import Tally

if TYPE_CHECKING:
    from batchrun.job import Job

# The sheet's prepared rows, a chunk at a time, read afresh on each call: a --batch job
# goes through its sheet twice, to put rows in parts, then (True) to write them out.
SheetPasses = Callable[[bool], Iterable[list[RowResult]]]


async def run_batch_rows_async(
    passes: SheetPasses,
    job: Job,
    *,
    progress: Progress | None = None,
    handle_signals: bool = False,
    on_chunk: Callable[[list[RowResult]], None] | None = None,
) -> Summary:
    """Move a --batch job on (see :mod:`~batchrun.batch.job`); ``on_chunk`` gets the
    rows with their outcomes, a chunk at a time in input order; the summary."""
    from batchrun.batch.api import BatchApi
    from batchrun.batch.job import BatchJob
    from batchrun.batch.outcomes import summary_text, write_outcomes

    started = time.monotonic()
    settings, endpoint, journal = job.settings, job.endpoint, job.sending_journal
    tally = Tally()
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
        batch = BatchJob(settings, journal, api, endpoint, progress, mask=reader.client.mask)
        task: asyncio.Task[None] | None = None

        def on_signal() -> None:
            # Every step is recorded before it takes effect, so stopping at any await is
            # safe: the next run finds each part where this one left it.
            control.interrupt()
            if task is not None:
                task.cancel()

        caller_cancelled = False
        try:
            with contextlib.ExitStack() as signals:
                if handle_signals:
                    from batchrun.sending.signals import on_interrupt

                    signals.enter_context(on_interrupt(asyncio.get_running_loop(), on_signal))
                try:
                    await batch.book.plan(passes(False), stop=lambda: control.reason is not None)
                    if control.reason is None:
                        task = asyncio.create_task(batch.run())
                        await task
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    caller_cancelled = current is not None and current.cancelling() > 0
                    if task is not None and not task.done():
                        task.cancel()
                        await asyncio.wait({task})
                except StopSending:
                    pass  # a systemic error or an interrupt: control says which
            running = batch.finish(control.reason or "")
            if caller_cancelled:
                raise asyncio.CancelledError
            write_outcomes(batch, passes(True), tally, on_chunk)
        finally:
            batch.close()
    summary = tally.summary(
        time.monotonic() - started,
        aborted=control.reason if control.systemic else None,
        interrupted=control.reason == "interrupted",
        notes=job_notes(control),
        from_journal=batch.book.from_journal,
        answers=endpoint.answers,
        limits=control.limits,
    )
    return dataclasses.replace(
        summary,
        batch=summary_text(batch, running),
        batches_running=len(running) + batch.holding(),
    )


def run_batch_rows(
    passes: SheetPasses,
    job: Job,
    *,
    progress: Progress | None = None,
    handle_signals: bool = False,
    on_chunk: Callable[[list[RowResult]], None] | None = None,
) -> Summary:
    """:func:`run_batch_rows_async` as a blocking call (on a thread of its own inside a
    running event loop, as in a notebook)."""
    return run_blocking(
        run_batch_rows_async(
            passes,
            job,
            progress=progress,
            handle_signals=handle_signals,
            on_chunk=on_chunk,
        )
    )
