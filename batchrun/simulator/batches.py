"""Batches: OpenAI's Batch API, each batch's lifecycle computed from the clock.

``POST /v1/batches`` takes ``{input_file_id, endpoint, completion_window: "24h",
metadata?}``; the input file must have been uploaded with purpose ``batch``. Its lines are
read and checked at once (see :mod:`~batchrun.simulator.batch_lines`), and the batch then
moves with the clock over ``batch_seconds`` (S), as runs do: no task moves it, each read
asks where it is by now (see :mod:`~batchrun.simulator.batch_timeline`)::

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

from collections.abc import Callable
from typing import Any

from aiohttp import web

from batchrun.simulator import envelope
from batchrun.simulator.batch_lines import ENDPOINTS, LineAnswerer
from batchrun.simulator.batch_timeline import ENDED, Batch
from batchrun.simulator.files import Files, StoredFile
from batchrun.simulator.settings import SimulatorConfig
from batchrun.simulator.wire import (
    Answer,
    append_to_log,
    checked_metadata,
    json_body,
    listing,
    page,
    page_query,
)

COMPLETION_WINDOWS = ("24h",)
FIELDS = ("input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after")
REQUIRED = ("input_file_id", "endpoint", "completion_window")


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
    checked_metadata(body)
    return {name: body[name] for name in FIELDS if body.get(name) is not None}
