"""The shipped schemas agree with the official createRun specs, and problems read well."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.endpoints.problems import Problem
from batchrun.endpoints.schema import BodyChecker, check_body, load_schema, service_problems

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference"
needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason="../shared/reference is not beside this checkout"
)


def official_validator(version: str) -> Any:
    """An independent oracle: openapi-schema-validator on the official OpenAPI cut-out."""
    from openapi_schema_validator import OAS30Validator

    spec = yaml.safe_load((REFERENCE / f"createrun-{version}.openapi.yaml").read_text())
    components = spec["components"]
    if version == "v1":
        # The seed's known bug: thread_id is a path parameter, never a body field.
        request = components["schemas"]["CreateRunRequest"]
        request["required"] = ["assistant_id"]
    return OAS30Validator(
        {"$ref": "#/components/schemas/CreateRunRequest", "components": components}
    )


@needs_reference
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_shipped_schema_is_derived_from_the_reference(version: str, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import build_schemas
    finally:
        sys.path.pop(0)
    built = build_schemas.build(REFERENCE / f"createrun-{version}.openapi.yaml", version)
    assert json.loads(json.dumps(built)) == load_schema(version)


def test_v1_requires_only_assistant_id_not_the_path_parameter() -> None:
    assert load_schema("v1")["required"] == ["assistant_id"]
    assert check_body({"assistant_id": "asst_1"}, "v1") == []


TOOL = st.sampled_from(
    [
        {"type": "code_interpreter"},
        {"type": "file_search"},
        {"type": "retrieval"},
        {"type": "function", "function": {"name": "lookup"}},
        {"type": "function"},
        {"type": "file_search", "file_search": {"max_num_results": 60}},
        {"type": "bogus"},
        "code_interpreter",
    ]
)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "assistant_id": st.one_of(st.just("asst_1"), st.integers(), st.none()),
    "model": st.one_of(st.just("gpt-4o"), st.none(), st.integers()),
    "instructions": st.one_of(st.text(max_size=5), st.none(), st.booleans()),
    "additional_instructions": st.one_of(st.text(max_size=5), st.none()),
    "tools": st.one_of(st.lists(TOOL, max_size=3), st.none(), st.just({})),
    "temperature": st.one_of(st.floats(-1, 3), st.none(), st.just("0.5")),
    "top_p": st.one_of(st.floats(-0.5, 1.5), st.none()),
    "max_prompt_tokens": st.one_of(st.integers(0, 1000), st.none(), st.just(300.5)),
    "truncation_strategy": st.one_of(
        st.none(),
        st.fixed_dictionaries({"type": st.sampled_from(["auto", "last_messages", "x"])}),
    ),
    "tool_choice": st.one_of(
        st.sampled_from(["none", "auto", "required", "sometimes"]),
        st.none(),
        st.just({"type": "function", "function": {"name": "f"}}),
        st.just({"type": "function"}),
    ),
    "response_format": st.one_of(
        st.sampled_from(["auto", "json"]),
        st.just({"type": "json_object"}),
        st.just({"type": "json_schema"}),
        st.none(),
    ),
    "parallel_tool_calls": st.one_of(st.booleans(), st.just("yes")),
    "reasoning_effort": st.one_of(st.sampled_from(["low", "high", "max"]), st.none()),
    "additional_messages": st.one_of(
        st.none(),
        st.just([{"role": "user", "content": "hi"}]),
        st.just([{"role": "system", "content": "hi"}]),
        st.just([{"role": "user"}]),
    ),
    "thread_id": st.just("thread_1"),
}


def bodies(version: str) -> st.SearchStrategy[dict[str, Any]]:
    v1 = {"assistant_id", "model", "instructions", "additional_instructions", "tools", "thread_id"}
    fields = VALUES if version == "v2" else {k: v for k, v in VALUES.items() if k in v1}
    return st.dictionaries(st.sampled_from(sorted(fields)), st.none(), max_size=6).flatmap(
        lambda keys: st.fixed_dictionaries({k: fields[k] for k in keys})
    )


@needs_reference
@pytest.mark.parametrize("version", ["v1", "v2"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_verdict_matches_the_official_schema(version: str, data: st.DataObject) -> None:
    """Accepted by batchrun => accepted by the official schema; rejected there => flagged."""
    body = data.draw(bodies(version))
    ours = BodyChecker(version).check(body)
    official = official_validator(version).is_valid(body)
    if official:
        # Only the documented extra limits may reject what the official schema accepts.
        assert all(p.path.startswith(("stream", "tools[")) for p in ours), ours
    else:
        assert ours, f"official schema rejects {body!r} but batchrun accepted it"


@pytest.mark.parametrize(
    ("version", "body", "expected"),
    [
        pytest.param("v2", {}, ["assistant_id: is required"], id="missing-assistant"),
        pytest.param(
            "v2",
            {"assistant_id": "a", "temperature": 3},
            ["temperature: 3 is greater than the maximum of 2"],
            id="temperature-max",
        ),
        pytest.param(
            "v2",
            {"assistant_id": "a", "tools": [{"type": "retrieval"}]},
            [
                "tools[0].type: 'retrieval' is not one of "
                "['code_interpreter', 'file_search', 'function']"
            ],
            id="v1-tool-in-v2",
        ),
        pytest.param(
            "v1",
            {"assistant_id": "a", "tools": [{"type": "file_search"}]},
            [
                "tools[0].type: 'file_search' is not one of "
                "['code_interpreter', 'retrieval', 'function']"
            ],
            id="v2-tool-in-v1",
        ),
        pytest.param(
            "v2",
            {"assistant_id": "a", "tool_choice": "sometimes"},
            [
                "tool_choice: 'sometimes' is not valid: expected one of "
                "['none', 'auto', 'required'] or a value of type 'object'"
            ],
            id="tool-choice-bare-string",
        ),
        pytest.param(
            "v2",
            {"assistant_id": "a", "truncation_strategy": {"type": "x"}},
            ["truncation_strategy.type: 'x' is not one of ['auto', 'last_messages']"],
            id="truncation-type",
        ),
        pytest.param(
            "v1",
            {"assistant_id": "a", "thread_id": "thread_1"},
            ["thread_id: is not a field here (additional properties are not allowed)"],
            id="thread-id-not-a-body-field",
        ),
        pytest.param(
            "v2",
            {"assistant_id": "a", "stream": True},
            [
                "stream: true is not supported: batchrun records runs, not event streams "
                "(leave stream empty or false)"
            ],
            id="stream-refused",
        ),
        pytest.param(
            "v2",
            {
                "assistant_id": "a",
                "tools": [{"type": "function", "function": {"name": "no spaces"}}],
            },
            ["tools[0].function.name: 'no spaces' must be 1 to 64 letters, digits, '_' or '-'"],
            id="function-name",
        ),
        pytest.param(
            "v1",
            {"assistant_id": "a", "metadata": {"k": 5}},
            ["metadata.k: 5 is not a string"],
            id="v1-metadata-value-type",
        ),
        pytest.param(
            "v2",
            {"assistant_id": "a", "metadata": {"k" * 65: "v"}},
            [f"metadata.{'k' * 65}: key is 65 characters; at most 64 are allowed"],
            id="metadata-key-length",
        ),
        pytest.param(
            "v2",
            {"assistant_id": "a", "metadata": {"k": "v" * 513}},
            ["metadata.k: value is 513 characters; at most 512 are allowed"],
            id="metadata-value-length",
        ),
        pytest.param(
            "v2",
            {"assistant_id": "a", "metadata": {str(i): "v" for i in range(17)}},
            ["metadata: has 17 keys; at most 16 are allowed"],
            id="metadata-17-keys",
        ),
    ],
)
def test_problems_name_the_path_and_the_fix(
    version: str, body: dict[str, Any], expected: list[str]
) -> None:
    assert [str(p) for p in check_body(body, version)] == expected


def tools(count: int) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {"name": f"f{i}", "description": "d" * 1500}}
        for i in range(count)
    ]


CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("schema", "body", "expected"),
    [
        pytest.param(
            "v2",
            {"assistant_id": "a", "tools": tools(21)},
            ["tools: has 21 items; at most 20 are allowed"],
            id="too-many-tools",
        ),
        pytest.param(
            "chat",
            {**CHAT, "stop": ["a", "b", "c", "d", "e"]},
            ["stop: has 5 items; at most 4 are allowed"],
            id="too-many-stops",
        ),
        pytest.param(
            "responses",
            {"model": "gpt-4o", "input": "hi", "safety_identifier": "x" * 70},
            ["safety_identifier: is 70 characters long; at most 64 are allowed"],
            id="too-long-text",
        ),
        pytest.param(
            "v2",
            {"assistant_id": "a", "instructions": ["x" * 500]},
            [f"instructions: ['{'x' * 74} ...] is not of type 'string', 'null'"],
            id="long-value-cut",
        ),
        pytest.param(
            "chat",
            {**CHAT, "messages": []},
            ["messages: has 0 items; at least 1 is needed"],
            id="one-is-needed",
        ),
        # A dotted-column typo on runs (TruncationObject allows any key): was sent.
        pytest.param(
            "v2",
            {"assistant_id": "a", "truncation_strategy": {"type": "auto", "last_mesages": 3}},
            ["truncation_strategy.last_mesages: is not a field here"],
            id="runs-nested-unknown",
        ),
        pytest.param(
            "chat",
            {**CHAT, "functions": [{"name": "bad name"}]},
            ["functions[0].name: 'bad name' must be 1 to 64 letters, digits, '_' or '-'"],
            id="chat-functions-name",
        ),
    ],
)
def test_a_size_is_said_by_its_count_and_limit_not_by_the_whole_value(
    schema: str, body: dict[str, Any], expected: list[str]
) -> None:
    # Before: "tools: [{'type': 'function', ... is too long", 34,522 characters that an
    # .xlsx cell cut before the reason, and never the limit; chat's functions[].name
    # was not checked at all.
    assert [str(p) for p in check_body(body, schema)] == expected


def test_all_problems_of_a_body_are_reported() -> None:
    body = {"temperature": 9, "top_p": -1, "stream": True}
    paths = [p.path for p in check_body(body, "v2")]
    assert paths == ["assistant_id", "temperature", "top_p", "stream"]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        pytest.param(15, [], id="15-own-keys-fit-beside-the-tag"),
        pytest.param(
            16,
            [
                Problem(
                    "metadata",
                    "has 16 keys; at most 15 are allowed "
                    "(batchrun's run tag takes one; --no-run-tag frees it)",
                )
            ],
            id="16-own-keys-leave-no-room",
        ),
    ],
)
def test_run_tag_counts_within_the_metadata_limit(keys: int, expected: list[Problem]) -> None:
    body = {"assistant_id": "a", "metadata": {f"k{i}": "v" for i in range(keys)}}
    assert BodyChecker("v2", run_tag=True).check(body) == expected
    assert BodyChecker("v2", run_tag=False).check(body) == []


def test_run_tag_key_is_reserved_and_the_error_names_the_flag() -> None:
    body = {"assistant_id": "a", "metadata": {"batchrun_key": "mine"}}
    (problem,) = BodyChecker("v2", run_tag=True).check(body)
    assert problem.path == "metadata.batchrun_key"
    assert "--no-run-tag" in problem.message


def test_the_services_checks_are_kept_apart_from_batchruns_rules() -> None:
    body = {"assistant_id": "a", "stream": True}
    assert [p.path for p in check_body(body)] == ["stream"]  # batchrun records runs
    assert service_problems(body) == []  # the API itself streams


@pytest.mark.parametrize(
    ("body", "path", "code"),
    [
        pytest.param({}, "assistant_id", "missing_required_parameter", id="missing"),
        pytest.param({"assistant_id": "a", "foo": 1}, "foo", "unknown_parameter", id="unknown"),
        pytest.param(
            {"assistant_id": "a", "temperature": "hot"}, "temperature", "invalid_type", id="type"
        ),
        pytest.param(
            {"assistant_id": "a", "max_prompt_tokens": 10},
            "max_prompt_tokens",
            "integer_below_min_value",
            id="integer-below-min",
        ),
        pytest.param(
            {"assistant_id": "a", "top_p": 2},
            "top_p",
            "decimal_above_max_value",
            id="decimal-above-max",
        ),
    ],
)
def test_schema_problems_carry_openais_error_code(
    body: dict[str, Any], path: str, code: str
) -> None:
    problems = service_problems(body)
    assert [(p.path, p.code) for p in problems] == [(path, code)]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_property_named_like_a_keyword_is_checked_as_a_property(version: str) -> None:
    # FunctionObject has a property called "description": it is data, not documentation.
    function = {"name": "lookup", "description": 5}
    body = {"assistant_id": "asst_1", "tools": [{"type": "function", "function": function}]}
    problems = BodyChecker(version).check(body)
    assert [p.path for p in problems] == ["tools[0].function.description"], problems
    function["description"] = "Looks a thing up."
    assert BodyChecker(version).check(body) == []
