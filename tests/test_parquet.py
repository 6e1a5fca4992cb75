"""Parquet in and out: input columns keep their Arrow types, result columns are typed,
rows are written a row group at a time as they stream out."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from job_support import TEST_KEY, read_rows, settings_for

import batchrun
from batchrun.jobs import run as run_job
from batchrun.jobs import run_file, validate_file
from batchrun.simulator import RunningSimulator

PARIS = "Europe/Paris"
NOON = dt.datetime(2026, 1, 2, 12, 30, tzinfo=dt.UTC)


def typed_table(rows: int = 3) -> pa.Table:
    """A table of every type the contract names: int64, float64, a tz-aware timestamp,
    bool, a nullable int and strings (ids like 00123 among them)."""
    return pa.table(
        {
            "thread_id": pa.array([f"t_{n % 2}" for n in range(rows)], pa.string()),
            "assistant_id": pa.array(["asst_1"] * rows, pa.string()),
            "code": pa.array(["00123"] * rows, pa.string()),
            "n": pa.array(range(rows), pa.int64()),
            "score": pa.array([n / 4 if n % 3 else None for n in range(rows)], pa.float64()),
            "when": pa.array(
                [NOON + dt.timedelta(days=n) for n in range(rows)],
                pa.timestamp("us", tz=PARIS),
            ),
            "flag": pa.array([[True, False, None][n % 3] for n in range(rows)], pa.bool_()),
            "maybe": pa.array([n if n % 2 else None for n in range(rows)], pa.int32()),
        }
    )


def test_a_parquet_file_round_trips_through_run_simulate_with_typed_results(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.parquet"
    table = typed_table()
    pq.write_table(table, source)
    finished = subprocess.run(
        [sys.executable, "-m", "batchrun", "run", str(source), "--simulate", "--no-progress"],
        env={**os.environ, "OPENAI_API_KEY": TEST_KEY},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    out = pq.read_table(tmp_path / "in.out.parquet")
    for field in table.schema:
        assert out.schema.field(field.name).type == field.type, field.name
    assert out.select(table.column_names).equals(table)
    assert out.schema.field("status").type == pa.int64()
    assert out.schema.field("attempts").type == pa.int64()
    assert out.schema.field("outcome").type == pa.string()
    assert out.column("status").to_pylist() == [200] * 3
    assert out.column("attempts").to_pylist() == [1] * 3
    assert all(run_id.startswith("run_") for run_id in out.column("run_id").to_pylist())


def test_usage_columns_are_int64_and_rows_go_out_a_row_group_a_chunk(
    tmp_path: Path, simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_job, "RUN_CHUNK_ROWS", 4)
    source = tmp_path / "in.parquet"
    pq.write_table(typed_table(10), source)
    report = run_file(source, tmp_path / "out.parquet", settings_for(simulator.base_url, wait=True))
    assert report.summary.outcomes == {"ok": 10}
    written = pq.ParquetFile(report.output)
    assert written.metadata.num_row_groups == 3  # 4 + 4 + 2 rows
    out = written.read()
    assert out.column("n").to_pylist() == list(range(10))
    for name in ("usage_prompt_tokens", "usage_completion_tokens", "usage_total_tokens"):
        assert out.schema.field(name).type == pa.int64()
        assert all(isinstance(value, int) and value > 0 for value in out.column(name).to_pylist())


def test_parquet_cells_are_assembled_from_their_text_and_written_to_csv_as_text(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    source = tmp_path / "in.parquet"
    table = typed_table(2).append_column("temperature", pa.array([0.5, None], pa.float64()))
    pq.write_table(table, source)
    report = run_file(source, tmp_path / "out.csv", settings_for(simulator.base_url))
    first, second = read_rows(report.output)
    assert first["outcome"] == second["outcome"] == "ok"
    assert '"temperature":0.5' in validate_request(tmp_path, source)
    assert first["when"] == "2026-01-02T13:30:00+01:00"
    assert (first["flag"], second["flag"]) == ("true", "false")
    assert (first["maybe"], second["maybe"]) == ("", "1")
    assert first["code"] == "00123"


def test_a_float32_is_sent_as_written_and_a_text_keyed_map_as_an_object(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    table = typed_table(2)
    table = table.append_column("temperature", pa.array([0.7, None], pa.float32()))
    table = table.append_column(
        "metadata", pa.array([[("team", "ops")], None], pa.map_(pa.string(), pa.string()))
    )
    pq.write_table(table, source)
    request = validate_request(tmp_path, source)
    assert '"temperature":0.7,' in request or '"temperature":0.7}' in request
    assert '"metadata":{"team":"ops"' in request


def test_a_binary_column_goes_to_a_text_output_as_text_never_as_raw_bytes(
    tmp_path: Path,
) -> None:
    # Before, b"\x00\xff" was written as a NUL byte and U+FFFD: a CSV batchrun refuses.
    source = tmp_path / "in.parquet"
    table = typed_table(3).append_column(
        "blob", pa.array([b"\x00\xff", b"plain", "é".encode()], pa.binary())
    )
    pq.write_table(table, source)
    report = validate_file(source, tmp_path / "checked.csv", settings_for("http://127.0.0.1:9/v1"))
    assert b"\x00" not in report.output.read_bytes()
    blobs = [row["blob"] for row in read_rows(report.output)]
    assert blobs == ["\\x00\\xff", "plain", "é"]
    again = settings_for("http://127.0.0.1:9/v1", prefix="v_")  # it reads back as a sheet
    validate_file(report.output, tmp_path / "again.csv", again)


def validate_request(tmp_path: Path, source: Path) -> str:
    report = validate_file(
        source, tmp_path / "checked.parquet", settings_for("http://127.0.0.1:9/v1")
    )
    checked = pq.read_table(report.output)
    assert checked.schema.field("n").type == pa.int64()
    return str(checked.column("request").to_pylist()[0])


def test_a_file_that_is_not_parquet_is_one_line_exit_2(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    source.write_bytes(b"thread_id,assistant_id\nt,a\n")
    finished = subprocess.run(
        [sys.executable, "-m", "batchrun", "validate", str(source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 2
    assert "is not a readable Parquet file" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_run_frame_result_numbers_have_numeric_dtypes(
    simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    frame = pd.DataFrame({"thread_id": ["t_1", "t_2"], "assistant_id": ["asst_1", "asst_1"]})
    results = batchrun.run_frame(frame, base_url=simulator.base_url, wait=True)
    assert str(results["status"].dtype) == "Int64"
    assert str(results["attempts"].dtype) == "Int64"
    assert str(results["usage_total_tokens"].dtype) == "Int64"
    assert results["status"].tolist() == [200, 200]
    assert results["error"].dtype == object
