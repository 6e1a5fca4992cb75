"""Issue 13, rows: every problem of a row in one pass, big integers, and precedence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from job_support import read_rows, settings_for
from test_run import creates, write_sheet

from batchrun.assembly import assemble
from batchrun.body import plan_columns
from batchrun.config import Settings
from batchrun.errors import UsageError
from batchrun.jobs import run_file
from batchrun.prepare import RowPreparer, make_plan
from batchrun.simulator import RunningSimulator

BIG = "99999999999999999999"


def row_error(row: dict[str, str], **options: Any) -> str:
    settings = Settings(**options)
    headers = list(row)
    prepared = RowPreparer(make_plan(headers, settings), settings).prepare_rows(
        [list(row.values())]
    )
    return prepared[0].error


def test_the_error_cell_lists_conversion_and_schema_problems_together() -> None:
    error = row_error(
        {"thread_id": "thread_1", "temperature": "hot", "tools": '[{"type":"retrieval"}]'}
    )
    problems = error.split("; ")
    assert problems[0] == "temperature: 'hot' is not a number"
    assert "assistant_id: is required" in problems
    assert any(p.startswith("tools[0].type: 'retrieval' is not one of") for p in problems)
    assert len(problems) == 3


def test_a_bad_thread_id_does_not_hide_the_body_problems() -> None:
    error = row_error({"thread_id": "../x", "assistant_id": "", "top_p": "7"})
    assert error.startswith("thread_id: '../x' may only hold")
    assert "assistant_id: is required" in error
    assert "top_p: 7 is greater than the maximum of 1" in error


def test_a_failed_cell_is_not_reported_twice_by_the_schema() -> None:
    error = row_error({"thread_id": "t", "assistant_id": "a", "metadata": "{oops"})
    assert error.startswith("metadata: is not valid JSON")
    assert error.count("metadata") == 1


def test_a_broken_request_json_does_not_add_required_field_noise() -> None:
    error = row_error({"thread_id": "t", "request_json": "{"})
    assert error.startswith("request_json: is not valid JSON")
    assert "is required" not in error


@pytest.mark.parametrize(
    ("field", "text", "fragment"),
    [
        pytest.param("max_prompt_tokens", BIG, BIG, id="integer-cell"),
        pytest.param("temperature", BIG, BIG, id="number-cell"),
        pytest.param(
            "max_completion_tokens",
            "-9223372036854775809",
            "-9223372036854775809",
            id="below-int64",
        ),
        pytest.param("metadata", '{"n": ' + BIG + "}", f"{BIG} at n", id="inside-json"),
        pytest.param(
            "tools",
            '[{"type":"function","x":[' + BIG + "]}]",
            f"{BIG} at [0].x[0]",
            id="deep-inside-json",
        ),
    ],
)
def test_integers_beyond_64_bits_are_a_row_error(field: str, text: str, fragment: str) -> None:
    error = row_error({"thread_id": "t", "assistant_id": "a", field: text})
    assert error.startswith(f"{field}: ")
    assert fragment in error and "64-bit" in error


def test_the_largest_64_bit_integers_pass_exactly() -> None:
    plan = plan_columns(["thread_id", "assistant_id", "max_prompt_tokens", "metadata"], "v2")
    built = assemble(plan, ["t", "a", "18446744073709551615", '{"n":"x","big":[1]}'])
    assert built.body is not None and built.body["max_prompt_tokens"] == 2**64 - 1


def test_a_64_bit_overflow_in_set_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="64-bit"):
        plan_columns(["thread_id"], "v2", set_values={"max_prompt_tokens": BIG})


def test_a_huge_integer_never_crashes_a_run_and_the_rest_are_sent(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    source = write_sheet(
        tmp_path / "in.csv",
        [
            {"thread_id": "thread_1", "assistant_id": "a", "max_prompt_tokens": BIG},
            {"thread_id": "thread_2", "assistant_id": "a", "max_prompt_tokens": "1000"},
        ],
    )
    report = run_file(source, tmp_path / "out.csv", settings_for(simulator.base_url))
    rows = read_rows(report.output)
    assert rows[0]["status"] == "" and "64-bit" in rows[0]["error"]
    assert rows[1]["status"] == "200"
    assert json.loads(rows[1]["body"])["max_prompt_tokens"] == 1000
    assert sum(creates(simulator.stats()).values()) == 1


@pytest.mark.parametrize(
    ("row", "set_values", "expected"),
    [
        pytest.param(
            {"metadata": '{"team":"ops"}'},
            {"metadata.team": "default"},
            {"team": "ops"},
            id="metadata-cell-beats-set-key",
        ),
        pytest.param(
            {"metadata": '{"a":"1"}'},
            {"metadata.team": "default"},
            {"a": "1", "team": "default"},
            id="set-key-fills-a-key-the-cell-lacks",
        ),
        pytest.param(
            {"metadata": '{"team":"ops"}', "metadata.team": "dev"},
            {},
            {"team": "dev"},
            id="key-cell-beats-metadata-cell",
        ),
        pytest.param(
            {"metadata.team": "   "},
            {"metadata.team": "default"},
            {"team": "default"},
            id="blank-key-cell-is-not-sent",
        ),
        pytest.param({"metadata.team": " \t "}, {}, None, id="blank-key-cell-alone"),
        pytest.param(
            {"request_json": '{"metadata":{"team":"base","x":"1"}}'},
            {"metadata.team": "default"},
            {"team": "default", "x": "1"},
            id="set-key-beats-request-json",
        ),
    ],
)
def test_metadata_precedence_is_cell_then_set_then_request_json(
    row: dict[str, str], set_values: dict[str, str], expected: dict[str, str] | None
) -> None:
    headers = ["thread_id", "assistant_id", *row]
    plan = plan_columns(headers, "v2", set_values=set_values)
    built = assemble(plan, ["t", "a", *row.values()])
    assert built.problems == []
    assert built.body is not None
    assert built.body.get("metadata") == expected
