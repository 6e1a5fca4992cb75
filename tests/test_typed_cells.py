"""Issue 13, sheets: input cells come back as they came in, and .xlsx reading rules."""

from __future__ import annotations

import datetime
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import xlsxwriter
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from job_support import settings_for

from batchrun.cli.commands import main
from batchrun.config import Settings
from batchrun.errors import InputError
from batchrun.jobs import run_file, validate_file
from batchrun.sheets import read_rows
from batchrun.sheets.cells import excel_cell_text
from batchrun.simulator import RunningSimulator

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EXCEL_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
    min_size=1,
    max_size=20,
)
EXCEL_VALUES = st.one_of(
    st.none(),
    EXCEL_TEXT,
    st.booleans(),
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    # xlsxwriter writes 16 significant digits (Excel shows 15): numbers that need a 17th
    # cannot survive any .xlsx it writes (README, "Output").
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: float(f"{x:.16g}") == x),
    st.dates(min_value=datetime.date(1900, 3, 1), max_value=datetime.date(9999, 12, 31)),
    st.datetimes(
        min_value=datetime.datetime(1900, 3, 1), max_value=datetime.datetime(9999, 12, 31)
    ).map(lambda d: d.replace(microsecond=0)),
)


def write_xlsx(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """A workbook with typed cells, as Excel would hold them."""
    book = xlsxwriter.Workbook(
        str(path), {"strings_to_numbers": False, "strings_to_formulas": False}
    )
    sheet = book.add_worksheet("data")
    date = book.add_format({"num_format": "yyyy-mm-dd"})
    moment = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
    sheet.write_row(0, 0, header)
    for r, row in enumerate(rows, start=1):
        for c, value in enumerate(row):
            if value is None:
                continue
            if isinstance(value, datetime.datetime):
                sheet.write_datetime(r, c, value, moment)
            elif isinstance(value, datetime.date):
                sheet.write_datetime(r, c, value, date)
            elif isinstance(value, bool):
                sheet.write_boolean(r, c, value)
            elif isinstance(value, int | float):
                sheet.write_number(r, c, value)
            else:
                sheet.write_string(r, c, value)
    book.close()


def excel_view(value: Any) -> tuple[str, Any]:
    """What Excel holds for a written value: its type and value (openpyxl's reading)."""
    if value is None or value == "":
        return ("empty", None)
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, datetime.datetime):
        return ("date", value)
    if isinstance(value, datetime.date):
        return ("date", datetime.datetime.combine(value, datetime.time()))
    if isinstance(value, int | float):
        return ("number", float(value))
    return ("text", value)


@PROPERTY
@given(st.lists(st.lists(EXCEL_VALUES, min_size=3, max_size=3), min_size=1, max_size=6))
def test_xlsx_cells_come_back_with_their_type_and_value(rows: list[list[Any]]) -> None:
    header = ["thread_id", "assistant_id", "a", "b", "c"]
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.xlsx", Path(folder) / "out.xlsx"
        write_xlsx(source, header, [["t1", "asst_1", *row] for row in rows])
        validate_file(source, target, Settings())
        book = openpyxl.load_workbook(target)
        written = [list(r) for r in book["data"].iter_rows(min_row=2, values_only=True)]
        formats = [
            [cell.number_format for cell in r] for r in book["data"].iter_rows(min_row=2, max_col=5)
        ]
    assert len(written) == len(rows)
    for row, back, shown in zip(rows, written, formats, strict=True):
        assert [excel_view(v) for v in back[2:5]] == [excel_view(v) for v in row]
        for value, number_format in zip(row, shown[2:5], strict=True):
            if isinstance(value, datetime.date):
                assert "yy" in number_format  # shown as a date, not a serial number


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),  # beyond 64 bits too: kept exact
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@PROPERTY
@given(st.lists(st.lists(JSON_VALUES, min_size=2, max_size=2), min_size=1, max_size=6))
@example([[None, [-9_223_372_036_854_775_809]]])  # nested beyond 64 bits: found by this test
def test_jsonl_values_come_back_as_the_same_json(rows: list[list[Any]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.jsonl", Path(folder) / "out.jsonl"
        lines = [json.dumps({"thread_id": "t1", "x": x, "y": y}) for x, y in rows]
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        validate_file(source, target, Settings())
        back = [json.loads(line) for line in target.read_bytes().split(b"\n") if line]
    for (x, y), record in zip(rows, back, strict=True):
        # json.dumps tells 1 from 1.0 from true: same text, same type and value.
        assert json.dumps([record["x"], record["y"]]) == json.dumps([x, y])


def test_xlsx_input_to_jsonl_output_keeps_numbers_booleans_and_dates(tmp_path: Path) -> None:
    source = tmp_path / "in.xlsx"
    write_xlsx(
        source,
        ["thread_id", "assistant_id", "n", "ok", "day", "price"],
        [["t1", "a", 7, True, datetime.date(2024, 5, 1), 2.5]],
    )
    validate_file(source, tmp_path / "out.jsonl", Settings())
    record = json.loads((tmp_path / "out.jsonl").read_text())
    assert (record["n"], record["ok"], record["day"], record["price"]) == (
        7,
        True,
        "2024-05-01",
        2.5,
    )


def test_csv_output_of_an_xlsx_input_writes_cells_as_excel_shows_them(tmp_path: Path) -> None:
    source = tmp_path / "in.xlsx"
    write_xlsx(source, ["thread_id", "assistant_id", "n", "ok"], [["t1", "a", 7, True]])
    validate_file(source, tmp_path / "out.csv", Settings())
    assert (tmp_path / "out.csv").read_text().splitlines()[1].startswith("t1,a,7,TRUE,")


# --- .xlsx reading rules --------------------------------------------------------------------


def errors_of(output: Path) -> list[str]:
    return [line.rsplit(",", 1)[-1] for line in output.read_text().splitlines()[1:]]


def test_a_formula_error_value_in_a_sent_column_is_a_row_error(tmp_path: Path) -> None:
    source = tmp_path / "in.xlsx"
    book = xlsxwriter.Workbook(str(source))
    sheet = book.add_worksheet()
    sheet.write_row(0, 0, ["thread_id", "assistant_id", "instructions", "note"])
    sheet.write_row(1, 0, ["t1", "a"])
    sheet.write_formula(1, 2, "=VLOOKUP(1,A1:A2,1,0)", None, "#N/A")
    sheet.write_row(2, 0, ["t2", "a", "hello"])
    sheet.write_formula(2, 3, "=NA()", None, "#N/A")  # a carried column: never sent
    book.close()
    validate_file(source, tmp_path / "out.csv", Settings())
    assert errors_of(tmp_path / "out.csv") == ["instructions: cell C2 holds the error #N/A", ""]


def test_a_formula_without_a_computed_value_is_a_row_error(tmp_path: Path) -> None:
    source = tmp_path / "in.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["thread_id", "assistant_id", "instructions"])
    sheet.append(["t1", "a", "=UPPER(A2)"])  # openpyxl stores no computed value
    sheet.append(["t2", "a", "plain"])
    book.save(source)
    validate_file(source, tmp_path / "out.csv", Settings())
    errors = errors_of(tmp_path / "out.csv")
    assert errors[0].startswith("instructions: cell C2 is a formula with no computed value")
    assert errors[1] == ""


def workbook(path: Path, sheets: list[tuple[str, list[list[Any]], bool]]) -> Path:
    book = xlsxwriter.Workbook(str(path))
    for name, rows, hidden in sheets:
        sheet = book.add_worksheet(name)
        for r, row in enumerate(rows):
            sheet.write_row(r, 0, row)
        if hidden:
            sheet.hide()
    book.worksheets()[[h for *_, h in sheets].index(False)].activate()
    book.close()
    return path


def test_sheet_2_means_the_sheet_named_2_before_the_third_sheet(tmp_path: Path) -> None:
    source = workbook(
        tmp_path / "in.xlsx",
        [
            ("a", [["thread_id"], ["from_a"]], False),
            ("2", [["thread_id"], ["from_named_2"]], False),
            ("c", [["thread_id"], ["from_c"]], False),
        ],
    )
    assert read_rows(source, "2")[1] == [["from_named_2"]]
    assert read_rows(source, 2)[1] == [["from_c"]]  # a TOML integer is an index
    assert read_rows(source, "C")[1] == [["from_c"]]


def test_the_default_sheet_is_the_first_visible_one(tmp_path: Path) -> None:
    source = workbook(
        tmp_path / "in.xlsx",
        [
            ("lookup", [["thread_id"], ["hidden"]], True),
            ("jobs", [["thread_id"], ["shown"]], False),
        ],
    )
    assert read_rows(source)[1] == [["shown"]]
    with pytest.raises(InputError, match=r"0: 'lookup' \(hidden\), 1: 'jobs'"):
        read_rows(source, "nope")


def test_a_chart_sheet_in_front_is_not_the_default_sheet(tmp_path: Path) -> None:
    import openpyxl
    from openpyxl.chart import BarChart, Reference

    book = openpyxl.Workbook()
    data = book.active
    data.title = "Data"
    data.append(["thread_id", "count"])
    data.append(["thread_a", 3])
    chart = BarChart()
    chart.add_data(Reference(data, min_col=2, min_row=1, max_row=2), titles_from_data=True)
    book.create_chartsheet("Chart", 0).add_chart(chart)  # where Excel puts a moved chart
    source = tmp_path / "in.xlsx"
    book.save(source)
    assert read_rows(source)[1] == [["thread_a", "3"]]


def test_merged_cells_fill_their_whole_range(tmp_path: Path) -> None:
    source = tmp_path / "in.xlsx"
    book = xlsxwriter.Workbook(str(source))
    sheet = book.add_worksheet()
    sheet.write_row(0, 0, ["thread_id", "assistant_id", "note"])
    sheet.merge_range(1, 0, 3, 0, "thread_shared")
    sheet.merge_range(1, 1, 2, 2, "asst_1")
    sheet.write_row(3, 1, ["asst_2", "z"])
    book.close()
    assert read_rows(source)[1] == [
        ["thread_shared", "asst_1", "asst_1"],
        ["thread_shared", "asst_1", "asst_1"],
        ["thread_shared", "asst_2", "z"],
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(12345678901234567.0, "12345678901234568", id="17-digits"),
        pytest.param(2.0**53 + 2, "9007199254740994", id="beyond-2-53"),
        pytest.param(1e20, "100000000000000000000", id="1e20"),
        pytest.param(1e22, "1e+22", id="exponent-beyond-21-digits"),
        pytest.param(0.1 + 0.2, "0.3", id="fraction-15-digits"),
        pytest.param(-0.0, "0", id="minus-zero"),
    ],
)
def test_whole_numbers_keep_every_digit(value: float, text: str) -> None:
    assert excel_cell_text(value) == text


def test_a_17_digit_number_reads_with_its_digits(tmp_path: Path) -> None:
    # Written as other programs write it (xlsxwriter and openpyxl keep only 16 digits).
    plain = tmp_path / "plain.xlsx"
    write_xlsx(plain, ["thread_id", "id"], [["t1", 111]])
    source = tmp_path / "in.xlsx"
    with zipfile.ZipFile(plain) as old, zipfile.ZipFile(source, "w") as new:
        for item in old.infolist():
            data = old.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = data.replace(b"<v>111</v>", b"<v>12345678901234567</v>")
            new.writestr(item, data)
    assert read_rows(source)[1] == [["t1", "12345678901234568"]]


# --- "has no thread_id column" --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        pytest.param(
            "in.csv",
            "Thread ID,assistant_id\nx,y\n",
            "its columns are 'Thread ID', 'assistant_id'. Did you mean 'Thread ID'? "
            'Pass --column "thread_id=Thread ID"',
            id="close-match",
        ),
        pytest.param(
            "in.csv",
            "thread_id;assistant_id\nx;y\n",
            "separated by ';' (as Excel saves CSV in some languages): pass --delimiter ';'",
            id="semicolons",
        ),
        pytest.param(
            "in.csv", "a,b\n1,2\n", "its columns are 'a', 'b' (name the thread column", id="none"
        ),
    ],
)
def test_a_missing_thread_column_says_what_the_sheet_has(
    tmp_path: Path, name: str, content: str, expected: str
) -> None:
    source = tmp_path / name
    source.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        validate_file(source, None, Settings())
    assert expected in str(caught.value)


def test_a_missing_thread_column_names_the_sheet(tmp_path: Path) -> None:
    source = workbook(tmp_path / "in.xlsx", [("Jobs", [["ThreadId", "x"], ["t", "y"]], False)])
    with pytest.raises(
        InputError, match=r"in\.xlsx \(sheet 'Jobs'\): has no 'thread_id'.*ThreadId"
    ):
        validate_file(source, None, Settings())


def test_a_run_from_xlsx_to_xlsx_keeps_types_and_never_sends_an_na_row(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    source = tmp_path / "in.xlsx"
    book = xlsxwriter.Workbook(str(source))
    sheet = book.add_worksheet("jobs")
    day = book.add_format({"num_format": "yyyy-mm-dd"})
    sheet.write_row(0, 0, ["thread_id", "assistant_id", "instructions", "amount", "due", "vip"])
    sheet.write_row(1, 0, ["thread_1", "asst_1", "hi", 1250.5])
    sheet.write_datetime(1, 4, datetime.datetime(2024, 5, 1), day)
    sheet.write_boolean(1, 5, True)
    sheet.write_row(2, 0, ["thread_2", "asst_1"])
    sheet.write_formula(2, 2, "=VLOOKUP(9,A1:A2,1,0)", None, "#N/A")
    sheet.write_number(2, 3, 7)
    book.close()
    report = run_file(source, tmp_path / "out.xlsx", settings_for(simulator.base_url))
    results = openpyxl.load_workbook(report.output)["jobs"]  # the data sheet keeps its name
    header = [cell.value for cell in results[1]]
    first = dict(zip(header, [cell.value for cell in results[2]], strict=True))
    second = dict(zip(header, [cell.value for cell in results[3]], strict=True))
    assert (first["amount"], first["due"], first["vip"]) == (
        1250.5,
        datetime.datetime(2024, 5, 1),
        True,
    )
    assert results.cell(2, header.index("due") + 1).number_format == "yyyy-mm-dd"
    assert (first["outcome"], first["status"]) == ("ok", 200)
    assert second["amount"] == 7 and second["outcome"] == "invalid"
    assert second["error"] == "instructions: cell C3 holds the error #N/A"
    assert simulator.stats()["runs_created"] == 1


def test_sheet_2_on_the_command_line_is_the_sheet_named_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = workbook(
        tmp_path / "in.xlsx",
        [
            ("a", [["thread_id", "assistant_id"], ["from_a", "x"]], False),
            ("b", [["thread_id", "assistant_id"], ["from_b", "x"]], False),
            ("2", [["thread_id", "assistant_id"], ["from_named_2", "x"]], False),
        ],
    )
    with pytest.raises(SystemExit) as stop:
        main(["validate", str(source), "--sheet", "2", "-o", str(tmp_path / "out.csv")])
    assert stop.value.code == 0, capsys.readouterr().err
    assert (tmp_path / "out.csv").read_text().splitlines()[1].startswith("from_named_2,")


def test_a_workbook_cell_read_cut_to_excels_limit_makes_its_row_invalid(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    # openpyxl and pandas write longer text than Excel holds; calamine reads 32,767
    # characters of it. Before, the cut text was sent as if whole.
    source = tmp_path / "in.xlsx"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(["thread_id", "assistant_id", "instructions", "note"])
    sheet.append(["thread_a", "asst_1", "B" * 33_000, "x"])
    sheet.append(["thread_b", "asst_1", "short", "C" * 40_000])
    workbook.save(source)
    report = run_file(source, tmp_path / "out.jsonl", settings_for(simulator.base_url))
    rows = [json.loads(line) for line in report.output.read_text().splitlines()]
    assert rows[0]["outcome"] == "invalid"
    assert rows[0]["error"] == (
        "instructions: cell C2 holds 32,767 characters, the most a workbook cell is read "
        "with: its text may have been cut (send longer text from a .csv or .jsonl)"
    )
    # In a column that is never sent, as an error cell there, it is not the row's problem.
    assert rows[1]["outcome"] == "ok"
    assert simulator.stats()["runs_created"] == 1
