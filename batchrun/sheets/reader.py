"""Read an input sheet (.csv, .tsv, .xlsx/.xlsm, .jsonl, .parquet) as a table of text cells.

    frame = read_sheet(Path("jobs.csv"))                  # the whole sheet
    headers, chunks = iter_sheet(Path("big.csv"))         # or chunk by chunk
    for chunk in chunks: ...
    headers, rows = read_rows(Path("jobs.csv"))           # lists of cells, without pandas
    sheet = open_sheet(Path("jobs.xlsx"))                 # cell values as they came, typed

What comes back as text, whatever the format (``open_sheet`` keeps each value as it came,
for writing it back typed, and gives the same text through ``Sheet.text_rows``):

- Every column has ``object`` dtype and every cell is a Python ``str``; an empty cell is
  ``""``, never NaN or None. Nothing is guessed: ``00123``, ``1e5``, ``TRUE``, ``NA`` and
  ``null`` stay the text they are.
- Column labels are the header cells exactly as written. A header cell that is empty (or
  only spaces) is named ``column_N``, N its 1-based position. Two headers that are equal
  after trimming and casefolding are an :class:`InputError`, since callers match headers
  that way.
- The index counts data rows from 0, continuing across chunks.
- Row numbers in messages count records as a spreadsheet shows them: the header is row 1.
  Line numbers (encoding and JSONL problems) count physical lines of the file.

Per format:

- CSV/TSV: UTF-8 with or without a BOM, or the ``encoding`` given, separated by the
  ``delimiter`` given (else ``,``/tab), the header at ``header_row``; standard quoting
  (``"`` doubled inside quotes), read by the standard library's csv module (one parser
  for every command). Blank and whitespace-only lines are skipped, except that in a
  one-column sheet a line of spaces is a row; rows of only delimiters at the end are
  dropped. A row with fewer cells than the header is padded with ``""``; one with more, a
  quoted cell never closed, or text after a closing quote is an error naming the row. A
  NUL byte, UTF-16 or invalid UTF-8 is refused before any row is returned, so a
  streaming caller never acts on half a file; a header that is one cell holding ``;`` is
  refused naming ``--delimiter``.
- XLSX/XLSM: see :mod:`batchrun.sheets.xlsx_reader` (cells as Excel shows them; the first
  visible sheet by default; merged ranges filled).
- JSONL: one JSON object per line, blank lines skipped. Columns are the keys in first-seen
  order across all lines (the file is read twice when streamed). A string value is the
  cell; ``null`` or a missing key is an empty cell; any other value becomes its compact
  JSON text (``true``, ``0.7``, ``{"a":1}``).
"""

from __future__ import annotations

import itertools
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchrun.errors import InputError, UsageError
from batchrun.sheets.cells import arrow_cell_text, excel_cell_text, json_cell_text
from batchrun.sheets.delimited import (
    check_utf8_text,
    csv_header,
    csv_records,
    csv_rows,
    csv_style,
)
from batchrun.sheets.formats import Format, input_format
from batchrun.sheets.handoff import HandOff
from batchrun.sheets.jsonl import jsonl_keys, jsonl_rows
from batchrun.sheets.xlsx_reader import open_xlsx_sheet

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "Sheet",
    "batched",
    "checked_headers",
    "columns_of",
    "iter_rows",
    "iter_sheet",
    "open_sheet",
    "read_rows",
    "read_sheet",
    "sheet_format",
    "text_rows",
]

DEFAULT_CHUNK_ROWS = 50_000
PREVIEW_ROWS = 20


def sheet_format(path: Path) -> str:
    """Return "csv", "tsv", "xlsx", "jsonl" or "parquet" from the file's extension."""
    return input_format(path).name


def read_sheet(path: Path, sheet: str | int | None = None) -> pd.DataFrame:
    """Read a whole sheet as a frame of text cells (see the module docstring)."""
    headers, chunks = iter_sheet(path, sheet)
    frames = list(chunks)  # chunk by chunk: one copy of the cells at a time
    if len(frames) == 1:
        return frames[0]
    if not frames:
        return _frame([[] for _ in headers], headers, 0)
    import pandas as pd

    return pd.concat(frames)


def read_rows(path: Path, sheet: str | int | None = None) -> tuple[list[str], list[list[str]]]:
    """Read a whole sheet as its headers and its rows of text cells; pandas is not used."""
    headers, rows = iter_rows(path, sheet)
    return headers, list(rows)


def iter_sheet(
    path: Path, sheet: str | int | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> tuple[list[str], Iterator[pd.DataFrame]]:
    """Return the headers and an iterator of frames of at most ``chunk_rows`` rows.

    File-level problems (missing, not UTF-8, bad header, unknown sheet) raise here; a
    problem further down a CSV (a ragged row) raises from the iterator.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    headers, rows = iter_rows(path, sheet)
    return headers, _row_chunks(rows, headers, chunk_rows)


@dataclass(slots=True)
class Sheet:
    """An open input sheet: its header, its rows of cell values as they came, and how to
    read those values as text.

    ``rows`` hold ``str`` cells for CSV/TSV; calamine's values for .xlsx (numbers, dates,
    booleans); JSON values for .jsonl (None for null). :meth:`text_rows` gives the text
    every format is assembled from.
    """

    path: Path
    format: Format
    headers: list[str]
    rows: Iterator[list[Any]]
    name: str | None = None  # the worksheet of an .xlsx input
    # Data row (0-based) -> [(column, problem)]: cells that could not be read (.xlsx).
    cell_problems: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    # How the input was laid out, for an output handed back the same way.
    handoff: HandOff = field(default_factory=HandOff)
    # The first rows below the header, as (row number a spreadsheet shows, text cells):
    # where a header lower down can be found when this one names nothing needed.
    preview: list[tuple[int, list[str]]] = field(default_factory=list)
    # The first row of each other visible worksheet, by name, where the sheet read was
    # the default one: where the table may be when this sheet names nothing needed.
    other_headers: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def source(self) -> str:
        """How messages name the sheet: ``jobs.xlsx (sheet 'Data')``."""
        return f"{self.path} (sheet {self.name!r})" if self.name is not None else str(self.path)

    def text_rows(self, rows: Iterable[list[Any]] | None = None) -> Iterator[list[str]]:
        """``rows`` (default: the sheet's own) as rows of text cells."""
        return text_rows(self.format, self.rows if rows is None else rows)


def _first_row(rows: list[list[Any]]) -> list[str]:
    """The first row of a worksheet that holds a value, as text cells."""
    for row in rows:
        cells = [excel_cell_text(cell) for cell in row]
        if any(cell.strip() for cell in cells):
            return cells
    return []


def text_rows(fmt: Format, rows: Iterable[list[Any]]) -> Iterator[list[str]]:
    """Rows of cell values read from a ``fmt`` sheet, as rows of text cells."""
    to_text = CELL_TEXT.get(fmt.name)
    if to_text is None:
        return iter(rows)  # CSV/TSV cells are text already
    return ([to_text(cell) for cell in row] for row in rows)


CELL_TEXT: dict[str, Callable[[Any], str]] = {
    "xlsx": excel_cell_text,
    "jsonl": json_cell_text,
    "parquet": arrow_cell_text,
}


def open_sheet(
    path: Path,
    sheet: str | int | None = None,
    *,
    delimiter: str | None = None,
    encoding: str | None = None,
    header_row: int | None = None,
) -> Sheet:
    """Open an input sheet; file-level problems raise here (see :func:`iter_sheet`).

    ``delimiter`` and ``encoding`` read a CSV/TSV saved otherwise than as UTF-8 with
    commas (tabs); ``header_row`` (1-based, as a spreadsheet numbers rows) names the header
    row of a sheet with a title above its table.
    """
    fmt = _checked_format(path)
    if sheet is not None and fmt.name != "xlsx":
        raise UsageError(f"--sheet applies to .xlsx/.xlsm input, not {path.suffix} ({path})")
    for flag, value in (("--delimiter", delimiter), ("--encoding", encoding)):
        if value is not None and fmt.delimiter is None:
            raise UsageError(f"{flag} applies to .csv/.tsv input, not {path.suffix} ({path})")
    if header_row is not None and fmt.name in ("jsonl", "parquet"):
        raise UsageError(
            f"--header-row applies to .csv/.tsv/.xlsx input, not {path.suffix} ({path})"
        )
    if fmt.name == "xlsx":
        found = open_xlsx_sheet(path, sheet, header_row)
        headers = checked_headers(path, found.header)
        peeked = list(itertools.islice(found.rows, PREVIEW_ROWS))
        preview = [
            (found.header_number + 1 + i, [excel_cell_text(cell) for cell in row])
            for i, row in enumerate(peeked)
        ]
        others = [] if sheet is not None else found.handoff.other_sheets
        return Sheet(
            path,
            fmt,
            headers,
            itertools.chain(peeked, found.rows),
            found.name,
            found.cell_problems,
            found.handoff,
            preview,
            [(other.name, _first_row(other.rows)) for other in others if not other.hidden],
        )
    if fmt.name == "parquet":
        from batchrun.sheets.parquet import open_parquet

        names, schema, rows = open_parquet(path)
        handoff = HandOff(arrow_schema=schema)
        return Sheet(path, fmt, checked_headers(path, names), rows, handoff=handoff)
    if encoding is None:
        check_utf8_text(path)
    if fmt.name == "jsonl":
        keys = jsonl_keys(path)
        return Sheet(path, fmt, checked_headers(path, keys), jsonl_rows(path, keys))
    sep = delimiter or fmt.delimiter or ","
    top = header_row or 1
    raw = csv_header(path, sep, encoding=encoding, header_row=top)
    if header_row is None and (said := EXCEL_SEP_LINE.fullmatch(sep.join(raw).strip())):
        # Excel's "sep=;" line above the header names the separator (and is no header).
        delimiter, top = delimiter or said[1], 2
        sep = delimiter
        raw = csv_header(path, sep, encoding=encoding, header_row=top)
    if delimiter is None:
        _refuse_other_separator(path, raw, sep)
    headers = checked_headers(path, raw)
    bom, line_end = csv_style(path)
    # Read with --encoding, the output is UTF-8 with a BOM: its results may hold any
    # character, and the BOM tells Excel it is UTF-8.
    handoff = HandOff(bom=bom or encoding is not None, line_end=line_end, delimiter=delimiter)
    rows = csv_rows(path, sep, len(headers), encoding=encoding, header_row=top)
    preview = csv_records(path, sep, encoding, top, PREVIEW_ROWS)
    return Sheet(path, fmt, headers, rows, handoff=handoff, preview=preview)


# The line Excel writes (and reads) above a CSV's header to name its separator.
EXCEL_SEP_LINE = re.compile(r"sep=(.)", re.IGNORECASE)


def _refuse_other_separator(path: Path, header: list[str], sep: str) -> None:
    """A header that is one cell holding ``;`` (or a tab, or ``,`` in a .tsv) is a file
    separated otherwise: say which ``--delimiter`` reads it."""
    if len(header) != 1:
        return
    for other, shown in ((";", ";"), ("\t", "tab"), (",", ","), ("|", "|")):
        parts = [part for part in header[0].split(other) if part.strip()]
        if other != sep and len(parts) > 1:
            raise InputError(
                path,
                f"its header is one cell, {header[0]!r}, so the file is separated by"
                f" {shown!r} (as Excel saves CSV in some languages): pass --delimiter"
                f" {'tab' if other == chr(9) else repr(other)}",
            )


def iter_rows(path: Path, sheet: str | int | None = None) -> tuple[list[str], Iterator[list[str]]]:
    """Return the headers and an iterator of rows, each a list of text cells as wide as the
    header. Problems are raised as :func:`iter_sheet` raises them."""
    opened = open_sheet(path, sheet)
    return opened.headers, opened.text_rows()


def checked_headers(path: Path, raw: Sequence[str]) -> list[str]:
    """Name empty header cells ``column_N`` and refuse duplicates (trimmed, casefolded)."""
    names = [name if name.strip() else f"column_{i}" for i, name in enumerate(raw, start=1)]
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(names, start=1):
        positions.setdefault(name.strip().casefold(), []).append(i)
    clashes = [found for found in positions.values() if len(found) > 1]
    if clashes:
        described = "; ".join(
            f"{names[found[0] - 1].strip()!r} (columns {', '.join(map(str, found))})"
            for found in clashes
        )
        raise InputError(
            path, f"duplicate column names, compared ignoring case and spaces: {described}"
        )
    return names


def _checked_format(path: Path) -> Format:
    try:
        status = path.stat()
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(status.st_mode):
        raise InputError(path, "is a directory, not a sheet file")
    fmt = input_format(path)
    if status.st_size == 0:
        raise InputError(path, "is empty (no header row)")
    return fmt


# --- shared --------------------------------------------------------------------------------


def _row_chunks(
    rows: Iterator[list[str]], headers: list[str], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    start = 0
    for batch in batched(rows, chunk_rows):
        yield _frame(columns_of(batch, len(headers)), headers, start)
        start += len(batch)


def batched(rows: Iterator[list[str]], size: int) -> Iterator[list[list[str]]]:
    """Lists of at most ``size`` rows (itertools.batched, from Python 3.12, gives tuples)."""
    while batch := list(itertools.islice(rows, size)):
        yield batch


def columns_of(rows: list[list[str]], width: int) -> list[list[str]]:
    """Rows of ``width`` cells turned into ``width`` columns of cells."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


def _frame(columns: list[list[str]], headers: list[str], start: int) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    # dtype=object: pandas 3 would otherwise infer its "str" dtype from lists of str, and
    # the CSV path gives object columns; callers get one dtype whatever the format.
    data = {
        name: np.array(column, dtype=object) for name, column in zip(headers, columns, strict=True)
    }
    frame = pd.DataFrame(data, dtype=object, columns=pd.Index(headers, dtype=object))
    frame.index = pd.RangeIndex(start, start + len(frame))
    return frame
