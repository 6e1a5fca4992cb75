"""Every rule of DESIGN.md "Input": how cells become a request body."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchrun.endpoints.assembly import assemble
from batchrun.endpoints.body import plan_columns
from batchrun.endpoints.schema import BodyChecker
from batchrun.errors import InputError, UsageError


def build(
    row: dict[str, str],
    version: str = "v2",
    columns: dict[str, str] | None = None,
    set_values: dict[str, str] | None = None,
) -> tuple[dict[str, Any] | None, list[str]]:
    headers = ["thread_id", *row]
    plan = plan_columns(headers, version, columns, set_values)
    built = assemble(plan, ["thread_1", *row.values()])
    return built.body, [str(p) for p in built.problems]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param({"assistant_id": "asst_1"}, {"assistant_id": "asst_1"}, id="plain"),
        pytest.param({"assistant_id": " asst_1 "}, {"assistant_id": "asst_1"}, id="ids-trimmed"),
        pytest.param(
            {"assistant_id": "a", "instructions": "  keep  spaces "},
            {"assistant_id": "a", "instructions": "  keep  spaces "},
            id="free-text-verbatim",
        ),
        pytest.param(
            {"assistant_id": "a", "model": ""}, {"assistant_id": "a"}, id="empty-not-sent"
        ),
        pytest.param(
            {"assistant_id": "a", "model": "   "}, {"assistant_id": "a"}, id="blank-not-sent"
        ),
        pytest.param({"assistant_id": "00123"}, {"assistant_id": "00123"}, id="leading-zeros-stay"),
        pytest.param(
            {"assistant_id": "a", "temperature": "0.7", "top_p": "1"},
            {"assistant_id": "a", "temperature": 0.7, "top_p": 1},
            id="numbers",
        ),
        pytest.param(
            {"assistant_id": "a", "max_prompt_tokens": "2048.0"},
            {"assistant_id": "a", "max_prompt_tokens": 2048},
            id="whole-float-integer",
        ),
        pytest.param(
            {"assistant_id": "a", "parallel_tool_calls": "TRUE", "stream": "no"},
            {"assistant_id": "a", "parallel_tool_calls": True, "stream": False},
            id="booleans",
        ),
        pytest.param(
            {"assistant_id": "a", "tools": "code_interpreter, file_search"},
            {"assistant_id": "a", "tools": [{"type": "code_interpreter"}, {"type": "file_search"}]},
            id="tools-comma-list",
        ),
        pytest.param(
            {"assistant_id": "a", "tools": '[{"type": "function", "function": {"name": "f"}}]'},
            {"assistant_id": "a", "tools": [{"type": "function", "function": {"name": "f"}}]},
            id="tools-json",
        ),
        pytest.param(
            {"assistant_id": "a", "tool_choice": "required", "response_format": "auto"},
            {"assistant_id": "a", "tool_choice": "required", "response_format": "auto"},
            id="bare-string-forms",
        ),
        pytest.param(
            {"assistant_id": "a", "response_format": '{"type": "json_object"}'},
            {"assistant_id": "a", "response_format": {"type": "json_object"}},
            id="response-format-json",
        ),
        pytest.param(
            {"assistant_id": "a", "metadata": '{"a": "1"}', "metadata.Team": "ops"},
            {"assistant_id": "a", "metadata": {"a": "1", "Team": "ops"}},
            id="metadata-columns-merge-key-as-written",
        ),
        pytest.param(
            {"assistant_id": "a", "metadata.team": ""},
            {"assistant_id": "a"},
            id="empty-metadata-column-not-sent",
        ),
        pytest.param(
            {"request_json": '{"assistant_id": "base", "model": null, "top_p": 0.5}'},
            {"assistant_id": "base", "model": None, "top_p": 0.5},
            id="request-json-base-and-explicit-null",
        ),
        pytest.param(
            {"assistant_id": "cell", "request_json": '{"assistant_id": "base"}'},
            {"assistant_id": "cell"},
            id="cell-beats-request-json",
        ),
        pytest.param(
            {"assistant_id": "a", "notes": "=not sent"},
            {"assistant_id": "a"},
            id="other-columns-not-sent",
        ),
        pytest.param(
            {"Assistant_ID ": "a"},
            {"assistant_id": "a"},
            id="headers-case-insensitive-trimmed",
        ),
    ],
)
def test_cells_become_the_body(row: dict[str, str], expected: dict[str, Any]) -> None:
    body, problems = build(row)
    assert problems == []
    assert body == expected


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param({"temperature": "warm"}, "temperature: 'warm' is not a number", id="number"),
        pytest.param({"temperature": "nan"}, "temperature: 'nan' is not a finite number", id="nan"),
        # Python's int() and float() take these; JSON and spreadsheets do not (were sent).
        pytest.param(
            {"max_prompt_tokens": "1_000"},
            "max_prompt_tokens: '1_000' is not a whole number",
            id="underscore-integer",
        ),
        pytest.param(
            {"temperature": "0_5"}, "temperature: '0_5' is not a number", id="underscore-number"
        ),
        pytest.param(
            {"temperature": "\u0661"}, "temperature: '\u0661' is not a number", id="arabic-digit"
        ),
        pytest.param(
            {"max_prompt_tokens": "300.5"},
            "max_prompt_tokens: '300.5' is not a whole number",
            id="integer",
        ),
        pytest.param({"stream": "maybe"}, "stream: 'maybe' is not true or false", id="boolean"),
        pytest.param({"tools": "[{"}, "tools: is not valid JSON", id="json"),
        # Before: sent as null from this column, while tools or temperature read the same
        # text another way; README names request_json as the way to send null.
        pytest.param(
            {"truncation_strategy": "null"},
            "truncation_strategy: null is not sent from a cell (leave it empty; request_json "
            "can send null)",
            id="json-null",
        ),
        # Before: "is not valid JSON (unexpected character: line 1 column 1 (char 0))".
        pytest.param(
            {"truncation_strategy": "auto"},
            "truncation_strategy: 'auto' is not JSON: this field takes a JSON object or list",
            id="json-bare-word",
        ),
        pytest.param(
            {"tools": "a,,b"}, "tools: 'a,,b' is not a comma list of tool types", id="list"
        ),
        pytest.param(
            {"request_json": "[1]"}, "request_json: must be a JSON object", id="rj-object"
        ),
        pytest.param(
            {"metadata": "[1]", "metadata.k": "v"},
            "metadata: must be a JSON object to merge metadata.* columns",
            id="metadata-merge",
        ),
    ],
)
def test_bad_cells_are_row_errors(row: dict[str, str], expected: str) -> None:
    body, problems = build({"assistant_id": "a", **row})
    assert body is None
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(
    "thread_id",
    [
        pytest.param("thread_1/../x", id="slash"),
        pytest.param("..", id="dots"),
        pytest.param("t?x=1", id="query"),
        pytest.param("t#frag", id="fragment"),
        pytest.param("t%2F", id="percent"),
        pytest.param("t 1", id="space"),
        pytest.param("t\x00", id="nul"),
        pytest.param("t\n1", id="newline"),
        pytest.param("thréad", id="non-ascii"),
        pytest.param("", id="empty"),
    ],
)
def test_thread_ids_that_could_change_the_url_are_row_errors(thread_id: str) -> None:
    plan = plan_columns(["thread_id", "assistant_id"], "v2")
    built = assemble(plan, [thread_id, "asst_1"])
    assert built.body is None
    assert built.problems[0].path == "thread_id"


def test_column_option_reads_a_field_from_another_header() -> None:
    plan = plan_columns(
        ["Conversation", "Bot"], "v2", {"thread_id": "conversation", "assistant_id": "Bot"}
    )
    built = assemble(plan, ["thread_9", "asst_9"])
    assert (built.thread_id, built.body) == ("thread_9", {"assistant_id": "asst_9"})


def test_a_column_given_to_a_field_no_longer_feeds_the_field_its_header_names() -> None:
    plan = plan_columns(
        ["thread_id", "assistant_id", "Instructions"],
        "v2",
        {"additional_instructions": "Instructions"},
    )
    built = assemble(plan, ["thread_9", "asst_9", "Be brief"])
    assert built.body == {"assistant_id": "asst_9", "additional_instructions": "Be brief"}
    # A prompt sheet's "Prompt" column would otherwise feed the JSON field ``prompt``.
    plan = plan_columns(["model", "Prompt"], "responses", {"input": "Prompt"})
    built = assemble(plan, ["gpt-4o-mini", "[URGENT] summarise this"])
    assert built.problems == []
    assert built.body == {"model": "gpt-4o-mini", "input": "[URGENT] summarise this"}


def test_metadata_merges_key_by_key_from_request_json_up_to_the_dotted_cells() -> None:
    row = {
        "assistant_id": "asst_1",
        "request_json": '{"metadata": {"z": "rj", "k": "rj", "s": "rj", "m": "rj"}}',
        "metadata": '{"m": "cell", "d": "cell"}',
        "metadata.d": "dotted",
    }
    set_values = {"metadata.s": "set", "metadata.k": "set", "metadata": '{"team": "x"}'}
    body, problems = build(row, set_values=set_values)
    assert problems == []
    assert body is not None
    # request_json < --set (object, then KEY) < the metadata cell < metadata.KEY cells
    assert body["metadata"] == {
        "z": "rj",
        "k": "set",
        "s": "set",
        "m": "cell",
        "team": "x",
        "d": "dotted",
    }
    # Without dotted columns or --set metadata.KEY, the cell still lies over the rest.
    body, _ = build({key: row[key] for key in ("assistant_id", "request_json", "metadata")})
    assert body is not None
    assert body["metadata"] == {"z": "rj", "k": "rj", "s": "rj", "m": "cell", "d": "cell"}


def test_set_fills_only_empty_cells_and_parses_json_fields() -> None:
    body, _ = build(
        {"assistant_id": "", "tools": ""},
        set_values={"assistant_id": "asst_default", "tools": '[{"type": "file_search"}]'},
    )
    assert body == {"assistant_id": "asst_default", "tools": [{"type": "file_search"}]}
    body, _ = build({"assistant_id": "asst_cell"}, set_values={"assistant_id": "asst_default"})
    assert body == {"assistant_id": "asst_cell"}


def test_set_beats_request_json() -> None:
    body, _ = build(
        {"request_json": '{"assistant_id": "json"}'}, set_values={"assistant_id": "set"}
    )
    assert body == {"assistant_id": "set"}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param(
            {"headers": ["assistant_id"]}, InputError, "no 'thread_id' column", id="no-thread"
        ),
        pytest.param(
            {"columns": {"thread_id": "Missing"}},
            InputError,
            "no column named 'Missing'",
            id="column-missing",
        ),
        pytest.param(
            {"columns": {"bogus": "x"}}, UsageError, "'bogus' is not a field", id="column-unknown"
        ),
        pytest.param(
            {"set_values": {"bogus": "1"}}, UsageError, "'bogus' is not a field", id="set-unknown"
        ),
        pytest.param(
            {"set_values": {"temperature": "hot"}}, UsageError, "not a number", id="set-bad"
        ),
        # Before: accepted, and every row was invalid without its error naming --set.
        pytest.param(
            {"set_values": {"top_p": "5"}},
            UsageError,
            r"^--set top_p=\.\.\.: top_p: 5 is greater than the maximum of 1$",
            id="set-out-of-range",
        ),
    ],
)
def test_sheet_wide_problems_raise(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    headers = kwargs.pop("headers", ["thread_id", "assistant_id"])
    with pytest.raises(error, match=message):
        plan_columns(headers, "v2", **kwargs)


def test_dotted_columns_fill_a_runs_object_field_key_by_key() -> None:
    # Before: carried to the output, never sent, and nothing said so.
    row = {
        "assistant_id": "a",
        "truncation_strategy.type": "last_messages",
        "truncation_strategy.last_messages": "5",
        "response_format.type": "json_object",
    }
    body, problems = build(row)
    assert problems == []
    assert body == {
        "assistant_id": "a",
        "truncation_strategy": {"type": "last_messages", "last_messages": 5},
        "response_format": {"type": "json_object"},
    }
    body, problems = build(row, "v1")
    assert body is None
    assert problems[0] == (
        "truncation_strategy.type: is not a field of Assistants v1 "
        "(it is one of v2: --api-version v2)"
    )


def test_a_set_value_valid_beside_the_rows_fields_is_not_refused_alone() -> None:
    # Chat's metadata needs store: true, which another --set (or a column) gives; the
    # --set check weighs each value by the schema alone (a review found exit 2 here).
    plan_columns(["user"], "chat", set_values={"store": "true", "metadata": '{"p": "x"}'})
    plan_columns(["user", "store"], "chat", set_values={"metadata": '{"p": "x"}'})


def test_a_dotted_set_value_the_schema_refuses_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"^--set reasoning.effort=\.\.\.: reasoning.effort: 'x'"):
        plan_columns(["model", "input"], "responses", set_values={"reasoning.effort": "x"})


@pytest.mark.parametrize(
    ("version", "column", "other"),
    [
        pytest.param("v1", "temperature", "v2", id="v2-field-in-v1"),
        pytest.param("v2", "file_ids", "v1", id="unknown-stays-carried"),
    ],
)
def test_fields_of_the_other_version_are_not_silently_dropped(
    version: str, column: str, other: str
) -> None:
    body, problems = build({"assistant_id": "a", column: "0.5"}, version)
    if column == "temperature":
        assert problems == [
            "temperature: is not a field of Assistants v1 "
            f"(it is one of {other}: --api-version {other})"
        ]
    else:
        assert body == {"assistant_id": "a"}


HEADERS = [
    "thread_id",
    "assistant_id",
    "model",
    "temperature",
    "max_prompt_tokens",
    "stream",
    "tools",
    "metadata",
    "metadata.k",
    "tool_choice",
    "response_format",
    "request_json",
    "truncation_strategy",
    "additional_messages",
    "notes",
]


@settings(max_examples=400, deadline=None)
@given(
    cells=st.lists(st.text(max_size=40), min_size=len(HEADERS), max_size=len(HEADERS)),
    version=st.sampled_from(["v1", "v2"]),
)
def test_assembly_never_crashes_on_arbitrary_cells(cells: list[str], version: str) -> None:
    plan = plan_columns(HEADERS, version)
    built = assemble(plan, cells)
    if built.body is None:
        assert built.problems and all(str(p) for p in built.problems)
    else:
        assert built.problems == []
        assert isinstance(BodyChecker(version).check(built.body), list)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"assistant_id": None}, "assistant_id: null is not of type 'string'"),
        ({"assistant_id": True}, "assistant_id: true is not of type 'string'"),
    ],
)
def test_a_null_or_boolean_is_named_in_jsons_words_not_pythons(
    body: dict[str, Any], said: str
) -> None:
    # The sheet's author wrote JSON (request_json's "null"): before, "None is not ...".
    assert [str(problem) for problem in BodyChecker("v2").check(body)] == [said]
