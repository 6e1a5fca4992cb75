"""Read one worksheet of an .xlsx/.xlsm workbook: each cell's value, and its text as
Excel shows it.

python-calamine reads the file (an order of magnitude faster than openpyxl, and it
returns the value cached for formula cells). Cell values come back as calamine gives them
(str, float, int for whole numbers below 2^53, bool, date, datetime, time, timedelta;
``""`` when empty) so that the
writer can put them back typed; :func:`batchrun.sheets.cells.excel_cell_text` gives the
text body assembly reads. The rules of this reader:

- The default sheet is the first *visible* one. ``--sheet`` matches a name exactly, then
  ignoring case and spaces, and only then as a 0-based index (a sheet named ``2`` wins).
- The table starts at the first row that has a value: that row is the header.
- A merged range gives its value to every cell it covers, not only the top-left one.
- A formula cell reads as its cached value. A formula with no cached value (the file was
  written by a program that does not calculate) or with an error value (``#N/A``) is read
  as empty, and reported in :attr:`XlsxSheet.cell_problems` so that the row is not sent
  without its field.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from python_calamine import (
    CalamineError,
    CalamineWorkbook,
    PasswordError,
    SheetVisibleEnum,
)

from batchrun.errors import InputError
from batchrun.sheets.cells import excel_cell_text
from batchrun.sheets.handoff import HandOff

__all__ = ["XlsxSheet", "open_xlsx_sheet"]

_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_CELL_REF = re.compile(r"([A-Z]+)([0-9]+)")


@dataclass(slots=True)
class XlsxSheet:
    """One worksheet: header text, data rows of values, and cells that could not be read."""

    name: str
    header: list[str]
    rows: Iterator[list[Any]]
    # Data row (0-based) -> [(column, problem)] for formula cells without a usable value.
    cell_problems: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    handoff: HandOff = field(default_factory=HandOff)


def open_xlsx_sheet(
    path: Path, sheet: str | int | None, header_row: int | None = None
) -> XlsxSheet:
    """Open the chosen sheet; raises InputError for unreadable files and unknown sheets.

    ``header_row`` (1-based, as Excel numbers rows) names the header row; by default it is
    the first row with a value.
    """
    try:
        with CalamineWorkbook.from_path(str(path)) as workbook:
            names: list[str] = list(workbook.sheet_names)
            visible = [m.visible == SheetVisibleEnum.Visible for m in workbook.sheets_metadata]
            index = _sheet_index(path, names, visible, sheet)
            # The sheet's cells are loaded into memory here; the file can be closed.
            data = workbook.get_sheet_by_index(index)
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
        wanted = header_row + 1 == header_at if header_at else any(cell != "" for cell in row)
        if wanted:
            header = [excel_cell_text(cell) for cell in row]
            break
        above.append(row)
        header_row += 1
    else:
        if header_at:
            raise InputError(path, f"sheet {names[index]!r} has no row {header_at} (--header-row)")
        raise InputError(path, f"sheet {names[index]!r} is empty (no header row)")
    problems = _formula_problems(path, index, header_row, left)
    handoff = HandOff(sheet_name=names[index])
    return XlsxSheet(names[index], header, _whole(rows), problems, handoff)


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


def _sheet_index(path: Path, names: list[str], visible: list[bool], sheet: str | int | None) -> int:
    if not names:
        raise InputError(path, "has no worksheets")
    if sheet is None:
        return visible.index(True) if any(visible) else 0
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
    raise InputError(path, f"has no sheet {sheet!r}; its sheets are {listing}")


# --- formula cells without a usable value ---------------------------------------------------


def _formula_problems(
    path: Path, index: int, header_row: int, left: int
) -> dict[int, list[tuple[int, str]]]:
    """Formula cells of sheet ``index`` with no cached value or an error value.

    calamine reads both as empty; the sheet's XML says which they are. The XML is only
    parsed when it holds a formula or an error cell at all.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            part = _sheet_part(archive, index)
            if part is None:
                return {}
            with archive.open(part) as stream:
                if not _mentions_formulas(stream):
                    return {}
            with archive.open(part) as stream:
                found = _scan_cells(stream)
    except (OSError, zipfile.BadZipFile, KeyError, ElementTree.ParseError):
        return {}  # calamine read the file: whatever this extra look cannot read, skip
    problems: dict[int, list[tuple[int, str]]] = {}
    for (row, col), (ref, problem) in sorted(found.items()):
        if row > header_row:
            problems.setdefault(row - header_row - 1, []).append(
                (col - left, f"cell {ref} {problem}")
            )
    return problems


def _sheet_part(archive: zipfile.ZipFile, index: int) -> str | None:
    workbook = ElementTree.fromstring(archive.read("xl/workbook.xml"))
    sheets = workbook.findall(f"{_MAIN}sheets/{_MAIN}sheet")
    if index >= len(sheets):
        return None
    rel_id = sheets[index].get(f"{_REL}id")
    rels = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    for rel in rels:
        if rel.get("Id") == rel_id:
            target = rel.get("Target", "")
            return target.lstrip("/") if target.startswith("/") else f"xl/{target}"
    return None


def _mentions_formulas(stream: Any) -> bool:
    tail = b""
    while block := stream.read(1 << 20):
        text = tail + block
        if b"<f>" in text or b"<f " in text or b't="e"' in text:
            return True
        tail = text[-8:]
    return False


def _scan_cells(stream: Any) -> dict[tuple[int, int], tuple[str, str]]:
    found: dict[tuple[int, int], tuple[str, str]] = {}
    for _, element in ElementTree.iterparse(stream):
        if element.tag != f"{_MAIN}c":
            if element.tag == f"{_MAIN}row":
                element.clear()
            continue
        ref = element.get("r", "")
        formula = element.find(f"{_MAIN}f")
        value = element.find(f"{_MAIN}v")
        value_text = value.text if value is not None else None
        if element.get("t") == "e":
            problem = f"holds the error {value_text or '#VALUE!'}"
        elif formula is not None and not value_text and element.get("t") != "str":
            # (t="str" with an empty value is a formula whose result is the empty text)
            problem = "is a formula with no computed value (open and save the file in Excel)"
        else:
            continue
        match = _CELL_REF.fullmatch(ref)
        if match:
            found[(int(match.group(2)) - 1, _column_number(match.group(1)))] = (ref, problem)
    return found


def _column_number(letters: str) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + ord(letter) - 64
    return number - 1
