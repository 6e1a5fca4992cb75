"""Turn one sheet row into the Create Run request body that will be sent.

A row's cells are text. :func:`plan_columns` decides once, from the header, which column
feeds which body field; :func:`assemble` then builds each row's body::

    >>> plan = plan_columns(["thread_id", "assistant_id", "tools", "metadata.team"], "v2")
    >>> assemble(plan, ["thread_abc", "asst_1", "code_interpreter", "ops"]).body
    {'assistant_id': 'asst_1', 'tools': [{'type': 'code_interpreter'}], 'metadata': {'team': 'ops'}}

A field's value comes from its cell, else from ``--set``, else from the row's
``request_json`` object. Empty cells are "not sent". Problems are returned, never raised.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

import orjson

from batchrun.errors import InputError, UsageError
from batchrun.schema import API_VERSIONS, Problem, body_fields

THREAD_ID = "thread_id"
REQUEST_JSON = "request_json"
METADATA_PREFIX = "metadata."
# A thread id goes into the URL path: anything but these characters could change the
# path or the query, so such a row is refused rather than escaped.
THREAD_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
# JSON numbers travel as 64-bit integers (orjson's range, and most servers'): a longer
# integer would be rounded or refused on the way, so it is a row error instead.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
_LONG_DIGITS = re.compile(r"[0-9]{19}")


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


KINDS = (
    Kind.TEXT,
    Kind.NAME,
    Kind.NUMBER,
    Kind.INTEGER,
    Kind.BOOLEAN,
    Kind.JSON,
    Kind.TOOLS,
    Kind.NAME_OR_JSON,
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


@dataclass(frozen=True, slots=True)
class RowPlan:
    """Which column feeds which field, decided once from the header."""

    api_version: str
    thread_column: int
    field_columns: tuple[tuple[str, int, str], ...]
    metadata_columns: tuple[tuple[str, int], ...]
    request_json_column: int | None
    # Columns named after a field of the other API version: a value there is a row error.
    foreign_columns: tuple[tuple[str, int], ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    metadata_defaults: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Assembled:
    """One row's outcome: the thread, and the body or the reasons there is none.

    ``partial`` is the body with the cells that failed to convert left out: checking it
    against the schema finds the row's other problems in the same pass.
    """

    thread_id: str
    body: dict[str, Any] | None
    problems: list[Problem]
    partial: dict[str, Any] = field(default_factory=dict)


def used_columns(plan: RowPlan) -> dict[int, str]:
    """Column index -> the field it feeds, for every column whose cells may be sent."""
    used = {plan.thread_column: THREAD_ID}
    used.update({index: name for name, index, _ in plan.field_columns})
    used.update({index: METADATA_PREFIX + key for key, index in plan.metadata_columns})
    if plan.request_json_column is not None:
        used[plan.request_json_column] = REQUEST_JSON
    return used


def normalize_header(name: object) -> str:
    """Headers match case-insensitively after trimming."""
    return str(name).strip().casefold()


def plan_columns(
    headers: Sequence[str],
    api_version: str,
    columns: Mapping[str, str] | None = None,
    set_values: Mapping[str, str] | None = None,
    *,
    source: object = "input",
) -> RowPlan:
    """Map the header to body fields; raises InputError/UsageError for sheet-wide problems."""
    fields = body_fields(api_version)
    known = {name for version in API_VERSIONS for name in body_fields(version)}
    position = {normalize_header(name): index for index, name in enumerate(headers)}
    renames = {key.strip(): value for key, value in (columns or {}).items()}
    for name in renames:
        if name not in (*known, THREAD_ID, REQUEST_JSON) and not name.startswith(METADATA_PREFIX):
            raise UsageError(f"--column {name}=...: {name!r} is not a field of the request body")

    def column_of(name: str) -> int | None:
        header = renames.get(name, name)
        index = position.get(normalize_header(header))
        if index is None and name in renames:
            raise InputError(source, f"--column {name}={header}: no column named {header!r}")
        return index

    thread_column = column_of(THREAD_ID)
    if thread_column is None:
        raise InputError(source, missing_thread_column(headers))
    field_columns = []
    foreign_columns = []
    for name in sorted(known, key=lambda n: (n not in fields, n)):
        index = column_of(name)
        if index is None:
            continue
        if name in fields:
            field_columns.append((name, index, FIELD_KINDS[name]))
        else:
            foreign_columns.append((name, index))
    metadata_columns = [
        (str(header).strip()[len(METADATA_PREFIX) :], index)
        for index, header in enumerate(headers)
        if normalize_header(header).startswith(METADATA_PREFIX)
    ]
    metadata_columns += [
        (name[len(METADATA_PREFIX) :], index)
        for name, header in renames.items()
        if name.startswith(METADATA_PREFIX) and (index := column_of(name)) is not None
    ]
    defaults, metadata_defaults = _parse_set_values(set_values or {}, fields)
    return RowPlan(
        api_version=api_version,
        thread_column=thread_column,
        field_columns=tuple(field_columns),
        metadata_columns=tuple(dict(metadata_columns).items()),
        request_json_column=column_of(REQUEST_JSON),
        foreign_columns=tuple(foreign_columns),
        defaults=defaults,
        metadata_defaults=metadata_defaults,
    )


def missing_thread_column(headers: Sequence[str]) -> str:
    """Why a sheet has no ``thread_id`` column, with what it has and the likely fix."""
    shown = ", ".join(repr(str(h)) for h in headers[:12])
    if len(headers) > 12:
        shown += f", ... ({len(headers)} columns)"
    message = f"has no 'thread_id' column; its columns are {shown}"
    if len(headers) == 1 and str(headers[0]).count(";") >= 1:
        return (
            f"has no 'thread_id' column: its header is one cell, {str(headers[0])!r}, so the"
            " file is separated by ';' (as Excel saves CSV in some languages); save it"
            " separated by commas, or as .xlsx"
        )
    loose = {normalize_header(h).replace(" ", "_").replace("-", "_"): str(h) for h in headers}
    close = difflib.get_close_matches(THREAD_ID, list(loose), n=1, cutoff=0.6)
    if close:
        found = loose[close[0]]
        return f'{message}. Did you mean {found!r}? Pass --column "thread_id={found}"'
    return f"{message} (name the thread column with --column thread_id=HEADER)"


def _parse_set_values(
    set_values: Mapping[str, str], fields: Sequence[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    defaults: dict[str, Any] = {}
    metadata_defaults: dict[str, str] = {}
    for name, text in set_values.items():
        name = name.strip()
        if name.startswith(METADATA_PREFIX):
            metadata_defaults[name[len(METADATA_PREFIX) :]] = text
            continue
        if name not in fields:
            raise UsageError(f"--set {name}=...: {name!r} is not a field of the request body")
        try:
            defaults[name] = convert(FIELD_KINDS[name], text)
        except CellError as error:
            raise UsageError(f"--set {name}=...: {error}") from None
    return defaults, metadata_defaults


def assemble(plan: RowPlan, cells: Sequence[str]) -> Assembled:
    """Build one row's body from its cells; every problem is collected, none raised."""
    problems: list[Problem] = []
    thread_id = cells[plan.thread_column].strip(" ")
    if not thread_id:
        problems.append(Problem(THREAD_ID, "is empty"))
    elif not THREAD_ID_PATTERN.fullmatch(thread_id):
        problems.append(
            Problem(THREAD_ID, f"{thread_id!r} may only hold letters, digits, '_' and '-'")
        )

    body: dict[str, Any] = {}
    if plan.request_json_column is not None and (text := cells[plan.request_json_column]).strip():
        try:
            base = parse_json(text)
        except CellError as error:
            problems.append(Problem(REQUEST_JSON, str(error)))
        else:
            if isinstance(base, dict):
                body.update(base)
            else:
                problems.append(Problem(REQUEST_JSON, "must be a JSON object"))
    body.update(plan.defaults)
    metadata_cell = None
    for name, index, kind in plan.field_columns:
        text = cells[index]
        if not text or text.isspace():
            continue
        try:
            body[name] = CONVERTERS[kind](text)
        except CellError as error:
            problems.append(Problem(name, str(error)))
            body.pop(name, None)  # not a --set or request_json value the cell was meant to replace
        else:
            if name == "metadata":
                metadata_cell = body[name]
    for name, index in plan.foreign_columns:
        if cells[index].strip():
            other = "v2" if plan.api_version == "v1" else "v1"
            problems.append(
                Problem(
                    name,
                    f"is not a field of Assistants {plan.api_version}"
                    f" (it is one of {other}: --api-version {other})",
                )
            )
    if plan.metadata_columns or plan.metadata_defaults:
        _merge_metadata(plan, cells, body, problems, metadata_cell)
    return Assembled(thread_id, None if problems else body, problems, body)


def _merge_metadata(
    plan: RowPlan,
    cells: Sequence[str],
    body: dict[str, Any],
    problems: list[Problem],
    metadata_cell: Any,
) -> None:
    """Merge ``metadata.KEY`` cells and ``--set metadata.KEY`` values into ``metadata``.

    The row's cells win over ``--set``, which wins over ``request_json``: a ``metadata``
    cell's keys beat ``--set metadata.KEY``, and ``metadata.KEY`` cells beat both.
    """
    cell_pairs = {
        key: cells[index]
        for key, index in plan.metadata_columns
        if cells[index] and not cells[index].isspace()
    }
    if not cell_pairs and not plan.metadata_defaults:
        return
    base = body.get("metadata")
    if base is None:
        base = {}
    if not isinstance(base, dict):
        problems.append(Problem("metadata", "must be a JSON object to merge metadata.* columns"))
        return
    if metadata_cell is not None:
        body["metadata"] = {**plan.metadata_defaults, **base, **cell_pairs}
    else:
        body["metadata"] = {**base, **plan.metadata_defaults, **cell_pairs}


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
    return parse_json(stripped)


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
    if _LONG_DIGITS.search(text):
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


def _number(text: str) -> int | float:
    try:
        whole = int(text)
    except ValueError:
        pass
    else:
        return _check_integer(whole)
    try:
        value = float(text)
    except ValueError:
        raise CellError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise CellError(f"{text!r} is not a finite number")
    return value


def _integer(text: str) -> int:
    try:
        whole = int(text)
    except ValueError:
        pass
    else:
        return _check_integer(whole)
    try:
        value = float(text)
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
