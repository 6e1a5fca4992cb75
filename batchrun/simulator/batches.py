"""Batches: OpenAI's Batch API, each batch's lifecycle computed from the clock.

``POST /v1/batches`` takes ``{input_file_id, endpoint, completion_window: "24h",
metadata?}``; the input file must have been uploaded with purpose ``batch``. Its lines are
read and checked at once (see :mod:`~batchrun.simulator.batch_lines`), and the batch then
moves with the clock over ``batch_seconds`` (S), as runs do: no task moves it, each read
asks where it is by now::

    validating     for the first tenth of S; then ``failed`` (``errors.data``) if a line was bad
    in_progress    until nine tenths of S; line i of n is answered at i+1 n-ths of the way
    finalizing     for the last tenth
    completed      at S: ``output_file_id`` / ``error_file_id`` (None for an empty file)

A line is answered as ``POST endpoint`` would answer its body at that moment (a response
that joins a conversation adds its items there). Answered with 200, it goes to the output
file; answered otherwise (a 400 for a bad body, a 404 for an endpoint the simulator does
not serve) it goes to the error file with that status and body, as OpenAI writes them; both
as ``{"id": "batch_req_...", "custom_id", "response": {"status_code", "request_id", "body"},
"error": null}``. Each file's lines are shuffled (seeded by the batch id): clients must join
on ``custom_id``. ``request_counts.failed`` counts the error file's lines.

``POST /v1/batches/{id}/cancel`` (while validating, in progress or finalizing): the batch is
``cancelling`` for a tenth of S, then ``cancelled``, its files holding the lines answered
before the cancel and the rest missing from both. ``GET /v1/batches`` lists newest first
(``limit``, ``after``).

Faults (:class:`~.settings.SimulatorConfig`, taken when the batch is created):
``batch_queue_tokens`` fails, at validation, a batch whose lines' tokens (charged as a
direct create is: :func:`~.limits.charged_tokens`) would take the tokens of the unfinished
batches (validating, in progress, finalizing) past the limit, with OpenAI's
``token_limit_exceeded`` error naming the limit; ``batch_expire`` answers only the first
half of the lines (by input order) and ends the batch ``expired`` at S, the rest missing
from both files; ``batch_fail_lines`` (a regular expression searched in ``custom_id``) puts
the lines it matches in the error file as ``{"response": null, "error": {"code":
"server_error", "message"}}``, unsent.

A created batch and a cancel are logged (``{"batch": id, "at", "body", "refused", "expire",
"fail_lines"}``, ``{"batch_cancel": id, "at"}``) and replayed by a rerun's simulator, which
reads the input file again and answers the lines again, with the same ids.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from batchrun.rules import metadata_problems
from batchrun.simulator import envelope
from batchrun.simulator.batch_lines import (
    ENDPOINTS,
    LineAnswerer,
    batch_error,
    derived_ids,
    read_lines,
)
from batchrun.simulator.envelope import SERVER_ERROR_MESSAGES
from batchrun.simulator.files import Files, StoredFile
from batchrun.simulator.limits import charged_tokens
from batchrun.simulator.settings import SimulatorConfig
from batchrun.simulator.state import page
from batchrun.simulator.wire import Answer, append_to_log, json_body, listing, page_query

COMPLETION_WINDOWS = ("24h",)
WINDOW_SECONDS = 24 * 3600.0
FIELDS = ("input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after")
REQUIRED = ("input_file_id", "endpoint", "completion_window")
ENDED = frozenset({"failed", "completed", "expired", "cancelled"})
CANCELLABLE = frozenset({"validating", "in_progress", "finalizing"})
STAMPS = (
    "in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
    "cancelling_at", "cancelled_at",
)  # fmt: skip
STEP_SHARE = 0.1  # of batch_seconds: validating, finalizing and cancelling each take this
LINE_FAILURE = {"code": "server_error", "message": SERVER_ERROR_MESSAGES[500]}


class Batch:
    """One batch; :meth:`advance` moves it to where the clock says, answering lines as due."""

    __slots__ = (
        "answerer", "cancel_at", "created", "done", "endpoint", "enqueued", "errors",
        "expire", "fail_lines", "file_ids", "files", "id", "lines", "request", "results",
        "seconds", "stamps", "status", "tokens",
    )  # fmt: skip

    def __init__(
        self,
        batch_id: str,
        request: dict[str, Any],
        at: float,
        source: StoredFile,
        *,
        seconds: float,
        expire: bool,
        fail_lines: str | None,
        answerer: LineAnswerer,
        files: Files,
    ) -> None:
        self.id = batch_id
        self.request = request
        self.endpoint: str = request["endpoint"]
        self.created = at
        self.seconds = seconds
        self.expire = expire
        self.fail_lines = None if fail_lines is None else re.compile(fail_lines)
        self.answerer = answerer
        self.files = files
        self.lines, self.errors = read_lines(source.read(), self.endpoint)
        # The tokens this batch holds in the queue while unfinished.
        self.enqueued = sum(charged_tokens(line.body) for line in self.lines)
        self.status = "validating"
        self.stamps: dict[str, int] = {}  # "in_progress_at", "completed_at", ...
        self.cancel_at: float | None = None
        self.done = 0  # lines answered, in input order
        self.results: list[tuple[bool, bytes]] = []  # (answered 200?, its output line)
        self.tokens = [0, 0]  # input and output tokens of the lines answered
        self.file_ids: dict[str, str] = {}  # "output"/"error" -> file id

    # -- the timeline ---------------------------------------------------------------------

    def refuse(self, limit: int) -> None:
        """Fail the batch at validation: the queue has no room for its tokens."""
        model = (self.lines[0].body.get("model") if self.lines else None) or "the model"
        message = (
            f"Enqueued token limit reached for {model} in organization org-simulated. "
            f"Limit: {limit:,} enqueued tokens. Please try again once some in_progress "
            "batches have been completed."
        )
        self.errors = [batch_error("token_limit_exceeded", message)]
        self.enqueued = 0

    @property
    def unfinished(self) -> bool:
        """Whether the batch still holds its tokens in the queue."""
        return self.status not in ENDED and not self.errors

    def _at(self, share: float) -> float:
        return self.created + self.seconds * share

    def _due(self, index: int) -> float:
        """When line ``index`` is answered: evenly over the in-progress stretch."""
        answered = len(self.lines) // 2 if self.expire else len(self.lines)
        if index >= answered:
            return math.inf
        start, end = self._at(STEP_SHARE), self._at(1 - STEP_SHARE)
        if index + 1 == answered:
            return end  # exactly: float rounding must not leave a line for finalizing
        return start + (end - start) * (index + 1) / answered

    def advance(self, now: float) -> None:
        """Bring the batch up to ``now``."""
        if self.status in ENDED:
            return
        if self.cancel_at is not None:
            self._answer_until(min(now, self.cancel_at))
            cancelled = self.cancel_at + self.seconds * STEP_SHARE
            if now >= cancelled:
                self._end("cancelled", cancelled)
            return
        validated = self._at(STEP_SHARE)
        if now < validated:
            return
        if self.errors:
            self._end("failed", validated)
            return
        self.stamps.setdefault("in_progress_at", int(validated))
        self._answer_until(now)
        if self.expire:
            if now >= self._at(1.0):
                self._end("expired", self._at(1.0))
            else:
                self.status = "in_progress"
            return
        if now < self._at(1 - STEP_SHARE):
            self.status = "in_progress"
            return
        self.stamps.setdefault("finalizing_at", int(self._at(1 - STEP_SHARE)))
        self.status = "finalizing"
        if now >= self._at(1.0):
            self._end("completed", self._at(1.0))

    def cancel(self, now: float) -> None:
        """Ask the batch to stop; 400 when it already ended (a second cancel changes nothing)."""
        self.advance(now)
        if self.status in ("cancelling", "cancelled"):
            return
        if self.status not in CANCELLABLE:
            raise envelope.cannot_cancel_batch(self.status)
        self.cancel_at = now
        self.status = "cancelling"
        self.stamps["cancelling_at"] = int(now)

    def _answer_until(self, until: float) -> None:
        while self.done < len(self.lines) and self._due(self.done) <= until:
            self._answer(self.done, self._due(self.done))
            self.done += 1

    def _answer(self, index: int, at: float) -> None:
        line = self.lines[index]
        new_id = derived_ids(f"{self.id}/{index}")
        record: Answer = {"id": new_id("batch_req_"), "custom_id": line.custom_id}
        if self.fail_lines is not None and self.fail_lines.search(line.custom_id):
            ok = False
            record.update(response=None, error=LINE_FAILURE)
        else:
            request_id = new_id("req_")
            status, body = self.answerer.answer(self.endpoint, line.body, at, new_id)
            ok = status == 200
            response = {"status_code": status, "request_id": request_id, "body": body}
            record.update(response=response, error=None)
            usage = (body.get("usage") or {}) if ok else {}
            self.tokens[0] += usage.get("input_tokens", usage.get("prompt_tokens", 0))
            self.tokens[1] += usage.get("output_tokens", usage.get("completion_tokens", 0))
        self.results.append((ok, orjson.dumps(record) + b"\n"))

    def _end(self, status: str, at: float) -> None:
        self.status = status
        self.stamps[f"{status}_at"] = int(at)
        for kind, wanted in (("output", True), ("error", False)):
            chosen = [line for ok, line in self.results if ok is wanted]
            if not chosen:
                continue
            # OpenAI promises no order: a client that relies on input order breaks here.
            random.Random(f"{self.id}/{kind}").shuffle(chosen)
            digest = hashlib.sha256(f"{self.id}/{kind}".encode()).hexdigest()
            file_id = self.file_ids[kind] = f"file-{digest[:24]}"
            name = f"{self.id}_{kind}.jsonl"
            self.files.add_generated(file_id, name, b"".join(chosen), int(at))

    def to_json(self) -> Answer:
        """The batch object as the API returns it."""
        stamps = self.stamps
        completed = sum(1 for ok, _ in self.results if ok)
        started = "in_progress_at" in stamps
        expires = self._at(1.0) if self.expire else self.created + WINDOW_SECONDS
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.lines[0].body.get("model") if self.lines else None,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.request["input_file_id"],
            "completion_window": self.request["completion_window"],
            "status": self.status,
            "output_file_id": self.file_ids.get("output"),
            "error_file_id": self.file_ids.get("error"),
            "created_at": int(self.created),
            "expires_at": int(expires),
            **{name: stamps.get(name) for name in STAMPS},
            "request_counts": {
                "total": len(self.lines) if started else 0,
                "completed": completed,
                "failed": len(self.results) - completed,
            },
            "usage": {
                "input_tokens": self.tokens[0],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.tokens[1],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": sum(self.tokens),
            },
            "metadata": self.request.get("metadata"),
        }


class Batches:
    """Every batch of one simulator, and the routes that serve them."""

    __slots__ = ("active", "answerer", "by_id", "clock", "config", "created", "files", "new_id")

    def __init__(
        self,
        config: SimulatorConfig,
        clock: Callable[[], float],
        new_id: Callable[[str], str],
        files: Files,
        answerer: LineAnswerer,
    ) -> None:
        self.config = config
        self.clock = clock
        self.new_id = new_id
        self.files = files
        self.answerer = answerer
        self.by_id: dict[str, Batch] = {}  # insertion order is creation order
        self.active: list[Batch] = []  # not ended yet
        self.created = 0

    def settle(self, now: float) -> None:
        """Bring every batch still going up to ``now``, so what its lines did (a
        conversation's items, a stored response) shows on any route."""
        if self.active:
            for batch in self.active:
                batch.advance(now)
            self.active = [batch for batch in self.active if batch.status not in ENDED]

    async def create(self, request: web.Request, version: str) -> Answer:
        """``POST /v1/batches``: check the request and the input file, answer ``validating``."""
        fields = _checked(await json_body(request, empty_ok=False))
        source = self.files.get(fields["input_file_id"], "input_file_id")
        if source.purpose != "batch":
            raise envelope.wrong_purpose(source.id, source.purpose)
        now = self.clock()
        expire, fail_lines = self.config.batch_expire, self.config.batch_fail_lines
        self.settle(now)
        batch = self._start(self.new_id("batch_"), fields, now, source, expire, fail_lines)
        limit = self.config.batch_queue_tokens
        held = sum(other.enqueued for other in self.active if other.unfinished) - batch.enqueued
        refused = limit is not None and batch.unfinished and held + batch.enqueued > limit
        if refused:
            assert limit is not None
            batch.refuse(limit)
        self.created += 1
        entry = {"batch": batch.id, "at": now, "body": fields, "refused": refused}
        append_to_log(self.config.run_log, {**entry, "expire": expire, "fail_lines": fail_lines})
        return batch.to_json()

    def restore(self, entry: dict[str, Any]) -> None:
        """Create again a batch a run log holds (skipped if its input file is gone)."""
        fields = entry["body"]
        source = self.files.by_id.get(fields["input_file_id"])
        if source is not None:
            at = float(entry["at"])
            batch = self._start(
                entry["batch"], fields, at, source, entry["expire"], entry["fail_lines"]
            )
            if entry.get("refused") and self.config.batch_queue_tokens is not None:
                batch.refuse(self.config.batch_queue_tokens)

    def restore_cancel(self, batch_id: str, at: float) -> None:
        """Cancel again, at ``at``, a batch a run log holds."""
        batch = self.by_id.get(batch_id)
        if batch is not None and batch.status not in ENDED:
            batch.cancel(at)

    def _start(
        self,
        batch_id: str,
        fields: dict[str, Any],
        at: float,
        source: StoredFile,
        expire: bool,
        fail_lines: str | None,
    ) -> Batch:
        batch = Batch(
            batch_id,
            fields,
            at,
            source,
            seconds=self.config.batch_seconds,
            expire=expire,
            fail_lines=fail_lines,
            answerer=self.answerer,
            files=self.files,
        )
        self.by_id[batch.id] = batch
        self.active.append(batch)
        return batch

    def _batch(self, request: web.Request) -> Batch:
        batch_id = request.match_info["batch_id"]
        batch = self.by_id.get(batch_id)
        if batch is None:
            raise envelope.no_batch(batch_id)
        batch.advance(self.clock())
        return batch

    async def retrieve(self, request: web.Request, version: str) -> Answer:
        """``GET /v1/batches/{batch_id}``."""
        return self._batch(request).to_json()

    async def list(self, request: web.Request, version: str) -> Answer:
        """``GET /v1/batches``: newest first, ``limit`` and ``after``."""
        self.settle(self.clock())
        query = {**page_query(request), "order": "desc", "before": None}
        chosen, has_more = page(list(self.by_id.values()), _batch_id, **query)
        return listing([batch.to_json() for batch in chosen], has_more)

    async def cancel(self, request: web.Request, version: str) -> Answer:
        """``POST /v1/batches/{batch_id}/cancel``: answer ``cancelling``."""
        batch = self._batch(request)
        now = self.clock()
        batch.cancel(now)
        append_to_log(self.config.run_log, {"batch_cancel": batch.id, "at": now})
        return batch.to_json()


def _batch_id(batch: Batch) -> str:
    return batch.id


def _checked(body: dict[str, Any]) -> dict[str, Any]:
    """The fields of a create-batch request, or the 400 OpenAI answers it with."""
    for name in body:
        if name not in FIELDS:
            raise envelope.invalid_body(name, "is not a field here", "unknown_parameter")
    for name in REQUIRED:
        value = body.get(name)
        if value is None:
            raise envelope.invalid_body(name, "is required", "missing_required_parameter")
        if not isinstance(value, str):
            raise envelope.invalid_body(name, "expected a string", "invalid_type")
    if body["endpoint"] not in ENDPOINTS:
        raise envelope.unsupported_value("endpoint", body["endpoint"], ENDPOINTS)
    if body["completion_window"] not in COMPLETION_WINDOWS:
        window = body["completion_window"]
        raise envelope.unsupported_value("completion_window", window, COMPLETION_WINDOWS)
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise envelope.invalid_body("metadata", "expected an object", "invalid_type")
        problems = metadata_problems(metadata, "metadata", run_tag=False)
        if problems:
            raise envelope.invalid_body(problems[0].path, problems[0].message, problems[0].code)
    return {name: body[name] for name in FIELDS if body.get(name) is not None}
