"""What a worksheet's XML says beyond the values calamine reads: number formats, hidden
rows, error cells and formulas without a computed value (:func:`sheet_extras`), and the
cell references that name them.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from batchrun.sheets.handoff import GENERAL, CellFormats

_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_CELL_REF = re.compile(r"([A-Z]+)([0-9]+)")


@dataclass(slots=True)
class SheetExtras:
    """What the sheet's XML says beyond the values, positions relative to the table (data
    row 0 is the first row below the header, the header row -1)."""

    problems: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    formats: CellFormats = field(default_factory=CellFormats)
    hidden: set[int] = field(default_factory=set)
    errors: dict[tuple[int, int], str] = field(default_factory=dict)


def sheet_extras(path: Path, index: int, first: int, left: int) -> SheetExtras:
    """Number formats, hidden rows, error cells and formula cells without a value of sheet
    ``index``, whose first data row is ``first`` (0-based) and first column ``left``.

    calamine reads error cells and formulas without a cached value as empty, and says
    nothing of formats or hidden rows; the sheet's XML does. Formats and hidden rows are
    found by a scan of its tags (a million rows in seconds); the XML is parsed only when
    it holds formulas or error cells.
    """
    extras = SheetExtras()
    try:
        with zipfile.ZipFile(path) as archive:
            part = _sheet_part(archive, index)
            if part is None:
                return extras
            styles = _cell_formats(archive)
            with archive.open(part) as stream:
                layout, formulas = _what_is_there(stream, styles)
            if layout:
                with archive.open(part) as stream:
                    _scan_layout(stream, styles, extras, first, left)
            if formulas:
                with archive.open(part) as stream:
                    _scan_cells(stream, extras, first, left)
    except (OSError, zipfile.BadZipFile, KeyError, ValueError, ElementTree.ParseError):
        return SheetExtras()  # calamine read the file: whatever this extra look cannot read, skip
    return extras


def _cell_formats(archive: zipfile.ZipFile) -> list[int | str]:
    """The number format of each cell style (``s`` of a cell): a built-in id or a code."""
    try:
        root = ElementTree.fromstring(archive.read("xl/styles.xml"))
    except KeyError:
        return []
    codes = {
        int(item.get("numFmtId", "0")): item.get("formatCode", "")
        for item in root.iterfind(f"{_MAIN}numFmts/{_MAIN}numFmt")
    }
    found: list[int | str] = []
    for xf in root.iterfind(f"{_MAIN}cellXfs/{_MAIN}xf"):
        number = int(xf.get("numFmtId", "0") or 0)
        found.append(codes.get(number, number))
    return found


def _what_is_there(stream: Any, styles: list[int | str]) -> tuple[bool, bool]:
    """Whether the sheet's XML has formats or hidden rows, and formulas or error cells."""
    formatted = any(style != GENERAL for style in styles)
    layout = formulas = False
    tail = b""
    while block := stream.read(1 << 20):
        text = tail + block
        layout = layout or b'hidden="1"' in text or b'hidden="true"' in text
        layout = layout or (formatted and b' s="' in text)
        formulas = formulas or b"<f>" in text or b"<f " in text or b't="e"' in text
        if layout and formulas:
            break
        tail = text[-16:]
    return layout, formulas


_TAG = re.compile(rb"<(row|c)\s([^>]*)>")
_REF = re.compile(rb'\br="([A-Z]*)([0-9]+)"')
_STYLE = re.compile(rb'\bs="([0-9]+)"')
_HIDDEN = re.compile(rb'\bhidden="(?:1|true)"')


def _scan_layout(
    stream: Any, styles: list[int | str], extras: SheetExtras, first: int, left: int
) -> None:
    """Each cell's number format and the hidden rows, from the tags of the sheet's XML."""
    tail = b""
    add = extras.formats.add
    while block := stream.read(1 << 20):
        text = tail + block
        end = text.rfind(b">") + 1
        tail = text[end:]
        for match in _TAG.finditer(text, 0, end):
            attributes = match.group(2)
            ref = _REF.search(attributes)
            if ref is None:
                continue
            row = int(ref.group(2)) - 1 - first
            if match.group(1) == b"row":
                if _HIDDEN.search(attributes):
                    extras.hidden.add(row)
                continue
            style = _STYLE.search(attributes)
            number = int(style.group(1)) if style else 0
            number_format = styles[number] if number < len(styles) else GENERAL
            add(row, _column_number(ref.group(1).decode()) - left, number_format)


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


def _scan_cells(stream: Any, extras: SheetExtras, first: int, left: int) -> None:
    """Error cells, and formula cells without a computed value."""
    for _, element in ElementTree.iterparse(stream):
        tag = element.tag
        if tag == f"{_MAIN}row":
            element.clear()
            continue
        if tag != f"{_MAIN}c":
            continue
        match = _CELL_REF.fullmatch(element.get("r", ""))
        if not match:
            continue
        value = element.find(f"{_MAIN}v")
        value_text = value.text if value is not None else None
        if element.get("t") == "e":
            error = value_text or "#VALUE!"
            problem = f"holds the error {error}"
        elif element.find(f"{_MAIN}f") is not None and not value_text and element.get("t") != "str":
            # (t="str" with an empty value is a formula whose result is the empty text)
            error, problem = (
                "",
                "is a formula with no computed value (open and save the file in Excel)",
            )
        else:
            continue
        row = int(match.group(2)) - 1 - first
        col = _column_number(match.group(1)) - left
        if error:
            extras.errors[(row, col)] = error
        if row >= 0:
            extras.problems.setdefault(row, []).append((col, f"cell {match.group(0)} {problem}"))


def _column_number(letters: str) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + ord(letter) - 64
    return number - 1


def column_letters(index: int) -> str:
    """``0`` -> ``A``, ``27`` -> ``AB``: a 0-based column as a spreadsheet names it."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters
