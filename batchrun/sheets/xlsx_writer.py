"""Stream result rows into an .xlsx hand-off file with xlsxwriter.

Every cell is written with an explicit type (``write_string``/``write_number``) and the
workbook refuses to guess (no strings to formulas, URLs or numbers), so ``=1+1`` or
``=HYPERLINK(...)`` from the data stays text. ``constant_memory`` mode writes each row to
disk as soon as the next one starts, so a million rows take little memory.

Text that Excel cannot hold is changed visibly, never dropped:

- control characters (U+0000-U+001F) are left to xlsxwriter, which writes them as Excel's
  own ``_xHHHH_`` escapes, so they come back as they were; lone surrogates and
  U+FFFE/U+FFFF, which no .xlsx can hold, become ``\\uNNNN`` (see :func:`excel_text`);
- a cell longer than 32,767 characters (counted in UTF-16 units, as Excel does) is cut and
  ends with ``… [cut: 1,000,000 chars; full text in out.full.jsonl]``; the full original
  text goes to ``<output stem>.full.jsonl`` as ``{"row": R, "column": NAME, "text": ...}``
  where R is the row number Excel shows (the header is row 1, the first data row 2).
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any

from batchrun.atomic import StagedFile
from batchrun.errors import UsageError
from batchrun.sheets.cells import NumberCell, json_text
from batchrun.sheets.handoff import HandOff, OtherSheet
from batchrun.sheets.xlsx_cells import (
    EXCEL_CELL_LIMIT,
    ILLEGAL,
    MAX_COLUMN_WIDTH,
    FullTexts,
    excel_text,
    fit_excel_cell,
    full_text_path,
)
from batchrun.sheets.xlsx_files import discard_workbook, store_workbook
from batchrun.sheets.xlsx_summary import Summary, write_summary_sheet

__all__ = [
    "EXCEL_CELL_LIMIT",
    "MAX_XLSX_COLUMNS",
    "MAX_XLSX_DATA_ROWS",
    "Summary",
    "XlsxResultWriter",
    "excel_text",
    "fit_excel_cell",
    "full_text_path",
]

MAX_XLSX_DATA_ROWS = 1_048_575  # 1,048,576 rows, one of them the header
MAX_XLSX_COLUMNS = 16_384
_OPTIONS = {
    "constant_memory": True,
    # A sheet's XML over 4 GiB needs ZIP64; zipfile adds it only to members that need it,
    # so smaller files come out byte for byte the same.
    "use_zip64": True,
    "strings_to_formulas": False,
    "strings_to_urls": False,
    "strings_to_numbers": False,
}


# cost_usd: two decimals at least, as many more as a fraction of a cent needs.
MONEY_FORMAT = "#,##0.00##########"


class XlsxResultWriter:
    """Writes column chunks into one worksheet; see the module docstring for the rules."""

    def __init__(
        self,
        path: Path,
        columns: list[str],
        number_mask: list[bool],
        sheet_name: str,
        typed_mask: list[bool] | None = None,
        handoff: HandOff | None = None,
    ) -> None:
        if len(columns) > MAX_XLSX_COLUMNS:
            raise UsageError(f"{path}: .xlsx holds at most {MAX_XLSX_COLUMNS:,} columns")
        self._path = path
        self._columns = columns
        self._number_mask = number_mask
        self._typed_mask = typed_mask or [False] * len(columns)
        self._handoff = handoff = handoff or HandOff()
        self._full = FullTexts(path)
        # Imported here: a CSV job need not pay for it (14 ms).
        import xlsxwriter
        from xlsxwriter.exceptions import InvalidWorksheetName

        self._staged = StagedFile(path)
        self._workbook = xlsxwriter.Workbook(str(self._staged.temp), _OPTIONS)
        self._bold = self._workbook.add_format({"bold": True})
        add = self._workbook.add_format
        # Typed input cells come back with a format that shows them as Excel would.
        self._date_formats: dict[type, Any] = {
            datetime.datetime: add({"num_format": "yyyy-mm-dd hh:mm:ss"}),
            datetime.date: add({"num_format": "yyyy-mm-dd"}),
            datetime.time: add({"num_format": "hh:mm:ss"}),
            datetime.timedelta: add({"num_format": "[h]:mm:ss"}),
        }
        self._number_formats: dict[int | str, Any] = {}
        # Money as a plain decimal, never in General's exponent (3.27E-05): 0.0000327.
        self._money = money = add({"num_format": MONEY_FORMAT})
        self._result_formats = [money if name.endswith("cost_usd") else None for name in columns]
        # Sheets before the data sheet come first, as in the input; the rest follow it.
        others = handoff.other_sheets
        before = [o for o in others if o.position < handoff.data_sheet_index]
        self._after = [o for o in others if o.position > handoff.data_sheet_index]
        try:
            for other in before:
                self._write_other_sheet(other)
            self._sheet = self._workbook.add_worksheet(handoff.sheet_name or sheet_name)
        except InvalidWorksheetName as exc:
            discard_workbook(self._workbook)
            self._staged.discard()
            raise UsageError(f"{path}: bad sheet name {sheet_name!r} ({exc})") from None
        self._sheet.activate()
        # Rows above the header (a title) keep their place; the table starts below them.
        self._header_row = len(handoff.title_rows)
        # Cells a merged range covers, but for its top-left one: written empty.
        self._covered = {
            (row, col)
            for r0, c0, r1, c1 in handoff.merged
            for row in range(r0, r1 + 1)
            for col in range(c0, c1 + 1)
            if (row, col) != (r0, c0)
        }
        for row, values in enumerate(handoff.title_rows):
            for col, value in enumerate(values):
                if (row - self._header_row - 1, col) not in self._covered:
                    self._write_typed(row, col, _kept(value), self._format_at(row, col))
        self._next_row = self._header_row + 1
        self._sized = False
        self.cut_cells = 0
        header = self._header_row
        for col, name in enumerate(columns):
            self._sheet.write_string(
                header, col, self._fit(excel_text(name), name, header, col), self._bold
            )
        self._sheet.freeze_panes(header + 1, 0)

    def write_columns(self, cells: list[list[Any]]) -> None:
        """Append rows given column by column (text columns hold str, number columns not)."""
        rows = len(cells[0]) if cells else 0
        if self._next_row - 1 + rows > MAX_XLSX_DATA_ROWS:
            raise UsageError(
                f"{self._path}: .xlsx holds at most {MAX_XLSX_DATA_ROWS:,} data rows;"
                " write .csv or .jsonl"
            )
        if rows == 0 or not cells:
            return
        first = self._next_row
        prepared = [
            self._prepare_numbers(values, first, col)
            if self._number_mask[col]
            else self._prepare_typed(values, first, col)
            if self._typed_mask[col]
            else self._prepare_texts(values, first, col)
            for col, values in enumerate(cells)
        ]
        if not self._sized:
            self._set_widths(prepared)
        self._write_rows(prepared, first, rows)
        self._next_row += rows

    def _write_rows(self, prepared: list[list[Any]], first: int, rows: int) -> None:
        write_string = self._sheet.write_string
        write_number = self._sheet.write_number
        typed_mask = self._typed_mask
        texts = [
            (c, v) for c, v in enumerate(prepared) if not self._number_mask[c] and not typed_mask[c]
        ]
        numbers = [(c, v) for c, v in enumerate(prepared) if self._number_mask[c]]
        typed = [(c, v) for c, v in enumerate(prepared) if typed_mask[c]]
        handoff = self._handoff
        laid_out = bool(
            handoff.number_formats or handoff.merged or handoff.hidden_rows or handoff.error_cells
        )
        result_formats = self._result_formats
        for i in range(rows):
            row = first + i
            wrote = False
            if laid_out:
                wrote = self._write_laid_out(row, typed, i)
            else:
                for col, values in typed:
                    wrote = self._write_typed(row, col, values[i]) or wrote
            for col, values in texts:
                text = values[i]
                if text:  # an empty cell is simply not written
                    write_string(row, col, text)
                    wrote = True
            for col, values in numbers:
                value = values[i]
                if value is None:
                    continue
                if type(value) is float:
                    write_number(row, col, value, result_formats[col])
                else:
                    write_string(row, col, value)
                wrote = True
            if not wrote:
                # One empty string cell keeps an all-empty row inside the sheet's used
                # range (batchrun's reader still drops such rows at the end of a sheet, as
                # it drops rows of spaces filled down below a table).
                write_string(row, 0, "")

    def _write_laid_out(self, row: int, typed: list[tuple[int, list[Any]]], i: int) -> bool:
        """Write one row's input cells as the input had them: each with its number format,
        merged ranges' hidden cells left empty, error cells as their text, hidden rows
        hidden."""
        handoff = self._handoff
        table_row = row - self._header_row - 1
        if table_row in handoff.hidden_rows:
            self._sheet.set_row(row, None, None, {"hidden": True})
        wrote = False
        for col, values in typed:
            if (table_row, col) in self._covered:
                continue
            value = values[i]
            if (value is None or value == "") and (table_row, col) in handoff.error_cells:
                value = handoff.error_cells[(table_row, col)]
            wrote = self._write_typed(row, col, value, self._format_at(row, col)) or wrote
        return wrote

    def _format_at(self, row: int, col: int) -> Any:
        """The input's number format of the cell written at ``row`` (None: General)."""
        code = self._handoff.number_formats.get(row - self._header_row - 1, col)
        if code is None:
            return None
        found = self._number_formats.get(code)
        if found is None:
            found = self._number_formats[code] = self._workbook.add_format({"num_format": code})
        return found

    def _write_typed(
        self, row: int, col: int, value: Any, cell_format: Any = None, sheet: Any = None
    ) -> bool:
        """Write one input cell as the type it came in, in ``cell_format`` (else as Excel
        shows its type); False if there was nothing to write."""
        sheet = sheet or self._sheet
        kind = type(value)
        if kind is str:
            if not value:
                return False
            sheet.write_string(row, col, value, cell_format)
        elif kind is bool:
            sheet.write_boolean(row, col, value, cell_format)
        elif kind is float or kind is int:
            sheet.write_number(row, col, value, cell_format)
        elif kind in self._date_formats:
            sheet.write_datetime(row, col, value, cell_format or self._date_formats[kind])
        else:
            return False  # None: an empty cell
        return True

    def _write_other_sheet(self, other: OtherSheet) -> None:
        """Another sheet of the input workbook, as values (typed, dates formatted)."""
        sheet = self._workbook.add_worksheet(other.name)
        for row, values in enumerate(other.rows):
            for col, value in enumerate(values):
                self._write_typed(row, col, _kept(value), sheet=sheet)
        if other.hidden:
            sheet.hide()

    def _prepare_typed(self, values: list[Any], first: int, col: int) -> list[Any]:
        """Typed input cells: text cleaned and cut as text is; values Excel cannot hold as
        they are (JSON objects, integers beyond 2^53, infinities) become exact text."""
        prepared: list[Any] = []
        for i, value in enumerate(values):
            if not self._holds_as_is(value):
                value = json_text(value) if isinstance(value, dict | list) else str(value)
            if type(value) is str and value:
                value = self._fit(excel_text(value), value, first + i, col)
            prepared.append(value)
        return prepared

    def _holds_as_is(self, value: Any) -> bool:
        kind = type(value)
        if kind is int:
            return bool(abs(value) < 2**53)  # a double holds it exactly
        if kind is float:
            return math.isfinite(value)
        return kind is str or kind is bool or value is None or kind in self._date_formats

    def _prepare_texts(self, values: list[str], first: int, col: int) -> list[str]:
        # One search over the joined column is ~10x faster than a regex call per cell.
        cleaned = [excel_text(v) for v in values] if ILLEGAL.search("".join(values)) else values
        if max(map(len, cleaned)) <= EXCEL_CELL_LIMIT // 2:
            return cleaned
        return [
            self._fit(text, original, first + i, col)
            for i, (text, original) in enumerate(zip(cleaned, values, strict=True))
        ]

    def _prepare_numbers(self, values: list[NumberCell], first: int, col: int) -> list[NumberCell]:
        prepared: list[NumberCell] = []
        for i, value in enumerate(values):
            if isinstance(value, int) and abs(value) < 2**53:
                prepared.append(float(value))
            elif isinstance(value, float) and math.isfinite(value):
                prepared.append(value)
            elif value is None or value == "":
                prepared.append(None)
            else:
                # Too big for a double, infinite, or not a number: exact text instead.
                original = str(value)
                prepared.append(self._fit(excel_text(original), original, first + i, col))
        return prepared

    def _fit(self, text: str, original: str, row: int, col: int) -> str:
        cut = fit_excel_cell(text, f"; full text in {self._full.path.name}")
        if cut is None:
            return text
        self.cut_cells += 1
        self._full.keep(row + 1, self._columns[col], original)
        return cut

    def _set_widths(self, prepared: list[list[Any]]) -> None:
        self._sized = True
        for col, (name, values) in enumerate(zip(self._columns, prepared, strict=True)):
            longest = max((len(str(v)) for v in values[:1000] if v is not None), default=0)
            # +3 leaves room for the filter button beside the header text.
            width = min(MAX_COLUMN_WIDTH, max(8, len(name) + 3, longest + 1))
            self._sheet.set_column(col, col, width)

    def close(self, summary: Summary | None) -> None:
        """Finish the workbook (and the full-text file) and move them onto their targets."""
        try:
            if self._columns:
                self._sheet.autofilter(
                    self._header_row, 0, self._next_row - 1, len(self._columns) - 1
                )
            self._merge_ranges()
            for other in self._after:
                self._write_other_sheet(other)
            if summary is not None:
                write_summary_sheet(
                    self._workbook,
                    summary,
                    bold=self._bold,
                    money=self._money,
                    cut_cells=self.cut_cells,
                    full_text_name=self._full.path.name,
                )
            store_workbook(self._workbook)
            self._full.commit()
        except BaseException:
            self.abort()
            raise
        self._staged.commit()
        self._full.remove_stale()

    def _merge_ranges(self) -> None:
        """The input's merged ranges, over the rows that were written.

        Their cells went out row by row (constant memory mode), each range's value in its
        top-left cell; xlsxwriter's merge_range() would write cells of rows already
        flushed, so the ranges are recorded in the list it writes them from.
        """
        offset = self._header_row + 1
        for r0, c0, r1, c1 in self._handoff.merged:
            first, last = r0 + offset, min(r1 + offset, self._next_row - 1)
            if first <= last and (first, c0) != (last, c1) and c1 < len(self._columns):
                self._sheet.merge.append([first, c0, last, c1])

    def abort(self) -> None:
        """Drop everything written; targets from earlier runs stay untouched."""
        self._full.discard()
        discard_workbook(self._workbook)
        self._staged.discard()


def _kept(value: Any) -> Any:
    """A cell of a title row or another sheet, as it can be written: text Excel can hold
    (cut with a marker beyond its limit), other values as they are."""
    if type(value) is str:
        text = excel_text(value)
        return fit_excel_cell(text) or text
    if type(value) is float and not math.isfinite(value):
        return str(value)
    return value
