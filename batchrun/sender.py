"""HTTP for one row: create its run exactly once, follow it, fetch the reply.

:class:`RowSender` carries a row through attempts, retries and reconciliation, speaking
through :class:`batchrun.client.ApiClient`:

- every create carries ``metadata.batchrun_key`` (the row's journal key);
- after an answer that may hide a created run (timeout, dropped connection, 5xx), the
  thread's newest runs are read before anything is sent again, and a run with the row's
  key is adopted instead of creating a second one;
- a 429 pauses every worker through the shared limiter, not just this row;
- a systemic answer (401, 403, no quota, a missing route) stops the job via :class:`Control`.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from batchrun.client import Answer, ApiClient, TransportError, is_run
from batchrun.config import Settings
from batchrun.limiter import Limiter
from batchrun.prepare import sent_body
from batchrun.report import STOPPED_RUN_STATUSES, Outcome, RowResult
from batchrun.retry import Failure, RetryDecision, decide
from batchrun.schema import RUN_TAG_KEY

RECONCILE_PAGE = 20
POLL_FIRST, POLL_CAP = 0.2, 5.0
ROUTE_MISSING_LIMIT = 3
RETIRED_HINT = (
    "OpenAI switched off its hosted Assistants API on 2026-08-26; "
    "point --base-url at a compatible server, or try --simulate"
)
# 429 rate_limit_exceeded answers a row may wait out (0 when --max-retries is 0).
RATE_LIMIT_RETRIES = 30
# Compatible servers answer an unknown route with any of these.
ROUTE_MISSING_STATUSES = frozenset({404, 405, 501})
ACTIVE_RUN = "already has an active run"
# Connection failures in a row, with no answer between them, that mean a wrong URL.
CONNECT_FAILURE_LIMIT = 8
# "No assistant found with id 'asst_x'": a 404 about something the row names, not the route.
NAMED_OBJECT_MISSING = re.compile(r"\bno \w+ found with id\b", re.IGNORECASE)
# Runs created this long before a row was first sent cannot be its own, even across clocks.
CLOCK_SKEW = 60.0


class StopSending(Exception):
    """The job is stopping (systemic error or interrupt): send nothing more."""


class Control:
    """Job-wide state every worker consults: stopping, and why."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.systemic = False
        self.route_misses = 0
        self.connect_failures = 0
        self.notes: list[str] = []

    def abort(self, reason: str) -> None:
        """Stop the job on a systemic error; the first reason wins."""
        if self.reason is None:
            self.reason, self.systemic = reason, True

    def interrupt(self) -> None:
        """Stop dispatching because the user asked."""
        if self.reason is None:
            self.reason = "interrupted"

    def note(self, text: str) -> None:
        """Say something once in the summary."""
        if text not in self.notes:
            self.notes.append(text)

    def check(self) -> None:
        """Raise StopSending if the job is stopping."""
        if self.reason is not None:
            raise StopSending(self.reason)


def _tag(run: Mapping[str, Any]) -> str | None:
    metadata = run.get("metadata")
    value = metadata.get(RUN_TAG_KEY) if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else None


def _created_at(run: Mapping[str, Any]) -> float:
    value = run.get("created_at")
    return float(value) if isinstance(value, (int, float)) else float("inf")


class RowSender:
    """Carries rows through create, retry, reconcile and follow."""

    def __init__(
        self,
        client: ApiClient,
        settings: Settings,
        control: Control,
        *,
        create_limiter: Limiter,
        read_limiter: Limiter,
        on_sending: Callable[[RowResult], None],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.settings = settings
        self.control = control
        self.create_limiter = create_limiter
        self.read_limiter = read_limiter
        self.on_sending = on_sending
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        retries = settings.max_retries
        self._throttle_budget = retries and max(retries, RATE_LIMIT_RETRIES)

    # -- create -------------------------------------------------------------------------

    async def create(self, row: RowResult, *, reconcile_first: bool = False) -> None:
        """Create the row's run, at most once; fills the row's result."""
        assert row.body is not None
        if reconcile_first and await self._adopted_or_unsure(row):
            return
        payload = orjson.dumps(sent_body(row, self.settings))
        path = f"/threads/{row.thread_id}/runs"
        attempt = throttled = 0
        busy_deadline: float | None = None
        while True:
            self.control.check()
            await self.create_limiter.acquire()
            self.control.check()
            if row.attempts == 0:
                row.sent_at = time.time()
            self.on_sending(row)  # the journal marks each row once, before its first send
            attempt += 1
            row.attempts += 1
            try:
                answer = await self.client.call("POST", path, payload)
            except asyncio.CancelledError:
                row.ambiguous = True  # cut off in flight: the request may have arrived
                raise
            except TransportError as error:
                decision = decide(
                    attempt=attempt,
                    max_retries=self.settings.max_retries,
                    failure=error.failure,
                    rand=self._rand,
                )
                row.status, row.response, last = None, "", str(error)
                headers: Mapping[str, str] = {}
                self._count_connect_failure(error, last)
            else:
                self.control.connect_failures = 0
                headers = answer.headers
                self.create_limiter.observe(answer.headers)
                row.status, row.response = answer.status, answer.text
                if 200 <= answer.status < 300:
                    if is_run(answer.data):
                        self.control.route_misses = 0
                        self._take_run(row, answer.data)
                        return
                    row.ambiguous = True
                    row.fail(
                        Outcome.FAILED,
                        f"HTTP {answer.status} but the answer is not a run "
                        "(a run may exist; check the thread before --retry-failed)",
                    )
                    return
                last = answer.message
                if answer.status == 400 and ACTIVE_RUN in answer.error.get("message", ""):
                    if busy_deadline is None:
                        busy_deadline = self._clock() + self.settings.wait_timeout
                    if await self._settle_busy_thread(row, busy_deadline):
                        return
                    attempt -= 1  # waiting for another run is not a failed attempt
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
                    headers=answer.headers,
                    error=answer.error,
                    rand=self._rand,
                    now=time.time(),
                )
                if answer.status in ROUTE_MISSING_STATUSES:
                    self._count_route_miss(row, answer)
                else:
                    self.control.route_misses = 0
            if await self._after_failure(row, decision, last, headers):
                return

    async def _after_failure(
        self, row: RowResult, decision: RetryDecision, last: str, headers: Mapping[str, str]
    ) -> bool:
        """Apply a retry decision; True when the row is finished."""
        if decision.systemic:
            self.control.abort(f"{last} ({decision.reason})")
            row.fail(Outcome.FAILED, last)
            row.retry_next = True
            return True
        if decision.pause_all:
            self.create_limiter.throttled(decision.delay, headers)
        row.ambiguous = row.ambiguous or decision.ambiguous
        if not decision.retry:
            tail = "" if row.attempts <= 1 else f" (after {row.attempts} attempts)"
            if row.status == 429:
                # Refused for speed, not content: nothing was created, send it next time.
                tail = f"; {decision.reason}" if decision.reason not in last else tail
                row.retry_next = True
            row.fail(Outcome.FAILED, last + tail)
            return True
        if not decision.pause_all:
            await self._sleep(decision.delay)
        return bool(decision.ambiguous and await self._adopted_or_unsure(row))

    def _count_connect_failure(self, error: TransportError, message: str) -> None:
        # One refused connection is a blip; many in a row with no answer at all between
        # them mean the URL is wrong (or the server is down): stop instead of failing rows.
        if error.failure is not Failure.CONNECT:
            self.control.connect_failures = 0
            return
        self.control.connect_failures += 1
        if self.control.connect_failures >= CONNECT_FAILURE_LIMIT:
            self.control.abort(
                f"{message} ({CONNECT_FAILURE_LIMIT} times in a row: check --base-url)"
            )

    def _count_route_miss(self, row: RowResult, answer: Answer) -> None:
        # A 404 that names the row's thread is about the row; three in a row that do not
        # mean the route itself is missing, as on OpenAI's retired Assistants endpoint.
        message = answer.message
        about_row = "invalid url" not in message.lower() and (
            row.thread_id in message
            or NAMED_OBJECT_MISSING.search(message) is not None
            or str((row.body or {}).get("assistant_id", "\0")) in message
        )
        if answer.status == 404 and about_row:
            self.control.route_misses = 0
            return
        self.control.route_misses += 1
        # Not a verdict on the row: if the route is missing, the next run sends it again.
        row.retry_next = True
        retired = "api.openai.com" in self.settings.base_url
        if retired:
            self.control.note(RETIRED_HINT)
        if self.control.route_misses >= ROUTE_MISSING_LIMIT:
            hint = RETIRED_HINT if retired else "the server has no Assistants runs route"
            self.control.abort(f"{answer.message} ({hint})")

    def _take_run(self, row: RowResult, run: dict[str, Any], *, reconciled: bool = False) -> None:
        row.run_id = str(run.get("id", ""))
        row.run_status = str(run.get("status", ""))
        row.reconciled = row.reconciled or reconciled
        row.outcome, row.error = Outcome.OK, ""
        if reconciled:
            row.status = 200
            row.response = self.client.mask(orjson.dumps(run).decode())

    # -- reconcile ----------------------------------------------------------------------

    async def _newest_runs(self, thread_id: str) -> list[dict[str, Any]] | None:
        answer = await self._read(f"/threads/{thread_id}/runs?limit={RECONCILE_PAGE}&order=desc")
        if answer is None or answer.status != 200 or not isinstance(answer.data, dict):
            return None
        runs = answer.data.get("data")
        return [run for run in runs if isinstance(run, dict)] if isinstance(runs, list) else None

    async def _adopted_or_unsure(self, row: RowResult) -> bool:
        """Look for the row's run before re-sending; True when the row is settled.

        Adopts a run carrying the row's key. When the server does not keep metadata the
        answer cannot be trusted, so the row fails rather than risk a second run.
        """
        # Every "cannot tell" below keeps the row ambiguous: it is reconciled, never sent
        # blindly, by any later attempt.
        row.ambiguous = True
        if not (self.settings.run_tag and row.key):
            row.fail(
                Outcome.FAILED,
                f"{row.error or 'no answer'}; a run may have been created "
                "and without the run tag it cannot be found: check the thread, then "
                "rerun with --retry-failed",
            )
            return True
        runs = await self._newest_runs(row.thread_id)
        if runs is None:
            row.fail(
                Outcome.FAILED,
                "could not read the thread's runs to check for a run "
                "already created; rerun later (nothing was sent twice)",
            )
            row.retry_next = True  # the next run reconciles it again
            return True
        for run in runs:
            if _tag(run) == row.key:
                self._take_run(row, run, reconciled=True)
                row.ambiguous = False
                return True
        if any(_tag(run) for run in runs):
            return False  # the server keeps run tags, and none is this row's: not created
        # No run carries a tag: this server may drop metadata, so a run created since the
        # row was first sent could be its own. Refuse to guess; a second run costs money.
        suspects = [r for r in runs if _created_at(r) >= row.sent_at - CLOCK_SKEW]
        if suspects:
            self.control.note(
                "the server does not return run metadata, so runs cannot be "
                "matched to rows; rows that may have been created were not re-sent"
            )
            row.fail(
                Outcome.FAILED,
                f"a run may have been created ({suspects[0].get('id')}) but "
                "the server returns no metadata to confirm it; check the thread, "
                "then rerun with --retry-failed",
            )
            return True
        return False

    async def _settle_busy_thread(self, row: RowResult, deadline: float) -> bool:
        """After "already has an active run": adopt it if it is ours, else wait it out."""
        runs = await self._newest_runs(row.thread_id)
        if runs is None:
            row.fail(
                Outcome.NOT_SENT,
                f"not sent: thread {row.thread_id} is busy and its runs cannot be read; "
                "rerun to send it",
            )
            row.retry_next = True
            return True
        for run in runs:
            if self.settings.run_tag and _tag(run) == row.key:
                self._take_run(row, run, reconciled=True)
                return True
        active = [r for r in runs if r.get("status") not in STOPPED_RUN_STATUSES]
        if not active:
            if self._clock() > deadline:
                row.fail(
                    Outcome.NOT_SENT,
                    f"not sent: the server keeps answering that thread "
                    f"{row.thread_id} is busy; rerun to send it",
                )
                return True
            await self._sleep(POLL_FIRST)
            return False
        followed = await self.follow_run(row.thread_id, str(active[0].get("id")), deadline=deadline)
        if followed is None or followed.get("status") not in STOPPED_RUN_STATUSES:
            row.fail(
                Outcome.NOT_SENT,
                f"not sent: thread {row.thread_id} is still busy with "
                f"run {active[0].get('id')}; rerun to send it",
            )
            return True
        if followed.get("status") == "requires_action":
            row.fail(
                Outcome.NOT_SENT,
                f"not sent: run {followed.get('id')} on thread "
                f"{row.thread_id} waits for tool outputs (requires_action)",
            )
            return True
        return False

    # -- follow -------------------------------------------------------------------------

    async def _read(self, path: str) -> Answer | None:
        """A GET under the read budget; 429s pause reads; None when there is no answer."""
        failures = throttled = 0
        while True:
            self.control.check()
            await self.read_limiter.acquire()
            try:
                answer = await self.client.call("GET", path)
            except TransportError as error:
                failures += 1
                decision = decide(
                    attempt=failures,
                    max_retries=self.settings.max_retries,
                    failure=error.failure,
                    rand=self._rand,
                )
                headers: Mapping[str, str] = {}
            else:
                self.read_limiter.observe(answer.headers)
                if answer.status < 400:
                    return answer
                headers = answer.headers
                limited = answer.status == 429
                throttled, failures = throttled + limited, failures + (not limited)
                decision = decide(
                    attempt=throttled if limited else failures,
                    max_retries=self._throttle_budget if limited else self.settings.max_retries,
                    status=answer.status,
                    headers=headers,
                    error=answer.error,
                    rand=self._rand,
                    now=time.time(),
                )
                if not decision.retry:
                    return answer
            if not decision.retry:
                return None
            if decision.pause_all:
                self.read_limiter.throttled(decision.delay, headers)
            else:
                await self._sleep(decision.delay)

    async def follow_run(
        self, thread_id: str, run_id: str, *, deadline: float
    ) -> dict[str, Any] | None:
        """Poll a run until it stops or ``deadline`` passes; the last run read, or None."""
        delay = POLL_FIRST
        last: dict[str, Any] | None = None
        while True:
            answer = await self._read(f"/threads/{thread_id}/runs/{run_id}")
            if answer is not None and is_run(answer.data):
                last = answer.data
                if last.get("status") in STOPPED_RUN_STATUSES:
                    return last
            elif answer is not None and answer.status == 404:
                return last
            now = self._clock()
            if now >= deadline:
                return last
            await self._sleep(min(delay, deadline - now))
            delay = min(delay * 1.5, POLL_CAP)

    async def finish(self, row: RowResult, *, deadline: float) -> None:
        """--wait: follow the row's run to its end; --reply: fetch what it said."""
        run = await self.follow_run(row.thread_id, row.run_id, deadline=deadline)
        if run is None:
            row.outcome, row.error = Outcome.PENDING, "could not read the run's status"
            return
        row.run_status = str(run.get("status", ""))
        usage = run.get("usage")
        if isinstance(usage, dict):
            row.usage = {k: v for k, v in usage.items() if isinstance(v, int)}
        last_error = run.get("last_error")
        if isinstance(last_error, dict):
            row.last_error = f"{last_error.get('code')}: {last_error.get('message')}"
        if row.run_status not in STOPPED_RUN_STATUSES:
            row.outcome = Outcome.PENDING
            row.error = f"run still {row.run_status} after --wait-timeout; rerun to keep waiting"
        elif row.run_status != "completed":
            row.outcome = Outcome.RUN_FAILED
            row.error = f"run ended {row.run_status}" + (
                f" ({row.last_error})" if row.last_error else ""
            )
        elif self.settings.reply:
            row.reply = await self._reply(row)

    async def _reply(self, row: RowResult) -> str:
        answer = await self._read(
            f"/threads/{row.thread_id}/messages?order=asc&limit=100&run_id={row.run_id}"
        )
        data = answer.data.get("data") if answer and isinstance(answer.data, dict) else None
        texts = []
        for message in data if isinstance(data, list) else []:
            if not isinstance(message, dict) or message.get("role") != "assistant":
                continue
            if message.get("run_id") not in (None, row.run_id):
                continue
            for part in message.get("content") or []:
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, dict) and isinstance(text.get("value"), str):
                    texts.append(text["value"])
        return "\n\n".join(texts)
