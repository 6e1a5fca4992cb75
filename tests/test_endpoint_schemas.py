"""The Responses and Chat Completions body schemas cut from the official OpenAPI document."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from batchrun.endpoints.schema import BodyChecker, body_fields, check_body, load_schema

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference"
OPENAPI = REFERENCE / "openai-openapi-f85dbe2.yaml"
needs_reference = pytest.mark.skipif(
    not OPENAPI.is_file(), reason="../shared/reference is not beside this checkout"
)
ENDPOINTS = ["responses", "chat"]
USER_HI = {"role": "user", "content": "hi"}


def build_schemas() -> Any:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_schemas
    finally:
        sys.path.pop(0)
    return build_schemas


def verdicts(name: str, body: dict[str, Any]) -> tuple[bool, bool]:
    """Whether jsonschema-rs and jsonschema (independent implementations) accept ``body``."""
    schema = load_schema(name)
    return (
        jsonschema_rs.validator_for(schema).is_valid(body),
        Draft202012Validator(schema).is_valid(body),
    )


@needs_reference
def test_shipped_endpoint_schemas_are_rebuilt_byte_for_byte() -> None:
    tools = build_schemas()
    spec = tools.load_openapi(OPENAPI)
    for name in ENDPOINTS:
        shipped = (ROOT / "batchrun" / "schemas" / f"{name}.json").read_text("utf-8")
        assert tools.render(tools.build_endpoint(spec, name)) == shipped


@needs_reference
def test_build_is_deterministic_and_matches_every_shipped_file_v1_v2_included() -> None:
    tools = build_schemas()
    first, second = tools.build_all(REFERENCE), tools.build_all(REFERENCE)
    assert first == second
    assert set(first) == {"v1", "v2", "responses", "chat"}
    for name, text in first.items():
        assert (ROOT / "batchrun" / "schemas" / f"{name}.json").read_text("utf-8") == text


@pytest.mark.parametrize("name", ENDPOINTS)
def test_both_validators_compile_the_schema_under_2020_12(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    jsonschema_rs.validator_for(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("name", ENDPOINTS)
def test_every_ref_resolves_and_no_openapi_keyword_is_left(name: str) -> None:
    schema = load_schema(name)
    refs: list[str] = []
    leftovers: list[str] = []

    def walk(node: Any, names: bool = False) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if not names:
                    if key == "$ref":
                        refs.append(value)
                    if key in ("nullable", "discriminator", "$recursiveRef", "example"):
                        leftovers.append(key)
                    if key.startswith("x-"):
                        leftovers.append(key)
                walk(value, names=not names and key in ("properties", "$defs"))
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    assert refs and not leftovers
    for ref in refs:
        assert ref.startswith("#/$defs/"), ref
        assert ref.removeprefix("#/$defs/") in schema["$defs"], ref


def test_a_property_named_like_a_keyword_is_kept() -> None:
    """A function tool's ``description`` is a property, not documentation to drop."""
    function_tool = load_schema("responses")["$defs"]["FunctionTool"]
    assert "description" in function_tool["properties"]
    chat_function = load_schema("chat")["$defs"]["FunctionObject"]
    assert "description" in chat_function["properties"]


def test_recursive_filters_refer_to_their_own_component() -> None:
    compound = load_schema("responses")["$defs"]["CompoundFilter"]
    branches = compound["properties"]["filters"]["items"]["anyOf"]
    assert {"$ref": "#/$defs/CompoundFilter"} in branches


FUNCTION_TOOL = {"type": "function", "name": "lookup", "parameters": {}, "strict": False}
VALID = [
    pytest.param("responses", {"model": "gpt-4o", "input": "hi"}, id="text-input"),
    pytest.param("responses", {"model": "gpt-4o", "input": [USER_HI]}, id="easy-message"),
    pytest.param(
        "responses",
        {
            "model": "gpt-4o",
            "input": [
                {"role": "developer", "content": "Be brief."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hi"}],
                },
            ],
        },
        id="typed-message-with-content-parts",
    ),
    pytest.param(
        "responses", {"model": "o3", "input": "hi", "reasoning": {"effort": "low"}}, id="reasoning"
    ),
    pytest.param(
        "responses",
        {
            "model": "gpt-4o",
            "input": "hi",
            "conversation": {"id": "conv_1"},
            "store": True,
            "background": True,
            "metadata": {"row": "1"},
            "text": {"verbosity": "low"},
        },
        id="conversation-object",
    ),
    pytest.param(
        "responses", {"model": "gpt-4o", "input": "hi", "tools": [FUNCTION_TOOL]}, id="tool"
    ),
    pytest.param(
        "responses",
        {
            "model": "gpt-4o",
            "input": [{"type": "function_call_output", "call_id": "c", "output": "42"}],
        },
        id="tool-output-item",
    ),
    pytest.param(
        "responses",
        {
            "model": "gpt-4o",
            "input": "hi",
            "tools": [
                {
                    "type": "file_search",
                    "vector_store_ids": ["vs_1"],
                    "filters": {
                        "type": "and",
                        "filters": [
                            {"type": "eq", "key": "a", "value": "b"},
                            {"type": "or", "filters": [{"type": "gt", "key": "n", "value": 1}]},
                        ],
                    },
                }
            ],
        },
        id="nested-compound-filter",
    ),
    pytest.param(
        "responses",
        {"model": "gpt-4o", "input": "hi", "temperature": None, "max_output_tokens": 16},
        id="nulls-and-minimum",
    ),
    pytest.param("chat", {"model": "gpt-4o", "messages": [USER_HI]}, id="chat-minimal"),
    pytest.param(
        "chat",
        {
            "model": "gpt-4o",
            "store": True,
            "metadata": {"k": "v"},
            "reasoning_effort": None,
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
            "response_format": {"type": "json_object"},
            "stop": None,
        },
        id="chat-parts-nullable-and-store",
    ),
]
INVALID = [
    pytest.param("responses", {"model": "gpt-4o", "input": 5}, "input", id="input-type"),
    pytest.param(
        "responses", {"model": "gpt-4o", "temperature": 3}, "temperature", id="temperature-3"
    ),
    pytest.param(
        "responses",
        {"model": "gpt-4o", "max_output_tokens": 15},
        "max_output_tokens",
        id="max-output-tokens-below-16",
    ),
    pytest.param(
        "responses",
        {"model": "o3", "reasoning": {"effort": "extreme"}},
        "reasoning.effort",
        id="reasoning-effort",
    ),
    pytest.param(
        "responses",
        {"model": "gpt-4o", "input": [{"role": "robot", "content": "x"}]},
        "input[0].role",
        id="message-role",
    ),
    pytest.param("responses", {"model": 4}, "model", id="model-type"),
    pytest.param("chat", {"model": "gpt-4o", "messages": []}, "messages", id="chat-empty"),
    pytest.param("chat", {"messages": [USER_HI]}, "model", id="chat-needs-model"),
    pytest.param("chat", {"model": "gpt-4o"}, "messages", id="chat-needs-messages"),
    pytest.param(
        "chat",
        {"model": "gpt-4o", "messages": [USER_HI], "temperature": 3},
        "temperature",
        id="chat-temperature-3",
    ),
    pytest.param(
        "chat", {"model": "gpt-4o", "messages": [USER_HI], "n": "two"}, "n", id="chat-n-type"
    ),
]


@pytest.mark.parametrize(("name", "body"), VALID)
def test_valid_request_shapes_are_accepted(name: str, body: dict[str, Any]) -> None:
    assert verdicts(name, body) == (True, True)
    assert BodyChecker(name, batchrun_rules=False).check(body) == []


@pytest.mark.parametrize(("name", "body", "path"), INVALID)
def test_invalid_bodies_are_refused_naming_the_field(
    name: str, body: dict[str, Any], path: str
) -> None:
    assert verdicts(name, body) == (False, False)
    problems = BodyChecker(name, batchrun_rules=False).check(body)
    assert problems and problems[0].path == path


def test_temperature_above_two_reads_as_openai_words_it() -> None:
    (problem,) = BodyChecker("responses", batchrun_rules=False).check(
        {"model": "gpt-4o", "temperature": 3}
    )
    assert (problem.message, problem.code) == (
        "3 is greater than the maximum of 2",
        "decimal_above_max_value",
    )


@pytest.mark.parametrize(
    ("name", "body"),
    [
        pytest.param("responses", {}, id="responses-requires-nothing"),
        pytest.param("responses", {"model": "gpt-4o", "input": "hi", "bogus": 1}, id="unknown"),
        pytest.param("chat", {"model": "m", "messages": [USER_HI], "bogus": 1}, id="chat-unknown"),
        pytest.param(
            "responses",
            {"model": "m", "metadata": {f"k{i}": "v" for i in range(17)}},
            id="metadata-size-only-described",
        ),
    ],
)
def test_what_the_official_schema_leaves_to_the_service(name: str, body: dict[str, Any]) -> None:
    """The schema requires nothing of CreateResponse and forbids no unknown top-level field
    (allOf of open objects); the service refuses both, so the simulator checks them itself."""
    assert verdicts(name, body) == (True, True)


def test_function_tools_and_image_parts_need_what_their_request_side_twins_need() -> None:
    """CreateResponse reaches the Response's FunctionTool (``strict`` and ``parameters``
    required) and InputImageContent (``detail`` required), which the document's own examples
    leave out; the document's request-side twins require only ``name``/``type``."""
    tool = {"model": "gpt-4o", "tools": [{"type": "function", "name": "lookup"}]}
    image = {"type": "input_image", "image_url": "https://example.com/a.png"}
    parts = {"model": "gpt-4o", "input": [{"role": "user", "content": [image]}]}
    assert verdicts("responses", tool) == (True, True)
    assert verdicts("responses", parts) == (True, True)
    defs = load_schema("responses")["$defs"]
    assert defs["FunctionTool"]["required"] == defs["FunctionToolParam"]["required"]


def official_examples() -> list[Any]:
    """The JSON body of every curl example of POST /responses and /chat/completions."""
    if not OPENAPI.is_file():
        return []
    spec = build_schemas().load_openapi(OPENAPI)
    found = []
    for path, name in (("/responses", "responses"), ("/chat/completions", "chat")):
        for example in spec["paths"][path]["post"]["x-oaiMeta"]["examples"]:
            data = re.search(r"-d '(.*)'\s*$", example["request"]["curl"], re.S)
            assert data is not None, example["title"]
            body = json.loads(data.group(1))
            found.append(
                pytest.param(name, body, id=f"{name}-{example['title'].lower().replace(' ', '-')}")
            )
    return found


@needs_reference
@pytest.mark.parametrize(("name", "body"), official_examples())
def test_every_official_request_example_is_accepted(name: str, body: dict[str, Any]) -> None:
    assert verdicts(name, body) == (True, True)
    assert BodyChecker(name, batchrun_rules=False).check(body) == []


def test_body_fields_gather_the_properties_of_every_allof_part() -> None:
    fields = body_fields("responses")
    expected = ["model", "input", "instructions", "conversation", "previous_response_id"]
    expected += ["reasoning", "text", "background", "store", "metadata", "max_output_tokens"]
    for name in expected:
        assert name in fields
    assert len(fields) == len(set(fields))
    assert {"model", "messages", "store", "metadata", "n"} <= set(body_fields("chat"))
    assert body_fields("v2") == tuple(load_schema("v2")["properties"])


def test_unknown_schema_name_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown schema 'runs'"):
        load_schema("runs")


def test_schemas_are_plain_json() -> None:
    for name in ENDPOINTS:
        text = (ROOT / "batchrun" / "schemas" / f"{name}.json").read_text("utf-8")
        assert json.loads(text) == load_schema(name)


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        # OpenAPI's nullable: true, on a plain type, on a oneOf and on an object.
        pytest.param("chat", "frequency_penalty", None, id="nullable-number"),
        pytest.param("chat", "prediction", None, id="nullable-oneof"),
        pytest.param("chat", "stop", None, id="nullable-component"),
        pytest.param("chat", "audio", None, id="nullable-object"),
        pytest.param("chat", "web_search_options", {"user_location": None}, id="nullable-nested"),
        # JSON Schema's anyOf with {type: null}.
        pytest.param("chat", "temperature", None, id="anyof-null"),
        pytest.param("chat", "metadata", None, id="anyof-null-component"),
        pytest.param("responses", "instructions", None, id="responses-anyof-null"),
        pytest.param("responses", "conversation", None, id="responses-anyof-null-ref"),
        pytest.param("responses", "reasoning", None, id="responses-reasoning-null"),
    ],
)
def test_both_spellings_of_null_take_null(name: str, field: str, value: Any) -> None:
    body: dict[str, Any] = {"model": "gpt-4o", field: value}
    if name == "chat":
        body["messages"] = [USER_HI]
    assert verdicts(name, body) == (True, True)


@needs_reference
@given(
    st.sampled_from(["string", "integer", "number", "boolean", "object", "array"]),
    st.booleans(),
)
def test_nullable_converts_to_a_schema_taking_null_and_the_type(kind: str, enum: bool) -> None:
    tools = build_schemas()
    samples = {"string": "a", "integer": 1, "number": 1.5, "boolean": True, "object": {},
               "array": []}  # fmt: skip
    node: dict[str, Any] = {"type": kind, "nullable": True, "description": "doc"}
    if enum:
        node["enum"] = [samples[kind]]
    converted = tools.convert_component(node, "X")
    validator = Draft202012Validator(converted)
    assert validator.is_valid(None) and validator.is_valid(samples[kind])
    assert "description" not in converted and "nullable" not in converted


def test_a_chat_message_of_an_unknown_role_names_every_role() -> None:
    problems = check_body({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "chat")
    assert [str(p) for p in problems] == [
        "messages[0].role: 'robot' is not one of "
        "['developer', 'system', 'user', 'assistant', 'tool', 'function']"
    ]


def test_a_problem_two_branches_share_is_said_once() -> None:
    body = {"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}
    assert [str(p) for p in check_body(body, "responses")] == [
        "text.format.schema: is required",
        "text.format.name: is required",
    ]


def test_responses_rules_beyond_the_schema() -> None:
    body = {
        "input": "x",
        "conversation": "conv_1",
        "previous_response_id": "resp_1",
        "tools": [{"type": "function", "name": "no spaces please", "parameters": {}}],
    }
    assert [str(p) for p in check_body(body, "responses")] == [
        "tools[0].name: 'no spaces please' must be 1 to 64 letters, digits, '_' or '-'",
        "model: is required (prompt objects are retired: name the model in the row)",
        "previous_response_id: cannot be combined with conversation (a conversation keeps its "
        "own history)",
    ]
