"""How a cell's text becomes the JSON value of its body field.

Each field has a :class:`Kind`; :data:`CONVERTERS` turn text into values::

    >>> convert(Kind.TOOLS, "code_interpreter, file_search")
    [{'type': 'code_interpreter'}, {'type': 'file_search'}]
    >>> convert(Kind.BOOLEAN, "Yes")
    True

Text that stands for no value raises :class:`CellError`. Integers must fit 64 bits, in a
cell or inside JSON: a longer one is an error, never rounded to a float.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import lru_cache, partial
from typing import Any

import orjson

from batchrun.sheets.cells import LONG_DIGITS

# JSON numbers travel as 64-bit integers (orjson's range, and most servers'): a longer
# integer would be rounded or refused on the way, so it is a row error instead.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1


class Kind:
    """How a cell's text becomes a JSON value (plain strings: cheap to hash per cell)."""

    TEXT = "text"  # sent as written
    NAME = "name"  # an identifier: surrounding spaces trimmed
    NUMBER = "number"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    JSON = "json"  # JSON text
    TOOLS = "tools"  # JSON text, or a comma list of built-in tool types
    NAME_OR_JSON = "name_or_json"  # a bare string form ("auto"), or JSON text
    TEXT_OR_JSON = "text_or_json"  # text as written, or a JSON array ("[...]")


KINDS = (
    Kind.TEXT,
    Kind.NAME,
    Kind.NUMBER,
    Kind.INTEGER,
    Kind.BOOLEAN,
    Kind.JSON,
    Kind.TOOLS,
    Kind.NAME_OR_JSON,
    Kind.TEXT_OR_JSON,
)
FIELD_KINDS: dict[str, str] = {
    "assistant_id": Kind.NAME,
    "model": Kind.NAME,
    "instructions": Kind.TEXT,
    "additional_instructions": Kind.TEXT,
    "additional_messages": Kind.JSON,
    "tools": Kind.TOOLS,
    "metadata": Kind.JSON,
    "temperature": Kind.NUMBER,
    "top_p": Kind.NUMBER,
    "stream": Kind.BOOLEAN,
    "max_prompt_tokens": Kind.INTEGER,
    "max_completion_tokens": Kind.INTEGER,
    "truncation_strategy": Kind.JSON,
    "tool_choice": Kind.NAME_OR_JSON,
    "parallel_tool_calls": Kind.BOOLEAN,
    "response_format": Kind.NAME_OR_JSON,
    "reasoning_effort": Kind.NAME,
}
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "on"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "off"})


class CellError(ValueError):
    """A cell's text cannot become its field's value."""


def convert(kind: str, text: str) -> Any:
    """The JSON value a cell's text stands for; raises CellError if it stands for none."""
    return CONVERTERS[kind](text)


def _convert(kind: str, text: str) -> Any:
    stripped = text.strip()
    if kind == Kind.NAME:
        return stripped
    if kind == Kind.NUMBER:
        return _number(stripped)
    if kind == Kind.INTEGER:
        return _integer(stripped)
    if kind == Kind.BOOLEAN:
        word = stripped.casefold()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise CellError(f"{stripped!r} is not true or false")
    if kind == Kind.TOOLS and stripped[:1] not in ("[", "{"):
        return _tool_list(stripped)
    if kind == Kind.NAME_OR_JSON and stripped[:1] not in ("[", "{"):
        return stripped
    if kind == Kind.TEXT_OR_JSON and not (stripped[:1] == "[" and stripped[-1:] == "]"):
        return text
    try:
        value = parse_json(stripped)
    except CellError as error:
        raise CellError(_json_hint(kind, stripped, error)) from None
    if value is None:
        # An empty cell sends nothing; an explicit null goes in request_json, for every field.
        raise CellError("null is not sent from a cell (leave it empty; request_json can send null)")
    return value


def _json_hint(kind: str, text: str, error: CellError) -> str:
    """Why a cell is not the JSON its field takes, and what to write instead."""
    if kind == Kind.TEXT_OR_JSON:
        return (
            f"{error}; text in [ ] is read as a JSON list (to send it as text, give it in "
            "request_json as a JSON string)"
        )
    if kind == Kind.JSON and text[:1].isalpha() and text.casefold() not in ("true", "false"):
        return f"{text[:40]!r} is not JSON: this field takes a JSON object or list"
    return str(error)


# Fields of the live endpoints whose kind is not the one their JSON types suggest.
KIND_OVERRIDES: dict[str, str] = {
    "input": Kind.TEXT_OR_JSON,  # a prompt, or a JSON array of input items
    "stop": Kind.TEXT_OR_JSON,  # a stop sequence, or a JSON array of them
    "instructions": Kind.TEXT,
    "tools": Kind.TOOLS,
    "metadata": Kind.JSON,
}


def kind_for_types(types: frozenset[str]) -> str:
    """The kind of a field that takes values of these JSON types (``null`` left out)."""
    if types == {"number"} or types == {"number", "integer"}:
        return Kind.NUMBER
    if types == {"integer"}:
        return Kind.INTEGER
    if types == {"boolean"}:
        return Kind.BOOLEAN
    if types == {"string"}:
        return Kind.NAME
    if types and "string" not in types:
        return Kind.JSON
    return Kind.NAME_OR_JSON  # a string or a JSON value, or the schema does not say


def _converter(kind: str) -> Callable[[str], Any]:
    if kind == Kind.TEXT:
        return str
    # Values repeat down a column (the same tools, temperature, model), so conversions are
    # cached; a cached value is shared between rows, which is safe as bodies are never
    # mutated after assembly.
    return lru_cache(maxsize=4096)(partial(_convert, kind))


CONVERTERS: dict[str, Callable[[str], Any]] = {kind: _converter(kind) for kind in KINDS}


def parse_json(text: str) -> Any:
    """Parse JSON cell text; integers beyond 64 bits are a CellError, never a float."""
    if LONG_DIGITS.search(text):
        # orjson would read 99999999999999999999 as 1e+20: parse exactly, then refuse.
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as error:
            raise CellError(f"is not valid JSON ({error})") from None
        _check_json_integers(value, "")
        return value
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise CellError(f"is not valid JSON ({error})") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_json_integers(value: Any, path: str) -> None:
    if type(value) is int:
        _check_integer(value, f" at {path}" if path else "")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json_integers(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json_integers(item, f"{path}[{index}]")


def _check_integer(value: int, where: str = "") -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise CellError(
            f"{value}{where} is beyond the 64-bit integer range a request can carry"
            f" ({INT_MIN} to {INT_MAX})"
        )
    return value


def _whole(text: str) -> int | None:
    """``text`` as an integer within the API's range, or None when it is not one as written."""
    if not _plain(text):
        return None
    try:
        whole = int(text)
    except ValueError:
        return None
    return _check_integer(whole)  # out of range: a CellError, not "not a whole number"


def _plain(text: str) -> bool:
    """Whether ``text`` may be a number as a sheet writes one: Python's own forms (``1_000``,
    digits of other scripts) are not numbers in JSON or in a spreadsheet."""
    return text.isascii() and "_" not in text


def _number(text: str) -> int | float:
    if (whole := _whole(text)) is not None:
        return whole
    try:
        value = float(text) if _plain(text) else math.nan
    except ValueError:
        raise CellError(f"{text!r} is not a number") from None
    if math.isnan(value) and "nan" not in text.casefold():
        raise CellError(f"{text!r} is not a number")
    if math.isinf(value) and "inf" not in text.casefold():
        raise CellError(f"{text!r} is beyond the range of a number")
    if not math.isfinite(value):
        raise CellError(f"{text!r} is not a finite number")
    return value


def _integer(text: str) -> int:
    if (whole := _whole(text)) is not None:
        return whole
    try:
        value = float(text) if _plain(text) else math.nan
    except ValueError:
        value = math.nan
    if not value.is_integer():  # nan and infinities are not either
        raise CellError(f"{text!r} is not a whole number")
    return _check_integer(int(value))


def _tool_list(text: str) -> list[dict[str, str]]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise CellError(f"{text!r} is not a comma list of tool types")
    return [{"type": name} for name in names]
