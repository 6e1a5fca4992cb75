"""One row's create, exactly once: attempts, retries, and reconciliation by the run tag.

:class:`RowSender` carries a row through its create, speaking through
:class:`~batchrun.sending.client.ApiClient`:

- every create carries ``metadata.batchrun_key``: the row's key and the job's id, so a
  run is adopted only by the job that created it;
- before anything is sent again after an answer that may hide a created run (timeout,
  dropped connection, 5xx), and for rows a crash caught in flight, the thread's newest runs
  are read and :func:`~batchrun.sending.judge.judge` says what became of the create;
- a 429 pauses every create through the shared limiter, not just this row's;
- a systemic answer (401, 403, no quota, a missing route, a wrong port) stops the job via
  :class:`~batchrun.sending.control.Control`.

Each decision moves the row's state (:mod:`batchrun.sending.states`) where it is made.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from batchrun.config import Settings
from batchrun.endpoints import LOOK, WAIT, Endpoint
from batchrun.endpoints.prepare import sent_body
from batchrun.report import Outcome, RowResult
from batchrun.sending.client import Answer, ApiClient, TransportError
from batchrun.sending.control import (
    NO_LOOKUP,
    TAGS_KEPT,
    ConnectWatch,
    Control,
    RefusalWatch,
    RouteWatch,
    missing_route,
    route_stop_reason,
)
from batchrun.sending.judge import Judgement, Verdict, judge, tag_of
from batchrun.sending.limiter import Limiter
from batchrun.sending.reads import POLL_FIRST, Reader, throttle_budget
from batchrun.sending.retry import Failure, RetryDecision, decide
from batchrun.sending.states import Event
from batchrun.sending.tokens import charged_tokens

# Said once in the summary when rows could not be settled because no answer showed a tag
# (left out when the job later sees the server keep its tags).
NO_METADATA_NOTE = (
    "the server does not return run metadata, so runs cannot be matched to rows; "
    "rows that may have been created were not re-sent"
)
NO_LOOKUP_NOTE = (
    "the server cannot list {answers} (its lookup route answered 404, 405 or 501), so rows "
    "whose request may have arrived cannot be checked: they say so, and --retry-failed "
    "sends them"
)
# Answers that refuse a row for good (retried ones, once out of tries, are not refusals).
FINAL_4XX = frozenset(range(400, 500)) - {408, 409, 429}
# "Busy" answers in a row while the thread's runs show none active: an inconsistent server.
BUSY_MISMATCH_LIMIT = 5


@dataclass(frozen=True, slots=True)
class LaneBusy:
    """The row's lane is busy: wait for ``holder`` (the answer holding it) to stop, or, when
    the server does not name it (None, a locked conversation), wait a while; then send."""

    holder: str | None


@dataclass(frozen=True, slots=True)
class Unsure:
    """A request of the row may have arrived, and the server may still be making what it
    asked until ``until`` (wall clock): not finding it proves nothing yet. Look again
    later; the row holds its lane meanwhile."""

    until: float


@dataclass(frozen=True, slots=True)
class Settled:
    """The row has its result: created, adopted, or failed with a reason."""


@dataclass(frozen=True, slots=True)
class Again:
    """Not settled yet: after ``delay`` seconds, look for the row's answer (``look``) or
    send it."""

    delay: float = 0.0
    look: bool = False


SETTLED = Settled()
SEND = Again()
# What one attempt (a send, or a look for what an earlier one made) comes to.
Step = Settled | LaneBusy | Unsure | Again
# Answers from a gateway whose server may still be working on the request.
STILL_WORKING_STATUSES = frozenset({504})


@dataclass(slots=True)
class Tries:
    """One create's counts, each in its own budget: failed attempts (--max-retries), 429s
    waited out (their own budget: waiting for speed is not a failure), and "busy" answers
    while the lane showed nothing active."""

    failures: int = 0
    throttled: int = 0
    busy_mismatches: int = 0


class RowSender:
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
        # An answer made by this job (or one before it) whose create answer showed its tag:
        # read back, once, when a look needs to know whether the server keeps tags.
        self.tagged: tuple[RowResult, str] | None = None
        self._read_back = False
        self.refusals = RefusalWatch()
        # Rows refused while every row so far was refused the same way (see RefusalWatch).
        self._refused: list[RowResult] = []

    def tag(self, row: RowResult) -> str | None:
        """The row's run tag: its key and this job's id (None with --no-run-tag)."""
        if not (self.settings.run_tag and row.key):
            return None
        return f"{row.key}.{self.job_id}" if self.job_id else row.key

    async def create(self, row: RowResult) -> LaneBusy | Unsure | None:
        """Create the row's answer, at most once; fills the row's result.

        A row that may have arrived before is looked for first. Returns :class:`LaneBusy`
        when the lane first has to finish another answer, :class:`Unsure` when the server
        may still be making what an earlier request asked.
        """
        assert row.body is not None
        body = sent_body(row, self.settings, self.tag(row))
        payload = orjson.dumps(self.endpoint.wire_body(body, wait=self.settings.wait))
        path = self.endpoint.create_path(row)
        tokens = charged_tokens(body)  # what a tokens-per-minute budget is charged
        tries = Tries()
        step: Step = Again(look=row.unsure)
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
            self.control.abort(f"{last} ({decision.reason})")
            # Not a verdict on the row: the next run sends it again.
            row.fail(Outcome.FAILED, f"{last} ({decision.reason})", Event.LEFT)
            return SETTLED
        if decision.pause_all:
            self.create_limiter.throttled(decision.delay, headers, decision.budget, decision.limit)
        if not decision.retry:
            tail = "" if row.attempts <= 1 else f" (after {row.attempts} attempts)"
            if row.status == 429:
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

    # -- reconcile ----------------------------------------------------------------------

    async def look(self, row: RowResult) -> Step:
        """Read the lane's answers (or the row's, by its tag) and act on the judge's
        verdict: settled (adopted, or failed with a reason), busy, or :data:`SEND`."""
        tag = self.tag(row)
        # A row sent again on the user's word (--retry-failed after "may exist"): its own
        # answer is still adopted if found, but what cannot be told no longer stops it.
        unsure = row.unsure and not row.users_word
        if row.users_word and tag is None and not self.endpoint.has_active:
            return SEND  # nothing to look for, and no lane to wait for
        if unsure and tag is None:
            # Without a tag no run can be told to be this row's: nothing to read.
            return self._apply(row, Judgement(Verdict.UNSURE, reason="no tag"))
        if not self.can_look(row):
            if row.users_word:
                return SEND
            if not row.unsure:  # a "busy" answer, and the lane cannot be read: wait
                return LaneBusy(None)
            return self._apply(row, Judgement(Verdict.UNSURE, reason="no list"))
        # A row that may have arrived looks back to its first attempt, page after page.
        since = row.sent_at if row.unsure and tag is not None else None
        found = await self.reader.listing(self.endpoint.look_path(row, tag or ""), since=since)
        if found is None and not self.can_look(row):  # the lookup route is missing
            return await self.look(row)
        if found is None:
            word = self.endpoint.answer_word
            row.fail(
                Outcome.NOT_SENT,
                f"not sent: could not read the {word}s to check for a {word} already "
                "created; rerun later (nothing was sent twice)",
                Event.LEFT,
            )
            return SETTLED
        self._observe_tags(found)
        judgement = judge(
            found,
            tag=tag,
            unsure=unsure,
            sent_at=row.sent_at,
            superseded=row.superseded,
            tags_seen=self.control.tags_seen,
            clock_gap=self.reader.clock_gap,
        )
        if judgement.reason == "no metadata" and await self._tags_kept():
            judgement = judge(
                found,
                tag=tag,
                unsure=unsure,
                sent_at=row.sent_at,
                superseded=row.superseded,
                tags_seen=True,
                clock_gap=self.reader.clock_gap,
            )
        return self._apply(row, judgement)

    def can_look(self, row: RowResult) -> bool:
        """Whether what the row's request made can be looked up: by its endpoint, on a
        server not seen to lack the lookup route (then rows are as ``store: false`` ones)."""
        return self.endpoint.can_look(row) and NO_LOOKUP not in self.control.facts

    def _apply(self, row: RowResult, judgement: Judgement) -> Step:
        run = judgement.run or {}
        verdict = judgement.verdict
        if verdict is Verdict.ADOPT:
            self._take(row, dict(run), reconciled=True)
            return SETTLED
        if verdict is Verdict.UNSURE:
            row.fail(Outcome.FAILED, self._unsure_reason(row, judgement))
            return SETTLED
        if verdict is Verdict.BLOCKED:
            reason = self.endpoint.blocked_reason(run.get("id"), row.thread_id)
            row.fail(Outcome.NOT_SENT, reason, Event.LEFT)
            return SETTLED
        if verdict is Verdict.BUSY:
            return LaneBusy(str(run.get("id")))
        if row.unsure and self.clock() < row.unsure_until:
            return Unsure(row.unsure_until)  # absent, so far: the server may still be at it
        return SEND

    def _unsure_reason(self, row: RowResult, judgement: Judgement) -> str:
        before = row.error or (f"HTTP {row.status}" if row.status else "no answer")
        if judgement.reason == "no list":
            if NO_LOOKUP in self.control.facts:
                self.control.note(NO_LOOKUP_NOTE.format(answers=self.endpoint.answers))
            return self.endpoint.unsure_reason(before)
        if judgement.reason == "no tag":
            return (
                f"{before}; a run may have been created and without the run tag it cannot "
                "be found: check the thread, then rerun with --retry-failed"
            )
        self.control.note(NO_METADATA_NOTE)
        return (
            f"a run may have been created ({(judgement.run or {}).get('id')}) and no run "
            "read so far shows metadata to tell whose it is; check the thread, then rerun "
            "with --retry-failed"
        )

    def _observe_tags(self, found: Sequence[Mapping[str, Any]]) -> None:
        """Runs as read back (listed, or retrieved): a tag among them is a tag kept."""
        if not self.control.tags_seen and any(tag_of(run) is not None for run in found):
            self.control.learn(TAGS_KEPT)

    async def _tags_kept(self) -> bool:
        """Whether the server keeps run tags: known, or learnt now by reading back, once a
        job, an answer whose create answer showed its tag (a create answer alone may only
        echo the request's metadata)."""
        if self.control.tags_seen or self.tagged is None or self._read_back:
            return self.control.tags_seen
        self._read_back = True
        made, answer_id = self.tagged
        answer = await self.reader.read(self.endpoint.follow_path(made, answer_id))
        if answer is not None and answer.status == 200 and isinstance(answer.data, dict):
            self._observe_tags([answer.data])
        return self.control.tags_seen

    def _take(self, row: RowResult, run: dict[str, Any], *, reconciled: bool = False) -> None:
        """The row's run exists: take it as the row's result, judged like any run."""
        if reconciled:
            self._observe_tags([run])  # read back, not an answer that may echo the request
        failed_answer = row.status if row.status is not None and row.status >= 500 else None
        self.endpoint.settle(row, run, wait=self.settings.wait)  # settles the row's state
        if reconciled:
            row.reconciled = True
            row.status = 200
            row.response = self.client.mask(orjson.dumps(run).decode())
            if failed_answer is not None:
                row.ghost = (
                    f"the create answered HTTP {failed_answer}, but the run was made "
                    "(found by its run tag)"
                )
        if row.ghost:
            row.error = "; ".join(part for part in (row.error, row.ghost) if part)


async def _unmarked(row: RowResult) -> None:
    """No journal: nothing to mark."""
