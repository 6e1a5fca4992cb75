"""Read one worksheet of an .xlsx/.xlsm workbook as text cells, as Excel shows them.

python-calamine reads the file (an order of magnitude faster than openpyxl, and it
returns the value cached for formula cells). Each cell becomes text:

- text as written; an empty cell, and a formula whose cached value is an error
  (``#N/A``, ``#DIV/0!``; calamine reports no value for those), is ``""``;
- a whole number without ``.0`` (``3``; ``-0`` is ``0``), other numbers rounded to the 15
  significant digits Excel displays (``0.1+0.2`` is ``0.3``), in the shortest form;
  number formats other than dates are not applied (``00123`` formatted from 123 is ``123``);
- ``TRUE``/``FALSE``;
- a date ``2024-05-01``, a date and time ``2024-05-01T13:45:00``, a time ``13:45:00``, a
  duration ``36:00:00`` (ISO 8601; hours may exceed 24).

The table starts at the first row that has a value: that row is the header.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from python_calamine import CalamineError, CalamineWorkbook, PasswordError

from batchrun.errors import InputError
from batchrun.sheets.cells import excel_cell_text

__all__ = ["open_xlsx_sheet"]


def open_xlsx_sheet(path: Path, sheet: str | int | None) -> tuple[list[str], Iterator[list[str]]]:
    """Return the header cells and an iterator of data rows of the chosen sheet, as text."""
    try:
        with CalamineWorkbook.from_path(str(path)) as workbook:
            names: list[str] = list(workbook.sheet_names)
            index = _sheet_index(path, names, sheet)
            # The sheet's cells are loaded into memory here; the file can be closed.
            data = workbook.get_sheet_by_index(index)
    except PasswordError:
        raise InputError(path, "is password-protected: save a copy without a password") from None
    except CalamineError as exc:
        detail = str(exc).strip() or type(exc).__name__
        raise InputError(path, f"is not a readable .xlsx workbook ({detail})") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})") from None
    rows = data.iter_rows()
    for row in rows:
        # Rows above the table (calamine may yield them as empty) are not the header.
        if any(cell != "" for cell in row):
            header = [excel_cell_text(cell) for cell in row]
            break
    else:
        raise InputError(path, f"sheet {names[index]!r} is empty (no header row)")
    return header, ([excel_cell_text(cell) for cell in row] for row in rows)


def _sheet_index(path: Path, names: list[str], sheet: str | int | None) -> int:
    if not names:
        raise InputError(path, "has no worksheets")
    if sheet is None:
        return 0
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
    listing = ", ".join(f"{i}: {name!r}" for i, name in enumerate(names))
    raise InputError(path, f"has no sheet {sheet!r}; its sheets are {listing}")
