"""What a request body must meet beyond its JSON Schema: the service's documented limits
(metadata: 16 pairs, keys <= 64 characters, string values <= 512) and batchrun's own rules
(a response names its model and has something to answer; the run tag's key is reserved).

Shared by the client (:mod:`batchrun.endpoints.schema`) and the simulator.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from batchrun.endpoints.problems import Problem

RUN_TAG_KEY = "batchrun_key"
METADATA_MAX_KEYS = 16
METADATA_KEY_MAX_CHARS = 64
METADATA_VALUE_MAX_CHARS = 512
# What a response answers: a row with none of these has nothing to answer.
RESPONSE_SOURCES = ("input", "instructions", "prompt", "conversation", "previous_response_id")


def responses_problems(body: Mapping[str, Any], *, batchrun_rules: bool) -> list[Problem]:
    """What the Responses API refuses beyond its schema (background mode without
    storing), and batchrun's rule that a row names its model (the prompt objects that could
    stand in for one are retired)."""
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
    if body.get("background") is True and body.get("store") is False:
        # The service's own rule: a background response is kept to be polled.
        problems.append(
            Problem(
                "background",
                "true needs the response stored: set store to true (or leave it empty), or "
                "background to false",
                "invalid_value",
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


def metadata_without_store(body: Mapping[str, Any]) -> bool:
    """Whether a chat completion request carries metadata without ``store: true``, which
    OpenAI refuses ("The 'metadata' parameter is only allowed when 'store' is enabled.")."""
    return body.get("metadata") is not None and body.get("store") is not True


def chat_problems(body: Mapping[str, Any]) -> list[Problem]:
    """What Chat Completions refuses beyond its schema."""
    if not metadata_without_store(body):
        return []
    return [
        Problem(
            "metadata",
            "is only allowed when store is true (OpenAI refuses metadata on a completion it "
            "does not store): set store to true, or leave the metadata out",
            "invalid_value",
        )
    ]


def takes_run_tag(endpoint: str, body: Mapping[str, Any]) -> bool:
    """Whether a request of ``endpoint`` may carry the run tag: not a chat completion that
    is not stored (refused with metadata, and never looked up anyway)."""
    return endpoint != "chat" or body.get("store") is True


def _given(value: Any) -> bool:
    """Whether a field says something: not null, not empty text, not an empty list."""
    if isinstance(value, str):
        return bool(value.strip())
    return value is not None and value != [] and value != {}


def metadata_fits(metadata: Any, *, run_tag: bool) -> bool:
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
