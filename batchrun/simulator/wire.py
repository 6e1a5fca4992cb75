"""Reading requests and shaping list answers, as every route of the simulated API does.

A body is a JSON object or a 400; a list request's ``order``/``limit`` are checked as
OpenAI checks them; :func:`page` cuts a list by its cursors; a list answer is
``{"object": "list", "data", "first_id", "last_id", "has_more"}``. A body is checked
against the schema of its endpoint and the limits the schema only describes (a
``metadata`` anywhere: :func:`checked_metadata`), and the first problem is answered as
OpenAI words it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from aiohttp import web

from batchrun.endpoints.rules import metadata_problems
from batchrun.endpoints.schema import service_problems
from batchrun.simulator import envelope

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number"}

Answer = dict[str, Any]
Clock = Callable[[], float]
Handler = Callable[[web.Request, str], Awaitable[Answer]]
# A handler answering with server-sent events returns {EVENTS_KEY: [(event, data), ...]};
# an event of name None is written as a bare ``data:`` line (Chat Completions' chunks).
EVENTS_KEY = "__events__"
# A handler answering with a file's bytes returns {RAW_KEY: (bytes, content type)}.
RAW_KEY = "__raw__"


async def json_body(request: web.Request, *, empty_ok: bool) -> dict[str, Any]:
    """The request's JSON object; 400 for anything else."""
    raw = await request.read()
    if not raw.strip() and empty_ok:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise envelope.invalid_json() from None
    if not isinstance(body, dict):
        kind = "a boolean" if isinstance(body, bool) else JSON_KINDS.get(type(body), "null")
        raise envelope.not_an_object(kind)
    return body


def check_body(body: Mapping[str, Any], schema: str, *, required: tuple[str, ...] = ()) -> None:
    """Answer 400 for the first problem the service finds in ``body`` under ``schema``.

    The cut-out schemas forbid no unknown top-level field and CreateResponse requires none,
    yet the service refuses both: ``required`` names the fields it insists on.
    """
    for name in required:
        if body.get(name) is None:
            raise envelope.invalid_body(name, "is required", "missing_required_parameter")
    problems = service_problems(body, schema)
    # An unknown field is answered first, before what is wrong with the known ones.
    problems.sort(key=lambda problem: problem.code != "unknown_parameter")
    if problems:
        raise envelope.invalid_body(problems[0].path, problems[0].message, problems[0].code)


def page_query(
    request: web.Request,
    *,
    default_order: str = "desc",
    default_limit: int = DEFAULT_PAGE_SIZE,
    max_limit: int = MAX_PAGE_SIZE,
) -> dict[str, Any]:
    """``order``, ``limit``, ``after`` and ``before`` of a list request, checked."""
    query = request.query
    order = query.get("order", default_order)
    if order not in ("asc", "desc"):
        raise envelope.invalid_param(
            "order",
            f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.",
            "invalid_value",
        )
    text = query.get("limit", str(default_limit))
    try:
        limit = int(text)
    except ValueError:
        raise envelope.invalid_param(
            "limit",
            f"Invalid 'limit': expected an integer, but got '{text}' instead.",
            "invalid_type",
        ) from None
    if not 1 <= limit <= max_limit:
        code = "integer_below_min_value" if limit < 1 else "integer_above_max_value"
        raise envelope.invalid_param(
            "limit",
            f"Invalid 'limit': expected a value between 1 and {max_limit}, got {limit}.",
            code,
        )
    return {
        "order": order,
        "limit": limit,
        "after": query.get("after"),
        "before": query.get("before"),
    }


def listing(data: list[Answer], has_more: bool) -> Answer:
    """One page of objects in OpenAI's list envelope."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def append_to_log(path: str | None, entry: Answer) -> None:
    """Append ``entry`` as one JSON line to the run log at ``path`` (if there is one).

    The log is how the in-process simulator of a ``--simulate`` rerun knows what the job
    before it created; :meth:`Simulator.reset` replays it.
    """
    if path is not None:
        # One short line, appended in microseconds: not worth a thread hop.
        with open(path, "ab") as log:
            log.write(orjson.dumps(entry) + b"\n")


def event_stream(events: list[tuple[str | None, str]]) -> str:
    """Server-sent events: ``event: NAME`` (when named) and ``data: ...``, blank-line ended."""
    return "".join(
        f"data: {data}\n\n" if name is None else f"event: {name}\ndata: {data}\n\n"
        for name, data in events
    )


class Creates:
    """Creates of one kind: how many, and how many repeated a body already seen (what a
    client's blind retry makes: a second response or completion for the same row)."""

    __slots__ = ("_seen", "count", "duplicates")

    def __init__(self) -> None:
        self.count = 0
        self.duplicates = 0
        self._seen: set[bytes] = set()

    def add(self, body: Mapping[str, Any]) -> None:
        """Count one create of ``body``."""
        self.count += 1
        # A digest, not the body's bytes: orjson's output keeps a 4 KB buffer, so a
        # million-row job against the simulator held gigabytes of seen bodies.
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        seen = hashlib.blake2b(canonical, digest_size=16).digest()
        if seen in self._seen:
            self.duplicates += 1
        else:
            self._seen.add(seen)


def page(
    items: Sequence[T],
    id_of: Callable[[T], str],
    *,
    order: str,
    limit: int,
    after: str | None,
    before: str | None,
) -> tuple[list[T], bool]:
    """One page of ``items`` (oldest first) with OpenAI's cursor semantics, and has_more.

    ``after`` starts the page just past that id in the chosen order; ``before`` alone ends
    it just short of that id (the previous page). An unknown cursor gives an empty page.
    """
    ordered = list(items) if order == "asc" else list(reversed(items))
    ids = [id_of(item) for item in ordered]
    start, end = 0, len(ordered)
    if after is not None:
        start = ids.index(after) + 1 if after in ids else end
    if before is not None:
        end = ids.index(before) if before in ids else start
    window = ordered[start : max(start, end)]
    chosen = window[-limit:] if before is not None and after is None else window[:limit]
    return chosen, len(window) > limit


def checked_metadata(body: Mapping[str, Any]) -> dict[str, Any]:
    """A body's ``metadata`` ({} when absent), or the 400 OpenAI answers for it: not an
    object, or beyond the documented limits (16 pairs, keys of 64 characters, string
    values of 512)."""
    metadata = body.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise envelope.invalid_param(
            "metadata", "Invalid type for 'metadata': expected an object.", "invalid_type"
        )
    problems = metadata_problems(metadata, "metadata", run_tag=False)
    if problems:
        raise envelope.invalid_body(problems[0].path, problems[0].message, problems[0].code)
    return metadata
