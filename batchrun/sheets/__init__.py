"""Sheets in and out: one format registry, one set of cell rules, a reader and a writer.

- :mod:`~batchrun.sheets.formats` — suffix -> format, and what each format can do.
- :mod:`~batchrun.sheets.cells` — every value <-> text rule.
- :mod:`~batchrun.sheets.reader` (with :mod:`~batchrun.sheets.xlsx_reader`) — input sheets.
- :mod:`~batchrun.sheets.writer` (with :mod:`~batchrun.sheets.xlsx_writer`) — outputs.
"""

from __future__ import annotations

from batchrun.sheets.reader import (
    DEFAULT_CHUNK_ROWS,
    batched,
    checked_headers,
    columns_of,
    iter_rows,
    iter_sheet,
    read_rows,
    read_sheet,
    sheet_format,
)

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
