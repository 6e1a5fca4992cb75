"""One row's cells to its request body, by the :class:`~batchrun.endpoints.body.RowPlan` that
:func:`~batchrun.endpoints.body.plan_columns` made from the header (see
:mod:`batchrun.endpoints.body`).

A field's value comes from its cell, else from ``--set``, else from the row's
``request_json`` object. Empty cells are "not sent". Problems are returned, never raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from batchrun.endpoints.body import (
    CONVERSATION,
    METADATA,
    REQUEST_JSON,
    THREAD_ID,
    THREAD_ID_PATTERN,
    RowPlan,
)
from batchrun.endpoints.field_values import CONVERTERS, CellError, parse_json
from batchrun.endpoints.problems import Problem


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


def assemble(plan: RowPlan, cells: Sequence[str]) -> Assembled:
    """Build one row's body from its cells; every problem is collected, none raised."""
    problems: list[Problem] = []
    thread_id = ""
    if plan.thread_column is not None:
        thread_id = cells[plan.thread_column].strip(" ")
        _check_id(THREAD_ID, thread_id, problems)

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
    for name, value in plan.defaults.items():
        body[name] = _over(body.get(name), value) if name == METADATA else value
    from_cells: set[str] = set()
    # metadata merges key by key: what a row's metadata cell lies over (request_json's
    # metadata under --set's), and the cell's own keys.
    layers: tuple[dict[str, Any], dict[str, Any]] | None = None
    for name, index, kind in plan.field_columns:
        text = cells[index]
        if not text or text.isspace():
            continue
        try:
            value = CONVERTERS[kind](text)
        except CellError as error:
            problems.append(Problem(name, str(error)))
            body.pop(name, None)  # not a --set or request_json value the cell was meant to replace
            continue
        if name == METADATA and isinstance(value, dict) and isinstance(body.get(name), dict):
            layers = (body[name], value)
            value = _over(*layers)
        body[name] = value
        from_cells.add(name)
    for name, index in plan.foreign_columns:
        if cells[index].strip():
            other = "v2" if plan.schema_name == "v1" else "v1"
            problems.append(
                Problem(
                    name,
                    f"is not a field of Assistants {plan.schema_name}"
                    f" (it is one of {other}: --api-version {other})",
                )
            )
    if plan.sub_columns or plan.sub_defaults:
        _merge_sub_fields(plan, cells, body, problems, from_cells, layers)
    if plan.message_columns:
        _add_messages(plan, cells, body, problems)
    if plan.thread_column is None and CONVERSATION in body:
        # Rows that share a conversation form a lane, as rows of a thread do.
        thread_id = _conversation_id(body[CONVERSATION])
        if thread_id:
            _check_id(CONVERSATION, thread_id, problems)
    return Assembled(thread_id, None if problems else body, problems, body)


def _check_id(name: str, value: str, problems: list[Problem]) -> None:
    if not value:
        problems.append(Problem(name, "is empty"))
    elif not THREAD_ID_PATTERN.fullmatch(value):
        problems.append(Problem(name, f"{value!r} may only hold letters, digits, '_' and '-'"))


def _conversation_id(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("id")
    return value.strip(" ") if isinstance(value, str) else ""


def _merge_sub_fields(
    plan: RowPlan,
    cells: Sequence[str],
    body: dict[str, Any],
    problems: list[Problem],
    from_cells: set[str],
    layers: tuple[dict[str, Any], dict[str, Any]] | None,
) -> None:
    """Merge dotted cells (``metadata.KEY``, ``reasoning.effort``) and ``--set FIELD.KEY``
    values into their object fields.

    The row's cells win over ``--set``, which wins over ``request_json``: a field's own
    cell (``metadata``) beats ``--set metadata.KEY``, and dotted cells beat both.
    ``layers``: the metadata a row's metadata cell was merged over (request_json's, then
    --set's), which ``--set metadata.KEY`` beats, and the cell's own keys, which beat it.
    """
    cell_values: dict[str, dict[str, Any]] = {}
    for name, key, index, kind in plan.sub_columns:
        text = cells[index]
        if not text or text.isspace():
            continue
        try:
            cell_values.setdefault(name, {})[key] = CONVERTERS[kind](text)
        except CellError as error:
            problems.append(Problem(f"{name}.{key}", str(error)))
    for name in dict.fromkeys([*plan.sub_defaults, *cell_values]):
        defaults = plan.sub_defaults.get(name, {})
        pairs = cell_values.get(name, {})
        base = body.get(name)
        if base is None:
            base = {}
        if not isinstance(base, dict):
            problems.append(Problem(name, f"must be a JSON object to merge {name}.* columns"))
            continue
        if name == METADATA and name in from_cells and layers is not None:
            beneath, own = layers
            body[name] = {**beneath, **defaults, **own, **pairs}
        elif name in from_cells:
            body[name] = {**defaults, **base, **pairs}
        else:
            body[name] = {**base, **defaults, **pairs}


def _add_messages(
    plan: RowPlan, cells: Sequence[str], body: dict[str, Any], problems: list[Problem]
) -> None:
    """Chat: a ``system`` cell becomes the first message, a ``user`` cell the last."""
    texts = {role: cells[index] for role, index in plan.message_columns}
    texts = {role: text for role, text in texts.items() if text and not text.isspace()}
    if not texts:
        return
    messages = body.get("messages", [])
    if not isinstance(messages, list):
        problems.append(Problem("messages", "must be a JSON array to add system and user cells"))
        return
    first = [{"role": "system", "content": texts["system"]}] if "system" in texts else []
    last = [{"role": "user", "content": texts["user"]}] if "user" in texts else []
    body["messages"] = [*first, *messages, *last]


def _over(under: Any, value: Any) -> Any:
    """``value`` merged key by key over ``under`` where both are objects, else ``value``."""
    if isinstance(under, dict) and isinstance(value, dict):
        return {**under, **value}
    return value
