"""The aiohttp.web application: routes, the gate every request passes, and the counters.

A request to a ``/v1`` route goes through, in order: its fault draw (on arrival), the
injected latency, bearer auth (401), the ``OpenAI-Beta`` header (400), the quota switch and
the token bucket of its kind (429), an injected server error (5xx), then the handler. A
created run may then have its answer held back (hang) or its connection dropped (reset).
Before the handler, every batch still going is brought up to now, so what its lines did
shows on every route.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler as WebHandler

from batchrun.simulator import envelope
from batchrun.simulator.assistants import Assistants
from batchrun.simulator.batch_lines import LineAnswerer
from batchrun.simulator.batches import Batches
from batchrun.simulator.chat import ChatCompletions
from batchrun.simulator.conversations import Conversations
from batchrun.simulator.envelope import ApiError
from batchrun.simulator.faults import FaultPlan
from batchrun.simulator.files import Files
from batchrun.simulator.limits import UNLIMITED_HEADERS, TokenBucket, charged_tokens
from batchrun.simulator.responses import Responses
from batchrun.simulator.run_log import replay
from batchrun.simulator.settings import DEFAULT_MODEL, SimulatorConfig
from batchrun.simulator.state import Store
from batchrun.simulator.wire import (
    EVENTS_KEY,
    RAW_KEY,
    Answer,
    Clock,
    Handler,
    event_stream,
)

BETA_VERSIONS = {"assistants=v1": "v1", "assistants=v2": "v2"}
CREATE, READ = "create", "read"  # which request bucket a route draws from
TOKENS = "tokens"  # the --tpm bucket, drawn from by the creates
# The routes that create billed work: they draw from --rpm, meet the quota switch and may
# hang or drop their connection after the work is created.
CREATE_ROUTES = frozenset(
    {
        "POST /v1/threads/{thread_id}/runs",
        "POST /v1/responses",
        "POST /v1/chat/completions",
    }
)
ASSISTANTS_PREFIX = "/v1/threads"  # only the Assistants routes need the OpenAI-Beta header
UNMATCHED = "<unmatched>"
# (method, template, part of the simulator, its handler) of every /v1 route.
ROUTES = (
    ("POST", "/v1/threads", "assistants", "create_thread"),
    ("GET", "/v1/threads/{thread_id}", "assistants", "get_thread"),
    ("POST", "/v1/threads/{thread_id}/runs", "assistants", "create_run"),
    ("GET", "/v1/threads/{thread_id}/runs", "assistants", "list_runs"),
    ("GET", "/v1/threads/{thread_id}/runs/{run_id}", "assistants", "get_run"),
    ("POST", "/v1/threads/{thread_id}/runs/{run_id}/cancel", "assistants", "cancel_run"),
    ("GET", "/v1/threads/{thread_id}/messages", "assistants", "list_messages"),
    ("POST", "/v1/conversations", "conversations", "create"),
    ("GET", "/v1/conversations/{conversation_id}", "conversations", "retrieve"),
    ("GET", "/v1/conversations/{conversation_id}/items", "conversations", "list_items"),
    ("POST", "/v1/responses", "responses", "create"),
    ("GET", "/v1/responses/{response_id}", "responses", "retrieve"),
    ("POST", "/v1/responses/{response_id}/cancel", "responses", "cancel"),
    ("POST", "/v1/chat/completions", "chat", "create"),
    ("GET", "/v1/chat/completions", "chat", "list"),
    ("GET", "/v1/chat/completions/{completion_id}", "chat", "retrieve"),
    ("POST", "/v1/files", "files", "upload"),
    ("GET", "/v1/files", "files", "list"),
    ("GET", "/v1/files/{file_id}", "files", "retrieve"),
    ("DELETE", "/v1/files/{file_id}", "files", "delete"),
    ("GET", "/v1/files/{file_id}/content", "files", "content"),
    ("POST", "/v1/batches", "batches", "create"),
    ("GET", "/v1/batches", "batches", "list"),
    ("GET", "/v1/batches/{batch_id}", "batches", "retrieve"),
    ("POST", "/v1/batches/{batch_id}/cancel", "batches", "cancel"),
)


class Simulator:
    """One simulated service: its state, limits, faults and counters; handlers are methods."""

    def __init__(self, config: SimulatorConfig, clock: Clock = time.time) -> None:
        self.config = config
        # One clock for run lifecycles and buckets; injectable so tests need not sleep.
        # (A wall clock that steps back cannot drain a bucket: see TokenBucket._refill.)
        self.clock = clock
        self.latency = config.latency_ms / 1000.0
        self.reset()

    def reset(self) -> None:
        """Forget every thread, run and count; refill the buckets; restart the fault streams."""
        config = self.config
        now = self.clock()
        self.store = Store(config)
        self.assistants = Assistants(config, self.clock, self.store)
        # The live endpoints share the store's ids, so a seeded session reproduces them too.
        self.conversations = Conversations(config, self.clock, self.store.new_id)
        self.responses = Responses(config, self.clock, self.conversations)
        self.chat = ChatCompletions(config, self.clock, self.store.new_id)
        self.files = Files(config, self.clock, self.store.new_id)
        # A batch line is answered by the same parts as a direct POST to its endpoint.
        answerer = LineAnswerer(
            {"/v1/responses": self.responses.answer, "/v1/chat/completions": self.chat.answer}
        )
        self.batches = Batches(config, self.clock, self.store.new_id, self.files, answerer)
        if config.run_log is not None:
            replay(config.run_log, self)
        self.faults = FaultPlan(config)
        self.buckets: dict[str, TokenBucket] = {}
        for kind, per_minute in ((CREATE, config.rpm), (READ, config.read_rpm)):
            if per_minute is not None:
                self.buckets[kind] = TokenBucket(per_minute, config.burst_for(per_minute), now)
        if config.tpm is not None:
            # One second's worth of tokens at once, as for requests (--burst counts requests).
            self.buckets[TOKENS] = TokenBucket(config.tpm, max(1.0, config.tpm / 60.0), now)
        self.tokens_admitted = 0
        self.requests: dict[str, dict[str, int]] = {}
        self.rate_limited = 0
        self.fault_counts = {"fail": 0, "hang": 0, "reset": 0}
        self.serial = 0

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (a fresh dict, safe to keep)."""
        return {
            "requests": {route: dict(counts) for route, counts in self.requests.items()},
            "runs_created": self.store.runs_created,
            "duplicate_runs": self.store.duplicate_runs,
            "rate_limited": self.rate_limited,
            "tokens_admitted": self.tokens_admitted,
            "faults": dict(self.fault_counts),
            "threads": len(self.store.threads),
            "responses_created": self.responses.creates.count,
            "duplicate_responses": self.responses.creates.duplicates,
            "chat_completions_created": self.chat.creates.count,
            "duplicate_chat_completions": self.chat.creates.duplicates,
            "conversations": len(self.conversations.by_id),
            "files_uploaded": self.files.uploads,
            "batches_created": self.batches.created,
        }

    # -- the gate -------------------------------------------------------------------------

    def endpoint(self, method: str, template: str, handler: Handler) -> WebHandler:
        """Wrap ``handler`` in the checks, limits, faults and counting every route shares."""
        route = f"{method} {template}"
        creates = route in CREATE_ROUTES
        assistants = template.startswith(ASSISTANTS_PREFIX)
        kind = CREATE if creates else READ if method == "GET" else None

        async def serve(request: web.Request) -> web.StreamResponse:
            faults = self.faults.draw(route, creates_run=creates)
            # Until an answer is chosen, the client is the one who left (nginx's 499).
            outcome = CLIENT_LEFT
            try:
                if self.latency:
                    await asyncio.sleep(self.latency)
                try:
                    version = self._admit(request, assistants=assistants)
                    cost, model = await self._cost(request) if creates else (0, "")
                    self._limit(kind, creates, cost, model)
                    if faults.fail_status is not None:
                        self.fault_counts["fail"] += 1
                        raise envelope.server_error(faults.fail_status)
                    self.batches.settle(self.clock())
                    payload = await handler(request, version)
                except web.HTTPRequestEntityTooLarge:
                    error = envelope.body_too_large(MAX_BODY)
                    outcome = str(error.status)
                    return self._answer(request, kind, error.status, error.body(), error.headers)
                except ApiError as error:
                    outcome = str(error.status)
                    if error.status == 429:
                        self.rate_limited += 1
                    return self._answer(request, kind, error.status, error.body(), error.headers)
                if faults.reset:
                    self.fault_counts["reset"] += 1
                    # Counted by a status code, as every answer is: nginx's 444, the
                    # connection closed without an answer.
                    outcome = DROPPED
                    return self._drop(request)
                if faults.hang:
                    self.fault_counts["hang"] += 1
                    await asyncio.sleep(self.config.hang_seconds)
                outcome = "200"
                return self._answer(request, kind, 200, payload)
            finally:
                self._count(route, outcome)

        return serve

    def _admit(self, request: web.Request, *, assistants: bool) -> str:
        """Check the key and, on an Assistants route, the beta header; the API version the
        header names ("" elsewhere: the live endpoints need no beta header)."""
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise envelope.missing_key()
        expected = self.config.api_key
        # compare_digest: the time taken must not tell how much of a guessed key was right.
        if expected is not None and not hmac.compare_digest(key.encode(), expected.encode()):
            raise envelope.wrong_key(key)
        if not assistants:
            return ""
        beta = request.headers.get("OpenAI-Beta", "")
        version = BETA_VERSIONS.get(beta)
        if version is None:
            # A client may send several betas at once: "assistants=v2, realtime=v1".
            parts = (part.strip() for part in beta.split(","))
            version = next((BETA_VERSIONS[p] for p in parts if p in BETA_VERSIONS), None)
            if version is None:
                raise envelope.invalid_beta()
        return version

    async def _cost(self, request: web.Request) -> tuple[int, str]:
        """The tokens a create is charged at admission and its model (0 without --tpm, or
        for a body that is not a JSON object: the handler answers that with a 400)."""
        if TOKENS not in self.buckets:
            return 0, ""
        try:
            body = orjson.loads(await request.read())  # aiohttp keeps it for the handler
        except orjson.JSONDecodeError:
            return 0, ""
        if not isinstance(body, dict):
            return 0, ""
        return charged_tokens(body), str(body.get("model") or DEFAULT_MODEL)

    def _limit(self, kind: str | None, creates: bool, cost: int, model: str) -> None:
        """Refuse with 429 when the quota is gone or a bucket the request draws on is empty.

        Requests are checked first and a request refused for them costs no tokens.
        """
        if creates and self.config.quota_exhausted:
            raise envelope.quota_exhausted()
        now = self.clock()
        bucket = self.buckets.get(kind) if kind else None
        tokens = self.buckets.get(TOKENS) if creates else None
        if tokens is not None and cost > tokens.per_minute:
            raise envelope.request_too_large(tokens.per_minute, cost, model)
        if bucket is not None:
            wait = bucket.take(now)
            if wait:
                raise envelope.rate_limited(bucket.per_minute, wait, {})
        if tokens is not None:
            wait = tokens.take(now, cost)
            if wait:
                if bucket is not None:
                    bucket.tokens += 1  # refused: the request it took is given back
                used = tokens.per_minute - tokens.tokens
                raise envelope.tokens_rate_limited(tokens.per_minute, used, cost, wait, model)
            self.tokens_admitted += cost

    def _answer(
        self,
        request: web.Request,
        kind: str | None,
        status: int,
        payload: Answer,
        extra: dict[str, str] | None = None,
    ) -> web.Response:
        self.serial += 1
        headers = {
            **self._limit_headers(kind),
            "x-request-id": f"req_{self.serial:024x}",
            **(extra or {}),
        }
        raw = payload.get(RAW_KEY) if status == 200 else None
        if raw is not None:
            content, content_type = raw
            return web.Response(
                body=content, status=200, headers=headers, content_type=content_type
            )
        events = payload.get(EVENTS_KEY) if status == 200 else None
        if events is not None:
            # stream: true. The whole event stream is written at once: the run it announces
            # proceeds as any other (read it with GET .../runs/{id}).
            return web.Response(
                text=event_stream(events),
                status=200,
                headers=headers,
                content_type="text/event-stream",
            )
        body = orjson.dumps(payload)
        return web.Response(
            body=body, status=status, headers=headers, content_type="application/json"
        )

    def _limit_headers(self, kind: str | None) -> dict[str, str]:
        """All six ``x-ratelimit-*`` headers: the state of the route's request bucket and of
        the token bucket, or the generous limits of a kind not limited (none at all with
        ``limit_headers`` off, a server that states no limits)."""
        if not self.config.limit_headers:
            return {}
        now = self.clock()
        requests = self.buckets.get(kind) if kind else None
        tokens = self.buckets.get(TOKENS)
        headers = dict(UNLIMITED_HEADERS["requests"] if requests is None else {})
        headers.update(UNLIMITED_HEADERS["tokens"] if tokens is None else {})
        for bucket, unit in ((requests, "requests"), (tokens, "tokens")):
            if bucket is not None:
                headers.update(bucket.headers(now, unit))
        return headers

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        """Close the connection without answering: the client sees the server disconnect."""
        transport = request.transport
        if transport is not None:
            transport.close()
        # aiohttp fails to write this to the closed transport and ignores that, as it does
        # for any client that disconnects early.
        return web.Response(status=204)

    def _count(self, route: str, outcome: str) -> None:
        counts = self.requests.get(route)
        if counts is None:
            counts = self.requests[route] = {}
        counts[outcome] = counts.get(outcome, 0) + 1

    # -- outside the API: the test hooks and unknown routes -------------------------------

    async def stats_route(self, request: web.Request) -> web.Response:
        """``GET /_simulator/stats``: the counters, no auth needed."""
        return web.json_response(self.stats())

    async def reset_route(self, request: web.Request) -> web.Response:
        """``POST /_simulator/reset``: clear state and counters, no auth needed."""
        self.reset()
        return web.json_response({"reset": True})

    async def unmatched(self, request: web.Request) -> web.Response:
        """404 "Invalid URL" for any route the service does not have, as OpenAI answers."""
        route = f"{request.method} {UNMATCHED}"
        outcome = CLIENT_LEFT
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            error = envelope.invalid_url(request.method, request.path)
            outcome = str(error.status)
            return self._answer(request, None, error.status, error.body())
        finally:
            self._count(route, outcome)


def _live(simulator: Simulator, part: str, method: str) -> Handler:
    """A handler that calls ``method`` of the simulator's current ``part`` (assistants,
    conversations, responses, chat, files or batches), which :meth:`Simulator.reset`
    replaces."""

    async def handle(request: web.Request, version: str) -> Answer:
        handler: Handler = getattr(getattr(simulator, part), method)
        return await handler(request, version)

    return handle


SIMULATOR_KEY = web.AppKey("batchrun_simulator", Simulator)
# The codes stats count a request under when it got no answer: nginx's, for a connection
# the simulator dropped (--reset-rate) and one the client left before its answer.
DROPPED, CLIENT_LEFT = "444", "499"
# The largest request body read (aiohttp's default is 1 MiB; requests with long contexts or
# images inline run to tens of MB). File uploads are read in parts, not held whole.
MAX_BODY = 64 * 1024 * 1024


def create_app(
    config: SimulatorConfig | None = None, *, clock: Clock = time.time
) -> web.Application:
    """The simulator as an aiohttp application; its :class:`Simulator` is ``app[SIMULATOR_KEY]``.

    ``clock`` (seconds since the epoch) drives run lifecycles and rate limits.
    """
    simulator = Simulator(config or SimulatorConfig(), clock)
    app = web.Application(client_max_size=MAX_BODY)
    app[SIMULATOR_KEY] = simulator
    # reset() replaces every part's state, so each route looks its part up per call.
    routes = [(method, path, _live(simulator, *where)) for method, path, *where in ROUTES]
    for method, template, handler in routes:
        app.router.add_route(method, template, simulator.endpoint(method, template, handler))
    app.router.add_route("GET", "/_simulator/stats", simulator.stats_route)
    app.router.add_route("POST", "/_simulator/reset", simulator.reset_route)
    # Last, so every other method and path (405s included) gets OpenAI's 404 envelope.
    app.router.add_route("*", "/{tail:.*}", simulator.unmatched)
    return app
