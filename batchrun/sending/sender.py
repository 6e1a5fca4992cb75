"""One row's create, exactly once: attempts, retries, and reconciliation by the run tag.

:class:`RowSender` carries a row through its create, speaking through
:class:`~batchrun.sending.client.ApiClient`:

- every create carries ``metadata.batchrun_key``: the row's key and the job's id, so a
  run is adopted only by the job that created it;
- before anything is sent again after an answer that may hide a created run (timeout,
  dropped connection, 5xx), and for rows a crash caught in flight, the thread's newest runs
  are read and :func:`~batchrun.sending.judge.judge` says what became of the create (that
  part is :class:`~batchrun.sending.reconcile.Reconciling`);
- a 429 pauses every create through the shared limiter, not just this row's;
- a systemic answer (401, 403, no quota, a missing route, a wrong port) stops the job via
  :class:`~batchrun.sending.control.Control`.

Each decision moves the row's state (:mod:`batchrun.sending.states`) where it is made.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping

import orjson

from batchrun.config import Settings
from batchrun.endpoints import LOOK, WAIT, Endpoint
from batchrun.endpoints.prepare import sent_body
from batchrun.report import Outcome, RowResult
from batchrun.sending.client import Answer, ApiClient, TransportError
from batchrun.sending.control import (
    ConnectWatch,
    Control,
    RefusalWatch,
    RouteWatch,
    missing_route,
    route_stop_reason,
)
from batchrun.sending.judge import tag_of
from batchrun.sending.limiter import Limiter
from batchrun.sending.reads import POLL_FIRST, Reader, throttle_budget
from batchrun.sending.reconcile import Reconciling
from batchrun.sending.retry import Failure, RetryDecision, decide
from batchrun.sending.states import Event
from batchrun.sending.steps import SEND, SETTLED, Again, LaneBusy, Step, Tries, Unsure
from batchrun.sending.tokens import charged_tokens

# Answers that refuse a row for good (retried ones, once out of tries, are not refusals).
FINAL_4XX = frozenset(range(400, 500)) - {408, 409, 429}
# "Busy" answers in a row while the thread's runs show none active: an inconsistent server.
BUSY_MISMATCH_LIMIT = 5
# Answers from a gateway whose server may still be working on the request.
STILL_WORKING_STATUSES = frozenset({504})


class RowSender(Reconciling):
    """Carries rows through create, retry and reconcile."""

    def __init__(
        self,
        client: ApiClient,
        settings: Settings,
        endpoint: Endpoint,
        control: Control,
        *,
        create_limiter: Limiter,
        reader: Reader,
        job_id: str = "",
        on_sending: Callable[[RowResult], Awaitable[None]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.settings = settings
        self.endpoint = endpoint
        self.control = control
        self.create_limiter = create_limiter
        self.reader = reader
        self.job_id = job_id
        self.on_sending = on_sending or _unmarked
        self._sleep = sleep
        self.clock = clock
        self._rand = rand
        self._creating_for = self.endpoint.creating_for(settings.attempt_timeout)
        self._throttle_budget = throttle_budget(settings)
        self.routes = RouteWatch()
        self.connects = ConnectWatch()
        self.tagged: tuple[RowResult, str] | None = None
        self._read_back = False
        self.refusals = RefusalWatch()
        # Rows refused while every row so far was refused the same way (see RefusalWatch).
        self._refused: list[RowResult] = []

    async def create(self, row: RowResult, *, look_first: bool = False) -> LaneBusy | Unsure | None:
        """Create the row's answer, at most once; fills the row's result.

        A row that may have arrived before is looked for first, as is one whose lane may
        be held (``look_first``). Returns :class:`LaneBusy` when the lane first has to
        finish another answer, :class:`Unsure` when the server may still be making what an
        earlier request asked.
        """
        assert row.body is not None
        body = sent_body(row, self.settings, self.tag(row))
        payload = orjson.dumps(self.endpoint.wire_body(body, wait=self.settings.wait))
        path = self.endpoint.create_path(row)
        tokens = charged_tokens(body)  # what a tokens-per-minute budget is charged
        tries = Tries()
        step: Step = Again(look=row.unsure or (look_first and self.can_look(row)))
        while isinstance(step, Again):
            if step.delay:
                await self._sleep(step.delay)
            if step.look:
                step = await self.look(row)
            else:
                step = await self._send(row, path, payload, tries, tokens)
        return step if isinstance(step, (LaneBusy, Unsure)) else None

    async def _send(
        self, row: RowResult, path: str, payload: bytes, tries: Tries, tokens: int
    ) -> Step:
        """One POST of the row, and what its answer (or its absence) comes to; ``tokens``
        is what a tokens-per-minute budget is charged for it."""
        self.control.check()
        await self.create_limiter.acquire(tokens)
        self.control.check()
        if not row.sent_at:
            row.sent_at = time.time()
        await self.on_sending(row)  # the journal marks each row before its first send
        row.attempts += 1
        leaving = self.clock()
        try:
            answer = await self.client.call("POST", path, payload)
        except asyncio.CancelledError:
            row.sent_now += 1
            row.move(Event.MAYBE_ARRIVED)  # cut off in flight: it may have arrived
            self._still_working(row, leaving)
            raise
        except TransportError as error:
            return await self._no_answer(row, error, tries, leaving)
        row.sent_now += 1
        if answer.status in STILL_WORKING_STATUSES:
            self._still_working(row, leaving)
        return await self._answered(row, answer, tries)

    def _still_working(self, row: RowResult, leaving: float) -> None:
        """No answer to a request that left at ``leaving``: the server may be making what
        it asked for as long as it may take to make it."""
        row.unsure_until = max(row.unsure_until, leaving + self._creating_for)

    async def _no_answer(
        self, row: RowResult, error: TransportError, tries: Tries, leaving: float
    ) -> Step:
        row.status, row.response, last = None, "", str(error)
        if error.failure is Failure.CONNECT:
            # It never left: "sent" counts what may have arrived.
            if self.connects.refused():
                self.control.abort(f"{last} (check --base-url and that the server runs)")
        else:
            row.sent_now += 1
            self.connects.answered()  # it connected: the server is there
            if not error.answering:
                self._still_working(row, leaving)
        tries.failures += 1
        decision = decide(
            attempt=tries.failures,
            max_retries=self.settings.max_retries,
            failure=error.failure,
            rand=self._rand,
        )
        if error.failure is Failure.CONNECT and not (decision.retry or decision.systemic):
            # Its retries are used up, but it never reached the server: not a verdict on
            # the row, the next run sends it (without --retry-failed).
            row.fail(Outcome.NOT_SENT, f"not sent: {last}; rerun to send it", Event.LEFT)
            return SETTLED
        return await self._after_failure(row, decision, last, {})

    async def _answered(self, row: RowResult, answer: Answer, tries: Tries) -> Step:
        self.connects.answered()
        self.create_limiter.observe(answer.headers)
        row.status, row.response = answer.status, answer.text
        if self.routes.answered(answer.status, answer.data, answer.text):
            self.control.abort(route_stop_reason(answer.message, self.settings.base_url))
        if 200 <= answer.status < 300:
            self.refusals.answered_ok()
            self._refused.clear()
            if self.endpoint.is_answer(answer.data):
                self._take(row, answer.data)
                if self.tagged is None and tag_of(answer.data) is not None:
                    self.tagged = (row, str(answer.data["id"]))
                return SETTLED
            row.move(Event.MAYBE_ARRIVED)
            word = self.endpoint.answer_word
            row.fail(
                Outcome.FAILED,
                f"HTTP {answer.status} but the answer is not a {word} "
                f"(a {word} may exist; check before --retry-failed)",
            )
            return SETTLED
        last = answer.message
        busy = self.endpoint.busy(answer.status, answer.error.get("code"), last)
        if busy == WAIT:
            return LaneBusy(None)  # refused, nothing made: wait for the lane, then send
        if busy == LOOK:
            return await self._lane_looks_busy(row, tries)
        if answer.status == 429:
            tries.throttled += 1
            attempt, budget = tries.throttled, self._throttle_budget
        else:
            tries.failures += 1
            attempt, budget = tries.failures, self.settings.max_retries
        decision = decide(
            attempt=attempt,
            max_retries=budget,
            status=answer.status,
            headers=answer.headers,
            error=answer.error,
            rand=self._rand,
            now=time.time(),
        )
        if missing_route(answer.status, answer.data, answer.text):
            # Not a verdict on the row: no such route made nothing, and the next run sends
            # it. So it was not sent, on the sheet as in the summary.
            row.sent_now -= 1
            row.fail(Outcome.NOT_SENT, f"not sent: {last} (no such route here)", Event.LEFT)
            return SETTLED
        if not (decision.retry or decision.systemic) and answer.status in FINAL_4XX:
            return self._refused_for_good(row, answer, last) or await self._after_failure(
                row, decision, last, answer.headers
            )
        return await self._after_failure(row, decision, last, answer.headers)

    def _refused_for_good(self, row: RowResult, answer: Answer, last: str) -> Step | None:
        """A 4xx that is final for the row. When every row so far was refused this same
        way (see RefusalWatch), the server's own error: stop the job, and leave those rows
        for the next run as for a 401. None: fail the row as usual."""
        if not self.refusals.refused(answer.status, answer.error, last):
            if not self.refusals.disarmed:
                self._refused.append(row)
            return None
        reason = (
            f"{last} (every row so far was refused with this same answer and none "
            "succeeded: the server's own error, not the rows'; they go again on the next run)"
        )
        self.control.abort(reason)
        for earlier in [*self._refused, row]:
            earlier.fail(Outcome.FAILED, reason, Event.LEFT)
        self._refused.clear()
        return SETTLED

    async def _lane_looks_busy(self, row: RowResult, tries: Tries) -> Step:
        """A "busy" answer naming nothing: the lane's answers say with what."""
        step = await self.look(row)
        if step != SEND:
            return step
        # The thread's runs show none active: it just ended. Send again, but not forever
        # against a server that keeps saying "busy".
        tries.busy_mismatches += 1
        if tries.busy_mismatches >= BUSY_MISMATCH_LIMIT:
            row.fail(
                Outcome.NOT_SENT,
                f"not sent: the server keeps answering that thread "
                f"{row.thread_id} is busy but lists no active run; rerun later",
                Event.LEFT,
            )
            return SETTLED
        return Again(POLL_FIRST * tries.busy_mismatches)

    async def _after_failure(
        self, row: RowResult, decision: RetryDecision, last: str, headers: Mapping[str, str]
    ) -> Step:
        """Apply a retry decision to a row whose attempt failed."""
        if decision.ambiguous:
            row.move(Event.MAYBE_ARRIVED)
        if decision.systemic:
            # "HTTP 401: Incorrect API key ..." says its reason already.
            why = last if decision.reason in last else f"{last} ({decision.reason})"
            self.control.abort(why)
            # Not a verdict on the row: the next run sends it again.
            row.fail(Outcome.FAILED, why, Event.LEFT)
            return SETTLED
        if decision.pause_all:
            self.create_limiter.throttled(decision.delay, headers, decision.budget, decision.limit)
        if not decision.retry:
            tail = "" if row.attempts <= 1 else f" (after {row.attempts} attempts)"
            if row.status == 429 and not decision.too_large:
                # Refused for speed, not content: nothing was created, send it next time.
                tail = f"; {decision.reason}" if decision.reason not in last else tail
                row.fail(Outcome.FAILED, last + tail, Event.LEFT)
            else:
                row.fail(Outcome.FAILED, last + tail)
            return SETTLED
        if decision.ambiguous:
            row.error = last  # what a row that cannot be settled says happened
        # A pause for every worker is the limiter's to wait; a row's own is waited here.
        delay = 0.0 if decision.pause_all else decision.delay
        return Again(delay, look=decision.ambiguous)


async def _unmarked(row: RowResult) -> None:
    """No journal: nothing to mark."""
