"""A job's sending session: HTTP, limiters and workers around a planned batch.

:func:`run_rows` is the blocking entry point (it runs its own event loop, on a thread of
its own when the caller already runs one, as Jupyter and KNIME's Python node do);
:func:`run_rows_async` is its twin for callers with a loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from batchrun.config import Settings
from batchrun.endpoints import Endpoint, endpoint_named
from batchrun.report import Outcome, RowResult, Summary, summarize
from batchrun.sending.control import NO_LOOKUP, Control
from batchrun.sending.journal import Journal
from batchrun.sending.plan import JobPlan, plan_job
from batchrun.sending.reads import Reader
from batchrun.sending.runner import Execution, Progress, finish_rows, journal_guard
from batchrun.sending.sender import NO_METADATA_NOTE, RowSender
from batchrun.sending.states import LEFT_STATES

T = TypeVar("T")
# How long in-flight requests may finish after Ctrl-C or SIGTERM before they are cut off.
INTERRUPT_GRACE = 10.0


@dataclass(frozen=True, slots=True)
class Sending:
    """What sends one job's rows: the row sender and the reader it shares HTTP with."""

    sender: RowSender
    reader: Reader


@contextlib.asynccontextmanager
async def open_sending(
    settings: Settings, job_id: str = "", journal_path: Path | None = None
) -> AsyncIterator[Sending]:
    """An HTTP session, limiters, reader and sender for ``settings`` (starting the
    simulator if asked)."""
    import aiohttp

    from batchrun.sending.client import ApiClient
    from batchrun.sending.control import StopSending
    from batchrun.sending.shared_limiter import limiters_for

    async with contextlib.AsyncExitStack() as stack:
        if settings.simulate:
            from batchrun.simulator import SimulatorConfig, serve_async

            # The runs it makes are logged beside the journal, so a rerun's simulator knows
            # them: a pending run can be followed, a row caught in flight reconciled.
            run_log = None if journal_path is None else f"{journal_path}.simulator.jsonl"
            config = SimulatorConfig(port=0, run_log=run_log)
            base_url = await stack.enter_async_context(serve_async(config))
            settings = settings.with_base_url(base_url)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        session = await stack.enter_async_context(
            # Proxies from the environment are resolved once by ApiClient, not per request
            # (trust_env=True costs two thread hops a request).
            aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
        )
        client = ApiClient(session, settings)
        control = Control()
        # In-process limiters, or budgets shared through Redis (--limiter-url): losing
        # Redis stops the job as a systemic error, with the unsent rows left for the next run.
        create_limiter, read_limiter = await stack.enter_async_context(
            limiters_for(settings, on_lost=control.abort, stop=StopSending)
        )
        reader = Reader(client, settings, control, read_limiter)
        sender = RowSender(
            client,
            settings,
            control,
            create_limiter=create_limiter,
            reader=reader,
            job_id=job_id,
        )
        yield Sending(sender, reader)


async def execute(
    plan: JobPlan,
    settings: Settings,
    journal: Journal,
    *,
    progress: Progress | None = None,
    handle_signals: bool = False,
) -> Control:
    """Send the planned rows; the job's control (why it stopped, notes) once every row has an
    outcome and its journal state."""
    async with open_sending(settings, journal.job_id, journal.path) as sending:
        execution = Execution(plan, sending.sender, sending.reader, journal, settings, progress)
        sending.sender.on_sending = execution.mark
        control = sending.sender.control
        # What jobs before this one learnt of the server holds for it, and the other way.
        control.facts |= journal.facts()
        control.on_learnt = journal.remember
        # A run an earlier job of this journal made, to read back if a look needs to know
        # whether the server keeps tags.
        made = next((row for row in plan.rows if row.run_id and row.key), None)
        if made is not None:
            sending.sender.tagged = (made, made.run_id)
        task = asyncio.create_task(execution.run())
        presses = 0

        def on_signal() -> None:
            nonlocal presses
            presses += 1
            control.interrupt()
            for follower in list(execution.followers):
                follower.cancel()
            if presses > 1:
                task.cancel()
            else:
                asyncio.get_running_loop().call_later(INTERRUPT_GRACE, task.cancel)

        caller_cancelled = False
        with contextlib.ExitStack() as signals:
            if handle_signals:
                from batchrun.sending.signals import on_interrupt

                signals.enter_context(on_interrupt(asyncio.get_running_loop(), on_signal))
            try:
                with journal_guard(execution):
                    await task
            except asyncio.CancelledError:
                # Ours (a second Ctrl-C) ends here; the caller's own goes on after the rows
                # are given their outcome and journal state.
                current = asyncio.current_task()
                caller_cancelled = current is not None and current.cancelling() > 0
                if not task.done():  # the caller's cancel reached us first: let the job stop
                    task.cancel()
                    await asyncio.wait({task})
                if not task.cancelled():
                    task.exception()  # retrieved: the caller's cancellation is what counts
        control.limits = sending.sender.create_limiter.in_force()
        finish_rows(plan, control, wait=settings.wait)
        handled = plan.to_create | plan.to_follow
        for row in plan.rows:
            # Rows left for the next run after they were recorded (the first rows of a
            # job refused the same way, found systemic later) are recorded again.
            left = row.state in LEFT_STATES
            if row.index in handled and (
                left or row.outcome in (Outcome.NOT_SENT, Outcome.PENDING)
            ):
                execution.record(row)
        execution.commit_now()
        if caller_cancelled:
            raise asyncio.CancelledError
        return control


async def run_rows_async(
    rows: list[RowResult],
    settings: Settings,
    journal: Journal,
    *,
    progress: Progress | None = None,
    handle_signals: bool = False,
) -> Summary:
    """Send prepared rows; the summary of the job."""
    started = time.monotonic()
    endpoint = endpoint_named(settings.endpoint)
    plan = plan_job(
        rows,
        journal.load(),
        retry_failed=settings.retry_failed,
        wait=settings.wait,
        can_look=lookup_check(endpoint, journal),
        reads_reply=lambda row: settings.reply and endpoint.reply_path(row) is not None,
        lane=endpoint.lane or "thread",
    )
    control = await execute(
        plan, settings, journal, progress=progress, handle_signals=handle_signals
    )
    # A run is created queued: its status says something only once followed.
    counted = settings.wait or endpoint.usage_at_once
    return job_summary(rows, started, control, endpoint, counted, plan.from_journal)


def lookup_check(endpoint: Endpoint, journal: Journal) -> Callable[[RowResult], bool]:
    """Whether what a row's request made can be looked up, for the plan: by its endpoint,
    on a server that an earlier job did not see lack the lookup route."""
    if NO_LOOKUP in journal.facts():
        return lambda row: False
    return endpoint.can_look


def job_summary(
    rows: list[RowResult],
    started: float,
    control: Control,
    endpoint: Endpoint,
    count_statuses: bool,
    from_journal: int,
) -> Summary:
    """The summary of a job that began at ``started`` (monotonic) and stopped as
    ``control`` says."""
    return summarize(
        rows,
        time.monotonic() - started,
        aborted=control.reason if control.systemic else None,
        interrupted=control.reason == "interrupted",
        notes=tuple(
            note for note in control.notes if not (note == NO_METADATA_NOTE and control.tags_seen)
        ),
        count_runs=count_statuses,
        from_journal=from_journal,
        answers=endpoint.answers,
        limits=control.limits,
    )


def run_rows(
    rows: list[RowResult],
    settings: Settings,
    journal: Journal,
    *,
    progress: Progress | None = None,
    handle_signals: bool = False,
) -> Summary:
    """Send prepared rows (a blocking call); the summary of the job.

    Inside a running event loop (a notebook) the job runs on a thread of its own.
    """
    return run_blocking(
        run_rows_async(rows, settings, journal, progress=progress, handle_signals=handle_signals)
    )


def run_blocking(job: Coroutine[Any, Any, T]) -> T:
    """Run ``job`` to its end on an event loop of its own: here, or on a thread of its own
    when the caller already runs a loop (Jupyter, KNIME's Python node)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with event_loop() as runner:
            return runner.run(job)

    def in_thread() -> T:
        with event_loop() as runner:
            return runner.run(job)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batchrun") as pool:
        return pool.submit(in_thread).result()


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
