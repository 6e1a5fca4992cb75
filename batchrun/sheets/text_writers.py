"""The CSV/TSV and JSONL outputs: text streams written to a staged file beside the target,
renamed onto it on close, dropped on abort (see :mod:`batchrun.sheets.writer`).

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
"""

from __future__ import annotations

import csv
import datetime
import json
from pathlib import Path
from typing import IO, Any

import orjson

from batchrun.atomic import StagedFile
from batchrun.sheets.cells import (
    PLAIN_NUMBER,
    JsonNumber,
    excel_cell_text,
    json_fragment,
    number_texts,
)
from batchrun.sheets.handoff import HandOff
from batchrun.sheets.xlsx_summary import Summary

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


class StagedStream:
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


class DelimitedWriter(StagedStream):
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


class JsonlWriter(StagedStream):
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
                write(_jsonl_line(record))


_JSONL_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_PASSTHROUGH_SUBCLASS


def _jsonl_line(record: dict[str, Any]) -> bytes:
    """A line orjson refused, written by orjson all the same: integers beyond 64 bits as
    their digits, text holding lone surrogates (no UTF-8 holds them) as the json module
    escapes it (``\\udXXX``), each as a fragment, so a number beyond a double beside them
    stays a number."""
    exact = {key: _fragment(value) for key, value in record.items()}
    try:
        return orjson.dumps(exact, default=_json_default, option=_JSONL_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):  # a lone surrogate in a key of a value
        return json.dumps(record, default=_json_default).encode() + b"\n"


def _fragment(value: Any) -> Any:
    """``value`` with what orjson refuses, nested too, as fragments of exact JSON."""
    if type(value) is int:
        return orjson.Fragment(str(value))
    if isinstance(value, str) and not isinstance(value, JsonNumber):
        try:
            value.encode()
        except UnicodeEncodeError:
            return orjson.Fragment(json.dumps(value))
    if isinstance(value, dict):
        return {key: _fragment(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_fragment(item) for item in value]
    return value


def _json_default(value: object) -> object:
    """A typed input cell JSON has no type for: dates and times as their ISO text; a
    number beyond a double as written."""
    if isinstance(value, datetime.date | datetime.time | datetime.timedelta):
        return excel_cell_text(value)
    return json_fragment(value)
