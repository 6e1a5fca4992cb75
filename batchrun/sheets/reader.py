"""Read an input sheet (.csv, .tsv, .xlsx/.xlsm, .jsonl) as a table of text cells.

    frame = read_sheet(Path("jobs.csv"))                  # the whole sheet
    headers, chunks = iter_sheet(Path("big.csv"))         # or chunk by chunk
    for chunk in chunks: ...
    headers, rows = read_rows(Path("jobs.csv"))           # lists of cells, without pandas

What comes back, whatever the format:

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

- CSV/TSV: UTF-8 with or without a BOM; standard quoting (``"`` doubled inside quotes),
  read by the standard library's csv module (one parser for every command). Blank and
  whitespace-only lines are skipped, except that in a one-column sheet a line of spaces is
  a row. A row with fewer cells than the header is padded with ``""``; one with more, a
  quoted cell never closed, or text after a closing quote is an error naming the row. A
  NUL byte, UTF-16 or invalid UTF-8 is refused before any row is returned, so a streaming
  caller never acts on half a file.
- XLSX/XLSM: see :mod:`batchrun.sheets.xlsx_reader` (cells as Excel shows them).
- JSONL: one JSON object per line, blank lines skipped. Columns are the keys in first-seen
  order across all lines (the file is read twice when streamed). A string value is the
  cell; ``null`` or a missing key is an empty cell; any other value becomes its compact
  JSON text (``true``, ``0.7``, ``{"a":1}``).
"""

from __future__ import annotations

import codecs
import csv
import itertools
import json
import re
import stat
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from batchrun.errors import InputError, UsageError
from batchrun.sheets.cells import json_cell_text
from batchrun.sheets.formats import input_format
from batchrun.sheets.xlsx_reader import open_xlsx_sheet

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "batched",
    "checked_headers",
    "columns_of",
    "iter_rows",
    "iter_sheet",
    "read_rows",
    "read_sheet",
    "sheet_format",
]

DEFAULT_CHUNK_ROWS = 50_000
_BLOCK = 1 << 20
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def sheet_format(path: Path) -> str:
    """Return "csv", "tsv", "xlsx" or "jsonl" from the file's extension."""
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


def iter_rows(path: Path, sheet: str | int | None = None) -> tuple[list[str], Iterator[list[str]]]:
    """Return the headers and an iterator of rows, each a list of text cells as wide as the
    header. Problems are raised as :func:`iter_sheet` raises them."""
    fmt = _checked_format(path)
    if sheet is not None and fmt != "xlsx":
        raise UsageError(f"--sheet applies to .xlsx/.xlsm input, not {path.suffix} ({path})")
    if fmt == "xlsx":
        raw, rows = open_xlsx_sheet(path, sheet)
        return checked_headers(path, raw), rows
    _check_utf8_text(path)
    if fmt == "jsonl":
        keys = _jsonl_keys(path)
        return checked_headers(path, keys), _jsonl_rows(path, keys)
    sep = "\t" if fmt == "tsv" else ","
    headers = checked_headers(path, _csv_header(path, sep))
    return headers, _csv_rows(path, sep, len(headers))


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


def _checked_format(path: Path) -> str:
    try:
        status = path.stat()
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(status.st_mode):
        raise InputError(path, "is a directory, not a sheet file")
    fmt = sheet_format(path)
    if status.st_size == 0:
        raise InputError(path, "is empty (no header row)")
    return fmt


def _open_binary(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})") from None


def _check_utf8_text(path: Path) -> None:
    # One fast pass (about 1 GB/s) so that a bad byte on line 900,000 stops the job before
    # the first row is used, and so the message can name the line.
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines_before = 0
    with _open_binary(path) as f:
        first = f.read(2)
        if first in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            raise InputError(path, "is UTF-16 text: save it as UTF-8")
        f.seek(0)
        while block := f.read(_BLOCK):
            nul = block.find(b"\x00")
            if nul >= 0:
                line = lines_before + block.count(b"\n", 0, nul) + 1
                raise InputError(
                    path, f"has a NUL byte on line {line}: it is binary or UTF-16, not UTF-8 text"
                )
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                line = lines_before + block.count(b"\n", 0, max(exc.start, 0)) + 1
                raise InputError(
                    path, f"is not UTF-8 text (line {line}): save it as UTF-8"
                ) from None
            lines_before += block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError(
                path, f"is not UTF-8 text (line {lines_before + 1}): save it as UTF-8"
            ) from None


# --- CSV and TSV --------------------------------------------------------------------------


def _csv_rows(path: Path, sep: str, width: int | None) -> Generator[list[str]]:
    """The header (``width`` None) or the rows below it, each as wide as the header.

    Blank lines and lines of only spaces are skipped, except below the header of a
    one-column sheet (``width`` 1), where such a line is a row whose one cell is spaces.
    Row numbers in errors count records; the header is row 1.
    """
    csv.field_size_limit(2**31 - 1)
    number = 0  # records so far
    with path.open(encoding="utf-8-sig", newline="") as stream:
        try:
            for record in csv.reader(stream, delimiter=sep, strict=True):
                size = len(record)
                if size == width and number:
                    number += 1  # the common case: a full row below the header
                    yield record
                    continue
                if not record or (
                    size == 1 and not record[0].strip() and (width != 1 or not number)
                ):
                    continue
                number += 1
                if width is None:
                    yield record  # the header
                    return
                if number == 1:
                    continue  # the header
                if size > width:
                    raise InputError(
                        path, f"row {number} has {size} cells but the header has {width}"
                    )
                yield record + [""] * (width - size)
        except csv.Error as exc:
            if "end of data" in str(exc):
                problem = "a quoted cell is never closed"
            elif "expected after" in str(exc):
                problem = "a quoted cell has text after its closing quote"
            else:
                raise InputError(path, f"is not readable as delimited text ({exc})") from None
            raise InputError(path, f"row {number + 1}: {problem}") from None


def _csv_header(path: Path, sep: str) -> list[str]:
    records = _csv_rows(path, sep, None)
    try:
        return next(records)
    except StopIteration:
        raise InputError(path, "is empty (no header row)") from None
    finally:
        records.close()


# --- JSONL ---------------------------------------------------------------------------------


def _jsonl_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            line = raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw
            if line.strip():
                yield number, _json_object(path, number, line)


def _json_object(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        value = _parse_json(line)
    except ValueError as exc:
        detail = (
            f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else exc
        )
        raise InputError(path, f"line {number} is not valid JSON ({detail})") from None
    if not isinstance(value, dict):
        raise InputError(path, f"line {number} is not a JSON object (it is {_json_kind(value)})")
    return value


def _parse_json(line: bytes) -> object:
    # orjson is several times faster, but reads integers beyond 64 bits as floats (losing
    # digits) and refuses lone surrogate escapes, both valid JSON; the standard library
    # takes those, and gives the clearer message for invalid lines.
    if not _LONG_DIGITS.search(line):
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    return json.loads(line.decode("utf-8"), parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "null" if value is None else "a number"


def _jsonl_keys(path: Path) -> list[str]:
    keys: dict[str, None] = {}
    found = False
    for _, record in _jsonl_lines(path):
        found = True
        keys.update(dict.fromkeys(record))
    if not found:
        raise InputError(path, "is empty (no JSON objects)")
    return list(keys)


def _jsonl_rows(path: Path, keys: list[str]) -> Iterator[list[str]]:
    for _, record in _jsonl_lines(path):
        yield [json_cell_text(record.get(key)) for key in keys]


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
