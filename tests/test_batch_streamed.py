"""--batch jobs of any size: the sheet streams into part files a chunk at a time, each part
is recorded as its file is done, results are joined into the journal from the downloaded
files, and the output streams out from the sheet read again beside the journal."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from job_support import TEST_KEY, read_rows, settings_for, signal_taken, wait_for

from batchrun.batch import job, lines
from batchrun.jobs import run as run_job
from batchrun.jobs import run_file, validate_file
from batchrun.sending.journal import Journal, read_journal
from batchrun.simulator import RunningSimulator

Make = Callable[..., RunningSimulator]
BATCH = {"endpoint": "responses", "batch": True}
# The CLI with chunks of 3 rows, parts of 2 lines and quick polls; HOLD_AT names a step
# where the process stops (to be killed there) once it has written the file HELD, until
# the file GO_ON exists.
HARNESS = """
import os, sys, time
from pathlib import Path
from batchrun import jobs
from batchrun.jobs import run
from batchrun.batch import job, lines, ledger
run.RUN_CHUNK_ROWS, lines.MAX_LINES, job.POLL_FIRST = 3, 2, 0.05

def hold(original, after_calls):
    calls = []
    def held(*args, **kwargs):
        original(*args, **kwargs)
        calls.append(1)
        if len(calls) == after_calls:
            Path(os.environ["HELD"]).touch()
            go_on = Path(os.environ.get("GO_ON", "/nonexistent"))
            while not go_on.exists():
                time.sleep(0.02)
    return held

where = os.environ.get("HOLD_AT")
if where == "part recorded":
    ledger.PartLedger.add = hold(ledger.PartLedger.add, 1)
elif where == "output written":
    jobs.StreamedOutput.write = hold(jobs.StreamedOutput.write, int(os.environ["HOLD_CHUNKS"]))
from batchrun.cli.commands import main
main(sys.argv[1:])
"""


def prompts(path: Path, rows: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["model", "input", "n"])
        writer.writerows(["gpt-4o", f"Question {n}", n] for n in range(rows))
    return path


def command(source: Path, out: Path, base_url: str) -> list[str]:
    return [
        *(sys.executable, "-c", HARNESS, "run", str(source), "-o", str(out)),
        *("--endpoint", "responses", "--batch", "--base-url", base_url, "--no-progress"),
    ]


def environment(**extra: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": TEST_KEY, "PATH": os.environ["PATH"], **extra}


def batch_sizes(sim: RunningSimulator) -> list[int]:
    from conftest import send

    headers = {"Authorization": f"Bearer {TEST_KEY}"}
    made = send(sim.base_url, "GET", "/batches", headers=headers).json["data"]
    parts = sorted(made, key=lambda batch: int(batch["metadata"]["batchrun_part"]))
    return [batch["request_counts"]["total"] for batch in parts]


def assert_whole(out: Path, source: Path) -> list[dict[str, str]]:
    """Every row in input order, ok, each with the answer to its own request: the run tag
    in its answer's body is the row's key, as ``validate`` shows it."""
    checked = validate_file(source, out.with_name("checked.csv"), settings_for("", **BATCH))
    keys = [
        json.loads(row["request"])["metadata"]["batchrun_key"] for row in read_rows(checked.output)
    ]
    written = read_rows(out)
    assert [row["n"] for row in written] == [str(n) for n in range(len(keys))]
    assert {row["outcome"] for row in written} == {"ok"}
    assert len({row["response_id"] for row in written}) == len(keys)
    tags = [json.loads(row["body"])["metadata"]["batchrun_key"] for row in written]
    assert [tag.split(".")[0] for tag in tags] == keys
    assert all(row["reply"] for row in written)
    return written


def test_parts_cut_across_chunks_hold_each_row_once_and_the_output_keeps_input_order(
    make_simulator: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_job, "RUN_CHUNK_ROWS", 3)
    monkeypatch.setattr(lines, "MAX_LINES", 4)
    monkeypatch.setattr(job, "JOIN_ROWS", 3)  # a part's rows joined in two slices
    monkeypatch.setattr(job, "POLL_FIRST", 0.05)
    sim = make_simulator(batch_seconds=0.3)
    source, out = prompts(tmp_path / "prompts.csv", 11), tmp_path / "out.csv"
    report = run_file(source, out, settings_for(sim.base_url, **BATCH))
    assert report.summary.exit_code == 0, report.summary.line()
    assert (report.summary.rows, report.summary.sent, report.summary.collected) == (11, 11, 11)
    written = assert_whole(out, source)
    assert batch_sizes(sim) == [4, 4, 3]
    again = run_file(source, tmp_path / "again.csv", settings_for(sim.base_url, **BATCH))
    assert (again.summary.from_journal, again.summary.sent) == (11, 0)
    assert read_rows(tmp_path / "again.csv") == written
    assert sim.stats()["batches_created"] == 3


def test_a_job_killed_while_it_writes_its_parts_finishes_on_rerun_with_one_batch_a_part(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(batch_seconds=0.3)
    source, out = prompts(tmp_path / "prompts.csv", 9), tmp_path / "out.csv"
    held = tmp_path / "held"
    first = subprocess.Popen(
        command(source, out, sim.base_url),
        env=environment(HOLD_AT="part recorded", HELD=str(held)),
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(held.exists, "the first part recorded", process=first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert sim.stats()["files_uploaded"] == 0  # killed while the sheet was read
    scratch = list(Path(tempfile.gettempdir()).glob(f"batchrun-batch-{first.pid}-*"))
    assert len(scratch) == 1 and list(scratch[0].iterdir())  # the part files it wrote
    rerun = subprocess.run(
        command(source, out, sim.base_url),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert_whole(out, source)
    # The part recorded before the kill is written again from the sheet and goes as it was.
    assert batch_sizes(sim) == [2, 2, 2, 2, 1]
    assert sim.stats()["files_uploaded"] == 5
    assert not scratch[0].exists()  # what the killed job left in the temp folder is gone


def test_ctrl_c_while_the_sheet_goes_into_parts_stops_there_and_the_rerun_goes_on(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(batch_seconds=0.3)
    source, out = prompts(tmp_path / "prompts.csv", 9), tmp_path / "out.csv"
    held, go_on = tmp_path / "held", tmp_path / "go-on"
    first = subprocess.Popen(
        command(source, out, sim.base_url),
        env=environment(HOLD_AT="part recorded", HELD=str(held), GO_ON=str(go_on)),
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(held.exists, "the first part recorded", process=first)
    first.send_signal(signal.SIGINT)
    wait_for(signal_taken(first, signal.SIGINT), "the interrupt taken", process=first)
    go_on.touch()
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 130, stderr
    assert "interrupted: rerun the same command to resume" in stderr
    rows = read_rows(out)
    assert [row["outcome"] for row in rows] == ["not sent"] * 9
    assert rows[0]["error"] == "not sent: interrupted; rerun the same command to go on"
    assert rows[8]["error"] == "not sent: interrupted"
    assert sim.stats()["files_uploaded"] == 0
    rerun = subprocess.run(
        command(source, out, sim.base_url),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert_whole(out, source)
    # The parts recorded before the stop go as they were (the stop is heard a chunk or
    # two later), the rows after them in new parts: each row in one batch.
    sizes = batch_sizes(sim)
    assert sum(sizes) == 9 and max(sizes) == 2 and len(sizes) >= 5


def test_a_job_killed_while_it_writes_the_output_writes_it_whole_on_rerun(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(batch_seconds=0.3)
    rows = 9
    source, out = prompts(tmp_path / "prompts.csv", rows), tmp_path / "out.csv"
    held = tmp_path / "held"
    first = subprocess.Popen(
        command(source, out, sim.base_url),
        env=environment(HOLD_AT="output written", HOLD_CHUNKS="1", HELD=str(held)),
        stderr=subprocess.DEVNULL,
    )
    journal = tmp_path / "prompts.batchrun.sqlite"

    def writing_with_every_row_done() -> bool:
        temps = list(tmp_path.glob(".out.csv.*.tmp"))
        if not held.exists() or not temps:
            return False
        entries = read_journal(journal)
        return len(entries) == rows and {entry.state for entry in entries.values()} == {"done"}

    try:
        wait_for(
            writing_with_every_row_done, "the output written with every row done", process=first
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert not out.exists()
    made = sim.stats()["batches_created"]
    rerun = subprocess.run(
        command(source, out, sim.base_url),
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"{rows} from the journal" in rerun.stderr
    assert_whole(out, source)
    assert sim.stats()["batches_created"] == made == 5
    assert list(tmp_path.glob(".out.csv.*.tmp")) == []  # the killed job's leaves nothing


def test_refresh_lets_lookup_see_entries_recorded_since_also_after_compacting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchrun.sending import journal as journal_module

    monkeypatch.setattr(journal_module, "COMPACT_AFTER_ENTRIES", 10)
    path = tmp_path / "j.sqlite"
    first = Journal(path, endpoint="responses", source="./in.csv")
    for round_ in range(4):  # four entries a key: the next job compacts the log
        for n in range(10):
            first.record(f"k{n}", "done", {"round": round_})
        first.flush()
    first.close()
    journal = Journal(path, endpoint="responses", source="./in.csv")
    keys = [f"k{n}" for n in range(12)]
    assert {entry.result["round"] for entry in journal.lookup(keys).values()} == {3}
    journal.record("k1", "failed", {"round": 4})
    journal.record("k11", "done", {"round": 4})
    journal.forget(["k2"])
    assert journal.lookup(["k1"])["k1"].result == {"round": 3}  # as the job began
    journal.refresh()
    found = journal.lookup(keys)
    assert found["k1"].state == "failed" and found["k11"].result == {"round": 4}
    assert "k2" not in found and len(found) == 10
    journal.record("k3", "failed", {"round": 5})
    journal.refresh()
    assert journal.lookup(["k3"])["k3"].result == {"round": 5}
    journal.close()
