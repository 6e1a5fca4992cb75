"""Property-based: any sheet of text goes through reading and body assembly unharmed.

For arbitrary headers (always with a ``thread_id`` column), arbitrary cell text and any
number of rows, ``validate_file`` either refuses the header as documented (two headers
equal after trimming and casefolding: InputError; a header the output adds: UsageError)
or writes exactly one output row per input row, in order, with the input cells back
exactly and either a request or an error, never both, never neither.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchrun.config import Settings
from batchrun.endpoints.body import THREAD_ID_PATTERN
from batchrun.errors import InputError, UsageError
from batchrun.jobs import validate_file

# derandomize: the same examples on every run, so the suite is deterministic.
PROPERTY_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FIELD_HEADERS = [
    "assistant_id",
    "Assistant_ID ",
    "instructions",
    "model",
    "temperature",
    "top_p",
    "stream",
    "tools",
    "metadata",
    "metadata.team",
    "request_json",
    "max_prompt_tokens",
    "tool_choice",
    "response_format",
    "note",
]
PLAUSIBLE = [
    "",
    " ",
    "asst_1",
    "thread_1",
    "0.7",
    "3.5",
    "TRUE",
    "no",
    "2048.0",
    "code_interpreter, file_search",
    "auto",
    "[]",
    "{}",
    '{"a": 1}',
    '{"assistant_id": "asst_2", "temperature": null}',
    "=1+1",
    "null",
    "NaN",
    "00123",
]


def text(*, surrogates: bool) -> st.SearchStrategy[str]:
    """Any text a cell can hold; CSV (UTF-8 on disk) cannot hold NUL or lone surrogates."""
    banned = () if surrogates else ("Cs",)
    alphabet = st.characters(blacklist_categories=banned, blacklist_characters="\x00")
    return st.one_of(st.text(alphabet, max_size=30), st.sampled_from(PLAUSIBLE))


def headers(*, surrogates: bool) -> st.SearchStrategy[list[str]]:
    others = st.lists(
        st.one_of(st.sampled_from(FIELD_HEADERS), text(surrogates=surrogates)), max_size=5
    )
    return st.builds(
        lambda names, position: [*names[:position], "thread_id", *names[position:]],
        others,
        st.integers(min_value=0, max_value=5),
    )


def expected_columns(raw: list[str]) -> list[str]:
    """The documented naming: an empty header cell is ``column_N``."""
    return [name if name.strip() else f"column_{n}" for n, name in enumerate(raw, start=1)]


def expected_refusal(raw: list[str]) -> type[Exception] | None:
    names = [name.strip().casefold() for name in expected_columns(raw)]
    if len(set(names)) != len(names):
        return InputError
    if {"outcome", "request", "error"} & set(names):
        return UsageError
    return None


def check_validated(
    source: Path,
    columns: list[str],
    rows: list[list[Any]],
    cell: Callable[[Any], Any],
    settings: Settings | None = None,
) -> None:
    """validate_file's output: one row per input row, cells back exactly, request xor error."""
    settings = settings or Settings()
    refusal = expected_refusal(columns)
    output = source.with_name("out.jsonl")
    if refusal is not None:
        with pytest.raises(refusal):
            validate_file(source, output, settings)
        assert not output.exists()
        return
    report = validate_file(source, output, settings)
    # JSON Lines end at "\n" only (str.splitlines would also cut at U+0085 or U+2028).
    records = [json.loads(line) for line in output.read_bytes().split(b"\n") if line]
    names = expected_columns(columns)
    assert len(records) == len(rows) == report.summary.rows
    for record, row in zip(records, rows, strict=True):
        assert list(record) == [*names, "outcome", "request", "error"]
        assert record["outcome"] == ("invalid" if record["error"] else "ok")
        assert [record[name] for name in names] == [cell(value) for value in row]
        assert bool(record["request"]) != bool(record["error"]), record
        if record["request"]:
            body = json.loads(record["request"])
            assert isinstance(body, dict) and "batchrun_key" in body["metadata"]
            if settings.endpoint == "runs":
                assert isinstance(body.get("assistant_id"), str)
            else:
                assert isinstance(body.get("model"), str) and body.get("stream") is not True
                conversation = body.get("conversation")
                conversation = (
                    conversation.get("id") if isinstance(conversation, dict) else conversation
                )
                assert conversation is None or THREAD_ID_PATTERN.fullmatch(conversation)
    invalid = sum(bool(record["error"]) for record in records)
    assert report.summary.outcomes.get("invalid", 0) == invalid


@st.composite
def csv_sheets(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    columns = draw(headers(surrogates=False))
    cells = st.lists(text(surrogates=False), min_size=len(columns), max_size=len(columns))
    return columns, draw(st.lists(cells, max_size=8))


@PROPERTY_SETTINGS
@given(csv_sheets())
def test_any_csv_sheet_validates_row_for_row(sheet: tuple[list[str], list[list[str]]]) -> None:
    columns, rows = sheet
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "in.csv"
        with source.open("w", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            writer.writerow(columns)
            writer.writerows(rows)
        check_validated(source, columns, without_empty_tail(columns, rows), str)


def without_empty_tail(columns: list[str], rows: list[list[str]]) -> list[list[str]]:
    """The rows a reader returns: fully empty rows at the end are dropped (Excel leaves
    lines of only commas), except in a one-column sheet, where every cell is quoted."""
    if len(columns) == 1:
        return rows
    kept = list(rows)
    while kept and not any(kept[-1]):
        kept.pop()
    return kept


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    text(surrogates=True),
    st.lists(st.one_of(st.integers(), text(surrogates=True)), max_size=3),
)


@st.composite
def jsonl_sheets(draw: st.DrawFn) -> tuple[list[str], list[list[Any]]]:
    columns = draw(headers(surrogates=True).filter(lambda names: len(set(names)) == len(names)))
    values = st.lists(JSON_VALUES, min_size=len(columns), max_size=len(columns))
    return columns, draw(st.lists(values, min_size=1, max_size=8))


@PROPERTY_SETTINGS
@given(jsonl_sheets())
def test_any_jsonl_sheet_validates_row_for_row(sheet: tuple[list[str], list[list[Any]]]) -> None:
    columns, rows = sheet
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "in.jsonl"
        lines = [json.dumps(dict(zip(columns, row, strict=True))) for row in rows]
        source.write_text("\n".join(lines) + "\n", encoding="ascii")
        # JSONL output keeps the JSON values as they came (null stays null).
        check_validated(source, columns, rows, lambda value: value)


@pytest.mark.parametrize("cell", [" ", "\t", "   "])
def test_a_one_column_row_of_spaces_is_still_a_row(tmp_path: Path, cell: str) -> None:
    source = tmp_path / "in.csv"
    with source.open("w", newline="", encoding="utf-8") as stream:
        csv.writer(stream).writerows([["thread_id"], ["thread_1"], [cell], ["thread_2"]])
    check_validated(source, ["thread_id"], [["thread_1"], [cell], ["thread_2"]], str)


LIVE_HEADERS = {
    "responses": [
        "model", "Model ", "input", "instructions", "conversation", "reasoning.effort",
        "text.verbosity", "text", "tools", "metadata", "metadata.team", "stream",
        "max_output_tokens", "background", "request_json", "note",
    ],
    "chat": [
        "model", "messages", "system", "user", "stop", "n", "store", "tools", "metadata",
        "metadata.team", "stream", "response_format", "request_json", "note",
    ],
}  # fmt: skip
LIVE_PLAUSIBLE = [
    "gpt-4o", "conv_1", "conv/../x", "low", "[]", '[{"role": "user", "content": "hi"}]',
    '{"id": "conv_2"}', "[not json]", "16", "8", "true",
]  # fmt: skip


@st.composite
def live_sheets(draw: st.DrawFn, endpoint: str) -> tuple[list[str], list[list[str]]]:
    names = st.one_of(st.sampled_from(LIVE_HEADERS[endpoint]), text(surrogates=False))
    # Always a model column, as the Assistants sheets always have a thread_id column.
    others = draw(st.lists(names, max_size=5))
    position = draw(st.integers(min_value=0, max_value=len(others)))
    columns = [*others[:position], "model", *others[position:]]
    cell = st.one_of(text(surrogates=False), st.sampled_from(LIVE_PLAUSIBLE))
    row = st.lists(cell, min_size=len(columns), max_size=len(columns))
    return columns, draw(st.lists(row, max_size=6))


@pytest.mark.parametrize("endpoint", ["responses", "chat"])
def test_any_sheet_of_prompts_validates_row_for_row(endpoint: str) -> None:
    @PROPERTY_SETTINGS
    @given(live_sheets(endpoint))
    def check(sheet: tuple[list[str], list[list[str]]]) -> None:
        columns, rows = sheet
        with tempfile.TemporaryDirectory() as folder:
            source = Path(folder) / "in.csv"
            with source.open("w", newline="", encoding="utf-8") as stream:
                writer = csv.writer(stream)
                writer.writerow(columns)
                writer.writerows(rows)
            kept = without_empty_tail(columns, rows)
            check_validated(source, columns, kept, str, Settings(endpoint=endpoint))

    check()
