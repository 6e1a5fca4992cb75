"""A loopback fake of a self-hosted, Assistants-compatible server, for tests of how batchrun copes.

Not OpenAI: an open-source server somebody else wrote against the Assistants API (FastAPI
flavoured), with its own wordings, ids and habits. batchrun's own simulator
(:mod:`batchrun.simulator`) stays faithful to OpenAI; this one is where the differences live.
It is small but coherent: one in-memory store of threads, runs and messages, with run
lifecycles computed from an injectable clock, so tests move time instead of sleeping.

Usage::

    clock = FakeClock()                                 # from conftest, or any () -> float
    quirks = Quirks(ghost_threads=frozenset({"t1"}), metadata="absent")
    with compatible_server(quirks, clock=clock) as (server, base_url):
        ...                                             # base_url: http://127.0.0.1:PORT/api/v1
        clock.advance(quirks.run_seconds)
        assert server.creates("t1") == 1 and server.ghosts_created == 1

What it does, and the :class:`Quirks` field that switches each behaviour:

* Routes, under ``prefix`` (``/api/v1``): ``POST /threads``, ``GET /threads/{id}``,
  ``POST|GET /threads/{id}/runs``, ``GET /threads/{id}/runs/{run_id}``,
  ``POST /threads/{id}/runs/{run_id}/cancel``, ``GET /threads/{id}/messages``. Threads
  spring into existence when first named. The ``OpenAI-Beta`` header is ignored.
* Auth (``require_auth``): any ``Authorization: Bearer <non-empty>`` passes; otherwise 401
  in an error envelope. Checked per route, so an unknown route is a 404 even without a key.
* Unknown route (e.g. a base URL without ``/api``): a bare 404 whose body is ``not_found``:
  FastAPI's ``{"detail": "Not Found"}``, an nginx HTML page or nothing. A known path with the
  wrong method is a 405 (aiohttp's, or ``{"detail": "Method Not Allowed"}`` for FastAPI).
* Assistants: ids starting with ``assistant_prefix`` or in ``assistants`` (or later
  :meth:`CompatibleServer.register_assistant`) exist; any other id gets
  ``404 {"error": {"message": "Assistant not found", ...}}`` from the runs route.
* Validation (``validation``): a body type error is a 422 listing pydantic's errors, either
  as the Python ``repr`` of the list inside an error envelope's ``message`` (``"envelope"``,
  as such servers wrap FastAPI's errors) or as FastAPI's plain ``{"detail": [...]}``
  (``"detail"``); ``"off"`` accepts anything. ``pydantic_url`` is the errors' ``url`` prefix.
* Ghost runs: a create on a thread in ``ghost_threads``, every ``ghost_every``-th accepted
  create, or one whose body passes ``ghost_if`` stores its run and then answers 500
  (``ghost_answer``: JSON ``{"detail": "Internal Server Error"}`` or uvicorn's plain text),
  at most ``max_ghosts`` times. With ``ghost_stuck`` a ghost run stays ``queued`` forever.
* Lifecycle: ``queued`` for the first half of ``run_seconds``, ``in_progress`` for the second,
  then ``completed`` (with ``usage`` and an assistant message carrying its ``run_id``).
  Instructions containing ``fail_marker`` end ``failed`` with ``last_error``
  ``{"code": "server_error", "message": "worker crashed"}``; ``requires_action_marker`` stops
  in ``requires_action`` (this server cannot take tool outputs, so the run expires after
  ``expire_seconds``); ``expire_marker`` ends ``expired``. A cancel answers ``cancelling``
  and the run is ``cancelled`` ``cancel_seconds`` later.
* Shapes: ids are ``uuid4().hex`` without prefixes unless ``ids="prefixed"``; timestamps are
  whole seconds unless ``float_timestamps``; ``metadata`` is kept, shown as ``{}`` or absent.
  A kept run created without metadata (another client's) shows it as ``unset_metadata``
  says: ``{}``, ``null`` or absent.
* Held creates: the first ``max_holds`` creates on a thread in ``hold_threads`` are never
  answered: held as they arrive (nothing is stored), or with ``hold_when="after"`` once the
  run is stored. :attr:`CompatibleServer.held` is set at that moment, so a test can kill
  the client then.
* Without ``list_runs`` a thread's runs cannot be listed: ``GET .../runs`` is a 405.
* One active run per thread (``one_active_run``): a create on a thread whose newest run is
  active is a 400 worded by ``busy_message``.
* Lists: ``limit`` (1..100, default 20), ``order`` (``desc`` default, newest first) and
  ``after``; answers carry ``data``, ``first_id``, ``last_id`` and ``has_more``.

Test hooks (callable from the test thread while the server runs): ``refuse_creates``
answers every create with one error (status, message, type) until set back to None;
:meth:`~CompatibleServer.add_run` puts "another client's" run on a thread, pinned at a status until
:meth:`~CompatibleServer.set_status` or a cancel moves it. The record: ``requests`` (every
request as ``(method, path with query, status)``), ``creates(thread_id)``, ``runs_created``
and ``ghosts_created``; ``runs``/``run``/``messages`` read the store as the API would show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler
from loopback_server import serve_app

ACTIVE = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
TERMINAL = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
STATUSES = ACTIVE | TERMINAL
WORKER_ERROR = {"code": "server_error", "message": "worker crashed"}
MODEL = "local-model"
PAGE_DEFAULT, PAGE_MAX = 20, 100
NOT_FOUND_HTML = (
    "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    "<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)

Clock = Callable[[], float]
BodyTest = Callable[[Mapping[str, Any]], bool]
Json = dict[str, Any]


@dataclass(frozen=True)
class Quirks:
    """How this server behaves; each field switches one behaviour (see the module docstring)."""

    # Routing, auth and the 404 of unknown routes.
    prefix: str = "/api/v1"
    not_found: Literal["fastapi", "html", "empty"] = "fastapi"
    require_auth: bool = True
    # The assistant registry: ids with this prefix (None: no prefix matches) or in the set.
    assistant_prefix: str | None = "asst_"
    assistants: frozenset[str] = frozenset()
    # Ghost runs: stored, then a 500.
    ghost_threads: frozenset[str] = frozenset()
    ghost_every: int = 0  # every N-th accepted create (0: never)
    ghost_if: BodyTest | None = None
    max_ghosts: int | None = None
    ghost_answer: Literal["json", "text"] = "json"
    ghost_stuck: bool = False
    # Run lifecycle.
    run_seconds: float = 2.0
    expire_seconds: float = 600.0
    cancel_seconds: float = 0.0
    fail_marker: str = "[fail]"
    requires_action_marker: str = "[requires_action]"
    expire_marker: str = "[expire]"
    # 422s.
    validation: Literal["envelope", "detail", "off"] = "envelope"
    pydantic_url: str | None = "https://errors.pydantic.dev/2.7/v/"
    # Wire shapes.
    ids: Literal["hex", "prefixed"] = "hex"
    float_timestamps: bool = False
    metadata: Literal["keep", "empty", "absent"] = "keep"
    # False: the runs list leaves metadata out, though each run read by itself shows it.
    list_metadata: bool = True
    unset_metadata: Literal["empty", "null", "absent"] = "empty"
    # Creates received and never answered.
    hold_threads: frozenset[str] = frozenset()
    max_holds: int = 1
    hold_when: Literal["before", "after"] = "before"
    # Threads. Without list_runs, GET /threads/{id}/runs is a 405 (the route only POSTs).
    list_runs: bool = True
    one_active_run: bool = True
    busy_message: str = "Thread {thread_id} already has an active run {run_id}."


DEFAULT_QUIRKS = Quirks()


class Seen(NamedTuple):
    """One request the server answered: method, path as requested (with query), status."""

    method: str
    path: str
    status: int


@dataclass
class _Run:
    id: str
    thread_id: str
    created: float
    assistant_id: Any
    instructions: str
    model: Any
    tools: Any
    metadata: dict[str, Any] | None  # None: created without metadata
    settings: dict[str, Any]  # temperature, top_p, tool_choice: as accepted
    outcome: str = "completed"
    pinned: bool = False  # held at its status by the clock (foreign or stuck ghost runs)
    status: str = "queued"
    started_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    cancelled_at: float | None = None
    cancel_at: float | None = None
    required_action: Json | None = None
    usage: dict[str, int] | None = None


@dataclass
class _Thread:
    id: str
    created: float
    metadata: dict[str, Any] = field(default_factory=dict)
    runs: list[_Run] = field(default_factory=list)  # oldest first
    messages: list[Json] = field(default_factory=list)  # oldest first


def envelope(message: str, error_type: str = "invalid_request_error") -> Json:
    """This server's error envelope: the four OpenAI keys, ``param`` and ``code`` null."""
    return {"error": {"message": message, "type": error_type, "param": None, "code": None}}


class CompatibleServer:
    """The server's store, quirks and record; :meth:`app` serves it over HTTP.

    Every public method is safe to call from the test thread while the app runs in its own.
    """

    def __init__(self, quirks: Quirks = DEFAULT_QUIRKS, *, clock: Clock = time.time) -> None:
        self.quirks = quirks
        self.clock = clock
        self._lock = threading.Lock()
        self._assistants = set(quirks.assistants)
        self._threads: dict[str, _Thread] = {}
        self._seen: list[Seen] = []
        self._creates: Counter[str] = Counter()
        self._accepted = 0  # creates that passed every check and stored a run
        self.runs_created = 0  # runs stored through the API, ghosts included
        self.ghosts_created = 0
        # Test hook: (status, message, type) answered to every create, as a server whose
        # own backend is down does (e.g. 400 "No connected db."); None: off.
        self.refuse_creates: tuple[int, str, str] | None = None
        self.fail_lists = False  # True: every runs list answers 500
        self.held = threading.Event()  # a create in hold_threads arrived (and is held)
        self._holds = 0

    # -- the record and the test hooks ----------------------------------------------------

    @property
    def requests(self) -> list[Seen]:
        """Every request answered so far, in order."""
        with self._lock:
            return list(self._seen)

    def creates(self, thread_id: str) -> int:
        """How many authorised ``POST .../runs`` named ``thread_id``, whatever their answer."""
        with self._lock:
            return self._creates[thread_id]

    def runs(self, thread_id: str) -> list[Json]:
        """The thread's runs as the API shows them now, oldest first."""
        with self._lock:
            thread = self._thread(thread_id, self.clock())
            return [self._run_json(run) for run in thread.runs]

    def run(self, run_id: str) -> Json:
        """One run as the API shows it now; KeyError when there is none."""
        with self._lock:
            now = self.clock()
            for thread in self._threads.values():
                for run in thread.runs:
                    if run.id == run_id:
                        self._settle(thread, now)
                        return self._run_json(run)
        raise KeyError(run_id)

    def messages(self, thread_id: str) -> list[Json]:
        """The thread's messages, oldest first."""
        with self._lock:
            return list(self._thread(thread_id, self.clock()).messages)

    def register_assistant(self, assistant_id: str) -> None:
        """Make ``assistant_id`` exist from now on."""
        with self._lock:
            self._assistants.add(assistant_id)

    def add_run(
        self,
        thread_id: str,
        *,
        status: str = "in_progress",
        metadata: Mapping[str, Any] | None = None,
        assistant_id: str = "asst_other_client",
        instructions: str = "",
        created_at: float | None = None,
    ) -> Json:
        """Put another client's run on ``thread_id`` (newest), pinned at ``status``.

        Not counted in the record. The run keeps ``status`` until :meth:`set_status` or a
        cancel moves it; a terminal status gets its timestamps (and, for ``completed``, usage
        and a reply message) at once.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        with self._lock:
            now = self.clock()
            thread = self._thread(thread_id, now)
            body = {"assistant_id": assistant_id, "instructions": instructions}
            run = self._new_run(
                thread,
                body,
                None if metadata is None else dict(metadata),
                now if created_at is None else created_at,
            )
            run.pinned = True
            self._move(thread, run, status, now)
            return self._run_json(run)

    def set_status(self, run_id: str, status: str) -> Json:
        """Pin a run at ``status`` (the clock no longer moves it); its JSON afterwards."""
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        with self._lock:
            now = self.clock()
            for thread in self._threads.values():
                for run in thread.runs:
                    if run.id == run_id:
                        run.pinned = True
                        run.cancel_at = None
                        self._move(thread, run, status, now)
                        return self._run_json(run)
        raise KeyError(run_id)

    # -- the HTTP application -------------------------------------------------------------

    def app(self) -> web.Application:
        """An aiohttp application serving this server's routes under ``quirks.prefix``."""

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                try:
                    response = await handler(request)
                except web.HTTPNotFound:
                    response = self._not_found()
                except web.HTTPMethodNotAllowed as error:
                    response = self._not_allowed(error)
            except web.HTTPException as error:
                self._record(request, error.status)
                raise
            except asyncio.CancelledError:
                self._record(request, 499)  # the client left, as nginx would log it
                raise
            except Exception:
                self._record(request, 500)
                raise
            self._record(request, response.status)
            return response

        prefix = self.quirks.prefix.rstrip("/")
        app = web.Application(middlewares=[record])
        routes: list[tuple[str, str, Callable[[web.Request, bytes], web.Response]]] = [
            ("POST", "/threads", self._create_thread),
            ("GET", "/threads/{thread_id}", self._get_thread),
            ("POST", "/threads/{thread_id}/runs", self._create_run),
            ("GET", "/threads/{thread_id}/runs", self._list_runs),
            ("GET", "/threads/{thread_id}/runs/{run_id}", self._get_run),
            ("POST", "/threads/{thread_id}/runs/{run_id}/cancel", self._cancel_run),
            ("GET", "/threads/{thread_id}/messages", self._list_messages),
        ]
        if not self.quirks.list_runs:
            routes = [
                route for route in routes if route[:2] != ("GET", "/threads/{thread_id}/runs")
            ]
        for method, template, handler in routes:
            app.router.add_route(method, prefix + template, self._endpoint(handler))
        return app

    def _endpoint(self, handler: Callable[[web.Request, bytes], web.Response]) -> Handler:
        """Check auth, read the body, then run ``handler`` under the store's lock."""

        async def serve(request: web.Request) -> web.StreamResponse:
            if self.quirks.require_auth and not _has_bearer(request):
                return web.json_response(
                    envelope("Invalid or missing API key.", "authentication_error"), status=401
                )
            raw = await request.read() if request.method == "POST" else b""
            hold = self._holds_create(request)
            if hold and self.quirks.hold_when == "before":
                self.held.set()
                await asyncio.sleep(3600)  # until the client leaves or the server stops
            with self._lock:
                response = handler(request, raw)
            if hold:  # after: the run is stored, its answer never comes
                self.held.set()
                await asyncio.sleep(3600)
            return response

        return serve

    def _holds_create(self, request: web.Request) -> bool:
        thread_id = request.match_info.get("thread_id")
        if request.method != "POST" or "run_id" in request.match_info:
            return False
        with self._lock:
            if thread_id not in self.quirks.hold_threads or self._holds >= self.quirks.max_holds:
                return False
            self._holds += 1
            return True

    def _record(self, request: web.Request, status: int) -> None:
        with self._lock:
            self._seen.append(Seen(request.method, request.path_qs, status))

    def _not_found(self) -> web.Response:
        style = self.quirks.not_found
        if style == "fastapi":
            return web.json_response({"detail": "Not Found"}, status=404)
        if style == "html":
            return web.Response(text=NOT_FOUND_HTML, status=404, content_type="text/html")
        return web.Response(status=404)

    def _not_allowed(self, error: web.HTTPMethodNotAllowed) -> web.Response:
        allow = {"Allow": error.headers.get("Allow", "")}
        if self.quirks.not_found == "fastapi":
            return web.json_response({"detail": "Method Not Allowed"}, status=405, headers=allow)
        return web.Response(text="405: Method Not Allowed", status=405, headers=allow)

    # -- routes (called under the lock) ---------------------------------------------------

    def _create_thread(self, request: web.Request, raw: bytes) -> web.Response:
        body = _loads(raw)
        metadata = body.get("metadata") if isinstance(body, dict) else None
        now = self.clock()
        thread = self._thread(self._new_id("thread_"), now)
        thread.metadata = dict(metadata) if isinstance(metadata, dict) else {}
        messages = body.get("messages") if isinstance(body, dict) else None
        for message in messages if isinstance(messages, list) else []:
            if isinstance(message, dict):
                self._add_message(thread, message, now)
        return web.json_response(self._thread_json(thread))

    def _get_thread(self, request: web.Request, raw: bytes) -> web.Response:
        thread = self._thread(request.match_info["thread_id"], self.clock())
        return web.json_response(self._thread_json(thread))

    def _create_run(self, request: web.Request, raw: bytes) -> web.Response:
        quirks = self.quirks
        thread_id = request.match_info["thread_id"]
        self._creates[thread_id] += 1
        if self.refuse_creates is not None:
            status, message, kind = self.refuse_creates
            return web.json_response(envelope(message, kind), status=status)
        body, issues = self._parse_run_body(raw)
        if issues:
            return self._unprocessable(issues)
        if not self._assistant_exists(body.get("assistant_id")):
            return web.json_response(envelope("Assistant not found"), status=404)
        now = self.clock()
        thread = self._thread(thread_id, now)
        newest = thread.runs[-1] if thread.runs else None
        if quirks.one_active_run and newest is not None and newest.status in ACTIVE:
            message = quirks.busy_message.format(thread_id=thread_id, run_id=newest.id)
            return web.json_response(envelope(message), status=400)
        self._accepted += 1
        ghost = self._is_ghost(thread_id, body)
        extra = body.get("additional_messages")
        for message in extra if isinstance(extra, list) else []:
            if isinstance(message, dict):
                self._add_message(thread, message, now)
        metadata = body.get("metadata")
        run = self._new_run(
            thread, body, dict(metadata) if isinstance(metadata, dict) else None, now
        )
        run.pinned = ghost and quirks.ghost_stuck
        self.runs_created += 1
        self._settle(thread, now)  # a run of zero seconds is done at once
        if ghost:
            self.ghosts_created += 1
            if quirks.ghost_answer == "text":
                return web.Response(text="Internal Server Error", status=500)
            return web.json_response({"detail": "Internal Server Error"}, status=500)
        return web.json_response(self._run_json(run))

    def _list_runs(self, request: web.Request, raw: bytes) -> web.Response:
        if self.fail_lists:
            return web.json_response({"detail": "Internal Server Error"}, status=500)
        paging, issues = self._paging(request)
        if issues:
            return self._unprocessable(issues)
        thread = self._thread(request.match_info["thread_id"], self.clock())
        runs = [self._run_json(run) for run in thread.runs]
        if not self.quirks.list_metadata:
            for run in runs:
                run.pop("metadata", None)
        return web.json_response(_page(runs, **paging))

    def _get_run(self, request: web.Request, raw: bytes) -> web.Response:
        found = self._find_run(request)
        if found is None:
            return web.json_response(envelope("Run not found"), status=404)
        return web.json_response(self._run_json(found))

    def _cancel_run(self, request: web.Request, raw: bytes) -> web.Response:
        run = self._find_run(request)
        if run is None:
            return web.json_response(envelope("Run not found"), status=404)
        if run.status not in ACTIVE:
            message = f"Run {run.id} cannot be cancelled: it is {run.status}."
            return web.json_response(envelope(message), status=400)
        if run.cancel_at is None:
            run.status = "cancelling"
            run.required_action = None
            run.cancel_at = self.clock() + self.quirks.cancel_seconds
        return web.json_response(self._run_json(run))

    def _list_messages(self, request: web.Request, raw: bytes) -> web.Response:
        paging, issues = self._paging(request)
        if issues:
            return self._unprocessable(issues)
        thread = self._thread(request.match_info["thread_id"], self.clock())
        messages = thread.messages
        run_id = request.query.get("run_id")
        if run_id is not None:
            messages = [message for message in messages if message["run_id"] == run_id]
        return web.json_response(_page(messages, **paging))

    # -- the store ------------------------------------------------------------------------

    def _thread(self, thread_id: str, now: float) -> _Thread:
        """The thread (created when first named), its runs settled up to ``now``."""
        thread = self._threads.get(thread_id)
        if thread is None:
            thread = self._threads[thread_id] = _Thread(thread_id, now)
        self._settle(thread, now)
        return thread

    def _find_run(self, request: web.Request) -> _Run | None:
        thread = self._thread(request.match_info["thread_id"], self.clock())
        run_id = request.match_info["run_id"]
        return next((run for run in thread.runs if run.id == run_id), None)

    def _new_id(self, prefix: str) -> str:
        if self.quirks.ids == "prefixed":
            return prefix + uuid.uuid4().hex[:24]
        return uuid.uuid4().hex

    def _new_run(
        self,
        thread: _Thread,
        body: Mapping[str, Any],
        metadata: dict[str, Any] | None,
        now: float,
    ) -> _Run:
        quirks = self.quirks
        instructions = body.get("instructions") or ""
        if body.get("additional_instructions"):
            instructions = f"{instructions}\n{body['additional_instructions']}".lstrip("\n")
        instructions = str(instructions)
        outcome = "completed"
        for marker, result in (
            (quirks.fail_marker, "failed"),
            (quirks.expire_marker, "expired"),
            (quirks.requires_action_marker, "requires_action"),
        ):
            if marker and marker in instructions:
                outcome = result
        run = _Run(
            id=self._new_id("run_"),
            thread_id=thread.id,
            created=now,
            assistant_id=body.get("assistant_id"),
            instructions=instructions,
            model=body.get("model") or MODEL,
            tools=body.get("tools") or [],
            metadata=metadata if quirks.metadata == "keep" else {},
            settings={name: body.get(name) for name in ("temperature", "top_p", "tool_choice")},
            outcome=outcome,
        )
        thread.runs.append(run)
        return run

    def _settle(self, thread: _Thread, now: float) -> None:
        for run in thread.runs:
            if self._advance(run, now) and run.completed_at is not None:
                self._complete(thread, run, run.completed_at)

    def _advance(self, run: _Run, now: float) -> bool:
        """Bring ``run`` up to ``now``; True when it has just completed."""
        quirks = self.quirks
        if run.status in TERMINAL:
            return False
        if run.cancel_at is not None:
            if now >= run.cancel_at:
                run.status = "cancelled"
                run.cancelled_at = run.cancel_at
            return False
        if run.pinned:
            return False
        elapsed = now - run.created
        if elapsed >= quirks.expire_seconds:
            run.status = "expired"
            run.required_action = None
            return False
        if run.status == "requires_action" or elapsed < quirks.run_seconds / 2:
            return False
        run.started_at = run.created + quirks.run_seconds / 2
        if elapsed < quirks.run_seconds:
            run.status = "in_progress"
            return False
        end = run.created + quirks.run_seconds
        if run.outcome == "requires_action":
            run.status = "requires_action"
            run.required_action = self._tool_calls(run)
        elif run.outcome == "failed":
            run.status = "failed"
            run.failed_at = end
        elif run.outcome == "expired":
            run.status = "expired"
        else:
            run.status = "completed"
            run.completed_at = end
            return True
        return False

    def _move(self, thread: _Thread, run: _Run, status: str, now: float) -> None:
        """Put a pinned run at ``status`` with the stamps that status carries."""
        run.status = status
        run.required_action = self._tool_calls(run) if status == "requires_action" else None
        if status in ("in_progress", *TERMINAL) and run.started_at is None:
            run.started_at = now
        if status == "failed":
            run.failed_at = now
        elif status == "cancelled":
            run.cancelled_at = now
        elif status == "completed":
            run.completed_at = now
            self._complete(thread, run, now)

    def _complete(self, thread: _Thread, run: _Run, at: float) -> None:
        """A completed run's usage and its assistant reply."""
        prompt = 12 + len(run.instructions) // 4
        completion = 8 + len(run.id) % 7
        run.usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        reply = {"role": "assistant", "content": f"Reply from {MODEL} to run {run.id}."}
        self._add_message(thread, reply, at, run)

    def _add_message(
        self, thread: _Thread, message: Mapping[str, Any], at: float, run: _Run | None = None
    ) -> None:
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": {"value": content, "annotations": []}}]
        thread.messages.append(
            {
                "id": self._new_id("msg_"),
                "object": "thread.message",
                "created_at": self._stamp(at),
                "thread_id": thread.id,
                "run_id": run.id if run else None,
                "assistant_id": run.assistant_id if run else None,
                "role": message.get("role") or "user",
                "content": content if isinstance(content, list) else [],
                "metadata": {},
            }
        )

    def _tool_calls(self, run: _Run) -> Json:
        tools = run.tools if isinstance(run.tools, list) else []
        names = [
            tool["function"].get("name")
            for tool in tools
            if isinstance(tool, dict) and isinstance(tool.get("function"), dict)
        ]
        call = {
            "id": self._new_id("call_"),
            "type": "function",
            "function": {"name": names[0] if names else "lookup", "arguments": "{}"},
        }
        return {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [call]}}

    def _assistant_exists(self, assistant_id: Any) -> bool:
        if not isinstance(assistant_id, str):
            return False
        prefix = self.quirks.assistant_prefix
        return assistant_id in self._assistants or (
            prefix is not None and assistant_id.startswith(prefix)
        )

    def _is_ghost(self, thread_id: str, body: Mapping[str, Any]) -> bool:
        quirks = self.quirks
        if quirks.max_ghosts is not None and self.ghosts_created >= quirks.max_ghosts:
            return False
        every = quirks.ghost_every
        return (
            thread_id in quirks.ghost_threads
            or (every > 0 and self._accepted % every == 0)
            or (quirks.ghost_if is not None and quirks.ghost_if(body))
        )

    # -- wire shapes ----------------------------------------------------------------------

    def _stamp(self, moment: float | None) -> float | int | None:
        if moment is None:
            return None
        return moment if self.quirks.float_timestamps else int(moment)

    def _run_json(self, run: _Run) -> Json:
        active = run.status in ACTIVE
        data: Json = {
            "id": run.id,
            "object": "thread.run",
            "created_at": self._stamp(run.created),
            "thread_id": run.thread_id,
            "assistant_id": run.assistant_id,
            "status": run.status,
            "model": run.model,
            "instructions": run.instructions,
            "tools": run.tools,
            "started_at": self._stamp(run.started_at),
            "expires_at": self._stamp(run.created + self.quirks.expire_seconds if active else None),
            "cancelled_at": self._stamp(run.cancelled_at),
            "failed_at": self._stamp(run.failed_at),
            "completed_at": self._stamp(run.completed_at),
            "last_error": dict(WORKER_ERROR) if run.status == "failed" else None,
            "required_action": run.required_action,
            "usage": run.usage if run.status == "completed" else None,
            **run.settings,
        }
        if self.quirks.metadata == "keep" and run.metadata is not None:
            data["metadata"] = dict(run.metadata)
        elif self.quirks.metadata == "keep":
            if self.quirks.unset_metadata != "absent":
                data["metadata"] = None if self.quirks.unset_metadata == "null" else {}
        elif self.quirks.metadata == "empty":
            data["metadata"] = {}
        return data

    def _thread_json(self, thread: _Thread) -> Json:
        return {
            "id": thread.id,
            "object": "thread",
            "created_at": self._stamp(thread.created),
            "metadata": dict(thread.metadata),
        }

    # -- validation -----------------------------------------------------------------------

    def _issue(
        self, kind: str, loc: tuple[str | int, ...], msg: str, value: Any, **ctx: Any
    ) -> Json:
        """One item of pydantic's error list, ``loc`` a tuple as ``errors()`` gives it."""
        item: Json = {"type": kind, "loc": loc, "msg": msg, "input": value}
        if ctx:
            item["ctx"] = ctx
        if self.quirks.pydantic_url is not None and kind != "json_invalid":
            item["url"] = f"{self.quirks.pydantic_url}{kind}"
        return item

    def _unprocessable(self, issues: list[Json]) -> web.Response:
        if self.quirks.validation == "detail":
            detail = [{**item, "loc": list(item["loc"])} for item in issues]
            return web.json_response({"detail": detail}, status=422)
        return web.json_response(envelope(repr(issues)), status=422)

    def _parse_run_body(self, raw: bytes) -> tuple[dict[str, Any], list[Json]]:
        """The create body (numbers coerced as pydantic's lax mode does) and its problems.

        With ``validation="off"`` there are never problems: an unreadable body counts as ``{}``.
        """
        lax = self.quirks.validation == "off"
        if not raw.strip():
            # FastAPI reads an empty body as a missing one.
            return {}, [] if lax else [self._issue("missing", ("body",), "Field required", None)]
        try:
            body = json.loads(raw)
        except ValueError as error:
            if lax:
                return {}, []
            msg = getattr(error, "msg", "Invalid JSON")
            pos = getattr(error, "pos", 0)
            return {}, [
                self._issue("json_invalid", ("body", pos), "JSON decode error", {}, error=msg)
            ]
        if not isinstance(body, dict):
            if lax:
                return {}, []
            message = "Input should be a valid dictionary or object to extract fields from"
            return {}, [self._issue("model_attributes_type", ("body",), message, body)]
        if lax:
            return body, []
        issues: list[Json] = []

        def wrong(kind: str, name: str, msg: str) -> None:
            issues.append(self._issue(kind, ("body", name), msg, body[name]))

        if "assistant_id" not in body:
            issues.append(self._issue("missing", ("body", "assistant_id"), "Field required", body))
        elif not isinstance(body["assistant_id"], str):
            wrong("string_type", "assistant_id", "Input should be a valid string")
        for name in ("model", "instructions", "additional_instructions"):
            if body.get(name) is not None and not isinstance(body[name], str):
                wrong("string_type", name, "Input should be a valid string")
        for name in ("temperature", "top_p"):
            value = body.get(name)
            if value is None or isinstance(value, int | float):
                continue
            if not isinstance(value, str):
                wrong("float_type", name, "Input should be a valid number")
                continue
            try:
                body[name] = float(value)
            except ValueError:
                message = "Input should be a valid number, unable to parse string as a number"
                wrong("float_parsing", name, message)
        if body.get("metadata") is not None and not isinstance(body["metadata"], dict):
            wrong("dict_type", "metadata", "Input should be a valid dictionary")
        for name in ("tools", "additional_messages"):
            if body.get(name) is not None and not isinstance(body[name], list):
                wrong("list_type", name, "Input should be a valid list")
        if not _tool_choice_ok(body.get("tool_choice")):
            wrong("string_type", "tool_choice", "Input should be a valid string")
        return body, issues

    def _paging(self, request: web.Request) -> tuple[dict[str, Any], list[Json]]:
        """``limit``, ``order`` and ``after`` of a list request, checked as FastAPI would."""
        query = request.query
        issues: list[Json] = []
        text = query.get("limit", str(PAGE_DEFAULT))
        limit = PAGE_DEFAULT
        try:
            limit = int(text)
        except ValueError:
            message = "Input should be a valid integer, unable to parse string as an integer"
            issues.append(self._issue("int_parsing", ("query", "limit"), message, text))
        else:
            if limit < 1:
                message = "Input should be greater than or equal to 1"
                issues.append(
                    self._issue("greater_than_equal", ("query", "limit"), message, text, ge=1)
                )
            elif limit > PAGE_MAX:
                message = f"Input should be less than or equal to {PAGE_MAX}"
                issues.append(
                    self._issue("less_than_equal", ("query", "limit"), message, text, le=PAGE_MAX)
                )
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            message = "Input should be 'asc' or 'desc'"
            issues.append(
                self._issue(
                    "literal_error", ("query", "order"), message, order, expected="'asc' or 'desc'"
                )
            )
        if self.quirks.validation == "off":
            issues = []
            limit = min(max(limit, 1), PAGE_MAX)
            order = order if order in ("asc", "desc") else "desc"
        return {"limit": limit, "order": order, "after": query.get("after")}, issues


def _has_bearer(request: web.Request) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {}


def _tool_choice_ok(value: Any) -> bool:
    """A string, null, or ``{"type": str, "function"?: {"name": str}}``."""
    if value is None or isinstance(value, str):
        return True
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return False
    function = value.get("function")
    if function is None:
        return bool(value["type"] != "function")
    return isinstance(function, dict) and isinstance(function.get("name"), str)


def _page(items: list[Json], *, limit: int, order: str, after: str | None) -> Json:
    ordered = items if order == "asc" else list(reversed(items))
    start = 0
    if after is not None:
        ids = [item["id"] for item in ordered]
        start = ids.index(after) + 1 if after in ids else len(ordered)
    data = ordered[start : start + limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > start + limit,
    }


@contextlib.contextmanager
def compatible_server(
    quirks: Quirks = DEFAULT_QUIRKS, *, clock: Clock = time.time
) -> Iterator[tuple[CompatibleServer, str]]:
    """Serve a :class:`CompatibleServer` on loopback; yields it and its base URL (with prefix)."""
    server = CompatibleServer(quirks, clock=clock)
    with serve_app(server.app()) as v1_url:
        yield server, v1_url.removesuffix("/v1") + quirks.prefix.rstrip("/")


class Answer(NamedTuple):
    """One raw HTTP answer: status, lower-cased headers and the body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON (None when empty)."""
        return json.loads(self.body) if self.body else None


def call(
    url: str,
    method: str = "GET",
    body: Any = None,
    *,
    key: str | None = "sk-local-anything",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> Answer:
    """Send one request to the full ``url``: JSON ``body`` (bytes as they are), bearer ``key``."""
    parts = urlsplit(url)
    sent = {"Content-Type": "application/json"}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    sent.update(headers or {})
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=data, headers=sent)
        response = connection.getresponse()
        raw = response.read()
        return Answer(
            response.status, {name.lower(): value for name, value in response.getheaders()}, raw
        )
    finally:
        connection.close()
