"""What an input sheet looked like beyond its cells, so that the output is handed back the
way the input was sent.

A reader fills a :class:`HandOff`; the writer of the same family of formats uses it:

- CSV/TSV: the byte order mark, the line ends and the delimiter (``;`` read with
  ``--delimiter``), written back into a .csv/.tsv output. An input read with
  ``--encoding`` comes back as UTF-8 with a BOM, since results may hold any character.
- XLSX: the data sheet's name; each input cell's number format (percent, currency,
  thousands, a day-first date); merged ranges, hidden rows and the rows above the table
  (a title); the workbook's other sheets, as values. See :mod:`batchrun.sheets.xlsx_reader`.
- Parquet: the Arrow schema, written back into a .parquet output.

Positions are relative to the table: data row 0 is the first row below the header, and
header row -1; title rows above the header are -2, -3, ... counted upward from it.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CellFormats", "HandOff", "OtherSheet"]

GENERAL = 0  # Excel's built-in number format 0


class CellFormats:
    """Each cell's number format, kept as runs down each column (a column's cells mostly
    share one), so a million formatted rows take a few entries, not a million.

    Cells are added in row order within a column; a cell never added has no format.
    """

    __slots__ = ("_formats", "_starts")

    def __init__(self) -> None:
        self._starts: dict[int, list[int]] = {}
        self._formats: dict[int, list[int | str]] = {}

    def add(self, row: int, col: int, number_format: int | str) -> None:
        """Cell (``row``, ``col``) has ``number_format`` (a built-in id or a code)."""
        formats = self._formats.setdefault(col, [])
        if formats and formats[-1] == number_format:
            return
        self._starts.setdefault(col, []).append(row)
        formats.append(number_format)

    def get(self, row: int, col: int) -> int | str | None:
        """The format of cell (``row``, ``col``); None for General."""
        starts = self._starts.get(col)
        if not starts:
            return None
        index = bisect_right(starts, row) - 1
        found = self._formats[col][index] if index >= 0 else GENERAL
        return None if found == GENERAL else found

    def __bool__(self) -> bool:
        return any(f != GENERAL for formats in self._formats.values() for f in formats)


@dataclass(frozen=True, slots=True)
class OtherSheet:
    """A worksheet of the workbook other than the data sheet, as values."""

    name: str
    rows: list[list[Any]]
    hidden: bool = False
    position: int = 0  # its place among the workbook's sheets


@dataclass(slots=True)
class HandOff:
    """How the input was laid out; every field's default writes what batchrun always has."""

    # CSV/TSV
    bom: bool = False
    line_end: str = "\n"
    delimiter: str | None = None
    # XLSX
    sheet_name: str | None = None
    # (row, column) -> Excel number format: a built-in id or a format code ("0.0%"), for
    # cells not in "General".
    number_formats: CellFormats = field(default_factory=CellFormats)
    # (first row, first column, last row, last column), inclusive, table-relative.
    merged: list[tuple[int, int, int, int]] = field(default_factory=list)
    hidden_rows: set[int] = field(default_factory=set)
    # The rows above the header (a title), top first, as values.
    title_rows: list[list[Any]] = field(default_factory=list)
    other_sheets: list[OtherSheet] = field(default_factory=list)
    # The data sheet's place among the workbook's sheets (the others keep theirs).
    data_sheet_index: int = 0
    # (row, column) -> the error a cell holds (``#N/A``): read as empty, written as its text.
    error_cells: dict[tuple[int, int], str] = field(default_factory=dict)
    # Parquet: the input's Arrow schema (a pyarrow.Schema), so that a Parquet output gives
    # each input column back with its type.
    arrow_schema: Any = None
