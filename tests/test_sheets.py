"""Reading input sheets: every format as text cells, and every file-level problem as one line."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xlsxwriter

from batchrun.errors import InputError, UsageError
from batchrun.sheets import iter_sheet, read_rows, read_sheet

Cell = Callable[[Any, int, int], None]


def make_xlsx(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    """Write rows with xlsxwriter's own type guessing (str, number, bool, date...)."""
    workbook = xlsxwriter.Workbook(str(path))
    for name, rows in sheets.items():
        sheet = workbook.add_worksheet(name)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if callable(value):
                    value(workbook, sheet, r, c)
                elif value is not None:
                    sheet.write(r, c, value)
    workbook.close()
    return path


def records(frame: pd.DataFrame) -> list[dict[str, str]]:
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]


def assert_text_frame(frame: pd.DataFrame) -> None:
    assert all(dtype == np.dtype(object) for dtype in frame.dtypes)
    assert all(type(cell) is str for column in frame.columns for cell in frame[column])


# --- each format -----------------------------------------------------------------------------

TABLE = [{"thread_id": "thread_1", "n": "00123"}, {"thread_id": "thread_2", "n": ""}]
TEXT_FORMATS = [
    pytest.param("in.csv", b"thread_id,n\nthread_1,00123\nthread_2,\n", id="csv"),
    pytest.param("in.tsv", b"thread_id\tn\nthread_1\t00123\nthread_2\t\n", id="tsv"),
    pytest.param("in.CSV", b"thread_id,n\r\nthread_1,00123\r\nthread_2,\r\n", id="csv-crlf-upper"),
    pytest.param("in.csv", b"\xef\xbb\xbfthread_id,n\nthread_1,00123\nthread_2,\n", id="csv-bom"),
    pytest.param(
        "in.jsonl",
        b'{"thread_id": "thread_1", "n": "00123"}\n\n{"thread_id": "thread_2", "n": null}\n',
        id="jsonl",
    ),
    pytest.param(
        "in.jsonl",
        b'\xef\xbb\xbf{"thread_id": "thread_1", "n": "00123"}\n{"thread_id": "thread_2"}',
        id="jsonl-bom-missing-key",
    ),
]


@pytest.mark.parametrize(("name", "content"), TEXT_FORMATS)
def test_each_text_format_reads_as_str_cells(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    frame = read_sheet(path)
    assert list(frame.columns) == ["thread_id", "n"]
    assert records(frame) == TABLE
    assert_text_frame(frame)
    assert list(frame.index) == [0, 1]


@pytest.mark.parametrize(("name", "content"), TEXT_FORMATS)
def test_read_rows_gives_the_same_cells_without_pandas(
    tmp_path: Path, name: str, content: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    headers, rows = read_rows(path)
    assert [dict(zip(headers, row, strict=True)) for row in rows] == TABLE
    assert all(type(row) is list and all(type(c) is str for c in row) for row in rows)


@pytest.mark.parametrize("suffix", [".xlsx", ".xlsm", ".XLSX"])
def test_xlsx_and_xlsm_read_as_str_cells(tmp_path: Path, suffix: str) -> None:
    path = make_xlsx(
        tmp_path / f"in{suffix}",
        {"Sheet1": [["thread_id", "n"], ["thread_1", "00123"], ["thread_2", None]]},
    )
    frame = read_sheet(path)
    assert records(frame) == TABLE
    assert_text_frame(frame)


@pytest.mark.parametrize(
    "text",
    ["00123", "1e5", "TRUE", "false", "NA", "N/A", "null", "NaN", "None", "-0", " padded ", "1,5"],
)
def test_csv_cells_are_never_type_guessed(tmp_path: Path, text: str) -> None:
    path = tmp_path / "in.csv"
    path.write_text(f'a,b\n"{text}",x\n', encoding="utf-8")
    assert read_sheet(path).loc[0, "a"] == text


def test_short_rows_are_padded_and_blank_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b,c\n1\n\n   \n,,\n2,3\n", encoding="utf-8")
    assert records(read_sheet(path)) == [
        {"a": "1", "b": "", "c": ""},
        {"a": "", "b": "", "c": ""},  # an empty row between rows with values is a row
        {"a": "2", "b": "3", "c": ""},
    ]


@pytest.mark.parametrize("tail", [",,\n,,\n", ",,\r\n,\n,,", ",,,\n", " , ,\n,  ,\n"])
def test_rows_of_only_commas_at_the_end_are_dropped(tmp_path: Path, tail: str) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b,c\nx,y,z\n" + tail, encoding="utf-8")
    if tail == ",,,\n":  # one cell too many is still an error, not a silent drop
        with pytest.raises(InputError, match="row 3 has 4 cells"):
            read_sheet(path)
        return
    assert records(read_sheet(path)) == [{"a": "x", "b": "y", "c": "z"}]


@pytest.mark.parametrize("uncomputed", [False, True])
def test_rows_at_the_end_of_a_workbook_that_only_look_empty_are_dropped(
    tmp_path: Path, uncomputed: bool
) -> None:
    # Cells of spaces and empty text filled down below the table: before, each such row
    # came back as an invalid row (36 here for two real ones).
    path = tmp_path / "in.xlsx"
    with xlsxwriter.Workbook(path) as workbook:
        sheet = workbook.add_worksheet()
        sheet.write_row(0, 0, ["a", "b", "c"])
        sheet.write_row(1, 0, ["x", "", "z"])
        sheet.write_row(2, 0, ["", " ", ""])  # spaces between rows with values: a row
        sheet.write_row(3, 0, ["y", "", ""])
        for row in range(4, 40):
            sheet.write_string(row, 1, "  ")
            sheet.write_string(row, 2, "")
        if uncomputed:  # a formula whose value the file does not hold: its row says so
            sheet.write_formula(40, 2, "=A2", None, "")
    rows = records(read_sheet(path))
    assert rows[:3] == [
        {"a": "x", "b": "", "c": "z"},
        {"a": "", "b": " ", "c": ""},
        {"a": "y", "b": "", "c": ""},
    ]
    assert len(rows) == (40 if uncomputed else 3)


def test_one_column_sheet_keeps_rows_of_spaces_but_not_blank_lines_above_its_header(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.csv"
    path.write_text("\n   \nthread_id\nthread_1\n  \n\nthread_2\n", encoding="utf-8")
    assert records(read_sheet(path)) == [
        {"thread_id": "thread_1"},
        {"thread_id": "  "},
        {"thread_id": "thread_2"},
    ]


def test_quoted_cells_keep_newlines_quotes_and_commas(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b'a,b\n"line1\r\nline2","say ""hi"", ok"\n')
    assert records(read_sheet(path)) == [{"a": "line1\r\nline2", "b": 'say "hi", ok'}]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_million_character_cell_reads_whole(tmp_path: Path, suffix: str) -> None:
    big = "x" * 1_000_000
    path = tmp_path / f"in{suffix}"
    if suffix == ".csv":
        path.write_text(f"a,b\n{big},1\n", encoding="utf-8")
    else:
        path.write_text(f'{{"a": "{big}", "b": "1"}}\n', encoding="utf-8")
    assert read_sheet(path).loc[0, "a"] == big


def test_header_only_gives_columns_and_no_rows(tmp_path: Path) -> None:
    csv_path = tmp_path / "in.csv"
    csv_path.write_text("thread_id,assistant_id\n", encoding="utf-8")
    xlsx_path = make_xlsx(tmp_path / "in.xlsx", {"S": [["thread_id", "assistant_id"]]})
    for path in (csv_path, xlsx_path):
        frame = read_sheet(path)
        assert list(frame.columns) == ["thread_id", "assistant_id"]
        assert len(frame) == 0
        assert all(dtype == np.dtype(object) for dtype in frame.dtypes)


def test_empty_header_cells_are_named_by_position(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,, ,d\n1,2,3,4\n", encoding="utf-8")
    assert list(read_sheet(path).columns) == ["a", "column_2", "column_3", "d"]


def test_headers_are_kept_exactly_as_written(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(" Thread_ID ,metadata.Key\n1,2\n", encoding="utf-8")
    assert list(read_sheet(path).columns) == [" Thread_ID ", "metadata.Key"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("in.csv", b"id,b,ID\n1,2,3\n", id="csv-case"),
        pytest.param("in.csv", b" id ,id\n1,2\n", id="csv-spaces"),
        pytest.param("in.tsv", b"id\tID\n1\t2\n", id="tsv"),
        pytest.param("in.jsonl", b'{"id": "1"}\n{"ID": "2"}\n', id="jsonl-across-lines"),
    ],
)
def test_duplicate_headers_are_an_input_error_naming_them(
    tmp_path: Path, name: str, content: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"duplicate column names.*'id'") as caught:
        read_sheet(path)
    assert "\n" not in str(caught.value)


# --- XLSX cells as Excel shows them -------------------------------------------------------


def formula(text: str, cached: object) -> Callable[..., None]:
    return lambda book, sheet, r, c: sheet.write_formula(r, c, text, None, cached)


def dated(value: object, number_format: str) -> Callable[..., None]:
    def write(book: Any, sheet: Any, r: int, c: int) -> None:
        sheet.write_datetime(r, c, value, book.add_format({"num_format": number_format}))

    return write


def number(value: float, number_format: str) -> Callable[..., None]:
    def write(book: Any, sheet: Any, r: int, c: int) -> None:
        sheet.write_number(r, c, value, book.add_format({"num_format": number_format}))

    return write


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        pytest.param("text", "text", id="text"),
        pytest.param("00123", "00123", id="text-leading-zeros"),
        pytest.param(3.0, "3", id="whole-float-without-dot-zero"),
        pytest.param(3.5, "3.5", id="fraction"),
        pytest.param(-0.0, "0", id="negative-zero"),
        pytest.param(123456789012345, "123456789012345", id="large-whole-number-exact"),
        pytest.param(0.1 + 0.2, "0.3", id="fifteen-significant-digits"),
        pytest.param(1e-5, "1e-05", id="tiny"),
        pytest.param(True, "TRUE", id="bool-true"),
        pytest.param(False, "FALSE", id="bool-false"),
        pytest.param(formula("=1+1", 2), "2", id="formula-cached-number"),
        pytest.param(formula('="a"&"b"', "ab"), "ab", id="formula-cached-text"),
        pytest.param(formula("=TRUE()", True), "TRUE", id="formula-cached-bool"),
        pytest.param(formula("=1/0", "#DIV/0!"), "", id="formula-error-is-empty"),
        pytest.param(dated(datetime.date(2024, 5, 1), "yyyy-mm-dd"), "2024-05-01", id="date"),
        pytest.param(
            dated(datetime.datetime(2024, 5, 1, 13, 45), "yyyy-mm-dd hh:mm"),
            "2024-05-01T13:45:00",
            id="datetime",
        ),
        pytest.param(dated(datetime.time(13, 45), "hh:mm:ss"), "13:45:00", id="time"),
        pytest.param(number(1.5, "[h]:mm:ss"), "36:00:00", id="duration"),
        pytest.param(number(123, "00000"), "123", id="number-format-not-applied"),
    ],
)
def test_xlsx_cells_read_as_excel_shows_them(tmp_path: Path, cell: object, expected: str) -> None:
    path = make_xlsx(tmp_path / "in.xlsx", {"S": [["value", "next"], [cell, "x"]]})
    assert records(read_sheet(path)) == [{"value": expected, "next": "x"}]


def test_xlsx_table_starts_at_its_first_nonempty_row_and_column(tmp_path: Path) -> None:
    rows = [[], [], [None, None, "thread_id", "n"], [None, None, "t1", 5]]
    path = make_xlsx(tmp_path / "in.xlsx", {"S": rows})
    assert records(read_sheet(path)) == [{"thread_id": "t1", "n": "5"}]


def test_xlsx_empty_row_inside_the_table_is_a_row(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "in.xlsx", {"S": [["a"], ["1"], [], ["2"]]})
    assert read_sheet(path)["a"].tolist() == ["1", "", "2"]


SHEETS = {"Data": [["a"], ["from data"]], "Other": [["a"], ["from other"]], "7": [["a"], ["seven"]]}


@pytest.mark.parametrize(
    ("sheet", "expected"),
    [
        pytest.param(None, "from data", id="default-first"),
        pytest.param("Other", "from other", id="by-name"),
        pytest.param("other", "from other", id="by-name-ignoring-case"),
        pytest.param(1, "from other", id="by-index"),
        pytest.param("1", "from other", id="numeric-string-as-index"),
        pytest.param("7", "seven", id="numeric-string-name-wins"),
    ],
)
def test_xlsx_sheet_by_name_or_index(
    tmp_path: Path, sheet: str | int | None, expected: str
) -> None:
    path = make_xlsx(tmp_path / "in.xlsx", SHEETS)
    assert read_sheet(path, sheet).loc[0, "a"] == expected


@pytest.mark.parametrize("sheet", ["Missing", 3, "9"])
def test_missing_sheet_names_the_available_ones(tmp_path: Path, sheet: str | int) -> None:
    path = make_xlsx(tmp_path / "in.xlsx", SHEETS)
    with pytest.raises(InputError, match=r"has no sheet .*0: 'Data', 1: 'Other', 2: '7'"):
        read_sheet(path, sheet)


def test_sheet_option_on_csv_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a\n1\n", encoding="utf-8")
    with pytest.raises(UsageError, match="--sheet"):
        read_sheet(path, "Data")


def test_empty_xlsx_sheet_has_no_header_row(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "in.xlsx", {"Blank": []})
    with pytest.raises(InputError, match="sheet 'Blank' is empty"):
        read_sheet(path)


# --- JSONL values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("json_value", "expected"),
    [
        pytest.param('"as is "', "as is ", id="string"),
        pytest.param('"00123"', "00123", id="string-digits"),
        pytest.param("null", "", id="null-is-empty"),
        pytest.param("true", "true", id="bool"),
        pytest.param("42", "42", id="int"),
        pytest.param("0.7", "0.7", id="float"),
        pytest.param(
            "123456789012345678901234567890", "123456789012345678901234567890", id="big-int"
        ),
        pytest.param('{"a": 1, "b": [true, null]}', '{"a":1,"b":[true,null]}', id="object-compact"),
        pytest.param('["code_interpreter"]', '["code_interpreter"]', id="array"),
        pytest.param('"\\ud800x"', "\ud800x", id="lone-surrogate-escape"),
    ],
)
def test_jsonl_values_become_text(tmp_path: Path, json_value: str, expected: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(f'{{"v": {json_value}}}\n', encoding="utf-8")
    assert read_sheet(path).loc[0, "v"] == expected


def test_jsonl_columns_are_the_union_of_keys_in_first_seen_order(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"b": "1"}\n{"a": "2", "b": "3"}\n{"c": "4"}\n', encoding="utf-8")
    frame = read_sheet(path)
    assert list(frame.columns) == ["b", "a", "c"]
    assert records(frame)[0] == {"b": "1", "a": "", "c": ""}


# --- file-level problems ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        pytest.param(
            "in.csv",
            b"a,b\n1,2\ncaf\xe9,3\n",
            r"is not UTF-8 text \(line 3\): pass its encoding, e.g. --encoding cp1252 .*"
            r"or save it as UTF-8",
            id="latin1",
        ),
        pytest.param("in.csv", b"a,b\n1,2\x003\n", "has a NUL byte on line 2", id="nul-byte"),
        pytest.param(
            "in.csv",
            "a,b\n1,2\n".encode("utf-16"),
            "is UTF-16 text: pass --encoding utf-16",
            id="utf16",
        ),
        pytest.param("in.csv", b"PK\x03\x04\x14\x00\x00\x00", "NUL byte", id="xlsx-renamed-csv"),
        pytest.param("in.csv", b"", r"is empty \(no header row\)", id="empty-file"),
        pytest.param("in.csv", b"\n\n  \n", r"is empty \(no header row\)", id="blank-lines-only"),
        pytest.param(
            "in.csv",
            b"a,b\n1,2\n3,4,5\n",
            "row 3 has 3 cells but the header has 2",
            id="ragged-row",
        ),
        pytest.param(
            "in.csv",
            b'a,b\n"x\ny",1\n2,3,4\n',
            "row 3 has 3 cells",
            id="ragged-after-multiline-cell",
        ),
        pytest.param(
            "in.csv",
            b'a,b\n1,2\n"open,3\n',
            "row 3: a quoted cell is never closed",
            id="unclosed-quote",
        ),
        pytest.param(
            "in.csv",
            b'a,b\n1,2\n"quoted" then text,3\n',
            "row 3: a quoted cell has text after its closing quote",
            id="text-after-closing-quote",
        ),
        pytest.param("in.tsv", b"a\tb\n1\t2\t3\n", "row 2 has 3 cells", id="tsv-ragged"),
        pytest.param(
            "in.jsonl",
            b'{"a": "1"}\n[1, 2]\n',
            "line 2 is not a JSON object \\(it is an array\\)",
            id="jsonl-array",
        ),
        pytest.param(
            "in.jsonl", b'{"a": "1"}\n\n{"a": \n', "line 3 is not valid JSON", id="jsonl-invalid"
        ),
        pytest.param("in.jsonl", b'{"a": NaN}\n', "line 1 is not valid JSON", id="jsonl-nan"),
        pytest.param("in.jsonl", b"\n \n", r"is empty \(no JSON objects\)", id="jsonl-blank"),
        pytest.param(
            "in.xlsx",
            b"this is not a zip file",
            r"is not a readable \.xlsx workbook \(",
            id="xlsx-not-zip",
        ),
        pytest.param("in.xlsx", b"", "is empty", id="xlsx-empty"),
        pytest.param(
            "in.xyz",
            b"a\n",
            r"unknown extension '\.xyz'; use \.csv, \.tsv, \.xlsx, \.xlsm, \.jsonl or \.parquet",
            id="unknown-extension",
        ),
        pytest.param("in.xls", b"a\n", "old .xls workbook; save it as .xlsx", id="old-xls"),
        pytest.param("noext", b"a\n", "has no extension", id="no-extension"),
    ],
)
def test_file_problems_are_one_line_input_errors(
    tmp_path: Path, name: str, content: bytes, problem: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=problem) as caught:
        read_sheet(path)
    assert caught.value.path == path
    assert "\n" not in str(caught.value)


def test_truncated_xlsx_is_not_readable(tmp_path: Path) -> None:
    whole = make_xlsx(tmp_path / "whole.xlsx", {"S": [["a"], *[[f"row {i}"] for i in range(200)]]})
    path = tmp_path / "in.xlsx"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError, match=r"is not a readable \.xlsx workbook"):
        read_sheet(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_sheet(tmp_path / "nope.csv")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(InputError, match="is a directory"):
        read_sheet(folder)


# --- streaming ------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".xlsx"])
def test_iter_sheet_yields_bounded_chunks_with_a_continuous_index(
    tmp_path: Path, suffix: str
) -> None:
    rows = [[f"t{i}", str(i)] for i in range(23)]
    path = tmp_path / f"in{suffix}"
    if suffix == ".xlsx":
        make_xlsx(path, {"S": [["thread_id", "n"], *rows]})
    elif suffix == ".jsonl":
        path.write_text("".join(f'{{"thread_id": "{t}", "n": "{n}"}}\n' for t, n in rows), "utf-8")
    else:
        sep = "\t" if suffix == ".tsv" else ","
        path.write_text("".join(f"{a}{sep}{b}\n" for a, b in [["thread_id", "n"], *rows]), "utf-8")
    headers, chunks = iter_sheet(path, chunk_rows=5)
    frames = list(chunks)
    assert headers == ["thread_id", "n"]
    assert all(0 < len(f) <= 5 for f in frames)
    whole = pd.concat(frames)
    assert list(whole.index) == list(range(23))
    assert whole.values.tolist() == rows
    assert all(dtype == np.dtype(object) for f in frames for dtype in f.dtypes)


def test_iter_sheet_refuses_bad_encoding_before_any_row(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"a\n" + b"ok\n" * 100_000 + b"\xff\n")
    with pytest.raises(InputError, match="line 100002"):
        iter_sheet(path, chunk_rows=10)


def test_iter_sheet_reports_a_late_ragged_row_from_the_iterator(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("a,b\n" + "1,2\n" * 30 + "1,2,3\n", encoding="utf-8")
    headers, chunks = iter_sheet(path, chunk_rows=10)
    assert headers == ["a", "b"]
    with pytest.raises(InputError, match="row 32 has 3 cells"):
        list(chunks)


def test_abandoned_iterator_closes_its_file(tmp_path: Path) -> None:
    # filterwarnings=error turns an unclosed-file ResourceWarning into a failure.
    path = tmp_path / "in.csv"
    path.write_text("a\n" + "1\n" * 100, encoding="utf-8")
    _, chunks = iter_sheet(path, chunk_rows=10)
    next(chunks)
    del chunks
