"""One batch of the simulator's Batch API, moving with the clock (see
:mod:`~batchrun.simulator.batches` for the routes and the whole story).

No task moves a batch: each read asks where it is by now. Over ``batch_seconds`` (S) it is
``validating`` for the first tenth (then ``failed`` if a line was bad, or refused for the
queue's tokens), ``in_progress`` until nine tenths, line i of n answered at i+1 n-ths of the
way, ``finalizing`` for the last tenth and ``completed`` at S with its output and error
files; a cancel makes it ``cancelling`` for a tenth of S, then ``cancelled``.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from typing import Any

import orjson

from batchrun.simulator import envelope
from batchrun.simulator.batch_lines import LineAnswerer, batch_error, derived_ids, read_lines
from batchrun.simulator.envelope import SERVER_ERROR_MESSAGES
from batchrun.simulator.files import Files, StoredFile
from batchrun.simulator.limits import charged_tokens
from batchrun.simulator.wire import Answer

WINDOW_SECONDS = 24 * 3600.0
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
