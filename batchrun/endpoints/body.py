"""Turn one sheet row into the request body that will be sent (a run, response or chat
completion: the schema in force names the fields).

A row's cells are text. :func:`plan_columns` decides once, from the header, which column
feeds which body field; :func:`batchrun.endpoints.assembly.assemble` then builds each row's body::

    >>> plan = plan_columns(["thread_id", "assistant_id", "tools", "metadata.team"], "v2")
    >>> from batchrun.endpoints.assembly import assemble
    >>> assemble(plan, ["thread_abc", "asst_1", "code_interpreter", "ops"]).body
    {'assistant_id': 'asst_1', 'tools': [{'type': 'code_interpreter'}], 'metadata': {'team': 'ops'}}

A field's value comes from its cell, else from ``--set``, else from the row's
``request_json`` object. Empty cells are "not sent". Problems are returned, never raised.

Dotted columns fill an object field key by key: ``metadata.KEY`` (text values), and for the
live endpoints ``reasoning.effort``, ``text.verbosity`` and the like. For chat, the text
columns ``system`` and ``user`` add a system message first and a user message last.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchrun.endpoints.field_values import (
    FIELD_KINDS,
    KIND_OVERRIDES,
    CellError,
    Kind,
    convert,
    kind_for_types,
)
from batchrun.endpoints.schema import API_VERSIONS, body_fields, schema_problems, value_types
from batchrun.errors import InputError, UsageError

THREAD_ID = "thread_id"
CONVERSATION = "conversation"
REQUEST_JSON = "request_json"
METADATA = "metadata"
METADATA_PREFIX = "metadata."
# Chat: text columns that become a system message (first) and a user message (last).
# ``user`` is also a field of the chat body (the end-user id): a column that names both a
# shortcut and a field is the shortcut, and ``field.user`` names the field. ``field.NAME``
# names any field so.
MESSAGE_COLUMNS = ("system", "user")
FIELD_PREFIX = "field."
# A thread id goes into the URL path: anything but these characters could change the
# path or the query, so such a row is refused rather than escaped. Conversation ids are
# held to the same rule: they are ids, and servers put them in paths of their own.
THREAD_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class RowPlan:
    """Which column feeds which field, decided once from the header."""

    schema_name: str  # the schema in force: v1, v2, responses or chat
    # The thread column (runs); None where the lane comes from the body (a conversation).
    thread_column: int | None
    field_columns: tuple[tuple[str, int, str], ...]
    # (field, key, column, kind) of dotted columns: metadata.KEY, reasoning.effort, ...
    sub_columns: tuple[tuple[str, str, int, str], ...]
    request_json_column: int | None
    # Columns named after a field of the other API version: a value there is a row error.
    foreign_columns: tuple[tuple[str, int], ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # --set FIELD.KEY values, by field.
    sub_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # (role, column) of chat's system and user text columns.
    message_columns: tuple[tuple[str, int], ...] = ()
    # (field, header) of columns that feed nothing but look like a field that no column
    # feeds: ``Assistant ID`` for ``assistant_id``.
    hints: tuple[tuple[str, str], ...] = ()


def used_columns(plan: RowPlan) -> dict[int, str]:
    """Column index -> the field it feeds, for every column whose cells may be sent."""
    used = {} if plan.thread_column is None else {plan.thread_column: THREAD_ID}
    used.update({index: name for name, index, _ in plan.field_columns})
    used.update({index: f"{name}.{key}" for name, key, index, _ in plan.sub_columns})
    used.update({index: role for role, index in plan.message_columns})
    if plan.request_json_column is not None:
        used[plan.request_json_column] = REQUEST_JSON
    return used


def normalize_header(name: object) -> str:
    """Headers match case-insensitively after trimming."""
    return str(name).strip().casefold()


def explicit_field(name: str) -> str | None:
    """``"user"`` for ``field.user`` (a header matched ignoring case), else None."""
    head, dot, rest = name.strip().partition(".")
    return rest.strip() if dot and head.casefold() == "field" and rest.strip() else None


def is_assistants(schema_name: str) -> bool:
    """Whether schema ``schema_name`` is an Assistants version (rows need a thread)."""
    return schema_name in API_VERSIONS


def field_kind(schema_name: str, path: tuple[str, ...]) -> str:
    """How a cell for a field (or a dotted sub-field) of schema ``schema_name`` is read."""
    if len(path) == 2 and path[0] == METADATA:
        return Kind.TEXT  # metadata values are strings, kept as written
    if is_assistants(schema_name) and len(path) == 1:
        return FIELD_KINDS[path[0]]
    if len(path) == 1 and path[0] in KIND_OVERRIDES:
        return KIND_OVERRIDES[path[0]]
    return kind_for_types(value_types(schema_name, path))


def plan_columns(
    headers: Sequence[str],
    schema_name: str,
    columns: Mapping[str, str] | None = None,
    set_values: Mapping[str, str] | None = None,
    *,
    source: object = "input",
    column_named: Callable[[str], str] = lambda key: f"--column {key}",
) -> RowPlan:
    """Map the header to body fields of schema ``schema_name`` (v1, v2, responses, chat);
    raises InputError/UsageError for sheet-wide problems. ``column_named`` says how the user set
    the column of ``key`` (its flag, or the config file's key), for those messages."""
    fields = body_fields(schema_name)
    assistants = is_assistants(schema_name)
    known = (
        {name for version in API_VERSIONS for name in body_fields(version)}
        if assistants
        else set(fields)
    )
    shortcuts = MESSAGE_COLUMNS if schema_name == "chat" else ()
    extra = (THREAD_ID,) if assistants else shortcuts
    objects = {name for name in fields if _takes_keys(schema_name, name)}
    position = {normalize_header(name): index for index, name in enumerate(headers)}
    renames: dict[str, str] = {}
    field_renames: dict[str, str] = {}  # --column field.NAME=HEADER
    for key, value in (columns or {}).items():
        name = key.strip()
        if (named := explicit_field(name)) is not None and named in known:
            field_renames[named] = value
        elif name in (*known, *extra, REQUEST_JSON) or _dotted(name, objects) is not None:
            renames[name] = value
        else:
            raise UsageError(
                f"{column_named(name)}=...: {name!r} is not a field of the request body"
            )

    # A column --column gives to a field feeds that field only, not also the field its
    # header happens to name: column -> the name that claimed it.
    claimed = {
        index: claimant
        for claimant, header in (
            *renames.items(),
            *((FIELD_PREFIX + name, header) for name, header in field_renames.items()),
        )
        if (index := position.get(normalize_header(header))) is not None
    }

    def unclaimed(index: int | None, *names: str) -> int | None:
        """``index``, unless --column gave that column to another name than ``names``."""
        return None if index in claimed and claimed[index] not in names else index

    def found(name: str, header: str, *, given: bool) -> int | None:
        index = position.get(normalize_header(header))
        if index is None and given:
            raise InputError(source, f"{column_named(name)}={header}: no column named {header!r}")
        return index if given else unclaimed(index, name)

    def column_of(name: str) -> int | None:
        """The column of a shortcut, of ``thread_id`` or ``request_json``, or of a field
        that no shortcut shares its name with."""
        return found(name, renames.get(name, name), given=name in renames)

    def field_column_of(name: str) -> int | None:
        """A field's column: ``field.NAME`` always names the field; a plain ``NAME`` does
        too, unless a shortcut of the endpoint has that name (then the shortcut wins)."""
        if name in field_renames:
            return found(FIELD_PREFIX + name, field_renames[name], given=True)
        explicit = unclaimed(position.get(normalize_header(FIELD_PREFIX + name)), name)
        plain = None if name in shortcuts else column_of(name)
        if explicit is not None and plain is not None and explicit != plain:
            raise InputError(
                source,
                f"columns {headers[plain]!r} and {headers[explicit]!r} both name the field"
                f" {name!r}; keep one",
            )
        return explicit if explicit is not None else plain

    thread_column = column_of(THREAD_ID) if assistants else None
    if assistants and thread_column is None:
        raise InputError(source, missing_thread_column(headers))
    field_columns = []
    foreign_columns = []
    for name in sorted(known, key=lambda n: (n not in fields, n)):
        index = field_column_of(name)
        if index is None:
            continue
        if name in fields:
            field_columns.append((name, index, field_kind(schema_name, (name,))))
        else:
            foreign_columns.append((name, index))
    sub_columns: dict[tuple[str, str], int] = {}
    for index, header in enumerate(headers):
        dotted = _dotted(str(header).strip(), objects, fold=True)
        if dotted is not None and unclaimed(index, str(header).strip()) is not None:
            sub_columns[dotted] = index
    for name in renames:
        dotted = _dotted(name, objects)
        if dotted is not None and (index := column_of(name)) is not None:
            sub_columns[dotted] = index
    if assistants:  # a dotted column of the other version's object field
        other_objects = {
            name
            for version in API_VERSIONS
            for name in body_fields(version)
            if name not in fields and _takes_keys(version, name)
        }
        for index, header in enumerate(headers):
            if _dotted(str(header).strip(), other_objects, fold=True) is not None:
                foreign_columns.append((str(header).strip(), index))
    message_columns = [
        (role, index) for role in shortcuts if (index := column_of(role)) is not None
    ]
    defaults, sub_defaults = _parse_set_values(
        set_values or {}, schema_name, fields, objects, shortcuts
    )
    used = {index for _, index, _ in field_columns} | {index for _, index in foreign_columns}
    used |= set(sub_columns.values()) | {index for _, index in message_columns}
    used |= {i for i in (thread_column, column_of(REQUEST_JSON)) if i is not None}
    fed = {name for name, _, _ in field_columns} | {name for name, _ in sub_columns}
    hints = header_hints(
        [header for index, header in enumerate(headers) if index not in used],
        [name for name in fields if name not in fed],
    )
    return RowPlan(
        schema_name=schema_name,
        thread_column=thread_column,
        field_columns=tuple(field_columns),
        sub_columns=tuple(
            (name, key, index, field_kind(schema_name, (name, key)))
            for (name, key), index in sub_columns.items()
        ),
        request_json_column=column_of(REQUEST_JSON),
        foreign_columns=tuple(foreign_columns),
        defaults=defaults,
        sub_defaults=sub_defaults,
        message_columns=tuple(message_columns),
        hints=hints,
    )


def _squashed(name: str) -> str:
    """A name with case, spaces and punctuation gone: ``Assistant ID`` -> ``assistantid``."""
    return "".join(char for char in name.casefold() if char.isalnum())


def header_hints(headers: Sequence[str], fields: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """(field, header) for each header that names a field as people write it: in other
    case, with spaces or dashes (``Max Tokens``), or without the ``_id`` of an id field
    (``Assistant``). Only the exact name (or ``--column``) feeds the field."""
    by_name = {_squashed(str(header)): str(header) for header in headers}
    found = []
    for name in fields:
        forms = [name, name.removesuffix("_id")] if name.endswith("_id") else [name]
        header = next((by_name[s] for s in map(_squashed, forms) if s in by_name), None)
        if header is not None:
            found.append((name, header))
    return tuple(found)


def hint_text(name: str, header: str) -> str:
    """How to make column ``header`` feed field ``name``."""
    return f'pass --column "{name}={header}"'


def _takes_keys(schema_name: str, name: str) -> bool:
    """Whether a field is an object that dotted columns may fill key by key."""
    return name == METADATA or "object" in value_types(schema_name, (name,))


def _dotted(name: str, objects: set[str], *, fold: bool = False) -> tuple[str, str] | None:
    """``("reasoning", "effort")`` for ``reasoning.effort`` when ``reasoning`` takes keys.

    The field's part matches case-insensitively when ``fold`` (a header); the key is kept
    as written.
    """
    head, dot, key = name.partition(".")
    head = head.strip().casefold() if fold else head
    if not dot or not key or head not in objects:
        return None
    return head, key


def unsent_assistants_columns(headers: Sequence[str], schema_name: str) -> list[str]:
    """Headers of a migrated Assistants sheet that a live endpoint's body has no field for
    (``thread_id``, ``assistant_id``, ...): they are carried to the output, never sent."""
    if is_assistants(schema_name):
        return []
    fields = {normalize_header(name) for name in body_fields(schema_name)}
    assistants = {
        normalize_header(name)
        for name in (THREAD_ID, *(f for v in API_VERSIONS for f in body_fields(v)))
    }
    return [
        str(header)
        for header in headers
        if normalize_header(header) in assistants - fields
        and not (schema_name == "chat" and normalize_header(header) in MESSAGE_COLUMNS)
    ]


def missing_thread_column(headers: Sequence[str]) -> str:
    """Why a sheet has no ``thread_id`` column, with what it has and the likely fix."""
    shown = ", ".join(repr(str(h)) for h in headers[:12])
    if len(headers) > 12:
        shown += f", ... ({len(headers)} columns)"
    message = f"has no 'thread_id' column; its columns are {shown}"
    if len(headers) == 1 and str(headers[0]).count(";") >= 1:
        return (
            f"has no 'thread_id' column: its header is one cell, {str(headers[0])!r}, so the"
            " file is separated by ';' (as Excel saves CSV in some languages): pass"
            " --delimiter ';'"
        )
    loose = {normalize_header(h).replace(" ", "_").replace("-", "_"): str(h) for h in headers}
    close = difflib.get_close_matches(THREAD_ID, list(loose), n=1, cutoff=0.6)
    if close:
        found = loose[close[0]]
        return f'{message}. Did you mean {found!r}? Pass --column "thread_id={found}"'
    return f"{message} (name the thread column with --column thread_id=HEADER)"


def _parse_set_values(
    set_values: Mapping[str, str],
    schema_name: str,
    fields: Sequence[str],
    objects: set[str],
    shortcuts: Sequence[str] = (),
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    defaults: dict[str, Any] = {}
    sub_defaults: dict[str, dict[str, Any]] = {}
    for given, text in set_values.items():
        given = given.strip()
        if given in shortcuts:
            raise UsageError(
                f"--set {given}=...: {given!r} is a column of message text, not a default;"
                f" the request's {given!r} field is set with --set {FIELD_PREFIX}{given}=VALUE"
            )
        named = explicit_field(given)
        name = named if named is not None and named in fields else given
        dotted = _dotted(name, objects)
        path = dotted or (name,)
        if dotted is None and name not in fields:
            raise UsageError(f"--set {given}=...: {given!r} is not a field of the request body")
        try:
            value = convert(field_kind(schema_name, path), text)
        except CellError as error:
            raise UsageError(f"--set {given}=...: {error}") from None
        if problem := _value_problem(schema_name, path, value):
            raise UsageError(f"--set {given}=...: {problem}")
        if dotted is None:
            defaults[name] = value
        else:
            sub_defaults.setdefault(dotted[0], {})[dotted[1]] = value
    return defaults, sub_defaults


def _value_problem(schema_name: str, path: tuple[str, ...], value: Any) -> str | None:
    """What the schema finds wrong with ``value`` at ``path`` on its own (``--set top_p=5``
    would make every row invalid, and no row's error would name ``--set``). Rules that
    weigh it against other fields (chat's metadata needs ``store``) are the rows' to say."""
    body: dict[str, Any] = {path[0]: value if len(path) == 1 else {path[1]: value}}
    where = ".".join(path)
    for problem in schema_problems(body, schema_name):
        if problem.path == where or problem.path.startswith((f"{where}.", f"{where}[")):
            return str(problem)
    return None
