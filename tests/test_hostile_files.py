"""A corpus of bad input files and options, each through the real CLI in a subprocess.

File-level problems (the sheet, the config or an option is unusable) must stop every
command the same way: exit 2, exactly one line on stderr naming what is wrong, no
traceback, no file written, nothing sent. Row-level oddities (a header with no rows, a
cell of a million characters) are handled: the job runs and the output holds every row.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import openpyxl
import pytest
import xlsxwriter

from batchrun.simulator import RunningSimulator

KEY = "sk-test-hostile-files-0123456789"
MakeSimulator = Callable[..., RunningSimulator]
# click's own banner around a usage error; the problem itself is the "Error:" line.
CLICK_BANNER = ("Usage:", "Try '")


# --- building the corpus ------------------------------------------------------------------


def xlsx_bytes(rows: list[list[str]], sheet: str = "threads") -> bytes:
    """A real workbook holding ``rows`` as text cells."""
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer, {"in_memory": True})
    worksheet = workbook.add_worksheet(sheet)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            worksheet.write_string(r, c, value)
    workbook.close()
    return buffer.getvalue()


GOOD_ROWS = [["thread_id", "assistant_id"], ["thread_1", "asst_1"]]
GOOD_CSV = b"thread_id,assistant_id\nthread_1,asst_1\n"


def raw(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    return make


def with_file(name: str, data: bytes, source: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """Write an extra file (a config, say) beside the input ``source`` makes."""

    def make(folder: Path) -> Path:
        (folder / name).write_bytes(data)
        return source(folder)

    return make


def directory(name: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.mkdir()
        return path

    return make


def with_folder(name: str, source: Callable[[Path], Path]) -> Callable[[Path], Path]:
    """Make a folder where a file the job writes goes, beside the input ``source`` makes."""

    def make(folder: Path) -> Path:
        (folder / name).mkdir()
        return source(folder)

    return make


def unwritable_folder(folder: Path) -> Path:
    """A folder no file can be made in: /sys for root (whom permissions do not stop), else
    a folder of ours made read-only."""
    if os.geteuid() == 0:
        return Path("/sys")
    locked = folder / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked


def missing(name: str) -> Callable[[Path], Path]:
    return lambda folder: folder / name


def zip_without_workbook() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "not a workbook")
    return buffer.getvalue()


def empty_first_sheet() -> bytes:
    buffer = io.BytesIO()
    workbook = xlsxwriter.Workbook(buffer, {"in_memory": True})
    workbook.add_worksheet("blank")
    workbook.add_worksheet("threads").write_string(0, 0, "thread_id")
    workbook.close()
    return buffer.getvalue()


GOOD_XLSX = xlsx_bytes(GOOD_ROWS)


@dataclass(frozen=True)
class Case:
    """A bad input: how to make it, what the one error line says, and what it names."""

    make: Callable[[Path], Path]
    problem: str
    args: tuple[str, ...] = ()
    names: str | None = None  # default: the input file's name


GOOD = raw("in.csv", GOOD_CSV)
FILE_PROBLEMS = [
    pytest.param(Case(raw("in.csv", b""), "is empty"), id="empty-file"),
    pytest.param(Case(raw("in.csv", b"\n\n  \n"), "is empty"), id="blank-lines-only"),
    pytest.param(
        Case(raw("in.csv", b"assistant_id,note\nasst_1,x\n"), "has no 'thread_id' column"),
        id="no-thread_id-column",
    ),
    pytest.param(
        Case(raw("in.csv", b"thread_id,assistant_id, THREAD_ID\nt,a,b\n"), "duplicate column"),
        id="duplicate-headers-by-case-and-spaces",
    ),
    pytest.param(
        Case(raw("in.xlsx", xlsx_bytes([["thread_id", "Thread_Id"], ["a", "b"]])), "duplicate"),
        id="duplicate-headers-in-xlsx",
    ),
    pytest.param(
        Case(raw("in.jsonl", b'{"thread_id": "a", "THREAD_ID": "b"}\n'), "duplicate"),
        id="duplicate-keys-in-jsonl",
    ),
    pytest.param(
        Case(raw("in.xlsx", b"thread_id,assistant_id\nt,a\n"), "not a readable .xlsx"),
        id="xlsx-that-is-not-a-zip",
    ),
    pytest.param(
        Case(raw("in.xlsx", GOOD_XLSX[: len(GOOD_XLSX) // 2]), "not a readable .xlsx"),
        id="truncated-xlsx",
    ),
    pytest.param(
        Case(raw("in.xlsx", zip_without_workbook()), "not a readable .xlsx"),
        id="zip-without-a-workbook",
    ),
    pytest.param(Case(raw("in.xlsx", empty_first_sheet()), "is empty"), id="xlsx-empty-sheet"),
    pytest.param(Case(raw("in.csv", GOOD_XLSX), "NUL byte"), id="xlsx-bytes-named-csv"),
    pytest.param(
        Case(raw("in.csv", b"thread_id,assistant_id\nt\x00\x01\xff,asst\n"), "NUL byte"),
        id="binary-bytes-in-csv",
    ),
    pytest.param(
        Case(raw("in.csv", b"thread_id,assistant_id,instructions\nt,a,caf\xe9\n"), "UTF-8"),
        id="latin-1-text",
    ),
    pytest.param(
        Case(raw("in.csv", "thread_id,assistant_id\nt,a\n".encode("utf-16")), "UTF-16"),
        id="utf-16-text",
    ),
    pytest.param(
        Case(raw("in.csv", b"thread_id,assistant_id\nt,a,extra\n"), "row 2 has 3 cells"),
        id="ragged-row",
    ),
    pytest.param(
        Case(raw("in.csv", b'thread_id,assistant_id\nt,"never closed\n'), "never closed"),
        id="unclosed-quote",
    ),
    pytest.param(
        Case(
            raw("in.csv", b'thread_id,assistant_id\nt1,a\n"t2"x,a\n'),
            "row 3: a quoted cell has text after its closing quote",
        ),
        id="text-after-closing-quote",
    ),
    pytest.param(
        Case(raw("in.jsonl", b'{"thread_id": "a"}\n{"thread_id": \n'), "line 2 is not valid JSON"),
        id="jsonl-bad-line",
    ),
    pytest.param(
        Case(raw("in.jsonl", b'["thread_id"]\n'), "line 1 is not a JSON object"),
        id="jsonl-array-line",
    ),
    pytest.param(Case(directory("in.csv"), "is a directory"), id="a-directory"),
    pytest.param(Case(missing("in.csv"), "no such file"), id="missing-file"),
    pytest.param(
        Case(raw("in.xls", b"\xd0\xcf\x11\xe0"), "old .xls"),
        id="old-xls",
    ),
    pytest.param(Case(raw("in", GOOD_CSV), "has no extension"), id="no-extension"),
    pytest.param(
        Case(raw("in.txt", GOOD_CSV), "unknown extension '.txt'"),
        id="unknown-extension",
    ),
    pytest.param(
        Case(raw("in.xls", b"\xd0\xcf\x11\xe0"), "old .xls", ("-o", "out.csv")),
        id="old-xls-with-output",
    ),
    pytest.param(
        Case(raw("in.txt", GOOD_CSV), "unknown extension '.txt'", ("-o", "out.csv")),
        id="unknown-extension-with-output",
    ),
    pytest.param(
        Case(raw("in.xlsx", GOOD_XLSX), "has no sheet 'nope'", ("--sheet", "nope")),
        id="missing-sheet-name",
    ),
    pytest.param(
        Case(raw("in.xlsx", GOOD_XLSX), "has no sheet '7'", ("--sheet", "7")),
        id="missing-sheet-index",
    ),
    pytest.param(
        Case(GOOD, "--sheet applies to .xlsx", ("--sheet", "0")), id="sheet-option-on-csv"
    ),
    pytest.param(
        Case(raw("in.csv", b"thread_id,assistant_id,Error\nt,a,x\n"), "--prefix", names="'error'"),
        id="result-column-clash",
    ),
    pytest.param(
        Case(GOOD, "out.xls", ("-o", "out.xls"), names="out.xls"), id="unknown-output-extension"
    ),
    pytest.param(
        Case(GOOD, "does not exist", ("-o", "nowhere/out.csv"), names="nowhere"),
        id="output-folder-missing",
    ),
    pytest.param(Case(GOOD, "overwrite the input", ("-o", "in.csv")), id="output-overwrites-input"),
    pytest.param(
        Case(with_folder("out.csv", GOOD), "is a directory", ("-o", "out.csv"), names="out.csv"),
        id="output-is-a-folder",
    ),
    pytest.param(
        Case(
            with_folder("out.settings.toml", GOOD),
            "is a directory",
            ("-o", "out.csv"),
            names="out.settings.toml",
        ),
        id="settings-passthrough-is-a-folder",
    ),
    pytest.param(
        Case(
            with_folder("out.full.jsonl", GOOD),
            "is a directory",
            ("-o", "out.xlsx"),
            names="out.full.jsonl",
        ),
        id="xlsx-full-text-file-is-a-folder",
    ),
    pytest.param(
        Case(GOOD, "cannot write there", ("-o", "{unwritable}/out.csv"), names="out.csv"),
        id="output-folder-unwritable",
    ),
    pytest.param(
        Case(
            with_file("bad.toml", b"[[[\n", GOOD),
            "--config bad.toml",
            ("--config", "bad.toml"),
            names="line 1",
        ),
        id="config-not-toml",
    ),
    pytest.param(
        Case(
            with_file("bad.toml", b"nope = 1\n", GOOD),
            "unknown setting 'nope'",
            ("--config", "bad.toml"),
            names="bad.toml",
        ),
        id="config-unknown-key",
    ),
    pytest.param(
        Case(
            with_file("bad.toml", b"\xff\xfe\x00", GOOD),
            "--config bad.toml",
            ("--config", "bad.toml"),
            names="utf-8",
        ),
        id="config-not-utf8",
    ),
    pytest.param(
        Case(GOOD, "--config nope.toml: no such file", ("--config", "nope.toml"), names=""),
        id="config-missing",
    ),
    pytest.param(
        Case(
            with_file("bad.toml", b"columns = 5\n", GOOD),
            "must be a table",
            ("--config", "bad.toml"),
            names="bad.toml",
        ),
        id="config-columns-not-a-table",
    ),
    pytest.param(
        Case(
            with_file("bad.toml", b'limit = "3"\n', GOOD),
            "limit",
            ("--config", "bad.toml"),
            names="bad.toml",
        ),
        id="config-value-of-the-wrong-type",
    ),
    pytest.param(
        Case(
            with_file("bad.toml", b'run_tag = "no"\n', GOOD),
            "run_tag",
            ("--config", "bad.toml"),
            names="bad.toml",
        ),
        id="config-boolean-given-as-text",
    ),
    pytest.param(
        Case(GOOD, "--column", ("--column", "thread_id"), names=""), id="column-without-equals"
    ),
    pytest.param(
        Case(GOOD, "'bogus' is not a field", ("--column", "bogus=thread_id"), names=""),
        id="column-unknown-field",
    ),
    pytest.param(
        Case(GOOD, "no column named 'Nope'", ("--column", "assistant_id=Nope")),
        id="column-missing-header",
    ),
    pytest.param(Case(GOOD, "--set", ("--set", "=x"), names=""), id="set-without-field"),
    pytest.param(
        Case(GOOD, "'bogus' is not a field", ("--set", "bogus=1"), names=""),
        id="set-unknown-field",
    ),
    pytest.param(
        Case(GOOD, "'hot' is not a number", ("--set", "temperature=hot"), names=""),
        id="set-bad-number",
    ),
    pytest.param(
        Case(GOOD, "--set metadata", ("--set", "metadata=[1"), names=""), id="set-bad-json"
    ),
]


# --- running the CLI ----------------------------------------------------------------------


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    env.pop("OPENAI_BASE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "batchrun", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_all(commands: dict[str, list[str]], cwd: Path) -> dict[str, tuple[int, str, str]]:
    """Run the commands side by side: (exit code, stdout, stderr) by name."""
    started = {name: start(args, cwd) for name, args in commands.items()}
    results = {}
    for name, process in started.items():
        out, err = process.communicate(timeout=60)
        results[name] = (process.returncode, out, err)
    return results


def problem_lines(stderr: str) -> list[str]:
    """stderr's lines, without click's usage banner and blank lines."""
    return [
        line for line in stderr.splitlines() if line.strip() and not line.startswith(CLICK_BANNER)
    ]


def listing(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def read_csv(path: Path) -> list[dict[str, str]]:
    limit = csv.field_size_limit(sys.maxsize)  # the million-character cell
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            return list(csv.DictReader(stream))
    finally:
        csv.field_size_limit(limit)


def creates(sim: RunningSimulator) -> int:
    counts = sim.stats()["requests"].get("POST /v1/threads/{thread_id}/runs", {})
    return sum(counts.values())


# --- file-level problems ------------------------------------------------------------------


@pytest.mark.parametrize("case", FILE_PROBLEMS)
def test_a_file_level_problem_is_one_line_exit_2_and_nothing_is_sent_or_written(
    case: Case, tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator()
    source = case.make(tmp_path)
    args = list(case.args)
    if any("{unwritable}" in arg for arg in args):
        folder = str(unwritable_folder(tmp_path))
        args = [arg.replace("{unwritable}", folder) for arg in args]
    before = listing(tmp_path)
    name = source.name
    results = run_all(
        {
            "validate": ["validate", name, *args],
            "run --simulate": ["run", name, "--simulate", "--no-progress", *args],
            "run --base-url": ["run", name, "--base-url", sim.base_url, *args],
        },
        tmp_path,
    )
    for command, (code, out, err) in results.items():
        assert code == 2, (command, err)
        assert "Traceback" not in err and "internal error" not in err, (command, err)
        lines = problem_lines(err)
        assert len(lines) == 1, (command, err)
        assert case.problem in lines[0], (command, lines[0])
        assert (name if case.names is None else case.names) in lines[0], (command, lines[0])
        assert out == "", (command, out)
    assert listing(tmp_path) == before  # no output, settings, journal or temp file
    assert sim.stats()["requests"] == {}


# --- row-level oddities: the job runs ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data"),
    [
        pytest.param("in.csv", b"thread_id,assistant_id\n", id="csv"),
        pytest.param("in.csv", b"\xef\xbb\xbfthread_id,assistant_id\r\n", id="csv-bom-crlf"),
        pytest.param("in.tsv", b"thread_id\tassistant_id\n", id="tsv"),
        pytest.param("in.xlsx", xlsx_bytes([["thread_id", "assistant_id"]]), id="xlsx"),
    ],
)
def test_a_header_without_rows_exits_0_with_an_empty_output(
    name: str, data: bytes, tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator()
    (tmp_path / name).write_bytes(data)
    results = run_all(
        {
            "validate": ["validate", name, "-o", "validated.csv"],
            # Its own journal: two jobs on one journal at once are refused.
            "run --simulate": ["run", name, "-o", "simulated.csv", "--simulate", "--journal", "j"],
            "run --base-url": ["run", name, "-o", "sent.csv", "--base-url", sim.base_url],
        },
        tmp_path,
    )
    for command, (code, _, err) in results.items():
        assert code == 0, (command, err)
        assert "0 rows" in err and "Traceback" not in err, (command, err)
    # The input's BOM and line ends come back (utf-8-sig reads a file with or without one).
    bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
    assert (tmp_path / "validated.csv").read_bytes().startswith(bom + b"thread_id,")
    with (tmp_path / "validated.csv").open(newline="", encoding="utf-8-sig") as stream:
        assert list(csv.reader(stream)) == [
            ["thread_id", "assistant_id", "outcome", "request", "error"]
        ]
    for output in ("simulated.csv", "sent.csv"):
        with (tmp_path / output).open(newline="", encoding="utf-8-sig") as stream:
            header, *rows = list(csv.reader(stream))
        assert header[:2] == ["thread_id", "assistant_id"] and "status" in header
        assert rows == []
    assert sim.stats()["requests"] == {}


MILLION = 1_000_000


def write_huge_sheet(path: Path) -> str:
    """Two rows, the first with a 1,000,000-character note (a column never sent)."""
    note = ("0123456789abcdef" * (MILLION // 16 + 1))[:MILLION]
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["thread_id", "assistant_id", "note"])
        writer.writerow(["thread_1", "asst_1", note])
        writer.writerow(["thread_2", "asst_1", "short"])
    return note


def test_a_million_character_cell_is_a_row_matter_and_comes_back_whole(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(run_seconds=0)
    note = write_huge_sheet(tmp_path / "in.csv")
    results = run_all(
        {
            "validate": ["validate", "in.csv", "-o", "validated.csv"],
            "run": ["run", "in.csv", "-o", "sent.csv", "--base-url", sim.base_url],
        },
        tmp_path,
    )
    for command, (code, _, err) in results.items():
        assert code == 0, (command, err)
    validated = read_csv(tmp_path / "validated.csv")
    assert [row["note"] for row in validated] == [note, "short"]
    assert all(row["request"] and not row["error"] for row in validated)
    sent = read_csv(tmp_path / "sent.csv")
    assert [row["note"] for row in sent] == [note, "short"]
    assert [row["status"] for row in sent] == ["200", "200"]
    assert creates(sim) == 2


def test_a_million_character_cell_is_cut_in_xlsx_with_the_full_text_beside_it(
    tmp_path: Path,
) -> None:
    note = write_huge_sheet(tmp_path / "in.csv")
    ((code, _, err),) = run_all(
        {"run": ["run", "in.csv", "-o", "out.xlsx", "--simulate", "--no-progress"]}, tmp_path
    ).values()
    assert code == 0, err
    workbook = openpyxl.load_workbook(tmp_path / "out.xlsx", read_only=True)
    try:
        rows = list(workbook["results"].iter_rows(values_only=True))
    finally:
        workbook.close()
    header = list(rows[0])
    cell = rows[1][header.index("note")]
    assert isinstance(cell, str) and len(cell) <= 32_767
    assert cell.startswith(note[:1000])
    assert "[cut: 1,000,000 chars; full text in out.full.jsonl]" in cell
    assert rows[2][header.index("note")] == "short"
    assert [rows[n][header.index("status")] for n in (1, 2)] == [200, 200]
    sidecar = [
        json.loads(line)
        for line in (tmp_path / "out.full.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert {"row": 2, "column": "note", "text": note} in sidecar
