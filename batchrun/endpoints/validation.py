"""Validate a sheet chunk by chunk, on every core when the sheet is big.

Chunks are checked in worker processes and come back in input order. A row's key
counts identical rows (its occurrence number), which a worker can only do within its
own chunk; :class:`OccurrenceCounter` carries the count across chunks and renumbers the
rare row whose twin sat in an earlier chunk.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from batchrun.config import Settings
from batchrun.endpoints.body import RowPlan
from batchrun.endpoints.cost import Estimate
from batchrun.endpoints.prepare import RowPreparer, request_text
from batchrun.sending.tokens import max_output_tokens, prompt_tokens

MAX_WORKERS = 4
Rows = list[list[str]]
CellProblems = Mapping[int, list[tuple[int, str]]]


@dataclass(frozen=True, slots=True)
class CheckedChunk:
    """One chunk's validate results, in row order."""

    requests: list[str]
    errors: list[str]
    keys: list[str | None]
    # model -> [valid rows, prompt tokens, maximum output tokens, rows naming none]
    tokens: dict[str, list[int]] = field(default_factory=dict)

    def refuse(self, position: int, body: Mapping[str, Any], problem: str) -> None:
        """Make the valid row at ``position`` (whose request is ``body``) invalid for
        ``problem``: no request shown, and out of the cost estimate."""
        self.errors[position], self.requests[position] = problem, ""
        model = body.get("model")
        counts = self.tokens.get(model if isinstance(model, str) else "")
        if counts is not None:
            most = max_output_tokens(body)
            for index, count in enumerate((1, prompt_tokens(body), most, most == 0)):
                counts[index] -= count

    @property
    def invalid(self) -> int:
        """How many rows of the chunk are invalid."""
        return sum(1 for error in self.errors if error)


def check_chunk(
    plan: RowPlan, settings: Settings, chunk: Rows, cell_problems: CellProblems | None = None
) -> CheckedChunk:
    """Assemble and check every row of one chunk (occurrences counted within it);
    ``cell_problems`` are keyed by row index within the chunk."""
    rows = RowPreparer(plan, settings, cell_problems).prepare_rows(chunk)
    estimate = Estimate()
    for row in rows:
        if not row.error and row.body is not None:
            model = row.body.get("model")
            most = max_output_tokens(row.body)
            estimate.add(model if isinstance(model, str) else "", prompt_tokens(row.body), most)
    return CheckedChunk(
        requests=[request_text(row, settings) for row in rows],
        errors=[row.error for row in rows],
        keys=[row.key for row in rows],
        tokens=estimate.by_model,
    )


class OccurrenceCounter:
    """Renumbers keys whose identical rows appeared in earlier chunks."""

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()

    def fix(self, chunk: CheckedChunk) -> CheckedChunk:
        """``chunk`` with keys and request texts numbered across the whole sheet."""
        here: Counter[str] = Counter()
        for position, key in enumerate(chunk.keys):
            if key is None:
                continue
            digest, _, number = key.rpartition("-")
            here[digest] += 1
            earlier = self._seen[digest]
            if earlier:
                # The key is a hash: replacing its text cannot touch anything else.
                fixed = f"{digest}-{earlier + int(number)}"
                chunk.keys[position] = fixed
                chunk.requests[position] = chunk.requests[position].replace(key, fixed)
        self._seen.update(here)
        return chunk


def checked_chunks(
    chunks: Iterator[Rows],
    plan: RowPlan,
    settings: Settings,
    cell_problems: CellProblems | None = None,
) -> Iterator[tuple[Rows, CheckedChunk]]:
    """Each chunk with its results, in order; a second chunk brings in worker processes.

    ``cell_problems`` are keyed by row index within the whole sheet.
    """
    counter = OccurrenceCounter()
    problems = cell_problems or {}
    first = next(chunks, None)
    if not first:
        return
    second = next(chunks, None)
    if second is None:
        yield first, counter.fix(check_chunk(plan, settings, first, problems))
        return
    start = 0

    def within(chunk: Rows) -> CellProblems:
        nonlocal start
        found = {i - start: problems[i] for i in problems if start <= i < start + len(chunk)}
        start += len(chunk)
        return found

    workers = min(MAX_WORKERS, os.cpu_count() or 1)
    # forkserver: workers start clean even when the caller runs threads (a fork would copy
    # their locks); the cost is paid once, and only for sheets of more than one chunk.
    context = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: deque[tuple[Rows, Future[CheckedChunk]]] = deque()
        for chunk in _chain(first, second, chunks):
            future = pool.submit(check_chunk, plan, settings, chunk, within(chunk))
            pending.append((chunk, future))
            if len(pending) > workers:
                done, future = pending.popleft()
                yield done, counter.fix(future.result())
        while pending:
            done, future = pending.popleft()
            yield done, counter.fix(future.result())


def _chain(first: Rows, second: Rows, rest: Iterator[Rows]) -> Iterator[Rows]:
    yield first
    yield second
    yield from rest
