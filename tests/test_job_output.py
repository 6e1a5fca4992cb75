"""Issue 13, outputs and the command line: outcome, summary sheet, help, exit 4, --config."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from job_support import settings_for

import batchrun
from batchrun import jobs
from batchrun.cli.commands import _flag_words, main
from batchrun.config import Settings
from batchrun.config_file import read_config_file, settings_toml
from batchrun.errors import ExitCode, OutputNotWritten, UsageError
from batchrun.jobs import run_file, validate_file
from batchrun.simulator import RunningSimulator

SHEET = "thread_id,assistant_id,temperature,note\nthread_1,asst_1,0.5,x\nthread_2,asst_1,9,y\n"
OUTCOMES = ["ok", "invalid"]


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        main(list(args))
    out, err = capsys.readouterr()
    return int(stop.value.code or 0), out, err


def records(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and rows of any output format, values as the format holds them."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return list(rows[0]), rows
    if path.suffix == ".xlsx":
        sheet = openpyxl.load_workbook(path).worksheets[0]  # named as the input's sheet
        table = [list(row) for row in sheet.iter_rows(values_only=True)]
    else:
        import csv

        with path.open(newline="") as stream:
            table = list(csv.reader(stream, delimiter="\t" if path.suffix == ".tsv" else ","))
    header = [str(h) for h in table[0]]
    return header, [dict(zip(header, row, strict=True)) for row in table[1:]]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".xlsx", ".jsonl"])
def test_outcome_is_the_first_result_column_of_every_run_output(
    tmp_path: Path, simulator: RunningSimulator, suffix: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(SHEET)
    report = run_file(source, tmp_path / f"out{suffix}", settings_for(simulator.base_url))
    header, rows = records(report.output)
    assert header[:5] == ["thread_id", "assistant_id", "temperature", "note", "outcome"]
    assert header[5] == "status"
    assert [row["outcome"] for row in rows] == OUTCOMES


@pytest.mark.parametrize("suffix", [".csv", ".xlsx", ".jsonl"])
def test_outcome_is_the_first_result_column_of_every_validate_output(
    tmp_path: Path, suffix: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(SHEET)
    report = validate_file(source, tmp_path / f"out{suffix}", Settings())
    header, rows = records(report.output)
    assert header[4:] == ["outcome", "request", "error"]
    assert [row["outcome"] for row in rows] == OUTCOMES


def test_validate_writes_beside_the_input_as_checked_never_over_a_run_output(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    source = tmp_path / "jobs.csv"
    source.write_text(SHEET)
    ran = run_file(source, None, settings_for(simulator.base_url))
    before = ran.output.read_bytes()
    checked = validate_file(source, None, Settings())
    assert (ran.output.name, checked.output.name) == ("jobs.out.csv", "jobs.checked.csv")
    assert ran.output.read_bytes() == before
    assert (tmp_path / "jobs.checked.settings.toml").exists()
    # Nor over it when -o names it (before: the run's results were replaced), whatever its
    # format or its result columns' prefix; a checked sheet may be written over again.
    for name, prefix in [("jobs.out.csv", ""), ("p.xlsx", "r_"), ("p.jsonl", "r_")]:
        if name != ran.output.name:
            run_file(source, tmp_path / name, settings_for(simulator.base_url, prefix=prefix))
        before = (tmp_path / name).read_bytes()
        with pytest.raises(UsageError, match=f"it holds a run's results .*{prefix}body"):
            validate_file(source, tmp_path / name, Settings())
        assert (tmp_path / name).read_bytes() == before
    validate_file(source, tmp_path / "jobs.checked.csv", Settings())


class RemovesTheFolder:
    """Progress that removes the output's folder once a row is done: a write that was
    checked before sending, and fails after it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def start(self, total: int) -> None:
        pass

    def update(self, event: str, row: Any) -> None:
        if event == "done" and self.folder.exists():
            shutil.rmtree(self.folder)


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_an_output_that_fails_after_sending_says_the_results_are_in_the_journal(
    tmp_path: Path, simulator: RunningSimulator, suffix: str
) -> None:
    # .xlsx: xlsxwriter wraps the OSError; it was exit 4, "internal error" (a review).
    source = tmp_path / "in.csv"
    source.write_text("thread_id,assistant_id\nt_1,asst_1\nt_2,asst_1\n", encoding="utf-8")
    (tmp_path / "gone").mkdir()
    settings = settings_for(simulator.base_url)
    with pytest.raises(OutputNotWritten) as failed:
        run_file(
            source,
            tmp_path / "gone" / f"out{suffix}",
            settings,
            progress=RemovesTheFolder(tmp_path / "gone"),
        )
    assert failed.value.exit_code is ExitCode.ABORTED  # not 2: rows were sent
    message = str(failed.value)
    assert "in.batchrun.sqlite" in message and "another -o" in message, message
    again = run_file(source, tmp_path / "out.csv", settings)
    assert again.summary.sent == 0 and again.summary.from_journal == 2, again.summary.line()
    assert simulator.stats()["runs_created"] == 2


def test_the_settings_passthrough_holds_no_one_shot_or_test_option() -> None:
    settings = Settings(
        fresh=True,
        retry_failed=True,
        limit=3,
        journal=Path("j.sqlite"),
        simulate=True,
        concurrency=4,
        wait=True,
    )
    saved = tomllib.loads(settings_toml(settings))
    assert not {"fresh", "retry_failed", "limit", "journal", "simulate", "base_url"} & set(saved)
    assert (saved["concurrency"], saved["wait"]) == (4, True)


# --- the summary sheet ----------------------------------------------------------------------


def summary_rows(path: Path) -> dict[str, Any]:
    sheet = openpyxl.load_workbook(path)["summary"]
    return {
        str(row[0]): row[1]
        for row in sheet.iter_rows(values_only=True)
        if row[0] and row[1] is not None  # section titles have no value
    }


def test_the_summary_sheet_speaks_to_people_and_charts_outcomes(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(SHEET + "thread_3,asst_1,,z\n")
    settings = settings_for(simulator.base_url, set_values={"model": "gpt-4o"})
    report = run_file(source, tmp_path / "out.xlsx", settings)
    book = openpyxl.load_workbook(report.output)
    assert len(book["summary"]._charts) == 1  # a native chart beside the counts
    rows = summary_rows(report.output)
    assert (rows["ok"], rows["invalid"]) == (2, 1)
    assert rows["input"] == "in.csv" and rows["batchrun"] == batchrun.__version__
    assert rows["--set"] == "model=gpt-4o" and rows["--concurrency"] == 16
    assert "--wait-timeout" not in rows and "--sheet" not in rows  # did not apply
    texts = [str(value) for value in rows.values()]
    assert not {"True", "False", "{}", "None"} & set(texts)
    assert not any(key in rows for key in ("set_values", "run_tag", "api_key"))


def test_the_summary_sheet_counts_cut_cells_and_names_the_full_text_file(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(f"thread_id,assistant_id,note\nthread_1,asst_1,{'x' * 40_000}\n")
    report = validate_file(source, tmp_path / "out.xlsx", Settings())
    rows = summary_rows(report.output)
    assert rows["cells cut to 32,767 characters"] == 1
    assert rows["full text in"] == "out.full.jsonl"
    assert (tmp_path / "out.full.jsonl").exists()


# --- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "headings"),
    [
        ("run", ["Input:", "Request body:", "Where to send:", "Pace and retries:", "Resume:"]),
        ("validate", ["Input:", "Request body:", "Output:", "Messages:"]),
        ("serve", ["Listening:", "Rate limits:", "Faults:"]),
    ],
)
def test_help_groups_options_by_purpose_with_an_example_and_exit_codes(
    capsys: pytest.CaptureFixture[str], command: str, headings: list[str]
) -> None:
    code, out, _ = cli(capsys, command, "--help")
    assert code == 0
    positions = [out.index(heading) for heading in headings]
    assert positions == sorted(positions)
    assert "Exit codes:" in out and "Example" in out and "Other options:" not in out
    if command != "serve":
        assert "thread_id,assistant_id" in out and "  4    internal error" in out


@pytest.mark.parametrize("where", ["global", "command"])
def test_an_internal_error_exits_4_in_one_line_and_traceback_shows_where(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(jobs, "validate_file", broken)
    source = tmp_path / "in.csv"
    source.write_text(SHEET)
    code, _, err = cli(capsys, "validate", str(source))
    assert code == 4
    assert err.strip().splitlines() == [
        "batchrun: internal error (RuntimeError: a bug; --traceback shows where)"
    ]
    args = ["--traceback", "validate", str(source)]
    if where == "command":
        args = ["validate", str(source), "--traceback"]
    code, _, err = cli(capsys, *args)
    assert code == 4
    assert "Traceback (most recent call last)" in err and 'raise RuntimeError("a bug")' in err
    assert err.strip().splitlines()[-1] == "batchrun: internal error (RuntimeError: a bug)"


def test_quiet_prints_the_summary_line_only_when_a_row_is_not_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.csv"
    good.write_text("thread_id,assistant_id\nthread_1,asst_1\n")
    bad = tmp_path / "bad.csv"
    bad.write_text(SHEET)
    assert cli(capsys, "validate", str(good), "-q") == (0, "", "")
    code, _, err = cli(capsys, "validate", str(bad), "-q")
    assert code == 1 and err.startswith("2 rows: 1 ok, 1 invalid")


def config_job(tmp_path: Path, config: str) -> Path:
    (tmp_path / "in.csv").write_text("thread_id,Bot,team\nthread_1,asst_1,\n")
    (tmp_path / "job.toml").write_text(config)
    return tmp_path / "job.toml"


def test_set_and_column_merge_with_the_config_tables_key_by_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_job(
        tmp_path,
        '[set]\nmodel = "gpt-4o"\n"metadata.team" = "default"\n\n[columns]\nassistant_id = "Bot"\n',
    )
    code, _, err = cli(
        capsys,
        *("validate", str(tmp_path / "in.csv"), "--config", str(config)),
        *("--set", "metadata.team=cli", "--column", "metadata.group=team", "-o"),
        str(tmp_path / "out.jsonl"),
    )
    assert code == 0, err
    record = json.loads((tmp_path / "out.jsonl").read_text())
    body = json.loads(record["request"])
    assert body["model"] == "gpt-4o" and body["assistant_id"] == "asst_1"
    assert body["metadata"]["team"] == "cli"


def test_config_keys_spelled_as_flags_are_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_job(
        tmp_path, 'no-run-tag = true\nquiet = true\n[columns]\nassistant_id = "Bot"\n'
    )
    code, _, err = cli(capsys, "validate", str(tmp_path / "in.csv"), "--config", str(config))
    assert (code, err) == (0, "")  # quiet from the file
    record = (tmp_path / "in.checked.csv").read_text()
    assert "batchrun_key" not in record


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("concurrency = 0\n", "job.toml: concurrency must be at least 1", id="range"),
        pytest.param("read-rpm = -1\n", "job.toml: read-rpm must be greater than 0", id="dashes"),
        pytest.param('api_version = "v3"\n', "job.toml: api_version v3: use v1 or v2", id="choice"),
        pytest.param(
            "concurency = 4\n",
            "unknown setting 'concurency'; did you mean 'concurrency'",
            id="typo-hint",
        ),
        pytest.param("no-run-tag = 1\n", "job.toml: no-run-tag must be true or false", id="flag"),
    ],
)
def test_a_bad_config_value_is_named_as_its_key_in_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "job.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as caught:
        read_config_file(path)
    assert message in str(caught.value) and "--" not in str(caught.value).split(": ", 1)[1]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ('thread_id = "nope"\n', "job.toml: [columns] thread_id=nope: no column named 'nope'"),
        ('colour = "x"\n', "job.toml: [columns] colour=...: 'colour' is not a field"),
    ],
)
def test_a_bad_column_in_the_config_file_is_named_as_its_key_there(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, columns: str, message: str
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("thread_id,assistant_id\nthread_a,asst_1\n", encoding="utf-8")
    config = tmp_path / "job.toml"
    config.write_text(f"[columns]\n{columns}", encoding="utf-8")
    code, _, err = cli(capsys, "validate", str(source), "--config", str(config))
    assert code == 2 and message in err
    assert "--column" not in err  # a flag the user did not type
    # The same mistake made with the flag is named as the flag.
    key, value = columns.strip().replace('"', "").split(" = ")
    code, _, err = cli(capsys, "validate", str(source), "--column", f"{key}={value}")
    assert code == 2 and f"--column {key}=" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--api-key", ""], "--api-key must not be empty (leave it unset to accept any key)"),
        (["--read-rpm", "0"], "Invalid value for '--read-rpm'"),
        (["--hang-rate", "0.6", "--reset-rate", "0.6"], "--hang-rate + --reset-rate must not"),
    ],
)
def test_serve_errors_name_the_flags_as_typed(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = cli(capsys, "serve", *args)
    assert code == 2 and message in err
    assert "---" not in err and "None" not in err


def test_simulator_messages_become_flags_word_by_word() -> None:
    text = "read_rpm must be a positive number; rpm too; latency_ms"
    options = {"rpm": None, "read_rpm": None, "latency_ms": 0}
    assert (
        _flag_words(text, options) == "--read-rpm must be a positive number; --rpm too; --latency"
    )
