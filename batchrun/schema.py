"""The request-body JSON Schemas (v1, v2, responses, chat) and the limits they only describe.

Checking a body yields a list of :class:`Problem` records, never an exception::

    >>> BodyChecker("v2").check({"assistant_id": "asst_1", "temperature": 3})
    [Problem(path='temperature', message='3 is greater than the maximum of 2')]

Valid bodies, the common case, are confirmed by the compiled validator (jsonschema-rs);
only an invalid body is walked again by ``jsonschema`` to word each problem as clearly as
it does (``best_match`` picks the branch of a ``oneOf`` that the value was aiming for).
This module is shared by the client and the simulator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

API_VERSIONS = ("v1", "v2")
DEFAULT_API_VERSION = "v2"
# The live endpoints' bodies, cut from the official OpenAPI document: CreateResponse and
# CreateChatCompletionRequest. A checker of one of these names checks that body.
ENDPOINT_SCHEMAS = ("responses", "chat")
SCHEMA_NAMES = (*API_VERSIONS, *ENDPOINT_SCHEMAS)
RUN_TAG_KEY = "batchrun_key"
METADATA_MAX_KEYS = 16
# Token maxima the schema leaves unbounded but the service refuses below 1 (the others,
# max_output_tokens and the Assistants maxima, carry their minimum in the schema).
# What a response answers: a row with none of these has nothing to answer.
RESPONSE_SOURCES = ("input", "instructions", "prompt", "conversation", "previous_response_id")
POSITIVE_FIELDS: dict[str, tuple[str, ...]] = {"chat": ("max_completion_tokens", "max_tokens")}
METADATA_KEY_MAX_CHARS = 64
METADATA_VALUE_MAX_CHARS = 512
FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
# Keys whose value says which branch of a oneOf/anyOf an object is (a tool's or an input
# item's ``type``, a chat message's ``role``).
DISCRIMINATORS = ("type", "role")


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a body cannot be sent: where (a dotted path) and what.

    ``code`` is the error code OpenAI answers for the same problem
    (``missing_required_parameter``, ``unknown_parameter``, ``invalid_type``, ...); None
    for batchrun's own rules, which the service does not have.
    """

    path: str
    message: str
    code: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def format_path(parts: Iterable[str | int]) -> str:
    """``["tools", 0, "type"]`` -> ``"tools[0].type"``; the empty path is ``"body"``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


@cache
def load_schema(api_version: str) -> dict[str, Any]:
    """The request-body JSON Schema named ``api_version``.

    ``"v1"`` or ``"v2"``: CreateRunRequest of that Assistants version; ``"responses"``:
    CreateResponse; ``"chat"``: CreateChatCompletionRequest.
    """
    if api_version not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {api_version!r}; use one of {', '.join(SCHEMA_NAMES)}")
    text = resources.files("batchrun").joinpath("schemas", f"{api_version}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def body_fields(api_version: str) -> tuple[str, ...]:
    """The top-level body properties of schema ``api_version``, in schema order.

    The cut-out schemas are an ``allOf`` of components (CreateResponse joins three), so the
    properties of every part count, each name once.
    """
    schema = load_schema(api_version)
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


def value_types(api_version: str, path: tuple[str, ...]) -> frozenset[str]:
    """The JSON types (``null`` left out) the schema accepts at a top-level field
    (``("temperature",)``) or one of its object's properties (``("reasoning", "effort")``);
    empty when the schema does not say."""
    schema = load_schema(api_version)
    node: Mapping[str, Any] = schema
    for name in path:
        found: dict[str, Any] = {}
        for branch in _branches(node, schema):
            found.update(_property_schemas(branch, schema))
        if name not in found:
            return frozenset()
        node = found[name]
    types: set[str] = set()
    for branch in _branches(node, schema):
        kind = branch.get("type")
        if "enum" in branch and kind is None:
            kind = "string" if all(isinstance(v, str | None) for v in branch["enum"]) else None
        types.update([kind] if isinstance(kind, str) else kind or ())
    types.discard("null")
    return frozenset(types)


def _branches(node: Mapping[str, Any], schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A schema's alternatives (anyOf/oneOf, nested), each resolved; itself if it has none."""
    node = _resolve(node, schema)
    options = node.get("anyOf") or node.get("oneOf")
    if not options:
        return [node]
    return [branch for option in options for branch in _branches(option, schema)]


class BodyChecker:
    """Checks request bodies of one API version; reusable and cheap per call."""

    __slots__ = ("_fast", "_records", "_slow", "api_version", "batchrun_rules", "run_tag")

    def __init__(
        self,
        api_version: str = DEFAULT_API_VERSION,
        *,
        run_tag: bool = False,
        batchrun_rules: bool = True,
    ) -> None:
        import jsonschema_rs

        schema = load_schema(api_version)
        self.api_version = api_version
        self._records = "runs" if api_version in API_VERSIONS else "answers"
        # With the run tag on, batchrun adds one metadata key of its own to every body.
        self.run_tag = run_tag
        # batchrun's own rules (no streaming, the run tag's key); without them, the checks
        # are the service's own: the schema and the limits OpenAI documents and enforces.
        self.batchrun_rules = batchrun_rules
        self._fast = jsonschema_rs.validator_for(schema)
        self._slow: Any = None

    def check(self, body: Mapping[str, Any]) -> list[Problem]:
        """Every problem of ``body``; an empty list means it may be sent."""
        if self._fast.is_valid(body):
            return self._limit_problems(body)
        problems = self._schema_problems(body)
        seen = {problem.path for problem in problems}
        problems.extend(p for p in self._limit_problems(body) if p.path not in seen)
        return problems

    def _schema_problems(self, body: Mapping[str, Any]) -> list[Problem]:
        if self._slow is None:
            from jsonschema import Draft202012Validator

            self._slow = Draft202012Validator(load_schema(self.api_version))
        problems: list[Problem] = []
        for error in sorted(self._slow.iter_errors(body), key=lambda e: list(e.path)):
            problems.extend(_explain(error))
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
        if metadata is not None and not _metadata_fits(metadata, run_tag=self.run_tag):
            problems.extend(metadata_problems(metadata, "metadata", run_tag=self.run_tag))
        for index, message in enumerate(_list(body.get("additional_messages"))):
            if isinstance(message, Mapping):
                path = f"additional_messages[{index}].metadata"
                problems.extend(metadata_problems(message.get("metadata"), path, run_tag=False))
        for index, tool in enumerate(_list(body.get("tools"))):
            if not isinstance(tool, Mapping):
                continue
            # Assistants and chat nest a function's name; the Responses API's tools are flat.
            function = tool.get("function")
            path, name = f"tools[{index}].function.name", None
            if isinstance(function, Mapping):
                name = function.get("name")
            elif self.api_version == "responses" and tool.get("type") == "function":
                path, name = f"tools[{index}].name", tool.get("name")
            if isinstance(name, str) and not FUNCTION_NAME.fullmatch(name):
                problems.append(
                    Problem(
                        path,
                        f"{name!r} must be 1 to 64 letters, digits, '_' or '-'",
                        "invalid_value",
                    )
                )
        for name in POSITIVE_FIELDS.get(self.api_version, ()):
            value = body.get(name)
            if type(value) is int and value < 1:
                problems.append(
                    Problem(
                        name, f"{value} is less than the minimum of 1", "integer_below_min_value"
                    )
                )
        if self.api_version == "responses":
            problems.extend(_responses_problems(body, batchrun_rules=self.batchrun_rules))
        return problems


def _responses_problems(body: Mapping[str, Any], *, batchrun_rules: bool) -> list[Problem]:
    """What the Responses API refuses beyond its schema, and batchrun's rule that a row
    names its model (the prompt objects that could stand in for one are retired)."""
    problems = []
    if batchrun_rules and "model" not in body:
        problems.append(
            Problem(
                "model",
                "is required (prompt objects are retired: name the model in the row)",
                "missing_required_parameter",
            )
        )
    if batchrun_rules and not any(_given(body.get(name)) for name in RESPONSE_SOURCES):
        # Only a model and settings: nothing for the model to answer. (An Assistants sheet
        # moved to --endpoint responses looks so: its thread and assistant are not sent.)
        problems.append(
            Problem(
                "input",
                "is required: the row has no input, instructions, prompt, conversation or"
                " previous_response_id, so there is nothing to answer",
                "missing_required_parameter",
            )
        )
    both = body.get("conversation") is not None and body.get("previous_response_id") is not None
    if batchrun_rules and both:  # the service says so itself, in words of its own
        problems.append(
            Problem(
                "previous_response_id",
                "cannot be combined with conversation (a conversation keeps its own history)",
                "mutually_exclusive_parameters",
            )
        )
    return problems


def _given(value: Any) -> bool:
    """Whether a field says something: not null, not empty text, not an empty list."""
    if isinstance(value, str):
        return bool(value.strip())
    return value is not None and value != [] and value != {}


def _metadata_fits(metadata: Any, *, run_tag: bool) -> bool:
    """The common case, checked quickly: a small map of short strings."""
    if type(metadata) is not dict:
        return not isinstance(metadata, Mapping)
    if len(metadata) > (METADATA_MAX_KEYS - 1 if run_tag else METADATA_MAX_KEYS):
        return False
    if not metadata:
        return True
    if run_tag and RUN_TAG_KEY in metadata:
        return False
    values = metadata.values()
    return (
        all(type(value) is str for value in values)
        and max(map(len, values)) <= METADATA_VALUE_MAX_CHARS
        and max(map(len, metadata)) <= METADATA_KEY_MAX_CHARS
    )


def metadata_problems(metadata: Any, path: str, *, run_tag: bool) -> list[Problem]:
    """The documented metadata limits: 16 pairs, keys <= 64 chars, string values <= 512."""
    if not isinstance(metadata, Mapping):
        return []
    problems = []
    limit = METADATA_MAX_KEYS - 1 if run_tag else METADATA_MAX_KEYS
    if run_tag and RUN_TAG_KEY in metadata:
        problems.append(
            Problem(
                f"{path}.{RUN_TAG_KEY}",
                "is reserved for batchrun's run tag; rename it or pass --no-run-tag",
            )
        )
    if len(metadata) > limit:
        hint = " (batchrun's run tag takes one; --no-run-tag frees it)" if run_tag else ""
        problems.append(
            Problem(
                path,
                f"has {len(metadata)} keys; at most {limit} are allowed{hint}",
                "object_above_max_properties",
            )
        )
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_MAX_CHARS:
            problems.append(
                Problem(
                    f"{path}.{key}",
                    f"key is {len(key)} characters; at most 64 are allowed",
                    "string_above_max_length",
                )
            )
        if not isinstance(value, str):
            problems.append(
                Problem(f"{path}.{key}", f"{json.dumps(value)} is not a string", "invalid_type")
            )
        elif len(value) > METADATA_VALUE_MAX_CHARS:
            problems.append(
                Problem(
                    f"{path}.{key}",
                    f"value is {len(value)} characters; at most 512 are allowed",
                    "string_above_max_length",
                )
            )
    return problems


def _explain(error: Any) -> list[Problem]:
    """Word a schema error; a failed oneOf/anyOf is explained by the branch it aimed for.

    "is not valid under any of the given schemas" does not tell an analyst what to fix.
    The branch whose form matched (right JSON type, right ``type`` discriminator) and that
    has the fewest errors is the one the value was meant to be, so its errors are shown.
    """
    if error.validator == "required" and isinstance(error.instance, Mapping):
        missing = [name for name in error.validator_value if name not in error.instance]
        return [
            Problem(
                format_path([*error.absolute_path, name]),
                "is required",
                "missing_required_parameter",
            )
            for name in missing
        ]
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = error.schema.get("properties", {})
        return [
            Problem(
                format_path([*error.absolute_path, name]),
                "is not a field here (additional properties are not allowed)",
                "unknown_parameter",
            )
            for name in error.instance
            if name not in allowed
        ]
    if not error.context:
        return [Problem(format_path(error.absolute_path), error.message, _code(error))]
    branches: dict[Any, list[Any]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)

    def form_mismatch(errors: list[Any]) -> bool:
        for sub in errors:
            where = list(sub.relative_path)
            if not where and sub.validator in ("type", "enum", "const"):
                return True
            if where == ["type"] and sub.validator in ("enum", "const"):
                return True
            if sub.context and not where and all(form_mismatch([c]) for c in sub.context):
                return True
        return False

    matching = [errors for errors in branches.values() if not form_mismatch(errors)]
    if matching:
        best = min(matching, key=len)
        if len(best) == 1 and (merged := _merged_choices(error, best)) is not None:
            return [merged]
        return [problem for sub in best for problem in _explain(sub)]
    instance = error.instance
    for key in DISCRIMINATORS:
        kinds = _discriminators(error, key)
        if isinstance(instance, Mapping) and key in instance and kinds:
            path = format_path([*error.absolute_path, key])
            return [Problem(path, f"{instance[key]!r} is not one of {kinds}", "invalid_value")]
    expected = " or ".join(dict.fromkeys(_alternatives(error)))
    return [
        Problem(
            format_path(error.absolute_path),
            f"{instance!r} is not valid: expected {expected}",
            "invalid_value",
        )
    ]


def _merged_choices(error: Any, best: list[Any]) -> Problem | None:
    """One problem naming every allowed value, when the closest branch differs from the
    value only by its discriminator (a chat message's ``role``: one branch a role)."""
    (sub,) = best
    where = list(sub.relative_path)
    if len(where) != 1 or where[0] not in DISCRIMINATORS or sub.validator not in ("enum", "const"):
        return None
    if not isinstance(error.instance, Mapping):
        return None
    key = where[0]
    values = _discriminators(error, key)
    path = format_path([*error.absolute_path, key])
    return Problem(path, f"{error.instance.get(key)!r} is not one of {values}", "invalid_value")


def _code(error: Any) -> str:
    """OpenAI's error code for a JSON Schema error (as its API answers the same body)."""
    # Named for the field's type, not the value's: temperature 3 is a decimal above max.
    types = error.schema.get("type")
    integer = "integer" in types if isinstance(types, list) else types == "integer"
    kind = "integer" if integer else "decimal"
    if error.validator in ("maximum", "exclusiveMaximum"):
        return f"{kind}_above_max_value"
    if error.validator in ("minimum", "exclusiveMinimum"):
        return f"{kind}_below_min_value"
    if error.validator == "type":
        return "invalid_type"
    if error.validator in ("maxLength", "minLength"):
        return f"string_{'above_max' if error.validator == 'maxLength' else 'below_min'}_length"
    if error.validator in ("maxItems", "minItems"):
        return f"array_{'above_max' if error.validator == 'maxItems' else 'below_min'}_length"
    return "invalid_value"


def _leaves(error: Any) -> list[Any]:
    """The innermost errors under a oneOf/anyOf error, at any depth."""
    return [leaf for sub in error.context for leaf in (_leaves(sub) if sub.context else [sub])]


def _discriminators(error: Any, key: str) -> list[str]:
    """The ``key`` values (``type``, ``role``) that the branches of a oneOf/anyOf accept,
    in schema order."""
    values: list[str] = []
    for leaf in _leaves(error):
        if list(leaf.relative_path) != [key]:
            continue
        if leaf.validator == "enum":
            values.extend(v for v in leaf.validator_value if v not in values)
        elif leaf.validator == "const" and leaf.validator_value not in values:
            values.append(leaf.validator_value)
    return values


def _alternatives(error: Any) -> list[str]:
    """What each branch wanted at the value itself, worded for a person."""
    wanted = []
    for leaf in _leaves(error):
        if list(leaf.relative_path):
            continue
        if leaf.validator == "enum" and leaf.validator_value != [None]:
            values = leaf.validator_value
            wanted.append(f"one of {values}" if len(values) <= 8 else f"one of {len(values)} names")
        elif leaf.validator == "type":
            wanted.append(f"a value of type {leaf.validator_value!r}")
    return wanted or [error.message]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def check_body(body: Mapping[str, Any], api_version: str = DEFAULT_API_VERSION) -> list[Problem]:
    """Every problem of ``body`` under ``api_version`` (no run tag reserved)."""
    return _checker(api_version, batchrun_rules=True).check(body)


def service_problems(
    body: Mapping[str, Any], api_version: str = DEFAULT_API_VERSION
) -> list[Problem]:
    """The problems the service itself finds in ``body``: the schema and its documented
    limits, without batchrun's own rules (``stream: true`` is the service's to serve)."""
    return _checker(api_version, batchrun_rules=False).check(body)


@cache
def _checker(api_version: str, *, batchrun_rules: bool) -> BodyChecker:
    return BodyChecker(api_version, batchrun_rules=batchrun_rules)
