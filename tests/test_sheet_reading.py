"""Sheets as people make them: a CSV separated by ';' in Latin-1 with a BOM, a title above
the table; and the CSV handed back with the input's BOM, line ends and separator."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from batchrun.config import Settings, environment_settings
from batchrun.errors import InputError, UsageError
from batchrun.jobs import validate_file

BOM = b"\xef\xbb\xbf"


def batchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    return subprocess.run(
        [sys.executable, "-m", "batchrun", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


def settings(**options: object) -> Settings:
    return Settings(**environment_settings(options, {}))


LATIN1_SHEET = (
    "Kunde;model;user;Bemerkung\r\n"
    "Müller;gpt-4o;Grüße aus Köln: fasse zusammen.;café crème\r\n"
    "Søren;gpt-4o;Ça va? Réponds en une phrase.;naïve\r\n"
)


def test_a_semicolon_latin1_csv_with_a_bom_runs_with_delimiter_and_encoding(
    tmp_path: Path,
) -> None:
    source = tmp_path / "kunden.csv"
    source.write_bytes(BOM + LATIN1_SHEET.encode("latin-1"))
    done = batchrun(
        "run",
        "kunden.csv",
        "--endpoint",
        "chat",
        "--simulate",
        "--delimiter",
        ";",
        "--encoding",
        "latin-1",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1].startswith("2 rows: 2 ok"), done.stderr
    data = (tmp_path / "kunden.out.csv").read_bytes()
    # Handed back as it came: BOM, CRLF, ';'; as UTF-8, since results may hold anything.
    assert data.startswith(BOM + b"Kunde;model;user;Bemerkung;outcome;")
    assert data.count(b"\r\n") == 3 and data.replace(b"\r\n", b"").count(b"\n") == 0
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=";"))
    assert [row[:4] for row in rows[1:]] == [
        ["Müller", "gpt-4o", "Grüße aus Köln: fasse zusammen.", "café crème"],
        ["Søren", "gpt-4o", "Ça va? Réponds en une phrase.", "naïve"],
    ]
    assert [row[4] for row in rows[1:]] == ["ok", "ok"]


def test_the_messages_that_detect_a_semicolon_or_latin1_name_the_flags(tmp_path: Path) -> None:
    source = tmp_path / "kunden.csv"
    source.write_bytes(BOM + LATIN1_SHEET.encode("latin-1"))
    done = batchrun("validate", "kunden.csv", "--endpoint", "chat", cwd=tmp_path)
    assert done.returncode == 2
    assert "is not UTF-8 text (line 2): pass its encoding, e.g. --encoding cp1252" in done.stderr
    source.write_bytes(LATIN1_SHEET.encode("utf-8"))
    done = batchrun("validate", "kunden.csv", "--endpoint", "chat", cwd=tmp_path)
    assert done.returncode == 2
    assert "separated by ';'" in done.stderr and "pass --delimiter ';'" in done.stderr
    done = batchrun(
        "validate", "kunden.csv", "--endpoint", "chat", "--delimiter", ";", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr


def test_a_utf8_csv_with_a_bom_and_crlf_comes_back_with_both(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(BOM + b"model,user,note\r\ngpt-4o,Hi,a\r\n")
    validate_file(source, tmp_path / "out.csv", settings(endpoint="chat"))
    data = (tmp_path / "out.csv").read_bytes()
    assert data.startswith(BOM + b"model,user,note,outcome,request,error\r\n")
    assert data.endswith(b"\r\n") and b"\n" not in data.replace(b"\r\n", b"")
    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"model,user\ngpt-4o,Hi\n")
    validate_file(plain, tmp_path / "plain.out.csv", settings(endpoint="chat"))
    assert not (tmp_path / "plain.out.csv").read_bytes().startswith(BOM)
    assert b"\r\n" not in (tmp_path / "plain.out.csv").read_bytes()


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        pytest.param({"delimiter": ";;"}, "give one character", id="two-chars"),
        pytest.param({"encoding": "klingon"}, "not an encoding Python knows", id="encoding"),
        pytest.param({"header_row": 0}, "at least 1", id="header-row-0"),
    ],
)
def test_bad_reading_options_are_usage_errors(options: dict[str, object], problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        settings(**options)


def test_delimiter_tab_is_a_word_and_flags_that_do_not_apply_are_refused(
    tmp_path: Path,
) -> None:
    assert settings(delimiter="tab").delimiter == "\t"
    source = tmp_path / "in.jsonl"
    source.write_text('{"model": "m", "user": "u"}\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"--encoding applies to \.csv/\.tsv input"):
        validate_file(source, None, settings(endpoint="chat", encoding="latin-1"))


@pytest.mark.parametrize("line", ["sep=;", "SEP=;", "sep=|"])
def test_excels_sep_line_above_the_header_names_the_separator(tmp_path: Path, line: str) -> None:
    # Excel writes "sep=;" above the header of a CSV saved for another locale, and reads it
    # back so. Before: "its header is one cell" and a hint naming neither flag.
    sep = line[-1]
    source = tmp_path / "in.csv"
    lines = [line, f"thread_id{sep}assistant_id{sep}note", f"thread_a{sep}asst_1{sep}x,y"]
    source.write_bytes(BOM + "".join(f"{text}\r\n" for text in lines).encode())
    report = validate_file(source, tmp_path / "checked.csv", settings())
    assert report.summary.outcomes.get("ok") == 1 and not report.summary.exit_code
    text = (tmp_path / "checked.csv").read_text(encoding="utf-8-sig")
    assert text.startswith(f"thread_id{sep}assistant_id{sep}note{sep}outcome")
    assert f"thread_a{sep}asst_1{sep}x,y{sep}ok" in text


def test_a_semicolon_file_read_with_another_delimiter_names_the_flag_that_reads_it(
    tmp_path: Path,
) -> None:
    # Before: "save it separated by commas, or as .xlsx", naming no flag.
    source = tmp_path / "in.csv"
    source.write_text("thread_id;assistant_id\nthread_a;asst_1\n", encoding="utf-8")
    with pytest.raises(InputError, match="pass --delimiter ';'"):
        validate_file(source, tmp_path / "checked.csv", settings(delimiter=","))


# --- a title above the table -----------------------------------------------------------------


def test_header_row_skips_a_title_above_a_csv_table(tmp_path: Path) -> None:
    source = tmp_path / "report.csv"
    source.write_text(
        "Support questions, week 12,,\n\nmodel,user,note\ngpt-4o,Hi,a\n", encoding="utf-8"
    )
    validate_file(source, tmp_path / "out.csv", settings(endpoint="chat", header_row=3))
    text = (tmp_path / "out.csv").read_text(encoding="utf-8")
    header, row = text.splitlines()
    assert header == "model,user,note,outcome,request,error"
    assert row.startswith("gpt-4o,Hi,a,ok,")
    with pytest.raises(InputError, match="has no row 9"):
        validate_file(source, None, settings(endpoint="chat", header_row=9))


def test_a_header_found_lower_down_is_suggested_with_header_row(tmp_path: Path) -> None:
    source = tmp_path / "report.csv"
    source.write_text(
        "Support questions, week 12,,\n\nmodel,user,note\ngpt-4o,Hi,a\n", encoding="utf-8"
    )
    with pytest.raises(InputError, match=r"row 3 does: pass --header-row 3 \(a title"):
        validate_file(source, None, settings(endpoint="chat"))
    runs = tmp_path / "runs.csv"
    runs.write_text("Threads to run\nthread_id,assistant_id\nthread_1,asst_1\n", encoding="utf-8")
    with pytest.raises(
        InputError, match=r"has no 'thread_id' column.*; row 2 has the columns needed: "
    ):
        validate_file(runs, None, settings())
    with pytest.raises(InputError, match=r"pass --header-row 2$"):
        validate_file(runs, None, settings())


def test_an_xlsx_title_row_gets_the_header_row_hint(tmp_path: Path) -> None:
    from test_xlsx_handoff import excel_style_workbook

    source = excel_style_workbook(tmp_path / "orders.xlsx", merged_title=False)
    chat = settings(endpoint="chat", columns={"user": "Question"})
    with pytest.raises(InputError) as caught:
        validate_file(source, None, chat)
    assert str(caught.value).endswith(
        "--column user=Question: no column named 'Question'; row 2 has the columns needed:"
        " pass --header-row 2"
    )
    with pytest.raises(InputError) as caught:
        validate_file(source, None, settings(endpoint="chat"))
    assert str(caught.value).endswith(
        "no column of its header names a field of the request; row 2 does: pass --header-row 2"
        " (a title above the table?)"
    )


def test_a_table_on_another_sheet_than_the_first_gets_the_sheet_hint(tmp_path: Path) -> None:
    import openpyxl

    book = openpyxl.Workbook()
    intro = book.active
    intro.title = "Read me"
    intro.append(["How to fill in this workbook"])
    intro.append(["One row per thread on the Threads sheet."])
    threads = book.create_sheet("Threads")
    threads.append(["thread_id", "assistant_id"])
    threads.append(["thread_1", "asst_1"])
    source = tmp_path / "jobs.xlsx"
    book.save(source)
    with pytest.raises(InputError) as caught:
        validate_file(source, None, settings())
    assert str(caught.value).endswith("; sheet 'Threads' has them: pass --sheet 'Threads'")
    # Named by the user, the sheet is the user's word: no hint of another.
    with pytest.raises(InputError) as caught:
        validate_file(source, None, settings(sheet="Read me"))
    assert "--sheet" not in str(caught.value)
    report = validate_file(source, tmp_path / "out.csv", settings(sheet="Threads"))
    assert report.summary.exit_code == 0


# --- JSONL numbers beyond a double -------------------------------------------------------------


def test_a_jsonl_number_beyond_a_double_stays_a_number_beside_an_integer_beyond_64_bits(
    tmp_path: Path,
) -> None:
    # orjson refuses the integer, and the fallback wrote the other number as a string.
    source = tmp_path / "in.jsonl"
    big = '"big": 123456789012345678901234567890'
    source.write_text(
        f'{{"model": "gpt-4o", "user": "Hi", "huge": 1e400, {big}}}\n'
        '{"model": "gpt-4o", "user": "Hi", "huge": 1e400, "big": "\\ud800"}\n',
        encoding="utf-8",
    )
    validate_file(source, tmp_path / "out.jsonl", settings(endpoint="chat"))
    first, second = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    assert '"huge":1e400,"big":123456789012345678901234567890,' in first
    assert '"huge":1e400,"big":"\\ud800",' in second  # a lone surrogate beside it too


def test_a_jsonl_number_beyond_a_double_keeps_its_text(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"model": "gpt-4o", "user": "Hi", "temperature": 1e400, "note": -1E999,'
        ' "extra": {"x": 1e400}}\n'
        '{"model": "gpt-4o", "user": "Hi", "temperature": 0.5, "note": 1e400}\n',
        encoding="utf-8",
    )
    validate_file(source, tmp_path / "out.jsonl", settings(endpoint="chat"))
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    # Carried columns as written, numbers still (never null).
    assert '"note":-1E999,"extra":{"x":1e400}' in lines[0]
    assert '"note":1e400,' in lines[1]
    first, second = (json.loads(line) for line in lines)
    assert first["outcome"] == "invalid" and second["outcome"] == "ok"
    assert first["error"] == "temperature: '1e400' is beyond the range of a number"
    validate_file(source, tmp_path / "out.csv", settings(endpoint="chat"))
    text = (tmp_path / "out.csv").read_text(encoding="utf-8")
    assert ',-1E999,"{""x"":1e400}",' in text
    validate_file(source, tmp_path / "out.xlsx", settings(endpoint="chat"))
    import openpyxl

    sheet = openpyxl.load_workbook(tmp_path / "out.xlsx").worksheets[0]
    header = [cell.value for cell in sheet[1]]
    assert sheet.cell(2, header.index("note") + 1).value == "-1E999"


# --- a CSV read as it was saved comes back as it was saved ------------------------------------

CELL_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)


@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(st.text("abcdefgh-_.0123456789", min_size=1, max_size=8), CELL_TEXT).map(list),
        min_size=1,
        max_size=5,
    ),
    delimiter=st.sampled_from([",", ";", "|"]),
    bom=st.booleans(),
    line_end=st.sampled_from(["\n", "\r\n"]),
)
def test_a_csv_comes_back_with_its_cells_bom_line_ends_and_separator(
    rows: list[list[str]], delimiter: str, bom: bool, line_end: str
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.csv", Path(folder) / "out.csv"
        text = io.StringIO(newline="")
        # Every cell quoted: a bare CR in an unquoted cell would be a line end.
        quoting = {"quoting": csv.QUOTE_ALL, "lineterminator": line_end}
        csv.writer(text, delimiter=delimiter, **quoting).writerows([["model", "note"], *rows])
        source.write_bytes((BOM if bom else b"") + text.getvalue().encode("utf-8"))
        options = {"endpoint": "chat", "escape_formulas": False}
        validate_file(source, target, settings(**options, delimiter=delimiter))
        data = target.read_bytes()
    assert data.startswith(BOM) == bom
    back = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=delimiter))
    assert [row[:2] for row in back] == [["model", "note"], *rows]
    assert back[0][2:] == ["outcome", "request", "error"]
    if "\r" not in "".join(map("".join, rows)) and "\n" not in "".join(map("".join, rows)):
        assert data.count(b"\r\n") == (len(rows) + 1 if line_end == "\r\n" else 0)
