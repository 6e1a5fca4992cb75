"""Read one worksheet of an .xlsx/.xlsm workbook: each cell's value, and its text as
Excel shows it.

python-calamine reads the file (an order of magnitude faster than openpyxl, and it
returns the value cached for formula cells). Cell values come back as calamine gives them
(str, float, int for whole numbers below 2^53, bool, date, datetime, time, timedelta;
``""`` when empty) so that the
writer can put them back typed; :func:`batchrun.sheets.cells.excel_cell_text` gives the
text body assembly reads. The rules of this reader:

- The default sheet is the first *visible* worksheet (a chart sheet is no table).
  ``--sheet`` matches a name exactly, then ignoring case and spaces, and only then as a
  0-based index (a sheet named ``2`` wins).
- The table starts at the first row that has a value and is not a title (one merged range
  across columns): that row is the header. ``--header-row N`` names it instead.
- A merged range gives its value to every cell it covers, not only the top-left one.
- A formula cell reads as its cached value. A formula with no cached value (the file was
  written by a program that does not calculate) or with an error value (``#N/A``) is read
  as empty, and reported in :attr:`XlsxSheet.cell_problems` so that the row is not sent
  without its field (what the sheet's XML says, :mod:`batchrun.sheets.xlsx_layout`); so is a
  text cell calamine read cut to Excel's 32,767 characters.
- Rows at the end whose every cell is empty or spaces (cells filled down below the table)
  are not rows.
- What the output needs to hand the workbook back as it came goes in
  :attr:`XlsxSheet.handoff`: the sheet's name, each cell's number format, merged ranges,
  hidden rows, the rows above the header, error cells' text and the other sheets' values.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_calamine import (
    CalamineError,
    CalamineWorkbook,
    PasswordError,
    SheetTypeEnum,
    SheetVisibleEnum,
)

from batchrun.errors import InputError
from batchrun.sheets.cells import excel_cell_text
from batchrun.sheets.handoff import HandOff, OtherSheet
from batchrun.sheets.xlsx_cells import EXCEL_CELL_LIMIT
from batchrun.sheets.xlsx_layout import column_letters, sheet_extras

__all__ = ["XlsxSheet", "open_xlsx_sheet"]


@dataclass(slots=True)
class XlsxSheet:
    """One worksheet: header text, data rows of values, and cells that could not be read."""

    name: str
    header: list[str]
    rows: Iterator[list[Any]]
    # Data row (0-based) -> [(column, problem)] for formula cells without a usable value.
    cell_problems: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    handoff: HandOff = field(default_factory=HandOff)
    header_number: int = 1  # the header's row number as Excel shows it


def open_xlsx_sheet(
    path: Path, sheet: str | int | None, header_row: int | None = None
) -> XlsxSheet:
    """Open the chosen sheet; raises InputError for unreadable files and unknown sheets.

    ``header_row`` (1-based, as Excel numbers rows) names the header row; by default it is
    the first row with a value.
    """
    others: list[OtherSheet] = []
    try:
        with CalamineWorkbook.from_path(str(path)) as workbook:
            names: list[str] = list(workbook.sheet_names)
            metadata = workbook.sheets_metadata
            visible = [m.visible == SheetVisibleEnum.Visible for m in metadata]
            tables = [m.typ == SheetTypeEnum.WorkSheet for m in metadata]
            index = _sheet_index(path, names, visible, sheet, tables)
            # The sheet's cells are loaded into memory here; the file can be closed.
            data = workbook.get_sheet_by_index(index)
            for number, (name, meta) in enumerate(zip(names, metadata, strict=True)):
                if number != index and meta.typ == SheetTypeEnum.WorkSheet:
                    values = workbook.get_sheet_by_index(number).to_python(skip_empty_area=False)
                    others.append(OtherSheet(name, values, not visible[number], number))
    except PasswordError:
        raise InputError(path, "is password-protected: save a copy without a password") from None
    except CalamineError as exc:
        detail = str(exc).strip() or type(exc).__name__
        raise InputError(path, f"is not a readable .xlsx workbook ({detail})") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})") from None
    top, left = data.start or (0, 0)
    header_at = header_row
    if header_at is not None and header_at <= top:
        raise InputError(path, f"sheet {names[index]!r}: row {header_at} is empty (--header-row)")
    merged = data.merged_cell_ranges or []
    rows: Iterator[list[Any]] = (
        iter(_filled(data.to_python(), merged, top, left)) if merged else (data.iter_rows())
    )
    header_row = top
    above: list[list[Any]] = []
    for row in rows:
        # Rows above the table (calamine may yield them as empty) are not the header.
        if header_at:
            wanted = header_row + 1 == header_at
        else:
            wanted = any(cell != "" for cell in row) and not _title(row, header_row, merged, left)
        if wanted:
            header = [excel_cell_text(cell) for cell in row]
            break
        above.append(row)
        header_row += 1
    else:
        if header_at:
            raise InputError(path, f"sheet {names[index]!r} has no row {header_at} (--header-row)")
        raise InputError(path, f"sheet {names[index]!r} is empty (no header row)")
    extras = sheet_extras(path, index, header_row + 1, left)
    # Rows above the header come back above it (a title); empty ones are not kept.
    titles = above if any(cell != "" for row in above for cell in row) else []
    first = header_row + 1  # the first data row, where table-relative rows start at 0
    handoff = HandOff(
        sheet_name=names[index],
        number_formats=extras.formats,
        merged=[
            (r0 - first, c0 - left, r1 - first, c1 - left)
            for (r0, c0), (r1, c1) in merged
            if r0 - first >= -1 - len(titles) and (r0, c0) != (r1, c1)
        ],
        hidden_rows=extras.hidden,
        title_rows=list(_whole(iter(titles))),
        other_sheets=others,
        data_sheet_index=index,
        error_cells=extras.errors,
    )
    named = _cut_cells_named(_whole(rows), extras.problems, first, left)
    rows = _trailing_blanks_dropped(named, extras.problems, len(header))
    return XlsxSheet(names[index], header, rows, extras.problems, handoff, header_row + 1)


def _cut_cells_named(
    rows: Iterator[list[Any]], problems: dict[int, list[tuple[int, str]]], first: int, left: int
) -> Iterator[list[Any]]:
    """``rows`` as they are, each text cell of :data:`EXCEL_CELL_LIMIT` characters named a
    problem of its row (in ``problems``, by data row): its text may have been cut, and a
    row is never sent cut."""
    for number, row in enumerate(rows):
        for col, cell in enumerate(row):
            if type(cell) is str and len(cell) == EXCEL_CELL_LIMIT:
                where = f"{column_letters(left + col)}{first + number + 1}"
                problems.setdefault(number, []).append(
                    (
                        col,
                        f"cell {where} holds {EXCEL_CELL_LIMIT:,} characters, the most a "
                        "workbook cell is read with: its text may have been cut (send longer "
                        "text from a .csv or .jsonl)",
                    )
                )
        yield row


def _trailing_blanks_dropped(
    rows: Iterator[list[Any]], unread: Collection[int], width: int
) -> Iterator[list[Any]]:
    """``rows`` without those at the end whose every cell shows nothing (empty, or spaces:
    cells filled down below the table). A blank row is held back until a row with a value
    follows. A row with a cell that could not be read (``unread``: data row numbers) is
    kept, so that it says so, even past the last row calamine returns (a formula without
    a computed value at the end is no value to it)."""
    held: list[list[Any]] = []
    number = -1
    for number, row in enumerate(rows):
        if number not in unread and all(cell == "" or _spaces(cell) for cell in row):
            held.append(row)
            continue
        if held:
            yield from held
            held.clear()
        yield row
    last = max(unread, default=-1)
    if last > number:
        yield from held
        for _ in range(number + 1, last + 1):
            yield [""] * width


def _spaces(cell: Any) -> bool:
    return type(cell) is str and cell.isspace()


def _title(
    row: list[Any], number: int, merged: list[tuple[tuple[int, int], tuple[int, int]]], left: int
) -> bool:
    """Whether row ``number`` (0-based) is a title: all its values in one merged range
    across columns (a header names each column in a cell of its own)."""
    used = [left + col for col, cell in enumerate(row) if cell != ""]
    return any(
        r0 <= number <= r1 and c1 > c0 and c0 <= used[0] and used[-1] <= c1
        for (r0, c0), (r1, c1) in merged
    )


def _whole(rows: Iterator[list[Any]]) -> Iterator[list[Any]]:
    """Excel keeps every number as a double: a whole one is an int (7, not 7.0) in JSON."""
    for row in rows:
        yield [
            int(cell) if type(cell) is float and cell.is_integer() and abs(cell) < 2**53 else cell
            for cell in row
        ]


def _filled(
    rows: list[list[Any]],
    merged: list[tuple[tuple[int, int], tuple[int, int]]],
    top: int,
    left: int,
) -> list[list[Any]]:
    for (first_row, first_col), (last_row, last_col) in merged:
        r0, c0 = first_row - top, first_col - left
        if not (0 <= r0 < len(rows) and 0 <= c0 < len(rows[r0])):
            continue
        value = rows[r0][c0]
        for r in range(r0, min(last_row - top, len(rows) - 1) + 1):
            row = rows[r]
            for c in range(c0, min(last_col - left, len(row) - 1) + 1):
                row[c] = value
    return rows


def _sheet_index(
    path: Path,
    names: list[str],
    visible: list[bool],
    sheet: str | int | None,
    tables: list[bool] | None = None,
) -> int:
    """The sheet to read: ``--sheet``'s, else the first visible worksheet (``tables``: which
    sheets are worksheets, not chart sheets), else the first worksheet."""
    if not names:
        raise InputError(path, "has no worksheets")
    if sheet is None:
        tables = tables or [True] * len(names)
        shown = [i for i, table in enumerate(tables) if table and visible[i]]
        return next(iter(shown), tables.index(True) if any(tables) else 0)
    if isinstance(sheet, int):
        if 0 <= sheet < len(names):
            return sheet
    elif sheet in names:
        return names.index(sheet)
    else:
        wanted = sheet.strip().casefold()
        folded = [i for i, name in enumerate(names) if name.strip().casefold() == wanted]
        if len(folded) == 1:
            return folded[0]
        if sheet.strip().isascii() and sheet.strip().isdigit() and int(sheet) < len(names):
            return int(sheet)
    listing = ", ".join(
        f"{i}: {name!r}" + ("" if shown else " (hidden)")
        for i, (name, shown) in enumerate(zip(names, visible, strict=True))
    )
    raise InputError(path, f"has no sheet {sheet!r} (--sheet); its sheets are {listing}")


# --- what calamine does not say: formats, hidden rows, error and formula cells ------------
