"""Reads under their own budget: listings to reconcile by, following an answer, a reply.

Reads never create anything, so they are retried freely; a 429 pauses every read (not the
creates, which have a budget of their own).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchrun.config import Settings
from batchrun.endpoints import Endpoint
from batchrun.report import RowResult
from batchrun.sending.client import Answer, ApiClient, TransportError
from batchrun.sending.control import NO_LOOKUP, Control, missing_route
from batchrun.sending.judge import CLOCK_SKEW, made_since
from batchrun.sending.limiter import Limiter
from batchrun.sending.retry import Failure, decide

POLL_FIRST, POLL_CAP = 0.2, 5.0
# Pages of a listing read to look for a row's answer behind newer ones (100 of 20 runs).
MAX_PAGES = 100
# 429 rate_limit_exceeded answers a request may wait out (0 when --max-retries is 0).
RATE_LIMIT_RETRIES = 30


@dataclass(frozen=True, slots=True)
class Unread:
    """A listing that could not be read, and why (said in the row's ``error``)."""

    reason: str


def throttle_budget(settings: Settings) -> int:
    """How many 429s one request may wait out: waiting for speed is not a failed attempt."""
    retries = settings.max_retries
    return retries and max(retries, RATE_LIMIT_RETRIES)


class Reader:
    """GETs for one job: retried, paced by the read limiter, stopped with the job."""

    def __init__(
        self,
        client: ApiClient,
        settings: Settings,
        endpoint: Endpoint,
        control: Control,
        limiter: Limiter,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.settings = settings
        self.endpoint = endpoint
        self.control = control
        self.limiter = limiter
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self._throttle_budget = throttle_budget(settings)
        # How far the server's clock may be behind ours, from its last listing's Date.
        self.clock_gap = CLOCK_SKEW

    async def read(self, path: str, *, into: Path | None = None) -> Answer | None:
        """A GET; its answer once it is not worth retrying, or None when there is none.

        ``into``: a 200 body is streamed into this file (a batch's output), not kept.
        """
        answer = await self._read(path, into)
        return answer if isinstance(answer, Answer) else None

    async def _read(self, path: str, into: Path | None = None) -> Answer | str:
        """As :meth:`read`, with why there is no answer in its place."""
        failures = throttled = 0
        while True:
            self.control.check()
            await self.limiter.acquire()
            try:
                if into is None:
                    answer = await self.client.call("GET", path)
                else:
                    answer = await self.client.download(path, into)
            except TransportError as error:
                failures += 1
                decision = decide(
                    attempt=failures,
                    max_retries=self.settings.max_retries,
                    failure=error.failure,
                    rand=self._rand,
                )
                if not decision.retry:
                    return self._no_answer(error)
                headers: Mapping[str, str] = {}
            else:
                self.limiter.observe(answer.headers)
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
            if decision.pause_all:
                self.limiter.throttled(decision.delay, headers)
            else:
                await self._sleep(decision.delay)

    def _no_answer(self, error: TransportError) -> str:
        """Why a read that met ``error`` on its last try has no answer."""
        if error.failure is Failure.TIMEOUT:
            return f"{error} for {self.settings.attempt_timeout:g} s; a larger --timeout may help"
        return str(error)

    async def pause(self, delay: float) -> None:
        """Wait ``delay`` seconds (on the injected clock of tests)."""
        await self._sleep(delay)

    async def listing(
        self, path: str, *, since: float | None = None
    ) -> list[dict[str, Any]] | Unread:
        """The objects of a list answer (a thread's newest runs, newest first; stored
        completions by tag), or why they cannot be read.

        ``since``: read on, page after page (``after``, ``has_more``), until the objects
        are older than this (our clock; see :func:`~batchrun.sending.judge.made_since`):
        a row's run may lie behind a page of newer ones another client made.
        """
        found: list[dict[str, Any]] = []
        seen: set[object] = set()
        page_path = path
        for _ in range(MAX_PAGES):
            answer = await self._read(page_path)
            if isinstance(answer, str):
                return Unread(answer)
            if missing_route(answer.status, answer.data, answer.text):
                self.control.learn(NO_LOOKUP)  # this server cannot look anything up
            if answer.status != 200:
                return Unread(answer.message)
            page = answer.data.get("data") if isinstance(answer.data, dict) else None
            if not isinstance(page, list):
                return Unread(f"HTTP {answer.status} but the answer is not a list")
            self._observe_clock(answer.headers.get("Date"))
            items = [item for item in page if isinstance(item, dict)]
            fresh = [item for item in items if item.get("id") not in seen]
            found += fresh
            seen.update(item.get("id") for item in fresh)
            last = items[-1].get("id") if items else None
            if (
                since is None
                or not fresh  # a server that ignores ``after``: nothing more to read
                or answer.data.get("has_more") is not True
                or not isinstance(last, str)
                or not made_since(items[-1], since, self.clock_gap)
            ):
                return found
            page_path = f"{path}&after={urllib.parse.quote(last, safe='')}"
        # More runs newer than the row than anyone makes: cannot tell.
        return Unread(f"more than {MAX_PAGES} pages of newer ones")

    def _observe_clock(self, date: str | None) -> None:
        """Measure how far the server's clock may be behind ours from an answer's ``Date``
        (whole seconds, stamped before the answer left): at most our time now, less it."""
        if not date:
            return
        try:
            server_time = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        self.clock_gap = max(0.0, time.time() - server_time)

    async def follow(
        self, row: RowResult, answer_id: str, *, deadline: float
    ) -> dict[str, Any] | None:
        """Poll ``answer_id`` (the row's run or response, or another on its lane) until it
        stops or ``deadline`` passes; the last answer read, or None."""
        endpoint = self.endpoint
        path = endpoint.follow_path(row, answer_id)
        delay = POLL_FIRST
        last: dict[str, Any] | None = None
        while True:
            answer = await self.read(path)
            if answer is not None and endpoint.is_answer(answer.data):
                last = answer.data
                if endpoint.stopped(str(last.get("status", ""))):
                    return last
            elif answer is not None and answer.status == 404:
                return last
            now = self._clock()
            if now >= deadline:
                return last
            await self._sleep(min(delay, deadline - now))
            delay = min(delay * 1.5, POLL_CAP)

    async def reply(self, row: RowResult) -> str:
        """The reply text of a row's completed run ("" when it cannot be read)."""
        path = self.endpoint.reply_path(row)
        if path is None:
            return row.reply
        answer = await self.read(path)
        return self.endpoint.reply_text(answer.data if answer else None, row)
