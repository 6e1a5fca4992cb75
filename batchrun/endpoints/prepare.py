"""From a sheet to rows ready to send: assemble, check and key every row.

Rows are prepared in input order; a row whose body cannot be built or fails validation
gets outcome ``invalid`` and every reason in its ``error`` cell, and is never sent.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from batchrun.config import Settings
from batchrun.endpoints.assembly import assemble
from batchrun.endpoints.body import (
    REQUEST_JSON,
    RowPlan,
    hint_text,
    plan_columns,
    used_columns,
)
from batchrun.endpoints.problems import Problem
from batchrun.endpoints.rules import RUN_TAG_KEY, takes_run_tag
from batchrun.endpoints.schema import BodyChecker
from batchrun.errors import BatchrunError, InputError
from batchrun.report import Outcome, RowResult
from batchrun.sending.journal_schema import body_digest, row_key
from batchrun.sending.states import Event
from batchrun.sheets.cells import frame_cell_text

if TYPE_CHECKING:
    import pandas as pd

# Distinct body digests counted in memory before the counts move to a temporary file.
SPILL_DIGESTS = 100_000


def make_plan(
    columns: list[str],
    settings: Settings,
    source: object = "input",
    lower_rows: Sequence[tuple[int, list[str]]] = (),
    other_headers: Sequence[tuple[str, list[str]]] = (),
) -> RowPlan:
    """The column plan for a sheet with these headers under ``settings``.

    ``lower_rows`` are the first rows below the header with their row numbers: when the
    header names nothing needed (no thread column, or no field at all) and one of these
    does, the error says so and suggests ``--header-row``. ``other_headers``, the first
    row of the workbook's other worksheets by name, likewise suggest ``--sheet``.
    """

    def plan(headers: Sequence[str]) -> RowPlan:
        return plan_columns(
            headers,
            settings.schema,
            settings.columns,
            settings.set_values,
            source=source,
            column_named=settings.column_named,
        )

    try:
        found = plan(columns)
    except InputError as error:
        if (number := _lower_header(lower_rows, plan)) is not None:
            raise InputError(
                source,
                f"{error.problem}; row {number} has the columns needed: pass --header-row {number}",
            ) from None
        if (name := _other_sheet(other_headers, plan)) is not None:
            raise InputError(
                source, f"{error.problem}; sheet {name!r} has them: pass --sheet {name!r}"
            ) from None
        raise
    if not _feeds_anything(found) and (number := _lower_header(lower_rows, plan)) is not None:
        raise InputError(
            source,
            f"no column of its header names a field of the request; row {number} does:"
            f" pass --header-row {number} (a title above the table?)",
        )
    if not _feeds_anything(found) and (name := _other_sheet(other_headers, plan)) is not None:
        raise InputError(
            source,
            f"no column of its header names a field of the request; sheet {name!r} does:"
            f" pass --sheet {name!r}",
        )
    return found


def _other_sheet(
    sheets: Sequence[tuple[str, list[str]]], plan: Callable[[Sequence[str]], RowPlan]
) -> str | None:
    """The name of the first other worksheet whose first row makes a header feeding the
    body."""
    found = _lower_header([(i, cells) for i, (_, cells) in enumerate(sheets)], plan)
    return None if found is None else sheets[found][0]


def _feeds_anything(plan: RowPlan) -> bool:
    return bool(plan.field_columns or plan.sub_columns or plan.message_columns)


def _lower_header(
    rows: Sequence[tuple[int, list[str]]], plan: Callable[[Sequence[str]], RowPlan]
) -> int | None:
    """The number of the first row that would make a header feeding the body."""
    for number, cells in rows:
        named = [cell.strip() for cell in cells]
        if len({name.casefold() for name in named if name}) < len([n for n in named if n]):
            continue  # two equal names: not a header
        try:
            if _feeds_anything(plan(named)):
                return number
        except BatchrunError:
            continue
    return None


def text_rows(frame: pd.DataFrame) -> Iterator[tuple[str, ...]]:
    """The frame's rows as tuples of text: what a cell shows, "" for empty."""
    columns = [frame[name].tolist() for name in frame.columns]
    for column in columns:
        for position, cell in enumerate(column):
            if not isinstance(cell, str):
                column[position] = frame_cell_text(cell)
    return zip(*columns, strict=True)


class RowPreparer:
    """Prepares consecutive chunks of one sheet, keeping occurrence counts across them."""

    def __init__(
        self,
        plan: RowPlan,
        settings: Settings,
        cell_problems: Mapping[int, list[tuple[int, str]]] | None = None,
    ) -> None:
        self.plan = plan
        self.settings = settings
        # Row index -> [(column, problem)]: cells the reader could not read (an .xlsx
        # formula without a value). Only those feeding the body make the row invalid.
        self.cell_problems = cell_problems or {}
        self._used = used_columns(plan)
        self._hints = dict(plan.hints)
        self.checker = BodyChecker(
            settings.schema, run_tag=settings.run_tag, strict_fields=settings.strict_fields
        )
        self.occurrences = Occurrences()
        self.next_index = 0

    def prepare(self, frame: pd.DataFrame) -> list[RowResult]:
        """Assemble, check and key each row of ``frame`` (the sheet's next chunk)."""
        return self.prepare_rows(text_rows(frame))

    def prepare_rows(self, rows: Iterable[Sequence[str]]) -> list[RowResult]:
        """Assemble, check and key each row of text cells (in the plan's column order)."""
        results = []
        keyed: list[tuple[RowResult, str]] = []
        schema_name = self.settings.schema
        for cells in rows:
            row = RowResult(self.next_index)
            self.next_index += 1
            built = assemble(self.plan, cells)
            row.thread_id = built.thread_id
            problems = self.checker.check(built.partial)
            cell_problems = built.problems
            if self.cell_problems and row.index in self.cell_problems:
                cell_problems = self._unreadable(row.index) + cell_problems
            if cell_problems:
                problems = merged_problems(cell_problems, problems)
            if self._hints and problems:
                problems = [self._hinted(problem) for problem in problems]
            if problems:
                row.fail(Outcome.INVALID, "; ".join(map(str, problems)), Event.INVALID)
            else:
                row.body = built.body
                keyed.append((row, body_digest(schema_name, row.thread_id, built.body or {})))
            results.append(row)
        numbers = self.occurrences.count([digest for _, digest in keyed])
        for (row, digest), number in zip(keyed, numbers, strict=True):
            row.key = row_key(digest, number)
        return results

    def close(self) -> None:
        """Remove the occurrence counts' temporary file, if they needed one."""
        self.occurrences.close()

    def _hinted(self, problem: Problem) -> Problem:
        """A missing field's problem, with the column that looks like it."""
        header = self._hints.get(problem.path)
        if header is None or not problem.message.startswith("is required"):
            return problem
        hint = hint_text(problem.path, header)
        message = f"{problem.message} (the column {header!r} looks like it: {hint})"
        return Problem(problem.path, message, problem.code)

    def _unreadable(self, index: int) -> list[Problem]:
        return [
            Problem(self._used[col], problem)
            for col, problem in self.cell_problems[index]
            if col in self._used
        ]


class Occurrences:
    """How many times each body digest has come so far in a sheet: a row's key is its
    digest and occurrence, since identical rows are meant as separate runs.

    Counted in memory up to SPILL_DIGESTS distinct digests, then in a temporary file, so a
    sheet of any size counts in bounded memory (a dict holds about 150 bytes a digest).
    """

    __slots__ = ("_counts", "_db")

    def __init__(self) -> None:
        self._counts: Counter[str] | None = Counter()
        self._db: sqlite3.Connection | None = None

    def count(self, digests: list[str]) -> list[int]:
        """Count ``digests`` (in order); each one's occurrence number, from 1."""
        if self._counts is not None:
            counts = self._counts
            numbers = []
            for digest in digests:
                counts[digest] += 1
                numbers.append(counts[digest])
            if len(counts) > SPILL_DIGESTS:
                self._spill(counts)
            return numbers
        assert self._db is not None
        here = Counter(digests)
        before = dict.fromkeys(here, 0)
        distinct = list(here)
        for start in range(0, len(distinct), 500):
            part = distinct[start : start + 500]
            query = f"SELECT digest, n FROM seen WHERE digest IN ({','.join('?' * len(part))})"
            before.update(self._db.execute(query, part))
        numbers = []
        for digest in digests:
            before[digest] += 1
            numbers.append(before[digest])
        self._db.executemany(
            "INSERT OR REPLACE INTO seen VALUES (?, ?)", [(d, before[d]) for d in distinct]
        )
        return numbers

    def _spill(self, counts: Counter[str]) -> None:
        # "": a private temporary file, removed when closed.
        self._db = sqlite3.connect("", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE seen (digest TEXT PRIMARY KEY, n INTEGER NOT NULL)")
        self._db.executemany("INSERT INTO seen VALUES (?, ?)", counts.items())
        self._counts = None

    def close(self) -> None:
        """Remove the temporary file, if counting needed one."""
        if self._db is not None:
            self._db.close()


def merged_problems(cell_problems: list[Problem], body_problems: list[Problem]) -> list[Problem]:
    """A row's cell problems, then its body's, leaving out what a failed cell explains.

    The body was checked without the cells that failed to convert, so a schema problem at
    one of those fields (or a missing field, when ``request_json`` failed) says nothing new.
    """
    failed = {problem.path for problem in cell_problems}
    base_failed = REQUEST_JSON in failed
    kept = [
        problem
        for problem in body_problems
        if problem.path.partition(".")[0].partition("[")[0] not in failed
        and not (base_failed and problem.message == "is required")
    ]
    return [*cell_problems, *kept]


def sent_body(row: RowResult, settings: Settings, tag: str | None = None) -> dict[str, Any]:
    """The body as it goes on the wire: the row's body plus the run tag (where the
    endpoint takes it, see :func:`~batchrun.endpoints.rules.takes_run_tag`).

    ``tag`` is the tag a job sends (the row's key and the job's id); without one, the
    row's key stands in, as ``validate`` shows it.
    """
    body = dict(row.body or {})
    if settings.run_tag and row.key and takes_run_tag(settings.endpoint, body):
        metadata = body.get("metadata")
        body["metadata"] = {
            **(metadata if isinstance(metadata, dict) else {}),
            RUN_TAG_KEY: tag or row.key,
        }
    return body


def request_text(row: RowResult, settings: Settings) -> str:
    """The exact JSON that would be sent for ``row`` ("" for an invalid row), the API key
    masked should a cell hold it (it is never written out)."""
    if row.body is None:
        return ""
    return settings.masked(orjson.dumps(sent_body(row, settings)).decode())
