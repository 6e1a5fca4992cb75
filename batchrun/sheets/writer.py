"""Write result rows as .csv, .tsv, .jsonl, .xlsx or .parquet, atomically and chunk by chunk.

    with SheetWriter(Path("out.xlsx"), columns, number_columns=frozenset({"status"})) as out:
        for chunk in chunks:
            out.write(chunk)
        out.close(summary={"outcome": [("ok", 990), ("failed", 10)]})

Everything goes to a temp file beside the target (``.out.xlsx.<random>.tmp``) that is
fsynced and renamed onto the target by :meth:`SheetWriter.close`; an exception inside the
``with`` block, or :meth:`SheetWriter.abort`, removes it and leaves an earlier target as it
was. Cells of text columns are ``str`` (None/NaN are written empty); cells of
``number_columns`` are numbers, with None/NaN written as an empty cell.

Per format:

- CSV/TSV: UTF-8, with the BOM, line ends and ``;`` delimiter of the input as its
  :class:`~batchrun.sheets.handoff.HandOff` says (by default no BOM and ``\\n``). Cells
  are quoted only when they hold the delimiter, a quote, a line feed or a carriage
  return (every cell of a one-column file is quoted, so that an empty or blank row reads
  back as a row). With ``escape_formulas`` (the default) a text cell, header included,
  that starts with ``= + - @``, tab or carriage return and is not a plain number gets a
  leading ``'`` (see :func:`escape_formula`). Lone surrogates, which UTF-8 cannot hold,
  are written as ``\\udXXX``. The summary is not written (it has no place in CSV).
- JSONL: one object per row, keys in column order; number columns as JSON numbers
  (``null`` when empty), other cells as strings. No summary. A frame with no rows gives an
  empty file.
- XLSX: see :mod:`batchrun.sheets.xlsx_writer`; the summary becomes a ``summary`` sheet.
"""

from __future__ import annotations

import csv
import datetime
import json
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Protocol, Self

import orjson

from batchrun.atomic import StagedFile
from batchrun.sheets import formats
from batchrun.sheets.cells import (
    PLAIN_NUMBER,
    excel_cell_text,
    json_fragment,
    number_cells,
    number_texts,
    text_cells,
)
from batchrun.sheets.handoff import HandOff
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
_TEXT_ROWS = 2_000  # rows of CSV text built at once
_FORMULA_START = frozenset("=+-@\t\r")


def escape_formula(text: str) -> str:
    """Prefix ``'`` to text a spreadsheet would run as a formula: ``=1+1`` -> ``'=1+1``.

    Text starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return is escaped unless
    it is a plain number (``-5``, ``+1.5``, ``-1e3`` stay as they are).
    """
    if text[:1] in _FORMULA_START and not PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def escape_formula_cells(texts: list[str]) -> list[str]:
    """Apply :func:`escape_formula` to a column of text cells."""
    # A comprehension testing the first character is 3x faster than pandas .str methods,
    # which also run Python code per cell on object columns; the regex runs only for the
    # rare candidates.
    start = _FORMULA_START
    number = PLAIN_NUMBER.fullmatch
    return [("'" + t) if t[:1] in start and not number(t) else t for t in texts]


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
            self._out = _JsonlWriter(path, self.columns)
        elif fmt.name == "parquet":
            from batchrun.sheets.parquet import ParquetResultWriter

            self._out = ParquetResultWriter(
                path, self.columns, numbers, self._typed, handoff.arrow_schema
            )
        else:
            delimiter = (handoff.delimiter if fmt.name == "csv" else None) or fmt.delimiter or ","
            self._out = _DelimitedWriter(
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


# --- CSV/TSV and JSONL ---------------------------------------------------------------------


class _StagedStream:
    """A text or binary stream written to a staged file: renamed on close, dropped on abort."""

    _file: IO[Any]
    _staged: StagedFile

    def close(self, summary: Summary | None) -> None:
        try:
            self._file.close()
        except BaseException:
            self._staged.discard()
            raise
        self._staged.commit()

    def abort(self) -> None:
        self._file.close()
        self._staged.discard()


class _DelimitedWriter(_StagedStream):
    cut_cells = 0  # nothing is cut: only .xlsx has a cell limit

    def __init__(
        self,
        path: Path,
        columns: list[str],
        numbers: list[bool],
        delimiter: str,
        escape: bool,
        handoff: HandOff,
    ) -> None:
        self._numbers = numbers
        self._escape = escape
        self._staged = StagedFile(path)
        # Kept open across write() calls, closed by close()/abort().
        self._file: IO[str] = open(  # noqa: SIM115
            self._staged.temp, "w", encoding="utf-8", errors="backslashreplace", newline=""
        )
        self._line_end = handoff.line_end
        options: dict[str, Any] = {"delimiter": delimiter, "lineterminator": self._line_end}
        self._delimiter = delimiter
        if handoff.bom:
            self._file.write("\ufeff")
        self._quoted = csv.writer(self._file, quoting=csv.QUOTE_ALL, **options)
        # One-column files: an empty or blank line would read back as no row at all.
        self._always_quote = len(columns) == 1
        header = escape_formula_cells(columns) if escape else list(columns)
        try:
            if header and header[0].startswith("\ufeff"):
                self._quoted.writerow(header)  # quoted, so a reader won't take it for a BOM
            else:
                self._write_rows([[h] for h in header])
        except BaseException:
            self.abort()
            raise

    def write_columns(self, cells: list[list[Any]]) -> None:
        columns: list[list[str]] = []
        for values, is_number in zip(cells, self._numbers, strict=True):
            texts = number_texts(values) if is_number else values
            columns.append(escape_formula_cells(texts) if self._escape else texts)
        self._write_rows(columns)

    def _write_rows(self, columns: list[list[str]]) -> None:
        if self._always_quote:
            self._quoted.writerows(zip(*columns, strict=True))
            return
        # Minimal quoting, column by column: a column with nothing to quote (most of them)
        # costs one scan, and a JSON cell one replace. Three times faster than csv.writer
        # on answer bodies; what a cell holding "\r" needs, csv.writer would not quote.
        height = len(columns[0]) if columns else 0
        for start in range(0, height, _TEXT_ROWS):  # a bounded text at a time
            cells = [
                _quoted_where_needed(column[start : start + _TEXT_ROWS], self._delimiter)
                for column in columns
            ]
            lines = map(self._delimiter.join, zip(*cells, strict=True))
            self._file.write(self._line_end.join(lines) + self._line_end)


def _quoted_where_needed(column: list[str], delimiter: str) -> list[str]:
    """The cells, each holding the delimiter, a quote, a line feed or a carriage return
    quoted (its quotes doubled)."""
    joined = "".join(column)
    if not (delimiter in joined or '"' in joined or "\n" in joined or "\r" in joined):
        return column
    return [
        '"' + cell.replace('"', '""') + '"'
        if delimiter in cell or '"' in cell or "\n" in cell or "\r" in cell
        else cell
        for cell in column
    ]


class _JsonlWriter(_StagedStream):
    cut_cells = 0  # nothing is cut: only .xlsx has a cell limit

    def __init__(self, path: Path, columns: list[str]) -> None:
        self._columns = columns
        self._staged = StagedFile(path)
        # Kept open across write() calls, closed by close()/abort().
        self._file: IO[bytes] = open(self._staged.temp, "wb")  # noqa: SIM115

    def write_columns(self, cells: list[list[Any]]) -> None:
        keys = self._columns
        write = self._file.write
        # Line by line: orjson's bytes keep ~4 KiB of capacity each, so a list of a chunk's
        # lines would cost ~200 MB per 50,000 rows.
        for row in zip(*cells, strict=True):
            record = dict(zip(keys, row, strict=True))
            try:
                write(orjson.dumps(record, default=_json_default, option=_JSONL_OPTIONS))
            except (orjson.JSONEncodeError, TypeError):
                # Lone surrogates (escaped as \udXXX) or integers beyond 64 bits (exact).
                write(json.dumps(record, default=_json_default).encode() + b"\n")


_JSONL_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_SUBCLASS


def _json_default(value: object) -> object:
    """A typed input cell JSON has no type for: dates and times as their ISO text; a
    number beyond a double as written."""
    if isinstance(value, datetime.date | datetime.time | datetime.timedelta):
        return excel_cell_text(value)
    return json_fragment(value)
