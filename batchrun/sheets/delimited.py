"""CSV/TSV input: UTF-8 checked up front, rows by the standard library's csv module.

``--encoding NAME`` reads another encoding as it is (a leading UTF-8 byte order mark is
skipped whatever the encoding), ``--delimiter CHAR`` another separator, and
``--header-row N`` takes the header from record N (counted as a spreadsheet shows the
file: blank lines count), skipping a title above the table.

Blank and whitespace-only lines are skipped, except that in a one-column sheet a line of
spaces is a row. Rows of only delimiters at the end of the file (Excel leaves them) are
dropped. A row with fewer cells than the header is padded with ``""``; one with more, a
quoted cell never closed, or text after a closing quote is an error naming the row. A NUL
byte, UTF-16 or invalid UTF-8 is refused before any row is returned, so a streaming
caller never acts on half a file.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Generator
from pathlib import Path
from typing import IO, BinaryIO

from batchrun.errors import InputError

__all__ = [
    "check_utf8_text",
    "csv_header",
    "csv_records",
    "csv_rows",
    "csv_style",
    "open_binary",
]

_BLOCK = 1 << 20
ENCODING_HINT = (
    ": pass its encoding, e.g. --encoding cp1252 (what Excel on Windows saves as CSV)"
    " or --encoding latin-1, or save it as UTF-8"
)


def csv_style(path: Path) -> tuple[bool, str]:
    """Whether the file starts with a UTF-8 byte order mark, and its line end."""
    with open_binary(path) as f:
        start = f.read(1 << 16)
    first = start.find(b"\n")
    return start.startswith(codecs.BOM_UTF8), "\r\n" if first > 0 and start[
        first - 1
    ] == 13 else "\n"


def _open_text(path: Path, encoding: str | None) -> IO[str]:
    """The file as text: UTF-8 (BOM or not), or ``encoding`` after a UTF-8 BOM, if any."""
    if encoding is None:
        return path.open(encoding="utf-8-sig", newline="")
    import io

    raw = open_binary(path)
    wide = codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    if not wide and raw.read(3) != codecs.BOM_UTF8:
        raw.seek(0)
    return io.TextIOWrapper(raw, encoding=encoding, newline="")


def open_binary(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror})") from None


def check_utf8_text(path: Path) -> None:
    # One fast pass (about 1 GB/s) so that a bad byte on line 900,000 stops the job before
    # the first row is used, and so the message can name the line.
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines_before = 0
    with open_binary(path) as f:
        first = f.read(2)
        if first in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            raise InputError(path, "is UTF-16 text: pass --encoding utf-16, or save it as UTF-8")
        f.seek(0)
        while block := f.read(_BLOCK):
            nul = block.find(b"\x00")
            if nul >= 0:
                line = lines_before + block.count(b"\n", 0, nul) + 1
                raise InputError(
                    path,
                    f"has a NUL byte on line {line}: it is binary or UTF-16, not UTF-8 text"
                    " (for UTF-16, pass --encoding utf-16)",
                )
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                line = lines_before + block.count(b"\n", 0, max(exc.start, 0)) + 1
                raise InputError(path, f"is not UTF-8 text (line {line}){ENCODING_HINT}") from None
            lines_before += block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError(
                path, f"is not UTF-8 text (line {lines_before + 1}){ENCODING_HINT}"
            ) from None


def csv_rows(
    path: Path,
    sep: str,
    width: int | None,
    *,
    encoding: str | None = None,
    header_row: int = 1,
) -> Generator[list[str]]:
    """The header (``width`` None) or the rows below it, each as wide as the header.

    Blank lines and lines of only spaces are skipped, except below the header of a
    one-column sheet (``width`` 1), where such a line is a row whose one cell is spaces.
    Rows whose every cell is empty or spaces are held back and dropped if no row with a
    value follows (Excel leaves lines of only commas at the end of a CSV it saves).
    Row numbers in errors count records; the header is row 1.
    """
    csv.field_size_limit(2**31 - 1)
    number = header_row - 1  # records so far (those above the header all count)
    held: list[list[str]] = []  # empty rows that are not yet known to be trailing
    keep_empty = width == 1  # one-column files quote every cell: an empty row is a row
    with _open_text(path, encoding) as stream:
        try:
            records = csv.reader(stream, delimiter=sep, strict=True)
            above = 0
            while above < header_row - 1:  # the title rows above the header are skipped
                if next(records, None) is None:
                    raise InputError(path, f"has no row {header_row} (--header-row)")
                above += 1
            for record in records:
                size = len(record)
                if size == width and number >= header_row:
                    number += 1  # the common case: a full row below the header
                    if keep_empty or any(cell and not cell.isspace() for cell in record):
                        if held:
                            yield from held
                            held.clear()
                        yield record
                    else:
                        held.append(record)
                    continue
                if not record or (
                    size == 1 and not record[0].strip() and (width != 1 or number < header_row)
                ):
                    continue
                number += 1
                if width is None:
                    yield record  # the header
                    return
                if number == header_row:
                    continue  # the header
                if size > width:
                    raise InputError(
                        path, f"row {number} has {size} cells but the header has {width}"
                    )
                row = record + [""] * (width - size)
                if any(record) or keep_empty:
                    if held:
                        yield from held
                        held.clear()
                    yield row
                else:
                    held.append(row)
        except UnicodeDecodeError:
            raise InputError(
                path, f"row {number + 1} is not {encoding} text (check --encoding)"
            ) from None
        except csv.Error as exc:
            if "end of data" in str(exc):
                problem = "a quoted cell is never closed"
            elif "expected after" in str(exc):
                problem = "a quoted cell has text after its closing quote"
            else:
                raise InputError(path, f"is not readable as delimited text ({exc})") from None
            raise InputError(path, f"row {number + 1}: {problem}") from None


def csv_records(
    path: Path, sep: str, encoding: str | None, header_row: int, count: int
) -> list[tuple[int, list[str]]]:
    """Up to ``count`` records below record ``header_row``, with their record numbers
    (blank lines count, as a spreadsheet shows the file); [] where they cannot be read."""
    found: list[tuple[int, list[str]]] = []
    try:
        with _open_text(path, encoding) as stream:
            for number, record in enumerate(csv.reader(stream, delimiter=sep), start=1):
                if number > header_row + count:
                    break
                if number > header_row:
                    found.append((number, record))
    except (csv.Error, UnicodeDecodeError, InputError):
        return found
    return found


def csv_header(
    path: Path, sep: str, *, encoding: str | None = None, header_row: int = 1
) -> list[str]:
    records = csv_rows(path, sep, None, encoding=encoding, header_row=header_row)
    try:
        return next(records)
    except StopIteration:
        raise InputError(path, "is empty (no header row)") from None
    finally:
        records.close()
