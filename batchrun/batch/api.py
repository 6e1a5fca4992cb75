"""The Batch API's requests: upload a file, create, find, read a batch, download results.

Creates (``POST /files``, ``POST /batches``) go through the create limiter and are retried
on 408/409/429/5xx and dropped connections. A repeated upload is harmless (a stray file),
but a repeated batch is not: when a create may have arrived unanswered, the batch is
looked for by its metadata (``GET /batches``) before the create is sent again, and a
create that got no answer at all is looked for, with growing pauses, for as long as the
server may still be making it (LATE_CREATE_SECONDS after it left), since a batch is listed
only once made. Reads go
through the job's :class:`~batchrun.sending.reads.Reader` (its own budget and retries).

Raises :class:`Refused` (the server said no: the part cannot go as it is) or
:class:`Unsure` (no answer after the retries: try again next run); a systemic answer
(bad key, no quota) stops the job through its control, as in a direct job.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from batchrun.endpoints import LATE_CREATE_SECONDS
from batchrun.sending.client import Answer, ApiClient, TransportError
from batchrun.sending.control import Control, StopSending, missing_route, route_stop_reason
from batchrun.sending.limiter import Limiter
from batchrun.sending.reads import POLL_FIRST, RATE_LIMIT_RETRIES, Reader
from batchrun.sending.retry import decide

LIST_PAGE = 100
# Batches that hold room in the enqueued-token queue, and the stamps of a batch's end.
RUNNING_BATCHES = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
END_STAMPS = ("completed_at", "failed_at", "expired_at", "cancelled_at")


def ended_at(batch: Mapping[str, Any]) -> float | None:
    """When ``batch`` ended (its latest end stamp), or None while it runs."""
    stamps = [stamp for name in END_STAMPS if isinstance(stamp := batch.get(name), int | float)]
    return max(stamps) if stamps else None


# Clocks differ: a batch created up to this long before our record may still be ours.
CLOCK_SLACK = 600.0
JOB_KEY, PART_KEY = "batchrun_job", "batchrun_part"
# The longest pause between looks for a batch the server may still be making.
LOOK_PAUSE_CAP = 10.0
GATEWAY_TIMEOUT = 504


class Refused(Exception):
    """The server refused the request for good (a 4xx other than rate limits)."""


class Unsure(Exception):
    """No usable answer after the retries; the next run tries again."""


class BatchApi:
    """Files and batches for one job, over its HTTP client, limiter and reader."""

    def __init__(
        self,
        client: ApiClient,
        reader: Reader,
        create_limiter: Limiter,
        control: Control,
        *,
        max_retries: int,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.reader = reader
        self._clock = clock
        self.limiter = create_limiter
        self.control = control
        self.max_retries = max_retries
        self._sleep = sleep
        self._rand = rand

    async def upload(self, source: Path, filename: str) -> str:
        """Upload a batch input file; its file id."""
        answer = await self._post(
            lambda: self.client.upload("/files", {"purpose": "batch"}, source, filename)
        )
        file_id = answer.data.get("id") if isinstance(answer.data, dict) else None
        if not isinstance(file_id, str):
            raise Refused(f"the upload answer has no file id: {answer.text[:200]}")
        return file_id

    async def create(
        self, file_id: str, url: str, job_id: str, part: int, since: float
    ) -> dict[str, Any]:
        """Create the batch of part ``part`` (or adopt it, if a lost answer made it)."""
        body = {
            "input_file_id": file_id,
            "endpoint": url,
            "completion_window": "24h",
            "metadata": {JOB_KEY: job_id, PART_KEY: str(part)},
        }
        payload = orjson.dumps(body)

        async def look() -> dict[str, Any] | None:
            return await self.find(file_id, job_id, part, since)

        answer = await self._post(lambda: self.client.call("POST", "/batches", payload), look)
        if isinstance(answer, dict):
            return answer  # adopted
        if not isinstance(answer.data, dict) or not isinstance(answer.data.get("id"), str):
            raise Refused(f"the batch answer has no id: {answer.text[:200]}")
        return answer.data

    async def find(
        self, file_id: str, job_id: str, part: int, since: float
    ) -> dict[str, Any] | None:
        """The batch of this job's part ``part`` made from ``file_id``, if one exists.

        Lists batches newest first, page by page, until it finds it or reaches batches
        made before ``since`` (when creation first started). Raises Unsure when the list
        cannot be read: creating without knowing could make a second batch.
        """
        after = ""
        while True:
            path = f"/batches?limit={LIST_PAGE}"
            if after:
                path += f"&after={urllib.parse.quote(after, safe='')}"
            answer = await self.reader.read(path)
            data = answer.data if answer is not None and answer.status == 200 else None
            found = data.get("data") if isinstance(data, dict) else None
            if not isinstance(found, list):
                reason = answer.message if answer is not None else "no answer"
                raise Unsure(f"cannot list batches to look for part {part}'s ({reason})")
            batches = [batch for batch in found if isinstance(batch, dict)]
            for batch in batches:
                metadata = batch.get("metadata")
                if (
                    isinstance(metadata, dict)
                    and metadata.get(JOB_KEY) == job_id
                    and metadata.get(PART_KEY) == str(part)
                    and batch.get("input_file_id") == file_id
                    and isinstance(batch.get("id"), str)
                ):
                    return batch
            if not batches or not (isinstance(data, dict) and data.get("has_more")):
                return None
            oldest = batches[-1].get("created_at")
            if isinstance(oldest, int | float) and oldest < since - CLOCK_SLACK:
                return None
            after = str(batches[-1].get("id"))

    async def newest(self) -> list[dict[str, Any]] | None:
        """The newest page of the account's batches (any job's), newest first; None when
        the list cannot be read."""
        answer = await self.reader.read(f"/batches?limit={LIST_PAGE}")
        data = answer.data if answer is not None and answer.status == 200 else None
        found = data.get("data") if isinstance(data, dict) else None
        if not isinstance(found, list):
            return None
        return [batch for batch in found if isinstance(batch, dict)]

    async def retrieve(self, batch_id: str) -> Answer | None:
        """``GET /batches/{id}`` (None when there is no answer)."""
        return await self.reader.read(f"/batches/{urllib.parse.quote(batch_id, safe='')}")

    async def download(self, file_id: str, target: Path) -> None:
        """Stream a file's content into ``target``; raises Unsure when it cannot."""
        path = f"/files/{urllib.parse.quote(file_id, safe='')}/content"
        answer = await self.reader.read(path, into=target)
        if answer is None or answer.status != 200:
            reason = answer.message if answer is not None else "no answer"
            raise Unsure(f"cannot download {file_id} ({reason})")

    async def look_until(
        self, look: Callable[[], Awaitable[dict[str, Any] | None]], until: float
    ) -> dict[str, Any] | None:
        """What ``look`` finds; while it finds nothing and the server may still be making
        it (before ``until``, wall clock), look again after a pause, growing."""
        pause = POLL_FIRST
        while True:
            found = await look()
            left = until - self._clock()
            if found is not None or left <= 0:
                return found
            self.control.check()
            await self._sleep(min(pause, left))
            pause = min(pause * 1.5, LOOK_PAUSE_CAP)

    async def _post(
        self,
        send: Callable[[], Awaitable[Answer]],
        look: Callable[[], Awaitable[dict[str, Any] | None]] | None = None,
    ) -> Any:
        """Send a create until it is answered 2xx; the answer, or what ``look`` found
        after an attempt that may have arrived unanswered."""
        failures = throttled = 0
        # Waiting out 429s is waiting for speed, not failing: a budget of its own.
        throttle_budget = self.max_retries and max(self.max_retries, RATE_LIMIT_RETRIES)
        # Until when the server may still be making what an unanswered create asked.
        still_until = 0.0
        while True:
            self.control.check()
            await self.limiter.acquire()
            headers: dict[str, str] = {}
            leaving = self._clock()
            try:
                answer = await send()
            except TransportError as error:
                if not error.answering:
                    still_until = max(still_until, leaving + LATE_CREATE_SECONDS)
                failures += 1
                decision = decide(
                    attempt=failures,
                    max_retries=self.max_retries,
                    failure=error.failure,
                    rand=self._rand,
                )
                reason = str(error)
            else:
                self.limiter.observe(answer.headers)
                if answer.status < 300:
                    return answer
                if answer.status == GATEWAY_TIMEOUT:  # the server behind may still be at it
                    still_until = max(still_until, leaving + LATE_CREATE_SECONDS)
                limited = answer.status == 429
                throttled, failures = throttled + limited, failures + (not limited)
                decision = decide(
                    attempt=throttled if limited else failures,
                    max_retries=throttle_budget if limited else self.max_retries,
                    status=answer.status,
                    headers=answer.headers,
                    error=answer.error,
                    rand=self._rand,
                    now=time.time(),
                )
                headers = dict(answer.headers)
                reason = answer.message
                if missing_route(answer.status, answer.data, answer.text):
                    # A server without the Batch API (/files, /batches): no part can go.
                    reason = route_stop_reason(reason, self.reader.settings.base_url, "Batch API")
                    self.control.abort(f"{reason}; or send without --batch")
                    raise StopSending(reason)
                if decision.systemic:
                    self.control.abort(reason)
                    raise StopSending(reason)
                if not decision.retry and not decision.ambiguous:
                    raise Refused(reason)
            if decision.systemic:
                self.control.abort(decision.reason)
                raise StopSending(decision.reason)
            if decision.ambiguous and look is not None:
                found = await self.look_until(look, still_until)
                if found is not None:
                    return found
            if not decision.retry:
                raise Unsure(reason)
            if decision.pause_all:
                self.limiter.throttled(decision.delay, headers)
            else:
                await self._sleep(decision.delay)
