"""A batch's lines: read and checked when the batch is created, then answered one by one.

An input line is ``{"custom_id", "method": "POST", "url", "body"}``; ``custom_id`` is
unique within the file and ``url`` is the batch's endpoint. A file with any bad line (or
empty, or beyond 50,000 lines or 200 MB) fails the whole batch, its problems listed as
``errors.data[]`` ``{code, message, param, line}`` (1-based line numbers).

:class:`LineAnswerer` answers a line as the direct endpoint would (the same body checks,
replies and ``usage``), without HTTP and without waiting: ``answer(url, body, at, new_id)``
gives the status and body that ``POST url`` would have answered at ``at``. A route the
simulator does not serve (``/v1/embeddings`` ...) is answered 404 "Invalid URL", as it would
be sent directly.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from batchrun.simulator import envelope
from batchrun.simulator.generation import NewId
from batchrun.simulator.wire import Answer

ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
MAX_LINES = 50_000
MAX_BYTES = 200 * 1024**2
MAX_ERRORS = 100  # errors.data lists the first ones; a whole file of bad lines would be huge


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One request of a batch: its ``custom_id`` and the body to send."""

    custom_id: str
    body: dict[str, Any]


def batch_error(
    code: str, message: str, *, param: str | None = None, line: int | None = None
) -> Answer:
    """One entry of a failed batch's ``errors.data``."""
    return {"code": code, "message": message, "param": param, "line": line}


def read_lines(content: bytes, endpoint: str) -> tuple[list[BatchLine], list[Answer]]:
    """The requests of a batch input file, or (no requests and) the errors that fail it."""
    if len(content) > MAX_BYTES:
        message = f"The input file is {len(content)} bytes; a batch takes at most 200 MB."
        return [], [batch_error("file_too_large", message)]
    numbered = [(n, raw) for n, raw in enumerate(content.splitlines(), 1) if raw.strip()]
    if not numbered:
        return [], [batch_error("empty_file", "The input file has no requests.")]
    if len(numbered) > MAX_LINES:
        message = (
            f"The input file has {len(numbered)} requests; a batch takes at most {MAX_LINES:,}."
        )
        return [], [batch_error("too_many_requests", message)]
    lines: list[BatchLine] = []
    errors: list[Answer] = []
    seen: set[str] = set()
    for number, raw in numbered:
        problem = _line_problem(raw, endpoint, seen)
        if isinstance(problem, BatchLine):
            seen.add(problem.custom_id)
            lines.append(problem)
        elif len(errors) < MAX_ERRORS:
            errors.append({**problem, "line": number})
    return ([], errors) if errors else (lines, [])


def _line_problem(raw: bytes, endpoint: str, seen: set[str]) -> BatchLine | Answer:
    """The line as a request, or what is wrong with it (an error without its line number)."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return batch_error("invalid_json_line", "This line is not parseable as valid JSON.")
    if not isinstance(parsed, dict):
        return batch_error("invalid_json_line", "This line is not a JSON object.")
    for name in ("custom_id", "method", "url", "body"):
        if name not in parsed:
            return batch_error(
                "missing_required_parameter",
                f"Missing required parameter: '{name}'.",
                param=name,
            )
    custom_id, body = parsed["custom_id"], parsed["body"]
    if not isinstance(custom_id, str) or not custom_id:
        return batch_error(
            "invalid_value", "The custom_id must be a non-empty string.", param="custom_id"
        )
    if custom_id in seen:
        return batch_error(
            "duplicate_custom_id",
            "The custom_id for this request is a duplicate of another request. The custom_id "
            "parameter must be unique for each request in a batch.",
            param="custom_id",
        )
    if parsed["method"] != "POST":
        return batch_error(
            "invalid_value", "Only the POST method is supported in a batch.", param="method"
        )
    if parsed["url"] != endpoint:
        return batch_error(
            "invalid_url",
            f"The URL provided for this request does not match the batch endpoint {endpoint}.",
            param="url",
        )
    if not isinstance(body, dict):
        return batch_error("invalid_value", "The body must be a JSON object.", param="body")
    return BatchLine(custom_id, body)


def derived_ids(seed: str) -> NewId:
    """Ids that depend only on ``seed`` and how many were drawn before: a line answered again
    (by a rerun's simulator replaying the batch) gets the same ones."""
    counter = itertools.count()

    def new_id(prefix: str) -> str:
        digest = hashlib.sha256(f"{seed}/{next(counter)}".encode()).hexdigest()
        return f"{prefix}{digest[:24]}"

    return new_id


class Endpoint(Protocol):
    """What answers one endpoint's lines: ``Responses.answer``, ``ChatCompletions.answer``."""

    def __call__(self, body: Mapping[str, Any], at: float, new_id: NewId) -> Answer:
        """The 200 answer to ``body`` at ``at``, or :class:`~.envelope.ApiError`."""


class LineAnswerer:
    """Answers a batch's lines as the direct endpoints would, without HTTP.

    ``endpoints`` maps a URL (``/v1/responses``) to what answers it::

        answerer = LineAnswerer({"/v1/responses": simulator.responses.answer})
        status, body = answerer.answer("/v1/responses", {"model": "m", "input": "hi"},
                                       at=clock(), new_id=derived_ids("batch_1/0"))
    """

    __slots__ = ("endpoints",)

    def __init__(self, endpoints: Mapping[str, Endpoint]) -> None:
        self.endpoints = endpoints

    def answer(
        self, url: str, body: Mapping[str, Any], at: float, new_id: NewId
    ) -> tuple[int, Answer]:
        """The status and body ``POST url`` would answer ``body`` with at ``at``."""
        endpoint = self.endpoints.get(url)
        try:
            if endpoint is None:
                raise envelope.invalid_url("POST", url)
            return 200, endpoint(body, at, new_id)
        except envelope.ApiError as error:
            return error.status, error.body()
