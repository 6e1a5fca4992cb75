"""The request-body JSON Schemas (v1, v2, responses, chat) and the limits they only describe.

Checking a body yields a list of :class:`Problem` records, never an exception::

    >>> BodyChecker("v2").check({"assistant_id": "asst_1", "temperature": 3})
    [Problem(path='temperature', message='3 is greater than the maximum of 2')]

Valid bodies, the common case, are confirmed by the compiled validator (jsonschema-rs);
only an invalid body is walked again by ``jsonschema`` to word each problem as clearly as
it does (``best_match`` picks the branch of a ``oneOf`` that the value was aiming for).
This module is shared by the client and the simulator. The rules beyond the schema are in
:mod:`batchrun.endpoints.rules`; the wording of a schema error in
:mod:`batchrun.endpoints.problems`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

from batchrun.endpoints.problems import Problem, explain, listed
from batchrun.endpoints.rules import (
    chat_problems,
    metadata_fits,
    metadata_problems,
    responses_problems,
)

API_VERSIONS = ("v1", "v2")
DEFAULT_API_VERSION = "v2"
# The live endpoints' bodies, cut from the official OpenAPI document: CreateResponse and
# CreateChatCompletionRequest. A checker of one of these names checks that body.
ENDPOINT_SCHEMAS = ("responses", "chat")
SCHEMA_NAMES = (*API_VERSIONS, *ENDPOINT_SCHEMAS)
# Token maxima the schema leaves unbounded but the service refuses below 1 (the others,
# max_output_tokens and the Assistants maxima, carry their minimum in the schema).
POSITIVE_FIELDS: dict[str, tuple[str, ...]] = {"chat": ("max_completion_tokens", "max_tokens")}
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


@cache
def load_schema(schema_name: str) -> dict[str, Any]:
    """The request-body JSON Schema named ``schema_name``.

    ``"v1"`` or ``"v2"``: CreateRunRequest of that Assistants version; ``"responses"``:
    CreateResponse; ``"chat"``: CreateChatCompletionRequest.
    """
    if schema_name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {schema_name!r}; use one of {', '.join(SCHEMA_NAMES)}")
    text = resources.files("batchrun").joinpath("schemas", f"{schema_name}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def body_fields(schema_name: str) -> tuple[str, ...]:
    """The top-level body properties of schema ``schema_name``, in schema order.

    The cut-out schemas are an ``allOf`` of components (CreateResponse joins three), so the
    properties of every part count, each name once.
    """
    schema = load_schema(schema_name)
    return tuple(dict.fromkeys(_top_level_properties(schema, schema)))


def _top_level_properties(node: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        node = schema["$defs"][ref.removeprefix("#/$defs/")]
    names = list(node.get("properties", ()))
    for part in node.get("allOf", ()):
        names.extend(_top_level_properties(part, schema))
    return names


def _resolve(node: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    while isinstance(ref := node.get("$ref"), str) and ref.startswith("#/$defs/"):
        node = schema["$defs"][ref.removeprefix("#/$defs/")]
    return node


def _property_schemas(node: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    node = _resolve(node, schema)
    found = dict(node.get("properties", {}))
    for part in node.get("allOf", ()):
        found.update(_property_schemas(part, schema))
    return found


def value_types(schema_name: str, path: tuple[str, ...]) -> frozenset[str]:
    """The JSON types (``null`` left out) the schema accepts at a top-level field
    (``("temperature",)``) or one of its object's properties (``("reasoning", "effort")``);
    empty when the schema does not say."""
    schema = load_schema(schema_name)
    node = _node_at(schema, path)
    if node is None:
        return frozenset()
    types: set[str] = set()
    for branch in _branches(node, schema):
        kind = branch.get("type")
        if "enum" in branch and kind is None:
            kind = "string" if all(isinstance(v, str | None) for v in branch["enum"]) else None
        types.update([kind] if isinstance(kind, str) else kind or ())
    types.discard("null")
    return frozenset(types)


def unknown_fields(
    body: Mapping[str, Any], schema_name: str, path: tuple[str, ...] = ()
) -> list[str]:
    """The dotted paths of ``body``'s fields that the schema does not name, where it names
    an object's fields (not in a free-form object such as ``metadata``; lists are not
    walked). The cut-out Responses and chat schemas allow any field, but the service
    answers 400 ``unknown_parameter`` ("Unknown parameter: 'reasoning.efort'.")."""
    known = _fields_at(schema_name, path)
    if known is None:
        return []
    found = []
    for name, value in body.items():
        if name not in known:
            found.append(".".join((*path, name)))
        elif type(value) is dict:
            found.extend(unknown_fields(value, schema_name, (*path, name)))
    return found


@cache
def _fields_at(schema_name: str, path: tuple[str, ...]) -> frozenset[str] | None:
    """The field names of the object at ``path``, or None when it may have any (free-form,
    or not an object the schema describes)."""
    schema = load_schema(schema_name)
    node = _node_at(schema, path)
    if node is None:
        return None
    names: set[str] = set()
    for branch in _branches(node, schema):
        properties = _property_schemas(branch, schema)
        kind = branch.get("type")
        if not properties and kind != "object" and "object" not in (kind or ()):
            continue  # a string, a number, a list: not this object
        if not properties or branch.get("additionalProperties") not in (None, False):
            return None  # an object of any fields
        names.update(properties)
    return frozenset(names) or None


def _node_at(schema: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any] | None:
    """The schema of the field at ``path`` (a top-level field, then its properties, through
    every branch), or None when the schema names no such field."""
    node: Mapping[str, Any] = schema
    for name in path:
        found: dict[str, Any] = {}
        for branch in _branches(node, schema):
            found.update(_property_schemas(branch, schema))
        if name not in found:
            return None
        node = found[name]
    return node


def _branches(node: Mapping[str, Any], schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A schema's alternatives (anyOf/oneOf, nested), each resolved; itself if it has none."""
    node = _resolve(node, schema)
    options = node.get("anyOf") or node.get("oneOf")
    if not options:
        return [node]
    return [branch for option in options for branch in _branches(option, schema)]


class BodyChecker:
    """Checks request bodies against one schema (v1, v2, responses, chat); reusable and cheap
    per call."""

    __slots__ = (
        "_fast",
        "_records",
        "_slow",
        "batchrun_rules",
        "run_tag",
        "schema_name",
        "strict_fields",
    )

    def __init__(
        self,
        schema_name: str = DEFAULT_API_VERSION,
        *,
        run_tag: bool = False,
        batchrun_rules: bool = True,
        strict_fields: bool = True,
    ) -> None:
        import jsonschema_rs

        schema = load_schema(schema_name)
        self.schema_name = schema_name
        self._records = "runs" if schema_name in API_VERSIONS else "answers"
        # With the run tag on, batchrun adds one metadata key of its own to every body.
        self.run_tag = run_tag
        # batchrun's own rules (no streaming, the run tag's key); without them, the checks
        # are the service's own: the schema and the limits OpenAI documents and enforces.
        self.batchrun_rules = batchrun_rules
        # Fields the schema does not name are refused, as OpenAI refuses them (the cut-out
        # Responses and chat schemas allow any); off for a compatible server's own fields.
        self.strict_fields = strict_fields
        self._fast = jsonschema_rs.validator_for(schema)
        self._slow: Any = None

    def check(self, body: Mapping[str, Any]) -> list[Problem]:
        """Every problem of ``body``; an empty list means it may be sent."""
        if self._fast.is_valid(body):
            return self._limit_problems(body)
        problems = self.schema_problems(body)
        seen = {problem.path for problem in problems}
        problems.extend(p for p in self._limit_problems(body) if p.path not in seen)
        return problems

    def is_valid(self, body: Mapping[str, Any]) -> bool:
        """Whether ``body`` passes the schema (batchrun's and the documented limits aside)."""
        return bool(self._fast.is_valid(body))

    def schema_problems(self, body: Mapping[str, Any]) -> list[Problem]:
        """What the schema finds in ``body``, each worded for the sheet's author."""
        if self._slow is None:
            from jsonschema import Draft202012Validator

            self._slow = Draft202012Validator(load_schema(self.schema_name))
        problems: list[Problem] = []
        for error in sorted(self._slow.iter_errors(body), key=lambda e: list(e.path)):
            problems.extend(explain(error))
        # Two branches that share a part (allOf pieces of text.format) may word one problem
        # twice: each is said once.
        return list(dict.fromkeys(problems))

    def _limit_problems(self, body: Mapping[str, Any]) -> list[Problem]:
        problems = []
        if self.batchrun_rules and body.get("stream") is True:
            problems.append(
                Problem(
                    "stream",
                    f"true is not supported: batchrun records {self._records}, not event "
                    "streams (leave stream empty or false)",
                )
            )
        metadata = body.get("metadata")
        if metadata is not None and not metadata_fits(metadata, run_tag=self.run_tag):
            problems.extend(metadata_problems(metadata, "metadata", run_tag=self.run_tag))
        for index, message in enumerate(listed(body.get("additional_messages"))):
            if isinstance(message, Mapping):
                path = f"additional_messages[{index}].metadata"
                problems.extend(metadata_problems(message.get("metadata"), path, run_tag=False))
        for path, name in self._function_names(body):
            if isinstance(name, str) and not FUNCTION_NAME.fullmatch(name):
                problems.append(
                    Problem(
                        path,
                        f"{name!r} must be 1 to 64 letters, digits, '_' or '-'",
                        "invalid_value",
                    )
                )
        for name in POSITIVE_FIELDS.get(self.schema_name, ()):
            value = body.get(name)
            if type(value) is int and value < 1:
                problems.append(
                    Problem(
                        name, f"{value} is less than the minimum of 1", "integer_below_min_value"
                    )
                )
        if self.strict_fields:
            problems.extend(
                Problem(path, "is not a field here", "unknown_parameter")
                for path in unknown_fields(body, self.schema_name)
            )
        if self.schema_name == "responses":
            problems.extend(responses_problems(body, batchrun_rules=self.batchrun_rules))
        elif self.schema_name == "chat":
            problems.extend(chat_problems(body))
        return problems

    def _function_names(self, body: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
        """Each function name of ``body`` with its path: Assistants and chat nest it in a
        tool's ``function``, the Responses API's tools are flat, and chat's deprecated
        ``functions`` list names them at the top."""
        for index, tool in enumerate(listed(body.get("tools"))):
            if not isinstance(tool, Mapping):
                continue
            function = tool.get("function")
            if isinstance(function, Mapping):
                yield f"tools[{index}].function.name", function.get("name")
            elif self.schema_name == "responses" and tool.get("type") == "function":
                yield f"tools[{index}].name", tool.get("name")
        if self.schema_name == "chat":
            for index, function in enumerate(listed(body.get("functions"))):
                if isinstance(function, Mapping):
                    yield f"functions[{index}].name", function.get("name")


def schema_problems(body: Mapping[str, Any], schema_name: str) -> list[Problem]:
    """What the schema alone finds in ``body`` (no rule that weighs one field against
    another, such as chat's metadata needing ``store``)."""
    checker = _checker(schema_name, batchrun_rules=False)
    return [] if checker.is_valid(body) else checker.schema_problems(body)


def check_body(body: Mapping[str, Any], schema_name: str = DEFAULT_API_VERSION) -> list[Problem]:
    """Every problem of ``body`` under ``schema_name`` (no run tag reserved)."""
    return _checker(schema_name, batchrun_rules=True).check(body)


def service_problems(
    body: Mapping[str, Any], schema_name: str = DEFAULT_API_VERSION
) -> list[Problem]:
    """The problems the service itself finds in ``body``: the schema and its documented
    limits, without batchrun's own rules (``stream: true`` is the service's to serve)."""
    return _checker(schema_name, batchrun_rules=False).check(body)


@cache
def _checker(schema_name: str, *, batchrun_rules: bool) -> BodyChecker:
    return BodyChecker(schema_name, batchrun_rules=batchrun_rules)
