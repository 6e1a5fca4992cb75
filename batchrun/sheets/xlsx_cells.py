"""What an .xlsx cell can hold: the characters no .xlsx can hold escaped, text beyond
Excel's 32,767-character cell limit cut with a visible marker, and the file beside the
output that keeps such cells whole (:class:`FullTexts`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import IO

import orjson

from batchrun.atomic import StagedFile

EXCEL_CELL_LIMIT = 32_767
MAX_COLUMN_WIDTH = 60
# What xlsxwriter cannot write: lone surrogates (not UTF-8) and the two non-characters XML
# forbids. Control characters it writes itself as Excel's ``_xHHHH_`` escapes, which Excel
# and readers turn back into the characters.
ILLEGAL = re.compile("[\ud800-\udfff\ufffe\uffff]")


def excel_text(text: str) -> str:
    r"""Return ``text`` with the characters an .xlsx cannot hold escaped (``"\ud800"`` ->
    ``\ud800``); control characters are left to xlsxwriter, which keeps them."""
    return ILLEGAL.sub(_escape_match, text) if ILLEGAL.search(text) else text


def _escape_match(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\u{code:04x}"


def fit_excel_cell(text: str, marker_note: str = "") -> str | None:
    """Return ``text`` cut to Excel's cell limit with a visible marker, or None if it fits."""
    if len(text) <= EXCEL_CELL_LIMIT // 2 or _utf16_len(text) <= EXCEL_CELL_LIMIT:
        return None
    marker = f"… [cut: {len(text):,} chars{marker_note}]"
    room = EXCEL_CELL_LIMIT - _utf16_len(marker)
    units = text.encode("utf-16-le")[: room * 2]
    if len(units) >= 2 and 0xD8 <= units[-1] <= 0xDB:
        units = units[:-2]  # never split a surrogate pair
    return units.decode("utf-16-le") + marker


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def full_text_path(path: Path) -> Path:
    """``out.xlsx`` -> ``out.full.jsonl``: where cells too long for Excel are kept whole."""
    return path.with_name(f"{path.stem}.full.jsonl")


class FullTexts:
    """The cells an .xlsx output cut, kept whole beside it (``out.full.jsonl``): one line
    ``{"row": R, "column": NAME, "text": ...}`` a cell, staged until :meth:`commit`."""

    def __init__(self, output: Path) -> None:
        self.path = full_text_path(output)
        self._staged: StagedFile | None = None
        self._file: IO[bytes] | None = None

    def keep(self, row: int, column: str, text: str) -> None:
        """Keep the whole ``text`` of the cell at ``row`` (as Excel numbers it) of ``column``."""
        if self._file is None:
            self._staged = StagedFile(self.path)
            # Kept open across write_columns() calls, closed by commit()/discard().
            self._file = open(self._staged.temp, "wb")  # noqa: SIM115
        record = {"row": row, "column": column, "text": text}
        try:
            line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:
            # Lone surrogates: the standard library writes them as \\udXXX escapes.
            line = (json.dumps(record) + "\n").encode()
        self._file.write(line)

    def commit(self) -> None:
        """Move the file onto its target (if a cell was kept)."""
        if self._staged is not None and self._file is not None:
            self._file.close()
            self._staged.commit()

    def remove_stale(self) -> None:
        """With no cell kept, remove the file an earlier output left: it would describe
        cells this one lacks."""
        if self._staged is None:
            self.path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Drop what was kept; a file from an earlier run stays untouched."""
        if self._file is not None:
            self._file.close()
        if self._staged is not None:
            self._staged.discard()
