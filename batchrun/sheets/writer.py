"""Write result rows as .csv, .tsv, .jsonl, .xlsx or .parquet, atomically and chunk by chunk.

    with SheetWriter(Path("out.xlsx"), columns, number_columns=frozenset({"status"})) as out:
        for chunk in chunks:
            out.write(chunk)
        out.close(summary={"outcome": [("ok", 990), ("failed", 10)]})

Everything goes to a temp file beside the target (``.out.xlsx.<random>.<pid>-<host>.tmp``,
see :mod:`batchrun.atomic`) that is fsynced and renamed onto the target by
:meth:`SheetWriter.close`; an exception inside the ``with`` block, or
:meth:`SheetWriter.abort`, removes it and leaves an earlier target as it was. Cells of
text columns are ``str`` (None/NaN are written empty); cells of ``number_columns`` are
numbers, with None/NaN written as an empty cell.

Per format:

- CSV/TSV and JSONL: see :mod:`batchrun.sheets.text_writers` (formulas escaped in CSV
  cells, :func:`escape_formula`); no summary.
- Parquet: see :mod:`batchrun.sheets.parquet`.
- XLSX: see :mod:`batchrun.sheets.xlsx_writer`; the summary becomes a ``summary`` sheet.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from batchrun.sheets import formats
from batchrun.sheets.cells import number_cells, text_cells
from batchrun.sheets.handoff import HandOff
from batchrun.sheets.text_writers import (
    DelimitedWriter,
    JsonlWriter,
    escape_formula,
    escape_formula_cells,
)
from batchrun.sheets.xlsx_cells import excel_text
from batchrun.sheets.xlsx_summary import Summary
from batchrun.sheets.xlsx_writer import MAX_XLSX_DATA_ROWS, XlsxResultWriter

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MAX_XLSX_DATA_ROWS",
    "SheetWriter",
    "Summary",
    "escape_formula",
    "escape_formula_cells",
    "excel_text",
    "output_format",
    "write_sheet",
]

_SLICE_ROWS = 50_000  # bounds the writer's own copies whatever size the caller's frames are


def output_format(path: Path) -> str:
    """Return "csv", "tsv", "jsonl", "xlsx" or "parquet" from an output file's extension."""
    return formats.output_format(path).name


class _FormatWriter(Protocol):
    cut_cells: int

    def write_columns(self, cells: list[list[Any]]) -> None: ...
    def close(self, summary: Summary | None) -> None: ...
    def abort(self) -> None: ...


class SheetWriter:
    """Writes frames of result rows to one output file; see the module docstring."""

    def __init__(
        self,
        path: Path,
        columns: Sequence[str],
        *,
        escape_formulas: bool = True,
        number_columns: frozenset[str] = frozenset(),
        typed_columns: frozenset[str] = frozenset(),
        sheet_name: str = "results",
        handoff: HandOff | None = None,
    ) -> None:
        fmt = formats.output_format(path)
        handoff = handoff or HandOff()
        self.format = fmt
        self.path = path
        self.columns = list(columns)
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"duplicate column names: {self.columns}")
        numbers = [name in number_columns for name in self.columns]
        # Typed cells (input values as they came) stay typed where the format has types;
        # CSV/TSV write their text.
        typed_here = typed_columns if fmt.typed_cells else frozenset()
        self._typed = [name in typed_here for name in self.columns]
        self.rows_written = 0
        self._done = False
        self._out: _FormatWriter
        if fmt.name == "xlsx":
            self._out = XlsxResultWriter(
                path, self.columns, numbers, sheet_name, self._typed, handoff
            )
        elif fmt.name == "jsonl":
            self._out = JsonlWriter(path, self.columns)
        elif fmt.name == "parquet":
            from batchrun.sheets.parquet import ParquetResultWriter

            self._out = ParquetResultWriter(
                path, self.columns, numbers, self._typed, handoff.arrow_schema
            )
        else:
            delimiter = (handoff.delimiter if fmt.name == "csv" else None) or fmt.delimiter or ","
            self._out = DelimitedWriter(
                path, self.columns, numbers, delimiter, escape_formulas, handoff
            )
        self._numbers = numbers

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.close()

    def write(self, frame: pd.DataFrame) -> None:
        """Append the frame's rows; its columns must be this writer's columns, in order.

        If writing fails, the writer is aborted before the exception propagates.
        """
        self._check_open()
        if [str(name) for name in frame.columns] != self.columns:
            raise ValueError(f"frame columns {list(frame.columns)} are not {self.columns}")
        for start in range(0, len(frame), _SLICE_ROWS):
            part = frame.iloc[start : start + _SLICE_ROWS]
            self._write_cells(
                [
                    number_cells(part.iloc[:, col].to_numpy(dtype=object).tolist())
                    if is_number
                    else _frame_text_cells(part.iloc[:, col])
                    for col, is_number in enumerate(self._numbers)
                ]
            )

    def write_columns(self, columns: Sequence[Sequence[object]]) -> None:
        """Append rows given column by column, one sequence of cells per writer column.

        Cells are plain Python values: text columns take ``str`` (other values are written
        as their text, None empty); number columns take numbers or None; typed columns
        take input values as a reader gave them (str, int, float, bool, date, datetime,
        time, timedelta, JSON values, None), written typed in .xlsx and .jsonl.
        """
        self._check_open()
        if len(columns) != len(self.columns):
            raise ValueError(f"{len(columns)} columns given for {len(self.columns)}")
        height = len(columns[0]) if columns else 0
        for start in range(0, height, _SLICE_ROWS):
            end = start + _SLICE_ROWS
            self._write_cells(
                [
                    number_cells(values[start:end])
                    if is_number
                    else list(values[start:end])
                    if is_typed
                    else text_cells(values[start:end])
                    for values, is_number, is_typed in zip(
                        columns, self._numbers, self._typed, strict=True
                    )
                ]
            )

    def _check_open(self) -> None:
        if self._done:
            raise ValueError(f"{self.path}: the writer is already closed")

    def _write_cells(self, cells: list[list[Any]]) -> None:
        self._check_open()
        try:
            self._out.write_columns(cells)
        except BaseException:
            self.abort()
            raise
        self.rows_written += len(cells[0]) if cells else 0

    @property
    def cut_cells(self) -> int:
        """How many cells were too long for .xlsx and went whole to ``<stem>.full.jsonl``."""
        return self._out.cut_cells

    def close(self, summary: Summary | None = None) -> None:
        """Finish the file and move it onto the target (the summary goes only to formats
        with room for a summary sheet: .xlsx)."""
        if self._done:
            return
        self._done = True
        self._out.close(summary if self.format.summary_sheet else None)

    def abort(self) -> None:
        """Drop what was written; an earlier target file stays untouched."""
        if not self._done:
            self._done = True
            self._out.abort()


def write_sheet(
    path: Path,
    frame: pd.DataFrame,
    *,
    summary: Summary | None = None,
    escape_formulas: bool = True,
    number_columns: frozenset[str] = frozenset(),
    sheet_name: str = "results",
) -> None:
    """Write a whole frame to ``path`` (format by extension), atomically."""
    with SheetWriter(
        path,
        [str(name) for name in frame.columns],
        escape_formulas=escape_formulas,
        number_columns=number_columns,
        sheet_name=sheet_name,
    ) as out:
        out.write(frame)
        out.close(summary)


def _frame_text_cells(column: pd.Series) -> list[str]:
    from pandas.api.types import infer_dtype

    values = column.to_numpy(dtype=object)
    if infer_dtype(values, skipna=False) == "string":
        return values.tolist()  # every cell is a str
    return text_cells(values.tolist())
