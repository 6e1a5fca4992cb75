"""The .xlsx hand-off as it was sent: an Excel-style workbook comes back with its number
formats, sheet name, title, merged ranges, hidden rows, other sheets and error cells."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import openpyxl
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from batchrun.config import Settings, environment_settings
from batchrun.jobs import validate_file

EURO = '"€"#,##0.00'


def excel_style_workbook(
    path: Path, *, lookup_first: bool = False, merged_title: bool = True
) -> Path:
    """A workbook as people make one in Excel: a merged title row above human headers, a
    percent, a currency and a day-first date column, a merged range, a hidden row, an
    error cell, and a lookup sheet beside the data."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Orders"
    sheet["A1"] = "Q3 customer questions"
    if merged_title:
        sheet.merge_cells("A1:H1")
    sheet.append(["Customer", "Model", "Question", "Discount", "Price", "Order date"])
    sheet["G2"], sheet["H2"] = "Region", "Check"
    sheet.append(["Müller GmbH", "gpt-4o", "Where is my order?", 0.15, 1234.5])
    sheet.append(["Ace Ltd", "gpt-4o", "Can I pay by card?", 0.05, 99.5])
    sheet.append(["Hidden Co", "gpt-4o", "Cancel, please.", 0, 10])
    for row, day in zip((3, 4, 5), (7, 2, 31), strict=True):
        sheet.cell(row, 6).value = datetime.datetime(2024, 3 if day == 7 else 1, day)
        sheet.cell(row, 4).number_format = "0%"
        sheet.cell(row, 5).number_format = EURO
        sheet.cell(row, 6).number_format = "dd/mm/yyyy"
    sheet["G3"] = "North"
    sheet.merge_cells("G3:G4")
    sheet["G5"], sheet["H4"] = "South", 12345
    sheet["H4"].number_format = "#,##0"
    sheet["H3"] = "#N/A"
    sheet["H3"].data_type = "e"  # what a failed VLOOKUP leaves
    sheet.row_dimensions[5].hidden = True
    lookup = book.create_sheet("Lookup", 0 if lookup_first else None)
    for values in (["code", "rate"], ["EU", 0.2], ["US", 0.07]):
        lookup.append(values)
    if lookup_first:
        lookup.sheet_state = "hidden"
    book.save(path)
    return path


def test_an_excel_style_workbook_passes_through_run_simulate_as_it_was_sent(
    tmp_path: Path,
) -> None:
    excel_style_workbook(tmp_path / "orders.xlsx")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "batchrun", "run", "orders.xlsx", "--simulate"),
            *("--endpoint", "chat", "--header-row", "2", "--column", "user=Question"),
            "--no-progress",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1].startswith("3 rows: 3 ok"), done.stderr
    book = openpyxl.load_workbook(tmp_path / "orders.out.xlsx")
    assert book.sheetnames == ["Orders", "Lookup", "summary"]
    sheet = book["Orders"]
    assert sheet["A1"].value == "Q3 customer questions"
    assert {str(cells) for cells in sheet.merged_cells.ranges} == {"A1:H1", "G3:G4"}
    header = [cell.value for cell in sheet[2]]
    assert header[:9] == [
        *("Customer", "Model", "Question", "Discount", "Price", "Order date", "Region"),
        *("Check", "outcome"),
    ]
    assert [cell.value for cell in sheet["I"][2:]] == ["ok", "ok", "ok"]
    assert (sheet["D3"].value, sheet["D3"].number_format) == (0.15, "0%")
    assert (sheet["E3"].value, sheet["E3"].number_format) == (1234.5, EURO)
    assert (sheet["F3"].value, sheet["F3"].number_format) == (
        datetime.datetime(2024, 3, 7),
        "dd/mm/yyyy",
    )
    assert (sheet["H4"].value, sheet["H4"].number_format) == (12345, "#,##0")
    assert sheet["H3"].value == "#N/A"  # the error as its text, not a blank
    assert (sheet["G3"].value, sheet["G4"].value) == ("North", None)
    assert sheet.row_dimensions[5].hidden and not sheet.row_dimensions[4].hidden
    assert sheet.freeze_panes == "A3" and sheet.auto_filter.ref.startswith("A2:")
    assert list(book["Lookup"].values) == [("code", "rate"), ("EU", 0.2), ("US", 0.07)]


def test_other_sheets_keep_their_place_and_visibility(tmp_path: Path) -> None:
    source = excel_style_workbook(tmp_path / "orders.xlsx", lookup_first=True)
    settings = Settings(**environment_settings({"endpoint": "chat", "header_row": 2}, {}))
    validate_file(
        source,
        tmp_path / "checked.xlsx",
        Settings(**{**settings.__dict__, "columns": {"user": "Question"}}),
    )
    book = openpyxl.load_workbook(tmp_path / "checked.xlsx")
    assert book.sheetnames == ["Lookup", "Orders", "summary"]
    assert book["Lookup"].sheet_state == "hidden"
    assert book.active is not None and book.active.title == "Orders"


def test_a_merged_title_above_the_table_is_found_without_header_row(tmp_path: Path) -> None:
    source = excel_style_workbook(tmp_path / "orders.xlsx")
    chat = {"endpoint": "chat", "columns": {"user": "Question"}}
    report = validate_file(
        source, tmp_path / "checked.xlsx", Settings(**environment_settings(chat, {}))
    )
    assert report.summary.outcomes.get("ok") == 3 and not report.summary.outcomes.get("invalid")
    sheet = openpyxl.load_workbook(tmp_path / "checked.xlsx")["Orders"]
    assert sheet["A1"].value == "Q3 customer questions" and sheet["A2"].value == "Customer"


def test_the_real_world_samples_run_as_the_readme_shows(tmp_path: Path) -> None:
    samples = Path(__file__).parent.parent / "samples"
    for name in ("orders.xlsx", "kunden.csv"):
        (tmp_path / name).write_bytes((samples / name).read_bytes())
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "batchrun", "run", *args, "--endpoint", "chat", "--simulate"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )

    done = run("orders.xlsx", "--column", "user=Question")
    assert done.returncode == 0 and done.stderr.splitlines()[-1].startswith("4 rows: 4 ok"), (
        done.stderr
    )
    book = openpyxl.load_workbook(tmp_path / "orders.out.xlsx")
    assert book.sheetnames == ["Orders", "Rates", "summary"]
    sheet = book["Orders"]
    assert {str(cells) for cells in sheet.merged_cells.ranges} == {"A1:H1", "G3:G4"}
    assert [sheet[ref].number_format for ref in ("D3", "E3", "F3")] == ["0%", EURO, "dd/mm/yyyy"]
    assert sheet.row_dimensions[5].hidden and sheet["H5"].value == "#N/A"
    kunden = ("kunden.csv", "--column", "model=Modell", "--column", "user=Frage")
    done = run(*kunden)
    assert done.returncode == 2 and "pass its encoding, e.g. --encoding cp1252" in done.stderr
    done = run(*kunden, "--delimiter", ";", "--encoding", "cp1252")
    assert done.returncode == 0 and done.stderr.splitlines()[-1].startswith("3 rows: 3 ok"), (
        done.stderr
    )
    data = (tmp_path / "kunden.out.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbfKunde;Modell;Frage;Rabatt;Bestelldatum;outcome;")
    text = data.decode("utf-8-sig")
    assert "Bäckerei Groß;gpt-4o-mini;Kann ich per Überweisung zahlen?;5%;02.11.2024;ok;" in text
    assert text.count("\r\n") == 4


FORMATS = [None, "0%", EURO, "#,##0", "dd/mm/yyyy", "0.000"]


@hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cells=st.lists(
        st.lists(st.sampled_from(range(len(FORMATS))), min_size=2, max_size=2),
        min_size=1,
        max_size=8,
    ),
    hidden=st.sets(st.integers(0, 7)),
)
def test_every_cell_keeps_its_number_format_and_every_hidden_row_stays_hidden(
    cells: list[list[int]], hidden: set[int]
) -> None:
    import tempfile

    import xlsxwriter

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.xlsx", Path(folder) / "out.xlsx"
        book = xlsxwriter.Workbook(str(source))
        sheet = book.add_worksheet("Data")
        formats = {code: book.add_format({"num_format": code}) for code in FORMATS if code}
        sheet.write_row(0, 0, ["model", "a", "b"])
        for row, pair in enumerate(cells, start=1):
            sheet.write_string(row, 0, "gpt-4o")
            for col, choice in enumerate(pair, start=1):
                code = FORMATS[choice]
                sheet.write_number(row, col, 45000.25, formats[code] if code else None)
            if row - 1 in hidden:
                sheet.set_row(row, None, None, {"hidden": True})
        book.close()
        chat = Settings(**environment_settings({"endpoint": "chat"}, {}))
        validate_file(source, target, chat)
        back = openpyxl.load_workbook(target)["Data"]
        shown = [[back.cell(r, c).number_format for c in (2, 3)] for r in range(2, len(cells) + 2)]
        hidden_back = {r - 2 for r, dimension in back.row_dimensions.items() if dimension.hidden}
    assert shown == [[FORMATS[choice] or "General" for choice in pair] for pair in cells]
    assert hidden_back == {row for row in hidden if row < len(cells)}
