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

Each decision sets the row's :class:`~batchrun.report.Next` where it is made.
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
from batchrun.endpoints import LOOK, WAIT, endpoint_named
from batchrun.prepare import sent_body
from batchrun.report import Next, Outcome, RowResult
from batchrun.sending.client import ApiClient, TransportError
from batchrun.sending.control import (
    ConnectWatch,
    Control,
    RouteWatch,
    missing_route,
    route_stop_reason,
)
from batchrun.sending.judge import Judgement, Verdict, judge, tag_of
from batchrun.sending.limiter import Limiter
from batchrun.sending.reads import POLL_FIRST, Reader, throttle_budget
from batchrun.sending.retry import Failure, RetryDecision, decide
from batchrun.sending.tokens import charged_tokens

# "Busy" answers in a row while the thread's runs show none active: an inconsistent server.
BUSY_MISMATCH_LIMIT = 5


@dataclass(frozen=True, slots=True)
class Busy:
    """The row's lane is busy: wait for its active answer to stop (or, when the server
    does not name it, ``run_id`` "", for a while), then send the row."""

    run_id: str


class RowSender:
    """Carries rows through create, retry and reconcile."""

    def __init__(
        self,
        client: ApiClient,
        settings: Settings,
        control: Control,
        *,
        create_limiter: Limiter,
        reader: Reader,
        job_id: str = "",
        on_sending: Callable[[RowResult], Awaitable[None]] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.settings = settings
        self.endpoint = endpoint_named(settings.endpoint)
        self.control = control
        self.create_limiter = create_limiter
        self.reader = reader
        self.job_id = job_id
        self.on_sending = on_sending or _unmarked
        self._sleep = sleep
        self._rand = rand
        self._throttle_budget = throttle_budget(settings)
        self.routes = RouteWatch()
        self.connects = ConnectWatch()

    def tag(self, row: RowResult) -> str | None:
        """The row's run tag: its key and this job's id (None with --no-run-tag)."""
        if not (self.settings.run_tag and row.key):
            return None
        return f"{row.key}.{self.job_id}" if self.job_id else row.key

    async def create(self, row: RowResult) -> Busy | None:
        """Create the row's run, at most once; fills the row's result.

        Returns :class:`Busy` when the thread first has to finish another run.
        """
        assert row.body is not None
        if row.maybe_sent:
            step = await self._reconcile(row)
            if step is not False:
                return step if isinstance(step, Busy) else None
        body = sent_body(row, self.settings, self.tag(row))
        payload = orjson.dumps(self.endpoint.wire_body(body, wait=self.settings.wait))
        path = self.endpoint.create_path(row)
        tokens = charged_tokens(body)  # what a tokens-per-minute budget is charged
        attempt = throttled = busy_mismatches = 0
        while True:
            self.control.check()
            await self.create_limiter.acquire(tokens)
            self.control.check()
            if not row.sent_at:
                row.sent_at = time.time()
            await self.on_sending(row)  # the journal marks each row before its first send
            attempt += 1
            row.attempts += 1
            row.sent_now += 1
            try:
                answer = await self.client.call("POST", path, payload)
            except asyncio.CancelledError:
                row.maybe_sent = True  # cut off in flight: the request may have arrived
                raise
            except TransportError as error:
                row.status, row.response, last = None, "", str(error)
                if error.failure is not Failure.CONNECT:
                    self.connects.answered()  # it connected: the server is there
                    refused = False
                else:
                    row.sent_now -= 1  # it never left: "sent" counts what may have arrived
                    refused = self.connects.refused()
                if refused:
                    self.control.abort(f"{last} (check --base-url and that the server runs)")
                decision = decide(
                    attempt=attempt,
                    max_retries=self.settings.max_retries,
                    failure=error.failure,
                    rand=self._rand,
                )
                headers: Mapping[str, str] = {}
            else:
                self.connects.answered()
                headers = answer.headers
                self.create_limiter.observe(headers)
                row.status, row.response = answer.status, answer.text
                if self.routes.answered(answer.status, answer.data, answer.text):
                    self.control.abort(route_stop_reason(answer.message, self.settings.base_url))
                if 200 <= answer.status < 300:
                    if self.endpoint.is_answer(answer.data):
                        self._take(row, answer.data)
                        return None
                    row.maybe_sent = True
                    word = self.endpoint.answer_word
                    row.fail(
                        Outcome.FAILED,
                        f"HTTP {answer.status} but the answer is not a {word} "
                        f"(a {word} may exist; check before --retry-failed)",
                    )
                    return None
                last = answer.message
                busy = self.endpoint.busy(answer.status, answer.error.get("code"), last)
                if busy == WAIT:
                    return Busy("")  # refused, nothing made: wait for the lane, then send
                if busy == LOOK:
                    step = await self._reconcile(row)
                    if step is not False:
                        return step if isinstance(step, Busy) else None
                    # The thread's runs show none active: it just ended. Send again, but
                    # not forever against a server that keeps saying "busy".
                    busy_mismatches += 1
                    attempt -= 1  # waiting for another run is not a failed attempt
                    if busy_mismatches >= BUSY_MISMATCH_LIMIT:
                        row.fail(
                            Outcome.NOT_SENT,
                            f"not sent: the server keeps answering that thread "
                            f"{row.thread_id} is busy but lists no active run; rerun later",
                            Next.SEND,
                        )
                        return None
                    await self._sleep(POLL_FIRST * busy_mismatches)
                    continue
                if answer.status == 429:
                    # Waiting for the rate limit is not a failed attempt: it has a budget
                    # of its own, so a busy server does not use up --max-retries.
                    throttled += 1
                    attempt -= 1
                decision = decide(
                    attempt=throttled if answer.status == 429 else attempt,
                    max_retries=self._throttle_budget
                    if answer.status == 429
                    else self.settings.max_retries,
                    status=answer.status,
                    headers=headers,
                    error=answer.error,
                    rand=self._rand,
                    now=time.time(),
                )
                if missing_route(answer.status, answer.data, answer.text):
                    # Not a verdict on the row: if the route is missing, the next run sends it.
                    row.fail(Outcome.FAILED, last, Next.SEND)
                    return None
            step = await self._after_failure(row, decision, last, headers)
            if step is not False:
                return step if isinstance(step, Busy) else None

    async def _after_failure(
        self, row: RowResult, decision: RetryDecision, last: str, headers: Mapping[str, str]
    ) -> Busy | bool:
        """Apply a retry decision: True when the row is settled, False to send again."""
        row.maybe_sent = row.maybe_sent or decision.ambiguous
        if decision.systemic:
            self.control.abort(f"{last} ({decision.reason})")
            # Not a verdict on the row: the next run sends it again.
            row.fail(Outcome.FAILED, f"{last} ({decision.reason})", Next.SEND)
            return True
        if decision.pause_all:
            self.create_limiter.throttled(decision.delay, headers, decision.budget, decision.limit)
        if not decision.retry:
            tail = "" if row.attempts <= 1 else f" (after {row.attempts} attempts)"
            if row.status == 429:
                # Refused for speed, not content: nothing was created, send it next time.
                tail = f"; {decision.reason}" if decision.reason not in last else tail
                row.fail(Outcome.FAILED, last + tail, Next.SEND)
            else:
                row.fail(Outcome.FAILED, last + tail)
            return True
        if not decision.pause_all:
            await self._sleep(decision.delay)
        if decision.ambiguous:
            row.error = last  # what a row that cannot be settled says happened
            return await self._reconcile(row)
        return False

    # -- reconcile ----------------------------------------------------------------------

    async def _reconcile(self, row: RowResult) -> Busy | bool:
        """Read the thread's runs and act on the judge's verdict.

        True when the row is settled (adopted, or failed with a reason), :class:`Busy` to
        wait for another run, False to send.
        """
        tag = self.tag(row)
        if row.maybe_sent and tag is None:
            # Without a tag no run can be told to be this row's: nothing to read.
            return self._apply(row, Judgement(Verdict.UNSURE, reason="no tag"))
        if not self.endpoint.can_look(row):
            return self._apply(row, Judgement(Verdict.UNSURE, reason="no list"))
        found = await self.reader.listing(self.endpoint.look_path(row, tag or ""))
        if found is None:
            word = self.endpoint.answer_word
            row.fail(
                Outcome.NOT_SENT,
                f"not sent: could not read the {word}s to check for a {word} already "
                "created; rerun later (nothing was sent twice)",
                Next.SEND,
            )
            return True
        self._observe_tags(found)
        judgement = judge(
            found,
            tag=tag,
            maybe_sent=row.maybe_sent,
            sent_at=row.sent_at,
            superseded=row.superseded,
            tags_seen=self.control.tags_seen,
        )
        return self._apply(row, judgement)

    def _apply(self, row: RowResult, judgement: Judgement) -> Busy | bool:
        run = judgement.run or {}
        verdict = judgement.verdict
        if verdict is Verdict.ADOPT:
            self._take(row, dict(run), reconciled=True)
            return True
        if verdict is Verdict.UNSURE:
            row.fail(Outcome.FAILED, self._unsure_reason(row, judgement))
            return True
        if verdict is Verdict.BLOCKED:
            reason = self.endpoint.blocked_reason(run.get("id"), row.thread_id)
            row.fail(Outcome.NOT_SENT, reason, Next.SEND)
            return True
        if verdict is Verdict.BUSY:
            return Busy(str(run.get("id")))
        return False

    def _unsure_reason(self, row: RowResult, judgement: Judgement) -> str:
        before = row.error or (f"HTTP {row.status}" if row.status else "no answer")
        if judgement.reason == "no list":
            return self.endpoint.unsure_reason(before)
        if judgement.reason == "no tag":
            return (
                f"{before}; a run may have been created and without the run tag it cannot "
                "be found: check the thread, then rerun with --retry-failed"
            )
        self.control.note(
            "the server does not return run metadata, so runs cannot be matched to rows; "
            "rows that may have been created were not re-sent"
        )
        return (
            f"a run may have been created ({(judgement.run or {}).get('id')}) but the "
            "server returns no metadata to confirm it; check the thread, then rerun "
            "with --retry-failed"
        )

    def _observe_tags(self, found: Sequence[Mapping[str, Any]]) -> None:
        if not self.control.tags_seen and any(tag_of(run) is not None for run in found):
            self.control.tags_seen = True

    def _take(self, row: RowResult, run: dict[str, Any], *, reconciled: bool = False) -> None:
        """The row's run exists: take it as the row's result, judged like any run."""
        self._observe_tags([run])
        failed_answer = row.status if row.status is not None and row.status >= 500 else None
        self.endpoint.settle(row, run, wait=self.settings.wait)
        row.maybe_sent = False
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
