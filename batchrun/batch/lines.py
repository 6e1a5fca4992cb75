"""Rows as Batch API input lines, split into files the API accepts.

A line is ``{"custom_id": <row key>, "method": "POST", "url": <endpoint>, "body": <body>}``.
One file holds at most :data:`MAX_LINES` lines and :data:`MAX_BYTES` bytes (OpenAI's
limits); :class:`PartWriter` streams lines into files and starts a new one before either
limit would be passed, so no part is ever held in memory::

    writer = PartWriter(lambda n: folder / f"part-{n}.jsonl")
    for row in rows:
        writer.add(row.key, batch_line(row.key, url, body))
    parts = writer.close()        # [WrittenPart(number=1, path, keys, size), ...]

The limits are read when a line is added, so tests patch them to small numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from batchrun.endpoints.responses import conversation_id
from batchrun.report import Outcome, RowResult
from batchrun.sending.states import Event

MAX_LINES = 50_000
MAX_BYTES = 200 * 1024**2
# The Batch API's route for each endpoint that it takes (never Assistants runs).
BATCH_URLS = {"responses": "/v1/responses", "chat": "/v1/chat/completions"}
# Fields a batch line never carries: a batch answers each request whole, once.
UNBATCHABLE = ("background", "stream")


def batch_url(endpoint: str) -> str:
    """The ``url`` of a batch line (and the batch's ``endpoint``) for ``--endpoint``."""
    return BATCH_URLS[endpoint]


def batch_problem(body: Mapping[str, Any]) -> str:
    """Why a valid row cannot go in a batch ("" when it can)."""
    for name in UNBATCHABLE:
        if body.get(name) is True:
            return (
                f"{name}: true cannot be sent in a batch (the Batch API answers each request "
                f"whole); remove {name}, or send this row without --batch"
            )
    return ""


class ConversationTurns:
    """Rows of one conversation must go in order, one at a time, and a batch promises no
    order among its lines: only a conversation's first row can go in a batch."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def problem(self, body: Mapping[str, Any]) -> str:
        """Why this row cannot go in a batch after the rows seen so far ("" when it can)."""
        conversation = conversation_id(body.get("conversation"))
        if not conversation:
            return ""
        if conversation in self.seen:
            return (
                f"conversation: {conversation} has an earlier row, and a batch keeps no order "
                "among its requests; send rows that continue a conversation without --batch"
            )
        self.seen.add(conversation)
        return ""


def mark_unbatchable(rows: list[RowResult], turns: ConversationTurns) -> None:
    """Rows valid for a direct request that a batch cannot carry become invalid
    (``turns``: the conversations of the sheet's rows before these)."""
    for row in rows:
        if row.outcome is not None:
            continue
        body = row.body or {}
        if problem := batch_problem(body) or turns.problem(body):
            row.fail(Outcome.INVALID, problem, Event.INVALID)


def batch_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body as a batch line carries it: without ``background``/``stream`` (false)."""
    return {name: value for name, value in body.items() if name not in UNBATCHABLE}


def batch_line(custom_id: str, url: str, body: Mapping[str, Any]) -> bytes:
    """One line of a batch input file, newline included."""
    line = {"custom_id": custom_id, "method": "POST", "url": url, "body": batch_body(body)}
    return orjson.dumps(line) + b"\n"


def fits(lines: int, size: int, line_size: int) -> bool:
    """Whether a line of ``line_size`` bytes may join a file of ``lines`` lines and
    ``size`` bytes (an empty file takes any line: a line alone over the limit is refused
    by :func:`too_large`, before it gets here)."""
    if lines == 0:
        return True
    return lines < MAX_LINES and size + line_size <= MAX_BYTES


def too_large(line: bytes) -> str:
    """Why a line can never be sent in a batch ("" when it can)."""
    if len(line) > MAX_BYTES:
        return f"the row's batch line is {len(line):,} bytes, over a batch file's {MAX_BYTES:,}"
    return ""


@dataclass(slots=True)
class WrittenPart:
    """One batch input file as written: its number (1, 2, ...), path and row keys."""

    number: int
    path: Path
    keys: list[str] = field(default_factory=list)
    size: int = 0
    tokens: int = 0  # what its lines are charged in the queue (see batchrun.batch.queue)


class PartWriter:
    """Writes batch lines into numbered files, a new file whenever a limit would be passed:
    lines, bytes, and ``max_tokens`` (the enqueued-token limit), when given.

    ``path_of(n)`` names part ``n``; numbering starts at ``first``.
    """

    def __init__(
        self, path_of: Callable[[int], Path], first: int = 1, max_tokens: int | None = None
    ) -> None:
        self._path_of = path_of
        self._max_tokens = max_tokens
        self._next = first
        self._stream: IO[bytes] | None = None
        self.parts: list[WrittenPart] = []

    def add(self, custom_id: str, line: bytes, tokens: int = 0) -> None:
        """Append one line (see :func:`batch_line`), charged ``tokens``, to the current
        file, or a new one."""
        current = self.parts[-1] if self.parts and self._stream is not None else None
        if (
            current is None
            or not fits(len(current.keys), current.size, len(line))
            or (
                self._max_tokens is not None
                and current.keys
                and current.tokens + tokens > self._max_tokens
            )
        ):
            current = self._open()
        assert self._stream is not None
        self._stream.write(line)
        current.keys.append(custom_id)
        current.size += len(line)
        current.tokens += tokens

    def _open(self) -> WrittenPart:
        if self._stream is not None:
            self._stream.close()
        part = WrittenPart(self._next, self._path_of(self._next))
        self._next += 1
        self._stream = part.path.open("wb")
        self.parts.append(part)
        return part

    def take_closed(self) -> list[WrittenPart]:
        """The parts whose files are closed (every part once :meth:`close` was called),
        handed over and no longer kept: a caller that records each as it is done holds
        the keys of one part at a time."""
        open_parts = 1 if self._stream is not None and self.parts else 0
        closed = self.parts[: len(self.parts) - open_parts]
        del self.parts[: len(closed)]
        return closed

    def close(self) -> list[WrittenPart]:
        """Close the last file; every part written, in order."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        return self.parts

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def jsonl_part_path(first: Path) -> Callable[[int], Path]:
    """``batch.jsonl`` for part 1, then ``batch.2.jsonl``, ``batch.3.jsonl``, ... beside it."""

    def path_of(number: int) -> Path:
        return first if number == 1 else first.with_name(f"{first.stem}.{number}.jsonl")

    return path_of
