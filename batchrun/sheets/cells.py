"""Every rule that turns a cell value into text, or text into a written cell, in one place.

Readers keep each input cell's value as it came (a number, a date, a boolean, a JSON
value) for the writer, and hand its *text* to body assembly:

    >>> excel_cell_text(3.0), excel_cell_text(True), excel_cell_text(0.1 + 0.2)
    ('3', 'TRUE', '0.3')
    >>> json_cell_text({"a": 1}), json_cell_text(None)
    ('{"a":1}', '')

- XLSX (:func:`excel_cell_text`): text as written; whole numbers with all their digits and
  no ``.0`` (``12345678901234567``, not ``1.23456789012346e+16``); other numbers rounded to
  the 15 significant digits Excel displays; ``TRUE``/``FALSE``; dates and times in ISO
  8601; durations as ``36:00:00``.
- JSONL (:func:`json_cell_text`): a string is the cell; ``null`` is empty; any other value
  its compact JSON text (integers beyond 64 bits keep every digit).
- A library caller's DataFrame (:func:`frame_cell_text`): NaN, None, NaT are empty.
- Writing (:func:`written_text`, :func:`number_cell`): what a CSV cell shows for a value.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson

__all__ = [
    "LONG_DIGITS",
    "LONG_DIGIT_BYTES",
    "PLAIN_NUMBER",
    "JsonNumber",
    "NumberCell",
    "excel_cell_text",
    "frame_cell_text",
    "is_numpy_scalar",
    "json_cell_text",
    "json_fragment",
    "json_number",
    "json_text",
    "number_cell",
    "number_cells",
    "text_cells",
    "written_text",
]

NumberCell = int | float | str | None
# Nineteen digits in a row: an integer that may not fit 64 bits, which orjson would round,
# so JSON holding one is parsed exactly by the standard library instead.
LONG_DIGITS = re.compile(r"[0-9]{19}")
LONG_DIGIT_BYTES = re.compile(LONG_DIGITS.pattern.encode())
PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PANDAS_MISSING = frozenset({"NAType", "NaTType"})  # pd.NA, pd.NaT: told by type, not text
# Whole numbers below this are written out digit by digit; beyond it, with an exponent.
_WHOLE_DIGITS_LIMIT = 1e21


# --- reading: a value as the text body assembly sees --------------------------------------


def excel_cell_text(value: object) -> str:
    """Return a cell value from calamine as the text Excel shows for it."""
    if type(value) is str:
        return value
    if type(value) is float:
        return _number_text(value)
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return _duration_text(value)
    return "" if value is None else str(value)


def _number_text(value: float) -> str:
    if value.is_integer() and abs(value) < _WHOLE_DIGITS_LIMIT:
        if abs(value) < 2**53:
            return str(int(value))  # exact; int() also turns -0.0 into 0 as Excel shows it
        # The shortest digits that read back as this double, without an exponent:
        # 12345678901234567 is stored as 1.2345678901234568e16 and shown 12345678901234568.
        return str(int(Decimal(repr(value))))
    return repr(float(format(value, ".15g")))


def _duration_text(value: datetime.timedelta) -> str:
    sign = "-" if value < datetime.timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.days * 86_400 + value.seconds, 3_600)
    minutes, seconds = divmod(rest, 60)
    fraction = f".{value.microseconds:06d}".rstrip("0") if value.microseconds else ""
    return f"{sign}{hours}:{minutes:02d}:{seconds:02d}{fraction}"


class JsonNumber(str):
    """A JSON number beyond a double (``1e400``), kept as written: a float would be
    infinite, and infinity has no JSON."""

    __slots__ = ()


def json_number(text: str) -> float | JsonNumber:
    """``parse_float`` for JSON input: a float, or the text of one no double can hold."""
    value = float(text)
    return value if math.isfinite(value) else JsonNumber(text)


def json_cell_text(value: object) -> str:
    """A JSONL value as cell text: strings as they are, ``null`` empty, others as JSON."""
    if type(value) is str:
        return value
    if type(value) is JsonNumber:
        return str(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    return json_text(value)


def arrow_cell_text(value: object) -> str:
    """A Parquet value as cell text: as a JSONL value reads (``true``, ``0.7``, JSON for
    lists and structs), dates and times in ISO 8601 (with the offset of a tz-aware
    timestamp), decimals as written."""
    if type(value) is str:
        return value
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return _duration_text(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        # As text where it is text; bytes no text holds (invalid UTF-8, NUL and other
        # control characters) as \xNN escapes, so that no output carries a NUL byte.
        text = value.decode("utf-8", errors="backslashreplace")
        return _CONTROL.sub(lambda match: f"\\x{ord(match[0]):02x}", text)
    if type(value) is float:
        return repr(value)
    return json_cell_text(value)


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def json_text(value: object) -> str:
    """Compact JSON text of ``value``, also for what orjson refuses."""
    try:
        return orjson.dumps(value, default=json_fragment, option=_SUBCLASSES).decode()
    except (orjson.JSONEncodeError, TypeError):
        # Integers beyond 64 bits or lone surrogates inside an object or array.
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


# Subclasses (a JsonNumber) go to json_fragment() rather than being written as strings.
_SUBCLASSES = orjson.OPT_PASSTHROUGH_SUBCLASS


def json_fragment(value: object) -> object:
    """orjson's ``default``: a :class:`JsonNumber` written as the number it is."""
    if isinstance(value, JsonNumber):
        return orjson.Fragment(str(value))
    # Other subclasses are written as their base type.
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def frame_cell_text(cell: Any) -> str:
    """Text of a non-text cell from a library caller's DataFrame (NaN and None are empty)."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return ""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    if isinstance(cell, bool):
        return "TRUE" if cell else "FALSE"
    if isinstance(cell, (dict, list)):
        return json_text(cell)
    text = str(cell)
    return "" if text in ("nan", "NaT", "<NA>") else text


# --- writing: a value as a cell of an output -----------------------------------------------


def is_numpy_scalar(value: object) -> bool:
    """Whether ``value`` is a numpy scalar (np.int64, np.float32, np.bool_).

    Told by module name so that numpy need not be imported to write a sheet.
    """
    return type(value).__module__ == "numpy" and hasattr(value, "item")


def text_cells(values: Sequence[object]) -> list[str]:
    """A column of cells as text (see :func:`written_text`)."""
    return [v if type(v) is str else written_text(v) for v in values]


def number_cells(values: Sequence[object]) -> list[NumberCell]:
    """A column of result numbers (see :func:`number_cell`)."""
    return [v if type(v) is int else number_cell(v) for v in values]


def number_cell(value: object) -> NumberCell:
    """A result number: int or float, None when empty, exact text when not a number."""
    if value is None:
        return None
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        # A float column (pandas' int-with-missing) would otherwise show 200 as "200.0".
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if is_numpy_scalar(value):
        return number_cell(value.item())  # type: ignore[attr-defined]
    if type(value).__name__ in _PANDAS_MISSING:
        return None
    text = str(value)
    if not text.strip():
        return None
    if PLAIN_NUMBER.fullmatch(text.strip()):
        return number_cell(float(text)) if any(c in text for c in ".eE") else int(text)
    return text


def number_texts(values: list[NumberCell]) -> list[str]:
    """Result numbers as CSV text."""
    # Ints and empties first: they are nearly all of a status or attempts column.
    return [
        str(v)
        if type(v) is int
        else ""
        if v is None
        # A float without an exponent: a cost of 4.875e-05 dollars reads 0.00004875.
        else format(Decimal(repr(v)), "f")
        if type(v) is float
        else written_text(v)
        for v in values
    ]


def written_text(value: object) -> str:
    """The text a CSV cell shows for any value: an input value as it was read."""
    if isinstance(value, str):
        return value
    if is_numpy_scalar(value):
        value = value.item()  # type: ignore[attr-defined]
    if isinstance(value, bool):
        return "true" if value else "false"  # as the JSONL reader gives JSON booleans
    if isinstance(value, dict | list):
        return json_text(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time | datetime.timedelta):
        return excel_cell_text(value)
    number = number_cell(value)
    if number is None:
        return ""
    return repr(number) if isinstance(number, float) else str(number)
