"""Writing result sheets: typed XLSX cells, CSV formula escaping, JSONL, atomic replacement."""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchrun.errors import UsageError
from batchrun.sheets import read_sheet, xlsx_writer
from batchrun.sheets.writer import (
    SheetWriter,
    escape_formula,
    escape_formula_cells,
    excel_text,
    write_sheet,
)
from batchrun.sheets.xlsx_writer import EXCEL_CELL_LIMIT

NUMBERS = frozenset({"status", "attempts"})


def frame_of(rows: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame(rows, dtype=object)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def open_workbook(path: Path) -> Any:
    return openpyxl.load_workbook(path)


# --- XLSX -----------------------------------------------------------------------------------

DANGEROUS = [
    "=1+1",
    '=HYPERLINK("http://evil.example","click")',
    "@SUM(A1:A2)",
    "+1+2",
    "-2+3",
    "=cmd|' /C calc'!A0",
    "http://example.com",
    "mailto:a@example.com",
    "00123",
    "1e5",
    "TRUE",
]


def test_xlsx_text_never_becomes_a_formula_url_or_number(tmp_path: Path) -> None:
    target = tmp_path / "out.xlsx"
    write_sheet(target, frame_of([{"value": text} for text in DANGEROUS]))
    book = open_workbook(target)
    sheet = book["results"]
    cells = [row[0] for row in sheet.iter_rows(min_row=2)]
    assert [c.value for c in cells] == DANGEROUS
    assert all(c.data_type == "s" for c in cells)
    assert not any(c.hyperlink for c in cells)
    book.close()
    assert read_sheet(target)["value"].tolist() == DANGEROUS


def test_xlsx_number_columns_are_numbers_and_empty_when_missing(tmp_path: Path) -> None:
    target = tmp_path / "out.xlsx"
    frame = pd.DataFrame(
        {"status": [200, None, 404.0, float("nan"), "", 2**60], "error": ["e"] * 6},
        dtype=object,
    )
    write_sheet(target, frame, number_columns=NUMBERS)
    book = open_workbook(target)
    cells = [row[0] for row in book["results"].iter_rows(min_row=2)]
    assert [c.value for c in cells] == [200, None, 404, None, None, str(2**60)]
    assert [c.data_type for c in cells[:3]] == ["n", "n", "n"]
    book.close()
    assert read_sheet(target)["status"].tolist() == ["200", "", "404", "", "", str(2**60)]


def test_xlsx_header_is_bold_frozen_filtered_and_sized(tmp_path: Path) -> None:
    target = tmp_path / "out.xlsx"
    frame = frame_of([{"thread_id": "t" * 100, "status": 200, "x": "short"}] * 3)
    write_sheet(target, frame, number_columns=NUMBERS)
    book = open_workbook(target)
    sheet = book["results"]
    assert [c.value for c in sheet[1]] == ["thread_id", "status", "x"]
    assert all(c.font.b for c in sheet[1])
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == "A1:C4"
    widths = {key: dim.width for key, dim in sheet.column_dimensions.items()}
    assert 59 < widths["A"] <= 61  # capped at 60
    assert 8 <= widths["C"] < 12
    book.close()


def test_xlsx_long_cell_is_cut_with_marker_and_kept_whole_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "out.xlsx"
    big = "é" * 1_000_000
    astral = "😀" * 20_000  # 40,000 UTF-16 units in 20,000 characters
    frame = frame_of([{"a": "small", "b": "x"}, {"a": big, "b": astral}])
    with SheetWriter(target, ["a", "b"]) as out:
        out.write(frame)
    assert out.cut_cells == 2
    book = open_workbook(target)
    cells = [c.value for row in book["results"].iter_rows() for c in row]
    book.close()
    assert all(len(v.encode("utf-16-le")) // 2 <= EXCEL_CELL_LIMIT for v in cells)
    cut = cells[4]
    assert cut.endswith("… [cut: 1,000,000 chars; full text in out.full.jsonl]")
    assert cut.startswith("é" * 30_000)
    assert cells[5].endswith("… [cut: 20,000 chars; full text in out.full.jsonl]")
    assert "\ud83d" not in cells[5]  # no half of a surrogate pair left behind
    records = [
        json.loads(line) for line in (tmp_path / "out.full.jsonl").read_text("utf-8").splitlines()
    ]
    assert records == [
        {"row": 3, "column": "a", "text": big},
        {"row": 3, "column": "b", "text": astral},
    ]


def test_xlsx_without_cut_cells_removes_a_stale_full_text_file(tmp_path: Path) -> None:
    stale = tmp_path / "out.full.jsonl"
    stale.write_text('{"row": 2, "column": "a", "text": "old"}\n', "utf-8")
    write_sheet(tmp_path / "out.xlsx", frame_of([{"a": "short"}]))
    assert not stale.exists()
    assert listing(tmp_path) == ["out.xlsx"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Control characters are left to xlsxwriter, which writes Excel's _xHHHH_ escapes.
        pytest.param("bell\x07", "bell\x07", id="bell-kept"),
        pytest.param("\x00", "\x00", id="nul-kept"),
        pytest.param("a\x0bb\x0cc", "a\x0bb\x0cc", id="vertical-tab-form-feed-kept"),
        pytest.param("\ud800", "\\ud800", id="lone-surrogate"),
        pytest.param("\ufffe\uffff", "\\ufffe\\uffff", id="non-characters"),
        pytest.param("tab\tnew\nline\rcr", "tab\tnew\nline\rcr", id="legal-whitespace-kept"),
        pytest.param("😀 é", "😀 é", id="astral-kept"),
        pytest.param("", "", id="empty"),
    ],
)
def test_excel_text_escapes_only_what_no_xlsx_can_hold(text: str, expected: str) -> None:
    assert excel_text(text) == expected


def test_xlsx_control_characters_come_back_and_what_no_xlsx_holds_is_escaped(
    tmp_path: Path,
) -> None:
    target = tmp_path / "out.xlsx"
    frame = frame_of([{"a\x01": "x\x07y\x00_x0041_", "b": "\ud800", "c": "keep\r\n\x1f"}])
    write_sheet(target, frame)
    back = read_sheet(target)
    assert list(back.columns) == ["a\x01", "b", "c"]
    assert back.iloc[0].tolist() == ["x\x07y\x00_x0041_", "\\ud800", "keep\r\n\x1f"]


def test_xlsx_summary_sheet_has_a_section_per_key(tmp_path: Path) -> None:
    target = tmp_path / "out.xlsx"
    summary = {
        "outcome": [("ok", 990), ("invalid", 6), ("failed", 4)],
        "timing": [("started", "2024-05-01T13:45:00"), ("seconds", 12.5)],
        "settings": [("base_url", "http://127.0.0.1:8000/v1"), ("wait", False), ("tools", ["a"])],
    }
    write_sheet(target, frame_of([{"a": "1"}]), summary=summary)
    book = open_workbook(target)
    assert book.sheetnames == ["results", "summary"]
    sheet = book["summary"]
    rows = [[c.value for c in row] for row in sheet.iter_rows()]
    assert rows == [
        ["outcome", None],
        ["ok", 990],
        ["invalid", 6],
        ["failed", 4],
        [None, None],
        ["timing", None],
        ["started", "2024-05-01T13:45:00"],
        ["seconds", 12.5],
        [None, None],
        ["settings", None],
        ["base_url", "http://127.0.0.1:8000/v1"],
        ["wait", False],
        ["tools", '["a"]'],
    ]
    assert sheet["A1"].font.b and sheet["A6"].font.b and not sheet["A2"].font.b
    book.close()


def test_xlsx_all_empty_row_survives_between_rows_not_at_the_end(tmp_path: Path) -> None:
    # At the end it is what a sheet filled down below its table looks like: not a row.
    target = tmp_path / "out.xlsx"
    rows = [{"a": "1", "b": ""}, {"a": "", "b": ""}, {"a": "2", "b": ""}, {"a": "", "b": ""}]
    write_sheet(target, frame_of(rows))
    assert read_sheet(target).values.tolist() == [["1", ""], ["", ""], ["2", ""]]


def test_xlsx_refuses_more_rows_than_excel_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(xlsx_writer, "MAX_XLSX_DATA_ROWS", 3)
    target = tmp_path / "out.xlsx"
    with pytest.raises(UsageError, match=r"at most 3 data rows; write \.csv or \.jsonl"):
        write_sheet(target, frame_of([{"a": str(i)} for i in range(4)]))
    assert listing(tmp_path) == []


# --- CSV/TSV --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("=1+1", "'=1+1", id="equals"),
        pytest.param("=", "'=", id="equals-alone"),
        pytest.param("+1+2", "'+1+2", id="plus-expression"),
        pytest.param("-x", "'-x", id="minus-text"),
        pytest.param("@SUM(A1)", "'@SUM(A1)", id="at"),
        pytest.param("\t=1", "'\t=1", id="tab"),
        pytest.param("\r=1", "'\r=1", id="carriage-return"),
        pytest.param("+1 555 0100", "'+1 555 0100", id="phone-number"),
        pytest.param("-", "'-", id="minus-alone"),
        pytest.param("-٣", "'-٣", id="non-ascii-digit-is-not-a-plain-number"),
        pytest.param("-5", "-5", id="negative-int"),
        pytest.param("+1.5", "+1.5", id="signed-decimal"),
        pytest.param("-1e3", "-1e3", id="exponent"),
        pytest.param("-.5", "-.5", id="leading-dot"),
        pytest.param("-5.", "-5.", id="trailing-dot"),
        pytest.param("a=b", "a=b", id="equals-inside"),
        pytest.param(" =1", " =1", id="leading-space"),
        pytest.param("", "", id="empty"),
    ],
)
def test_escape_formula(text: str, expected: str) -> None:
    assert escape_formula(text) == expected
    assert escape_formula_cells([text]) == [expected]


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
@pytest.mark.parametrize("escape", [True, False])
def test_delimited_output_escapes_formulas_only_when_asked(
    tmp_path: Path, suffix: str, escape: bool
) -> None:
    target = tmp_path / f"out{suffix}"
    frame = frame_of(
        [{"=h": "=1+1", "status": 200, "body": "-5"}, {"=h": "@x", "status": None, "body": "ok"}]
    )
    write_sheet(target, frame, number_columns=NUMBERS, escape_formulas=escape)
    back = read_sheet(target)
    if escape:
        assert list(back.columns) == ["'=h", "status", "body"]
        assert back.values.tolist() == [["'=1+1", "200", "-5"], ["'@x", "", "ok"]]
    else:
        assert list(back.columns) == ["=h", "status", "body"]
        assert back.values.tolist() == [["=1+1", "200", "-5"], ["@x", "", "ok"]]


def test_csv_is_plain_utf8_with_newline_line_ends(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    frame = pd.DataFrame(
        {"a": ["é", 'say "hi"', "x,y"], "status": [200.0, float("nan"), 7]}, dtype=object
    )
    write_sheet(target, frame, number_columns=NUMBERS)
    assert target.read_bytes() == 'a,status\né,200\n"say ""hi""",\n"x,y",7\n'.encode()


def test_csv_lone_surrogate_is_written_as_an_escape(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    write_sheet(target, frame_of([{"a": "x\ud800y"}]))
    assert read_sheet(target).loc[0, "a"] == "x\\ud800y"


QUOTING = ["plain", "a,b", 'say "hi"', '"', "a\nb", "a\rb", "a\r\nb", "a\tb", " x ", "", '{"k": 1}']


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_delimited_cells_read_back_the_same_with_other_readers(tmp_path: Path, suffix: str) -> None:
    """Quoting is batchrun's own (for speed): the csv module and pandas read it back exactly."""
    target = tmp_path / f"out{suffix}"
    rows = [{"a": cell, "b": cell[::-1], "c": "x"} for cell in QUOTING]
    write_sheet(target, frame_of(rows), escape_formulas=False)
    sep = "\t" if suffix == ".tsv" else ","
    with target.open(newline="", encoding="utf-8") as stream:
        assert list(csv.reader(stream, delimiter=sep))[1:] == [list(r.values()) for r in rows]
    by_pandas = pd.read_csv(target, sep=sep, dtype=str, keep_default_na=False)
    assert by_pandas.to_dict("records") == rows


@pytest.mark.parametrize("cell", ["", " ", "\t", "a\rb", "\r"])
def test_one_column_csv_keeps_blank_looking_cells(tmp_path: Path, cell: str) -> None:
    target = tmp_path / "out.csv"
    write_sheet(target, frame_of([{"a": "1"}, {"a": cell}, {"a": "2"}]), escape_formulas=False)
    assert read_sheet(target)["a"].tolist() == ["1", cell, "2"]


def test_non_text_values_in_text_columns_become_text(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    frame = pd.DataFrame({"a": [None, float("nan"), 3, 2.5, pd.NA, 7.0, True]}, dtype=object)
    write_sheet(target, frame)
    assert read_sheet(target)["a"].tolist() == ["", "", "3", "2.5", "", "7", "true"]


# --- JSONL ----------------------------------------------------------------------------------


def test_jsonl_has_numbers_nulls_and_strings(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    frame = pd.DataFrame(
        {"thread_id": ["t1", "t2"], "status": [200.0, None], "attempts": ["3", ""]}, dtype=object
    )
    write_sheet(target, frame, number_columns=NUMBERS)
    lines = [json.loads(line) for line in target.read_text("utf-8").splitlines()]
    assert lines == [
        {"thread_id": "t1", "status": 200, "attempts": 3},
        {"thread_id": "t2", "status": None, "attempts": None},
    ]


# --- chunks, formats, atomicity ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".xlsx"])
def test_consecutive_chunks_are_appended_in_order(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"out{suffix}"
    rows = [{"thread_id": f"t{i}", "status": 200 + i} for i in range(25)]
    with SheetWriter(target, ["thread_id", "status"], number_columns=NUMBERS) as out:
        for start in range(0, 25, 7):
            out.write(frame_of(rows[start : start + 7]))
        assert out.rows_written == 25
    back = read_sheet(target)
    assert back["thread_id"].tolist() == [f"t{i}" for i in range(25)]
    assert back["status"].tolist() == [str(200 + i) for i in range(25)]
    assert listing(tmp_path) == [target.name]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        pytest.param("out.xlsm", r"write \.xlsx", id="xlsm"),
        pytest.param("out.xls", r"unknown output extension '\.xls'", id="xls"),
        pytest.param("out", "unknown output extension ''", id="none"),
        pytest.param(
            "missing/out.csv", "directory .*missing does not exist", id="missing-directory"
        ),
    ],
)
def test_unwritable_outputs_are_usage_errors(tmp_path: Path, name: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        SheetWriter(tmp_path / name, ["a"])


def test_output_path_that_is_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "out.csv").mkdir()
    with pytest.raises(UsageError, match="is a directory"):
        SheetWriter(tmp_path / "out.csv", ["a"])


def test_frame_with_other_columns_is_refused(tmp_path: Path) -> None:
    with SheetWriter(tmp_path / "out.csv", ["a", "b"]) as out, pytest.raises(ValueError):
        out.write(frame_of([{"b": "1", "a": "2"}]))


class Explodes:
    """A cell value whose text cannot be made: a failure in the middle of writing."""

    def __str__(self) -> str:
        raise RuntimeError("boom")


@pytest.fixture
def own_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # xlsxwriter keeps row data in temp files: they must go too.
    folder = tmp_path / "system-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".xlsx"])
def test_failure_mid_write_leaves_previous_output_and_no_temp_files(
    tmp_path: Path, own_tempdir: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / f"out{suffix}"
    write_sheet(target, frame_of([{"a": "old"}]))
    before = target.read_bytes()
    monkeypatch.setattr("batchrun.sheets.writer._SLICE_ROWS", 10)
    rows: list[dict[str, object]] = [{"a": f"new {i}"} for i in range(35)]
    rows[30] = {"a": Explodes()}
    with pytest.raises(RuntimeError, match="boom"), SheetWriter(target, ["a"]) as out:
        out.write(frame_of(rows))
    assert target.read_bytes() == before
    assert listing(out_dir) == [target.name]
    assert listing(own_tempdir) == []


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_abort_and_exceptions_in_the_with_block_keep_previous_output(
    tmp_path: Path, own_tempdir: Path, suffix: str
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / f"out{suffix}"
    write_sheet(target, frame_of([{"a": "old"}]))
    (out_dir / "out.full.jsonl").write_text("{}\n", "utf-8")
    before = target.read_bytes()
    out = SheetWriter(target, ["a"])
    out.write(frame_of([{"a": "x" * 40_000}]))
    out.abort()
    with pytest.raises(KeyboardInterrupt), SheetWriter(target, ["a"]) as out:
        out.write(frame_of([{"a": "new"}]))
        raise KeyboardInterrupt
    assert target.read_bytes() == before
    assert listing(out_dir) == sorted([target.name, "out.full.jsonl"])
    assert listing(own_tempdir) == []


def test_failed_rename_keeps_previous_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.csv"
    write_sheet(target, frame_of([{"a": "old"}]))
    before = target.read_bytes()

    def refuse(self: Path, other: Path) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        write_sheet(target, frame_of([{"a": "new"}]))
    assert target.read_bytes() == before
    assert listing(tmp_path) == ["out.csv"]


# --- round trips (property tests) -------------------------------------------------------------

HEADERS = st.lists(
    st.from_regex(r"[A-Za-z][A-Za-z0-9_ .]{0,8}", fullmatch=True),
    min_size=1,
    max_size=4,
    unique_by=lambda h: h.strip().casefold(),
)
EDGY = st.sampled_from(["=1+1", "+", "-5", "-x", "@a", "\t", "\r", '"', "\r\n", " ", "_x0041_"])
NO_NUL = st.one_of(
    EDGY, st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12)
)  # UTF-8 cannot hold lone surrogates; NUL makes a file the reader refuses
ANY_TEXT = st.one_of(
    EDGY, st.text(st.characters(exclude_categories=()), max_size=12)
)  # surrogates included
ROUND_TRIP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def frames(draw: st.DrawFn, cells: st.SearchStrategy[str], min_rows: int = 0) -> pd.DataFrame:
    headers = draw(HEADERS)
    width = len(headers)
    rows = draw(
        st.lists(st.lists(cells, min_size=width, max_size=width), min_size=min_rows, max_size=6)
    )
    return pd.DataFrame(rows, columns=headers, dtype=object)


def round_trip(frame: pd.DataFrame, suffix: str, **options: Any) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / f"out{suffix}"
        write_sheet(target, frame, **options)
        return read_sheet(target)


def assert_cells(back: pd.DataFrame, frame: pd.DataFrame, expect: Any) -> None:
    assert list(back.columns) == [expect(h) for h in frame.columns]
    assert back.values.tolist() == [[expect(c) for c in row] for row in frame.values.tolist()]


@ROUND_TRIP
@given(frame=frames(NO_NUL), suffix=st.sampled_from([".csv", ".tsv"]))
def test_delimited_round_trip_is_exact_without_escaping(frame: pd.DataFrame, suffix: str) -> None:
    back = round_trip(frame, suffix, escape_formulas=False)
    assert_cells(back, without_trailing_empty_rows(frame), lambda text: text)


def without_trailing_empty_rows(
    frame: pd.DataFrame, shown: Callable[[str], str] = lambda text: text, *, sheet: str = "csv"
) -> pd.DataFrame:
    """What a sheet reads back: rows at the end whose cells (as ``shown``) are all empty or
    spaces are dropped (the rows of only commas Excel leaves, cells filled down below a
    table), except in a one-column CSV, where such a row is data."""
    if sheet == "csv" and len(frame.columns) < 2:
        return frame
    end = len(frame)
    while end and all(not shown(cell).strip() for cell in frame.iloc[end - 1]):
        end -= 1
    return frame.iloc[:end]


@ROUND_TRIP
@given(frame=frames(NO_NUL), suffix=st.sampled_from([".csv", ".tsv"]))
def test_delimited_round_trip_with_escaping_only_adds_a_quote(
    frame: pd.DataFrame, suffix: str
) -> None:
    back = round_trip(frame, suffix)
    frame = without_trailing_empty_rows(frame, escape_formula)  # "'\t" is not blank
    assert_cells(back, frame, escape_formula)
    for got, original in zip(back.values.ravel(), frame.values.ravel(), strict=True):
        assert got in (original, "'" + original)


@ROUND_TRIP
@given(frame=frames(ANY_TEXT, min_rows=1))
def test_jsonl_round_trip_is_exact(frame: pd.DataFrame) -> None:
    assert_cells(round_trip(frame, ".jsonl"), frame, lambda text: text)


@ROUND_TRIP
@given(frame=frames(ANY_TEXT))
def test_xlsx_round_trip_is_exact_apart_from_escaped_characters(frame: pd.DataFrame) -> None:
    expected = without_trailing_empty_rows(frame, excel_text, sheet="xlsx")
    assert_cells(round_trip(frame, ".xlsx"), expected, excel_text)
