"""JSONL input: one JSON object per line, blank lines skipped.

Columns are the keys in first-seen order across all lines (the file is read twice when
streamed). Cell values are the JSON values as they came (None for ``null`` or a missing
key); :func:`batchrun.sheets.cells.json_cell_text` gives their text.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from batchrun.errors import InputError
from batchrun.sheets.cells import LONG_DIGIT_BYTES, json_number
from batchrun.sheets.delimited import open_binary

__all__ = ["jsonl_keys", "jsonl_rows"]


def _jsonl_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open_binary(path) as f:
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
    if not LONG_DIGIT_BYTES.search(line):
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    # A number beyond a double (1e400) keeps its text (orjson refuses it: it lands here).
    return json.loads(
        line.decode("utf-8"), parse_constant=_refuse_constant, parse_float=json_number
    )


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


def jsonl_keys(path: Path) -> list[str]:
    keys: dict[str, None] = {}
    found = False
    for _, record in _jsonl_lines(path):
        found = True
        keys.update(dict.fromkeys(record))
    if not found:
        raise InputError(path, "is empty (no JSON objects)")
    return list(keys)


def jsonl_rows(path: Path, keys: list[str]) -> Iterator[list[Any]]:
    for _, record in _jsonl_lines(path):
        yield [record.get(key) for key in keys]
