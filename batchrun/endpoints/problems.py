"""A reason a body cannot be sent (:class:`Problem`), and a JSON Schema error worded as one.

``jsonschema``'s own message for a failed ``oneOf`` ("is not valid under any of the given
schemas") does not tell an analyst what to fix; :func:`explain` words it by the branch the
value was aiming for.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

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


def explain(error: Any) -> list[Problem]:
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
        return [Problem(format_path(error.absolute_path), _json_words(error), _code(error))]
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
        return [problem for sub in best for problem in explain(sub)]
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
            f"{_shown(instance)} is not valid: expected {expected}",
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


def listed(value: Any) -> list[Any]:
    """``value`` if it is a list, else the empty list (a body's optional arrays)."""
    return value if isinstance(value, list) else []


# Longest value shown in a reason: a cell's whole text (21 tools, a long instruction) in
# its error would hide the reason, and pass Excel's cell limit.
SHOWN_VALUE = 80
# Lengths named by size and limit, not by the whole value ("[...] is too long").
SIZE_WORDS = {
    "maxItems": ("items", "at most {} {} allowed"),
    "minItems": ("items", "at least {} {} needed"),
    "maxLength": ("characters long", "at most {} {} allowed"),
    "minLength": ("characters long", "at least {} {} needed"),
}


def _json_words(error: Any) -> str:
    """The error's message worded for the sheet's author: a length by its size and limit
    ("has 21 items; at most 20 are allowed"); a null or boolean value named as JSON names
    it (``null``, ``true``), not as Python does (``None``, ``True``); a long value cut."""
    value = error.instance
    message = str(error.message)
    if error.validator in SIZE_WORDS and isinstance(value, (str, list)):
        unit, limit = SIZE_WORDS[error.validator]
        size = f"has {len(value)} {unit}" if isinstance(value, list) else f"is {len(value)} {unit}"
        count = error.validator_value
        return f"{size}; {limit.format(count, 'is' if count == 1 else 'are')}"
    shown = repr(value)
    if not message.startswith(shown):
        return message
    if value is None or isinstance(value, bool):
        return json.dumps(value) + message[len(shown) :]
    return _shown(value) + message[len(shown) :]


def _shown(value: Any) -> str:
    """``value`` as a reason shows it: its repr, cut to :data:`SHOWN_VALUE` characters."""
    shown = repr(value)
    return shown if len(shown) <= SHOWN_VALUE else f"{shown[: SHOWN_VALUE - 4]} ...{shown[-1]}"
