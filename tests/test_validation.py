"""`batchrun validate` on big sheets: parallel chunks give the same answer as one pass."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from batchrun.config import Settings
from batchrun.endpoints.prepare import RowPreparer, make_plan, request_text
from batchrun.jobs import validate as validate_job
from batchrun.sheets import read_sheet


def test_parallel_chunks_match_a_single_pass_including_repeated_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in.csv"
    with source.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["thread_id", "assistant_id", "temperature"])
        for n in range(450):
            # Every 7th row repeats an earlier one, often from an earlier chunk.
            thread = f"thread_{n % 7 if n % 7 == 0 else n}"
            writer.writerow([thread, "asst_1", "9" if n % 50 == 1 else "0.5"])
    monkeypatch.setattr(validate_job, "VALIDATE_CHUNK_ROWS", 100)
    settings = Settings()
    report = validate_job.validate_file(source, tmp_path / "out.csv", settings)

    frame = read_sheet(source)
    expected = RowPreparer(make_plan(list(frame.columns), settings), settings).prepare(frame)
    written = read_sheet(report.output)
    assert written["request"].tolist() == [request_text(row, settings) for row in expected]
    assert written["error"].tolist() == [row.error for row in expected]
    assert report.summary.outcomes == {"ok": 441, "invalid": 9}
    keys = [row.key for row in expected if row.thread_id == "thread_0"]
    assert [key.rsplit("-", 1)[1] for key in keys if key] == [str(n) for n in range(1, 65)]
