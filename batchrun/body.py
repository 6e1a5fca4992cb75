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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchrun.errors import InputError, UsageError
from batchrun.field_values import CONVERTERS, FIELD_KINDS, CellError, convert, parse_json
from batchrun.schema import API_VERSIONS, Problem, body_fields

THREAD_ID = "thread_id"
REQUEST_JSON = "request_json"
METADATA_PREFIX = "metadata."
# A thread id goes into the URL path: anything but these characters could change the
# path or the query, so such a row is refused rather than escaped.
THREAD_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


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
