"""The Assistants routes: threads, runs and messages, over the simulator's :class:`Store`.

Every request reaches these handlers through the gate of :mod:`batchrun.simulator.app`
(auth, the beta header, limits, faults); ``version`` is the API version its header named.
"""

from __future__ import annotations

from operator import itemgetter

import orjson
from aiohttp import web

from batchrun.endpoints.schema import service_problems
from batchrun.simulator import envelope
from batchrun.simulator.settings import SimulatorConfig
from batchrun.simulator.state import Run, Store, Thread
from batchrun.simulator.wire import (
    EVENTS_KEY,
    Answer,
    Clock,
    append_to_log,
    checked_metadata,
    json_body,
    listing,
    page,
    page_query,
)


class Assistants:
    """The Assistants API of one simulated service (replaced on reset, with its store)."""

    def __init__(self, config: SimulatorConfig, clock: Clock, store: Store) -> None:
        self.config = config
        self.clock = clock
        self.store = store

    async def create_thread(self, request: web.Request, version: str) -> Answer:
        """``POST /v1/threads``: a new thread, with ``messages`` and ``metadata`` if sent."""
        body = await json_body(request, empty_ok=True)
        metadata = checked_metadata(body)
        messages = body.get("messages") or []
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise envelope.invalid_param(
                "messages", "Invalid type for 'messages': expected an array of objects."
            )
        return self.store.create_thread(self.clock(), metadata, messages).to_json()

    async def get_thread(self, request: web.Request, version: str) -> Answer:
        """``GET /v1/threads/{thread_id}``."""
        return self.thread(request).to_json()

    async def create_run(self, request: web.Request, version: str) -> Answer:
        """``POST /v1/threads/{thread_id}/runs``: check the body, start a run, answer queued."""
        body = await json_body(request, empty_ok=False)
        problems = service_problems(body, version)
        if problems:
            raise envelope.invalid_body(problems[0].path, problems[0].message, problems[0].code)
        thread = self.thread(request)
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        now = self.clock()
        run = self.store.create_run(thread, body, canonical, now, version=version)
        entry = {"thread": thread.id, "run": run.id, "at": now, "body": body, "version": version}
        append_to_log(self.config.run_log, entry)
        answer = run.to_json(status="queued")
        if body.get("stream") is True:
            created = orjson.dumps(answer).decode()
            return {EVENTS_KEY: [("thread.run.created", created), ("done", "[DONE]")]}
        return answer

    async def list_runs(self, request: web.Request, version: str) -> Answer:
        """``GET /v1/threads/{thread_id}/runs``: newest first unless ``order=asc``."""
        thread = self.thread(request)
        runs, has_more = page(list(thread.runs.values()), _run_id, **page_query(request))
        return listing([run.to_json() for run in runs], has_more)

    async def get_run(self, request: web.Request, version: str) -> Answer:
        """``GET /v1/threads/{thread_id}/runs/{run_id}``."""
        return self.run(request).to_json()

    async def cancel_run(self, request: web.Request, version: str) -> Answer:
        """``POST /v1/threads/{thread_id}/runs/{run_id}/cancel``: answer ``cancelling``."""
        run = self.run(request)
        run.cancel(self.clock())
        return run.to_json()

    async def list_messages(self, request: web.Request, version: str) -> Answer:
        """``GET /v1/threads/{thread_id}/messages``, optionally only one run's."""
        thread = self.thread(request)
        messages = thread.messages
        run_id = request.query.get("run_id")
        if run_id is not None:
            messages = [message for message in messages if message["run_id"] == run_id]
        chosen, has_more = page(messages, itemgetter("id"), **page_query(request))
        return listing(chosen, has_more)

    def thread(self, request: web.Request) -> Thread:
        return self.store.thread(request.match_info["thread_id"], self.clock())

    def run(self, request: web.Request) -> Run:
        run_id = request.match_info["run_id"]
        run = self.thread(request).runs.get(run_id)
        if run is None:
            raise envelope.no_run(run_id)
        return run


def _run_id(run: Run) -> str:
    return run.id
