"""Jobs of any size: rows stream through in chunks, results go to the journal and the
output streams out in input order; a kill mid-job leaves the rerun the whole output."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from job_support import TEST_KEY, read_rows, settings_for, wait_for

from batchrun.endpoints import prepare as prepare
from batchrun.endpoints.prepare import Occurrences
from batchrun.jobs import run as run_job
from batchrun.jobs import run_file
from batchrun.sending.journal import Journal, read_journal
from batchrun.simulator import RunningSimulator

HEADER = ["n", "thread_id", "assistant_id", "instructions"]


def write_rows(path: Path, threads: list[str], text: str = "hello") -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(HEADER)
        writer.writerows([n, thread, "asst_1", text] for n, thread in enumerate(threads))
    return path


@pytest.mark.parametrize(
    "chunk_rows", [pytest.param(3, id="chunks-of-3"), pytest.param(1, id="chunks-of-1")]
)
def test_a_job_in_many_chunks_sends_each_row_once_and_writes_them_in_input_order(
    tmp_path: Path,
    simulator: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    chunk_rows: int,
) -> None:
    monkeypatch.setattr(run_job, "RUN_CHUNK_ROWS", chunk_rows)
    # t_1's rows fall in several chunks: each waits for the run before it on the thread.
    threads = ["t_1", "t_2", "t_1", "t_3", "t_1", "t_4", "t_5", "t_1", "t_6", "t_7"]
    source = write_rows(tmp_path / "in.csv", threads)
    report = run_file(source, tmp_path / "out.csv", settings_for(simulator.base_url))
    rows = read_rows(report.output)
    assert [row["n"] for row in rows] == [str(n) for n in range(len(threads))]
    assert [row["thread_id"] for row in rows] == threads
    assert {row["outcome"] for row in rows} == {"ok"}
    assert report.summary.rows == len(threads)
    assert report.summary.outcomes == {"ok": len(threads)}
    assert report.summary.sent == len(threads)
    stats = simulator.stats()
    assert stats["runs_created"] == len(threads)
    assert stats["duplicate_runs"] == 0
    # A rerun takes every row from the journal, chunk by chunk, and writes the same ids.
    again = run_file(source, tmp_path / "again.csv", settings_for(simulator.base_url))
    assert again.summary.from_journal == len(threads)
    assert [row["run_id"] for row in read_rows(again.output)] == [row["run_id"] for row in rows]
    assert simulator.stats()["runs_created"] == len(threads)


def test_identical_rows_are_numbered_across_chunks_and_past_the_in_memory_counts(
    tmp_path: Path,
    simulator: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_job, "RUN_CHUNK_ROWS", 2)
    monkeypatch.setattr(prepare, "SPILL_DIGESTS", 1)
    # Rows without a thread... each identical row is a run of its own.
    threads = ["t_1", "t_2", "t_1", "t_2", "t_1", "t_3"]
    source = write_rows(tmp_path / "in.csv", threads)
    report = run_file(source, tmp_path / "out.csv", settings_for(simulator.base_url))
    assert report.summary.outcomes == {"ok": 6}
    assert simulator.stats()["runs_created"] == 6
    again = run_file(source, tmp_path / "again.csv", settings_for(simulator.base_url))
    assert again.summary.from_journal == 6
    assert simulator.stats()["runs_created"] == 6


def test_occurrences_count_on_in_a_temporary_file_once_past_the_spill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prepare, "SPILL_DIGESTS", 2)
    counts = Occurrences()
    assert counts.count(["a", "b", "a"]) == [1, 1, 2]
    assert counts.count(["c", "a"]) == [1, 3]  # three digests: spilled after this chunk
    assert counts.count(["a", "d", "c", "a"]) == [4, 1, 2, 5]
    assert counts.count(["b"]) == [2]
    counts.close()


def test_lookup_gives_the_states_the_log_replays_to(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path, endpoint="runs", source="./in.csv")
    journal.mark_sending([(f"k{n}", {"n": n}) for n in range(30)])
    for n in range(30):
        journal.record(f"k{n}", "done", {"n": n, "final": True})
    journal.forget(["k3", "k4"])
    journal.close()
    expected = read_journal(path)
    looked = Journal(path, endpoint="runs", source="./in.csv")
    keys = [f"k{n}" for n in range(40)]
    assert looked.lookup(keys) == expected
    assert "k3" not in expected and len(expected) == 28
    looked.close()


def test_a_kill_while_the_output_streams_out_leaves_the_rerun_the_whole_output(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    rows = 400
    threads = [f"t_{n}" for n in range(rows)]
    source = write_rows(tmp_path / "in.csv", threads)
    output = tmp_path / "out.csv"
    # Chunks of 20 rows at concurrency 1: the output is being written for most of the job.
    script = (
        "import sys; from batchrun.jobs import run; run.RUN_CHUNK_ROWS = 20; "
        "from batchrun.cli.commands import main; sys.argv = ['batchrun', *sys.argv[1:]]; main()"
    )
    args = [
        *(sys.executable, "-c", script, "run", str(source), "-o", str(output)),
        *("--base-url", simulator.base_url, "--no-progress", "--concurrency", "1"),
    ]
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY}
    process = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)

    def chunks_written() -> bool:
        temps = list(tmp_path.glob(".out.csv.*.tmp"))
        return bool(temps) and temps[0].read_text(encoding="utf-8").count("\n") > 40

    try:
        wait_for(chunks_written, "two chunks written to the output", process=process)
    finally:
        process.kill()
        process.communicate()
    assert not output.exists()
    sent = simulator.stats()["runs_created"]
    assert 40 <= sent < rows
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert rerun.returncode == 0, rerun.stderr
    written = read_rows(output)
    assert [row["n"] for row in written] == [str(n) for n in range(rows)]
    assert {row["outcome"] for row in written} == {"ok"}
    assert all(row["run_id"] for row in written)
    stats = simulator.stats()
    assert stats["runs_created"] == rows
    assert stats["duplicate_runs"] == 0


# The CLI with chunks of 20 rows that stops (to be killed there) once it has written
# HOLD_CHUNKS chunks of the output, after touching the file HELD.
HOLDING_WRITER = """
import os, sys, time
from pathlib import Path
from batchrun import jobs
from batchrun.jobs import run
run.RUN_CHUNK_ROWS = 20
write = jobs.StreamedOutput.write
written = []

def held(self, rows):
    write(self, rows)
    written.append(len(rows))
    if len(written) == int(os.environ["HOLD_CHUNKS"]):
        Path(os.environ["HELD"]).touch()
        time.sleep(3600)

jobs.StreamedOutput.write = held
from batchrun.cli.commands import main
main(sys.argv[1:])
"""


def test_a_kill_while_the_last_rows_are_written_leaves_the_rerun_the_whole_output(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    rows = 100
    source = tmp_path / "in.csv"
    with source.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["n", "model", "input"])
        writer.writerows([n, "gpt-4o", f"Question {n}"] for n in range(rows))
    output, held = tmp_path / "out.csv", tmp_path / "held"
    args = [
        *(sys.executable, "-c", HOLDING_WRITER, "run", str(source), "-o", str(output)),
        *("--base-url", simulator.base_url, "--endpoint", "responses", "--no-progress"),
    ]
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY, "HELD": str(held), "HOLD_CHUNKS": "5"}
    process = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    journal = tmp_path / "in.batchrun.sqlite"

    def writing_with_every_row_done() -> bool:
        temps = list(tmp_path.glob(".out.csv.*.tmp"))
        if not held.exists() or not temps or temps[0].stat().st_size == 0:
            return False
        entries = read_journal(journal)
        return len(entries) == rows and {entry.state for entry in entries.values()} == {"done"}

    try:
        wait_for(
            writing_with_every_row_done, "every row done, the output half written", process=process
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    assert not output.exists()
    sent = simulator.stats()["requests"]["POST /v1/responses"]
    rerun = subprocess.run(
        [
            *args[:2],
            "from batchrun.cli.commands import main; import sys; main(sys.argv[1:])",
            *args[3:],
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"{rows} from the journal" in rerun.stderr
    written = read_rows(output)
    assert [row["n"] for row in written] == [str(n) for n in range(rows)]
    assert {row["outcome"] for row in written} == {"ok"}
    entries = read_journal(journal)
    for row in written:  # each row's cells are its own answer's, as the journal holds it
        tag = json.loads(row["body"])["metadata"]["batchrun_key"]
        assert entries[tag.split(".")[0]].result["run_id"] == row["response_id"]
    assert len({row["response_id"] for row in written}) == rows
    assert simulator.stats()["requests"]["POST /v1/responses"] == sent  # nothing sent again
    assert list(tmp_path.glob(".out.csv.*.tmp")) == []  # the killed job's leaves nothing


def test_a_staged_file_removes_the_temp_files_of_ended_writers_of_this_host_only(
    tmp_path: Path,
) -> None:
    from batchrun import atomic

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    target = tmp_path / "out[1].csv"
    left = tmp_path / f".out[1].csv.0a1b2c3d.{finished.pid}-{atomic.HOST}.tmp"
    running = tmp_path / f".out[1].csv.0a1b2c3d.{os.getpid()}-{atomic.HOST}.tmp"
    elsewhere = tmp_path / f".out[1].csv.0a1b2c3d.{finished.pid}-00000000.tmp"
    other = tmp_path / f".other.csv.0a1b2c3d.{finished.pid}-{atomic.HOST}.tmp"
    for path in (left, running, elsewhere, other):
        path.write_text("rows")
    staged = atomic.StagedFile(target)
    staged.discard()
    assert not left.exists()
    assert running.exists() and elsewhere.exists() and other.exists()
