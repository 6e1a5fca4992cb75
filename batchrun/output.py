"""The result columns added to the sheet, named and filled from row results.

``outcome`` comes first among them in every output: one word a person can filter on
(``ok``, ``invalid``, ``failed``, ``not sent``, ``run failed``, ``pending``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from batchrun.config import Settings
from batchrun.endpoints.body import normalize_header
from batchrun.endpoints.prepare import request_text
from batchrun.errors import UsageError
from batchrun.report import Outcome, RowResult
from batchrun.sheets.cells import number_cells

if TYPE_CHECKING:
    import pandas as pd

    from batchrun.job import Job

Mode = Literal["run", "validate"]
VALIDATE_COLUMNS = ("outcome", "request", "error")
Cells = Callable[[list[RowResult]], list[object]]
NUMBER_COLUMNS = frozenset({"status", "attempts", "cost_usd"})  # and every usage_* column
# Number columns that hold fractions (the rest are whole numbers).
FLOAT_RESULTS = ("cost_usd",)


def _run_columns(job: Job) -> list[tuple[str, Cells]]:
    """A run job's result columns and how each is filled, in order: the answer's id and
    status are named for the endpoint (``run_id``, ``response_id``, ``completion_id``)."""
    settings, endpoint = job.settings, job.endpoint
    columns: list[tuple[str, Cells]] = [
        ("outcome", lambda rows: [row.outcome.value if row.outcome else "" for row in rows]),
        ("status", lambda rows: [row.status for row in rows]),
        ("body", lambda rows: [row.response for row in rows]),
        ("error", lambda rows: [row.error for row in rows]),
        (endpoint.id_column, lambda rows: [row.run_id for row in rows]),
        (endpoint.status_column, lambda rows: [row.run_status for row in rows]),
        (
            "attempts",
            lambda rows: [
                row.attempts if row.attempts or row.status is not None else None for row in rows
            ],
        ),
    ]
    if settings.wait or endpoint.usage_at_once:
        columns += [(name, _usage(key)) for name, key in endpoint.usage_columns]
        columns.append(("cost_usd", _cost(settings)))
        if endpoint.has_last_error:
            columns.append(("last_error", lambda rows: [row.last_error for row in rows]))
    if settings.reply or endpoint.reply_at_once:
        columns.append(("reply", lambda rows: [row.reply for row in rows]))
    return columns


def _usage(key: str) -> Cells:
    return lambda rows: [row.usage.get(key) for row in rows]


def _cost(settings: Settings) -> Cells:
    from batchrun.endpoints.cost import prices_for

    def cells(rows: list[RowResult]) -> list[object]:
        prices = prices_for(settings.batch)
        return [prices.row_cost(row.body, row.usage) for row in rows]

    return cells


def total_cost(rows: list[RowResult], settings: Settings) -> tuple[float | None, int]:
    """The rows' cost together (None when no row has a known price), and how many rows
    with usage have no known price for their model."""
    from batchrun.endpoints.cost import prices_for

    prices = prices_for(settings.batch)
    costs, unpriced = [], 0
    for row in rows:
        if not row.usage:
            continue
        cost = prices.row_cost(row.body, row.usage)
        if cost is None:
            # No price for its model (a run naming none: the assistant's, unknown here),
            # as validate counts it; not a priced model's answer missing a count.
            model = (row.body or {}).get("model")
            unpriced += not isinstance(model, str) or prices.cost(model, 0, 0) is None
        else:
            costs.append(cost)
    return (round(sum(costs), 12) if costs else None), unpriced


def result_columns(job: Job, mode: Mode) -> list[str]:
    """The result column names (before ``--prefix``) for this job."""
    if mode == "validate":
        return list(VALIDATE_COLUMNS)
    return [name for name, _ in _run_columns(job)]


def check_names(input_columns: list[str], job: Job, mode: Mode) -> None:
    """Refuse an output whose result columns would clash with input columns."""
    taken = {normalize_header(name) for name in input_columns}
    prefix = job.settings.prefix
    clashes = [
        prefix + name
        for name in result_columns(job, mode)
        if normalize_header(prefix + name) in taken
    ]
    if clashes:
        raise UsageError(
            f"the input already has column(s) {', '.join(map(repr, clashes))}, which the "
            "output adds; pass --prefix (e.g. --prefix batchrun_) to name the results apart"
        )


def number_columns(job: Job, mode: Mode = "run") -> frozenset[str]:
    """The prefixed names of the result columns in force that hold numbers.

    Only these: an input column of another such name (``usage_total_tokens`` without
    ``--wait``) is input, written as it was read.
    """
    return frozenset(
        job.settings.prefix + name
        for name in result_columns(job, mode)
        if name in NUMBER_COLUMNS or name.startswith("usage_")
    )


def result_cells(rows: list[RowResult], job: Job, mode: Mode) -> list[list[object]]:
    """The result columns' cells, column by column, in :func:`result_columns` order."""
    # Column by column: one comprehension a column costs a tenth of a list a row.
    if mode == "validate":
        return [
            [Outcome.INVALID.value if row.error else Outcome.OK.value for row in rows],
            [request_text(row, job.settings) for row in rows],
            [row.error for row in rows],
        ]
    return [cells(rows) for _, cells in _run_columns(job)]


def result_frame(frame: pd.DataFrame, rows: list[RowResult], job: Job, mode: Mode) -> pd.DataFrame:
    """``frame`` (input columns untouched) followed by the result columns."""
    import pandas as pd

    check_names([str(c) for c in frame.columns], job, mode)
    names = [job.settings.prefix + name for name in result_columns(job, mode)]
    numbers = number_columns(job, mode)
    results = pd.DataFrame(
        {
            name: _series(values, frame.index, name if name in numbers else None)
            for name, values in zip(names, result_cells(rows, job, mode), strict=True)
        },
        index=frame.index,
    )
    return pd.concat([frame, results], axis=1)


def _series(values: list[object], index: pd.Index, number: str | None) -> pd.Series:
    """A result column: numbers (``number`` names the column) as nullable Int64
    (``cost_usd`` Float64), as a Parquet output types them; text as object."""
    import pandas as pd

    if number is None:
        return pd.Series(values, index=index, dtype=object)
    dtype = "Float64" if number.endswith(FLOAT_RESULTS) else "Int64"
    return pd.Series(number_cells(values), index=index, dtype=dtype)
