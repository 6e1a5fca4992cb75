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
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from batchrun.endpoints import Endpoint
from batchrun.report import Outcome, RowResult, Summary
from batchrun.sending.control import NO_LOOKUP, Control
from batchrun.sending.durability import JournalWrites
from batchrun.sending.journal import Journal
from batchrun.sending.plan import JobPlan, plan_job
from batchrun.sending.reads import Reader
from batchrun.sending.reconcile import is_no_metadata_note
from batchrun.sending.runner import Execution, Progress, finish_rows, journal_guard
from batchrun.sending.sender import RowSender
from batchrun.sending.states import LEFT_STATES
from batchrun.sending.tally import Tally

if TYPE_CHECKING:
    from batchrun.job import Job

T = TypeVar("T")
# How long in-flight requests may finish after Ctrl-C or SIGTERM before they are cut off.
INTERRUPT_GRACE = 10.0


@dataclass(frozen=True, slots=True)
class Sending:
    """What sends one job's rows: the row sender and the reader it shares HTTP with."""

    sender: RowSender
    reader: Reader


@contextlib.asynccontextmanager
async def open_sending(job: Job) -> AsyncIterator[Sending]:
    """An HTTP session, limiters, reader and sender for ``job`` (starting the job's own
    server first, when it has one: ``--simulate``)."""
    import aiohttp

    from batchrun.sending.client import ApiClient
    from batchrun.sending.control import StopSending
    from batchrun.sending.shared_limiter import limiters_for

    settings, journal = job.settings, job.sending_journal
    async with contextlib.AsyncExitStack() as stack:
        if job.server is not None:
            # Entered here, not by the caller: it must run on the job's own event loop.
            base_url = await stack.enter_async_context(job.server())
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
        reader = Reader(client, settings, job.endpoint, control, read_limiter)
        sender = RowSender(
            client,
            settings,
            job.endpoint,
            control,
            create_limiter=create_limiter,
            reader=reader,
            job_id=journal.job_id,
        )
        yield Sending(sender, reader)


class ChunkRun:
    """The chunk being sent, for a signal handler: its execution and task."""

    __slots__ = ("execution", "task")

    def __init__(self) -> None:
        self.execution: Execution | None = None
        self.task: asyncio.Task[None] | None = None

    def cancel(self) -> None:
        """Cut the chunk's requests off (a second Ctrl-C, or the grace period's end)."""
        if self.task is not None:
            self.task.cancel()


async def execute(
    chunks: Iterable[list[RowResult]],
    job: Job,
    *,
    progress: Progress | None = None,
    handle_signals: bool = False,
    on_chunk: Callable[[JobPlan], None] | None = None,
) -> tuple[Control, int, int]:
    """Send the rows chunk after chunk, each chunk planned from the journal as the job
    comes to it; ``on_chunk`` gets each chunk's plan once every row of it has an outcome
    and its journal state. The job's control (why it stopped, notes), the number of
    rows taken from the journal and the number an earlier job made that this one followed.

    Chunks go one after another, so the rows of a thread keep their input order across
    them; a lane an earlier chunk left blocked holds back its thread's rows in the later
    ones. After a stop (Ctrl-C, a systemic error) the remaining chunks are planned and
    given their outcome without sending, so the output still has every row.
    """
    settings, endpoint, journal = job.settings, job.endpoint, job.sending_journal
    from_journal = followed = 0
    async with open_sending(job) as sending:
        control = sending.sender.control
        # What jobs before this one learnt of the server holds for it, and the other way.
        control.facts |= journal.facts()
        control.on_learnt = journal.remember
        can_look = lookup_check(endpoint, journal)
        writes = JournalWrites(journal, control.abort)
        held: dict[str, str] = {}
        current = ChunkRun()
        presses = 0

        def on_signal() -> None:
            nonlocal presses
            presses += 1
            control.interrupt()
            if current.execution is not None:
                for follower in list(current.execution.followers):
                    follower.cancel()
            if presses > 1:
                current.cancel()
            else:
                asyncio.get_running_loop().call_later(INTERRUPT_GRACE, current.cancel)

        caller_cancelled = False
        with contextlib.ExitStack() as signals:
            if handle_signals:
                from batchrun.sending.signals import on_interrupt

                signals.enter_context(on_interrupt(asyncio.get_running_loop(), on_signal))
            for rows in chunks:
                plan = plan_job(
                    rows,
                    journal.lookup(row.key for row in rows if row.key is not None),
                    retry_failed=settings.retry_failed,
                    wait=settings.wait,
                    can_look=can_look,
                    reads_reply=lambda row: settings.reply and endpoint.reply_path(row) is not None,
                    lane=endpoint.lane or "thread",
                )
                from_journal += plan.from_journal
                followed += len(plan.to_follow - plan.look_once)
                if sending.sender.tagged is None:
                    # A run an earlier job of this journal made, to read back if a look
                    # needs to know whether the server keeps tags.
                    made = next((row for row in plan.rows if row.run_id and row.key), None)
                    if made is not None:
                        sending.sender.tagged = (made, made.run_id)
                writes.marked.clear()  # rows of earlier chunks are never marked again
                execution = Execution(
                    plan,
                    sending.sender,
                    sending.reader,
                    journal,
                    settings,
                    progress,
                    writes=writes,
                    held=held,
                )
                if control.reason is None and not caller_cancelled:
                    caller_cancelled = await _send_chunk(execution, current)
                else:
                    execution.stop_all()
                held.update(execution.held_lanes())
                finish_rows(plan, control, wait=settings.wait)
                handled = plan.to_create | plan.to_follow
                for row in plan.rows:
                    # Rows left for the next run after they were recorded (the first rows
                    # of a job refused the same way, found systemic later) are recorded
                    # again.
                    left = row.state in LEFT_STATES
                    if row.index in handled and (
                        left or row.outcome in (Outcome.NOT_SENT, Outcome.PENDING)
                    ):
                        execution.record(row)
                execution.commit_now()
                if on_chunk is not None:
                    on_chunk(plan)
        control.limits = sending.sender.create_limiter.in_force()
        if caller_cancelled:
            raise asyncio.CancelledError
        return control, from_journal, followed


async def _send_chunk(execution: Execution, current: ChunkRun) -> bool:
    """Send one chunk's plan; whether the caller cancelled the job meanwhile."""
    sender = execution.sender
    sender.on_sending = execution.mark
    task = asyncio.create_task(execution.run())
    current.execution, current.task = execution, task
    try:
        with journal_guard(execution):
            await task
    except asyncio.CancelledError:
        # Ours (a second Ctrl-C) ends here; the caller's own goes on after the rows are
        # given their outcome and journal state.
        this = asyncio.current_task()
        caller_cancelled = this is not None and this.cancelling() > 0
        if not task.done():  # the caller's cancel reached us first: let the job stop
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the caller's cancellation is what counts
        if caller_cancelled:
            execution.control.interrupt()
        return caller_cancelled
    finally:
        current.execution = current.task = None
    return False


async def run_rows_async(
    rows: list[RowResult],
    job: Job,
    *,
    progress: Progress | None = None,
    handle_signals: bool = False,
) -> Summary:
    """Send prepared rows; the summary of the job."""
    return await run_chunks_async([rows], job, progress=progress, handle_signals=handle_signals)


async def run_chunks_async(
    chunks: Iterable[list[RowResult]],
    job: Job,
    *,
    progress: Progress | None = None,
    handle_signals: bool = False,
    on_chunk: Callable[[list[RowResult]], None] | None = None,
) -> Summary:
    """Send prepared rows, a chunk at a time (see :func:`execute`); the summary of the job,
    counted chunk by chunk. ``on_chunk`` gets each chunk's rows once they are finished,
    in input order (to write them out); the job keeps none of them."""
    started = time.monotonic()
    endpoint = job.endpoint
    # A run is created queued: its status says something only once followed.
    counted = job.settings.wait or endpoint.usage_at_once
    tally = Tally()

    def chunk_done(plan: JobPlan) -> None:
        tally.add(plan.rows, count_runs=counted)
        if on_chunk is not None:
            on_chunk(plan.rows)

    control, from_journal, followed = await execute(
        chunks,
        job,
        progress=progress,
        handle_signals=handle_signals,
        on_chunk=chunk_done,
    )
    return tally.summary(
        time.monotonic() - started,
        aborted=control.reason if control.systemic else None,
        interrupted=control.reason == "interrupted",
        notes=job_notes(control),
        from_journal=from_journal,
        followed=followed,
        answers=endpoint.answers,
        limits=control.limits,
    )


def lookup_check(endpoint: Endpoint, journal: Journal) -> Callable[[RowResult], bool]:
    """Whether what a row's request made can be looked up, for the plan: by its endpoint,
    on a server that an earlier job did not see lack the lookup route."""
    if NO_LOOKUP in journal.facts():
        return lambda row: False
    return endpoint.can_look


def job_notes(control: Control) -> tuple[str, ...]:
    """The notes of a job for its summary (a note on missing tags goes once tags were seen)."""
    return tuple(
        note for note in control.notes if not (is_no_metadata_note(note) and control.tags_seen)
    )


def run_rows(
    rows: list[RowResult],
    job: Job,
    *,
    progress: Progress | None = None,
    handle_signals: bool = False,
) -> Summary:
    """Send prepared rows (a blocking call); the summary of the job.

    Inside a running event loop (a notebook) the job runs on a thread of its own.
    """
    return run_blocking(run_rows_async(rows, job, progress=progress, handle_signals=handle_signals))


def run_chunks(
    chunks: Iterable[list[RowResult]],
    job: Job,
    *,
    progress: Progress | None = None,
    handle_signals: bool = False,
    on_chunk: Callable[[list[RowResult]], None] | None = None,
) -> Summary:
    """Send prepared rows chunk by chunk (a blocking call; see :func:`run_chunks_async`)."""
    return run_blocking(
        run_chunks_async(
            chunks,
            job,
            progress=progress,
            handle_signals=handle_signals,
            on_chunk=on_chunk,
        )
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
