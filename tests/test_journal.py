"""Crash-safe journal and resume: SIGKILL, Ctrl-C, --fresh, --retry-failed, edits, mismatches."""

from __future__ import annotations

import csv
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from job_support import command, counted, read_rows, settings_for, signal_taken, wait_for

from batchrun.errors import ExitCode, JournalMismatch, UsageError
from batchrun.jobs import run_file
from batchrun.sending import journal as journal_module
from batchrun.sending.journal import Entry, Journal, read_journal
from batchrun.sending.journal_schema import MIGRATIONS
from batchrun.sending.states import CREATED, DONE, FAILED, SENDING
from batchrun.simulator import RunningSimulator, SimulatorConfig

KEY = "sk-test-journal-0123456789"
MakeSimulator = Callable[..., RunningSimulator]


def write_rows(path: Path, count: int, *, start: int = 0, text: str = "hello") -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["thread_id", "assistant_id", "instructions"])
        for n in range(start, start + count):
            writer.writerow([f"thread_{n:04d}", "asst_1", text])
    return path


def run_cli(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    return subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=120, check=False, **kwargs
    )


def start_cli(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def journal_states(source: Path) -> dict[str, int]:
    entries = read_journal(source.with_name(f"{source.stem}.batchrun.sqlite"))
    return dict(Counter(entry.state for entry in entries.values()))


def test_sigkill_at_several_points_then_rerun_creates_each_run_exactly_once(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(run_seconds=0, latency_ms=40, hang_rate=0.03, hang_seconds=2, seed=5)
    source, output = write_rows(tmp_path / "in.csv", 400), tmp_path / "out.csv"
    args = command(source, output, sim.base_url, "--concurrency", "8", "--timeout", "1")
    created = [0]
    for more in (30, 40, 50):  # each kill lands mid-job, once this many more runs exist
        process = start_cli(args)
        enough = created[-1] + more
        wait_for(counted(sim, enough), f"{enough} runs", process=process)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        assert process.returncode == -signal.SIGKILL
        created.append(sim.stats()["runs_created"])
    assert 0 < created[1] < 400, "the first kill should land mid-job"
    finished = run_cli(args)
    assert finished.returncode == 0, finished.stderr
    rows = read_rows(output)
    assert [r["thread_id"] for r in rows] == [f"thread_{n:04d}" for n in range(400)]
    assert {r["status"] for r in rows} == {"200"}
    stats = sim.stats()
    assert stats["duplicate_runs"] == 0
    assert stats["runs_created"] == 400


@pytest.mark.parametrize("fresh", [False, True])
def test_sigint_writes_a_partial_output_exits_130_and_a_rerun_completes(
    tmp_path: Path, make_simulator: MakeSimulator, fresh: bool
) -> None:
    sim = make_simulator(run_seconds=0, latency_ms=50)
    source, output = write_rows(tmp_path / "in.csv", 300), tmp_path / "out.csv"
    args = command(source, output, sim.base_url, "--concurrency", "4")
    process = start_cli([*args, "--fresh"] if fresh else args)
    wait_for(counted(sim, 20), "20 runs", process=process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    # The rerun it advises resumes: with --fresh, that command again would send every row
    # again (before, it said "rerun the same command" either way).
    advice = "rerun the same command without --fresh" if fresh else "rerun the same command"
    assert f"interrupted: {advice} to resume" in stderr, stderr
    partial = read_rows(output)
    assert len(partial) == 300
    sent = [r for r in partial if r["status"] == "200"]
    unsent = [r for r in partial if r["status"] == ""]
    assert sent and unsent
    assert all("not sent" in r["error"] for r in unsent)
    finished = run_cli(args)
    assert finished.returncode == 0, finished.stderr
    assert {r["status"] for r in read_rows(output)} == {"200"}
    assert sim.stats()["runs_created"] == 300
    assert sim.stats()["duplicate_runs"] == 0


@pytest.mark.parametrize(
    ("journal", "clash"),
    [
        ("out.xlsx", "the output file"),
        ("out.settings.toml", "the output file"),
        ("out.full.jsonl", "the output file"),
        ("in.csv", "the input"),
    ],
)
def test_a_journal_named_as_the_input_or_an_output_file_is_refused_before_sending(
    tmp_path: Path, simulator: RunningSimulator, journal: str, clash: str
) -> None:
    # Before, --journal out.xlsx was taken: the output was written over the journal, and
    # the next run found it malformed (or, deleted, sent every row again).
    source = write_rows(tmp_path / "in.csv", 3)
    settings = settings_for(simulator.base_url, journal=tmp_path / journal)
    with pytest.raises(UsageError, match=f"--journal .*: the journal would be {clash}"):
        run_file(source, tmp_path / "out.xlsx", settings)
    assert simulator.stats()["runs_created"] == 0


def test_rerun_sends_nothing_again_and_fresh_starts_over(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    source, output = write_rows(tmp_path / "in.csv", 10), tmp_path / "out.csv"
    args = command(source, output, simulator.base_url)
    assert run_cli(args).returncode == 0
    assert run_cli(args).returncode == 0
    assert simulator.stats()["runs_created"] == 10
    assert journal_states(source) == {"created": 10}
    assert run_cli([*args, "--fresh"]).returncode == 0
    assert simulator.stats()["runs_created"] == 20


def test_an_edited_sheet_sends_only_new_or_changed_rows(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    source, output = write_rows(tmp_path / "in.csv", 10), tmp_path / "out.csv"
    args = command(source, output, simulator.base_url)
    assert run_cli(args).returncode == 0
    rows = read_rows(source)
    rows[3]["instructions"] = "changed"
    rows.append({"thread_id": "thread_new", "assistant_id": "asst_1", "instructions": "new"})
    with source.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert run_cli(args).returncode == 0
    assert simulator.stats()["runs_created"] == 12


def test_failed_rows_wait_for_retry_failed(tmp_path: Path) -> None:
    source, output = write_rows(tmp_path / "in.csv", 5), tmp_path / "out.csv"
    broken = RunningSimulator(SimulatorConfig(fail_rate=1.0, seed=3)).start()
    port = int(broken.base_url.rsplit(":", 1)[1].split("/")[0])
    try:
        first = run_cli(command(source, output, broken.base_url, "--max-retries", "0"))
    finally:
        broken.stop()
    assert first.returncode == 1
    assert journal_states(source) == {"failed": 5}
    healthy = RunningSimulator(SimulatorConfig(run_seconds=0), port=port).start()
    try:
        args = command(source, output, healthy.base_url)
        again = run_cli(args)
        assert again.returncode == 1
        assert healthy.stats()["requests"] == {}
        retried = run_cli([*args, "--retry-failed"])
        assert retried.returncode == 0, retried.stderr
        assert {r["status"] for r in read_rows(output)} == {"200"}
        assert healthy.stats()["runs_created"] == 5
    finally:
        healthy.stop()


def test_another_endpoint_or_input_on_one_journal_is_a_job_of_its_own(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    first, second = make_simulator(), make_simulator()
    source, output = write_rows(tmp_path / "in.csv", 3), tmp_path / "out.csv"
    shared = ("--journal", str(tmp_path / "shared.sqlite"))
    assert run_cli([*command(source, output, first.base_url), *shared]).returncode == 0
    other = write_rows(tmp_path / "other.csv", 3)  # the same rows, another input
    for args in (
        command(source, output, second.base_url),
        command(other, tmp_path / "other.out.csv", first.base_url),
    ):
        assert run_cli([*args, *shared]).returncode == 0
    assert first.stats()["runs_created"] == 6
    assert second.stats()["runs_created"] == 3
    # Each job again: nothing more is sent anywhere.
    assert run_cli([*command(source, output, second.base_url), *shared]).returncode == 0
    assert second.stats()["runs_created"] == 3


def test_sigint_while_waiting_for_runs_stops_promptly_and_rerun_finishes(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(run_seconds=3)
    source, output = write_rows(tmp_path / "in.csv", 6), tmp_path / "out.csv"
    args = command(source, output, sim.base_url, "--wait")
    process = start_cli(args)
    deadline = time.monotonic() + 20
    while sim.stats()["runs_created"] < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert time.monotonic() - started < 5, "followers must not hold the stop for the grace period"
    rows = read_rows(output)
    assert all(r["status"] == "200" and "rerun" in r["error"] for r in rows)
    finished = run_cli(args)
    assert finished.returncode == 0, finished.stderr
    assert {r["run_status"] for r in read_rows(output)} == {"completed"}
    assert sim.stats()["runs_created"] == 6


def test_a_second_ctrl_c_mid_request_keeps_the_row_for_reconciliation(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(run_seconds=0, hang_rate=1.0, hang_seconds=5, seed=2)
    source, output = write_rows(tmp_path / "in.csv", 4), tmp_path / "out.csv"
    args = command(source, output, sim.base_url, "--concurrency", "2")
    process = start_cli(args)
    deadline = time.monotonic() + 20
    while sim.stats()["runs_created"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    wait_for(signal_taken(process, signal.SIGINT), "the first Ctrl-C taken", process=process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert journal_states(source).get("sending", 0) >= 2  # cut off in flight: kept
    finished = run_cli([*args, "--timeout", "1"])
    assert finished.returncode == 0, finished.stderr
    assert {r["status"] for r in read_rows(output)} == {"200"}
    assert sim.stats()["runs_created"] == 4
    assert sim.stats()["duplicate_runs"] == 0


def test_the_journal_replays_its_log_latest_state_winning(tmp_path: Path) -> None:
    path = tmp_path / "out.csv.journal.sqlite"
    journal = Journal(path, endpoint="http://sim/v1", source="in.csv")
    journal.mark_sending([("a", {"attempts": 0}), ("b", {"attempts": 0}), ("c", {})])
    journal.record("a", DONE, {"status": 200, "response": 'say "hi"\n\u2028 😀'})
    journal.record("b", FAILED, {"status": 500})
    journal.forget(["c"])
    journal.close()
    expected = {
        "a": Entry(DONE, {"status": 200, "response": 'say "hi"\n\u2028 😀'}),
        "b": Entry(FAILED, {"status": 500}),
    }
    assert read_journal(path) == expected
    reopened = Journal(path, endpoint="http://sim/v1", source="in.csv")
    assert reopened.lookup(["a", "b", "c"]) == expected
    reopened.close()


def test_a_journal_from_before_the_log_keeps_its_rows(tmp_path: Path) -> None:
    """Version 1 journals kept one table row per key; they are read, then the log on top."""
    path = tmp_path / "out.csv.journal.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    db.executemany(
        "INSERT INTO meta VALUES (?, ?)", [("endpoint", "http://sim/v1"), ("source", "in.csv")]
    )
    db.executemany(
        "INSERT INTO rows VALUES (?, ?, ?, 0)",
        [("a", SENDING, b'{"attempts":1}'), ("b", CREATED, b'{"run_id":"run_1"}')],
    )
    db.close()
    journal = Journal(path, endpoint="http://sim/v1", source="in.csv")
    assert journal.lookup(["a", "b"]) == {
        "a": Entry(SENDING, {"attempts": 1}),
        "b": Entry(CREATED, {"run_id": "run_1"}),
    }
    journal.record("a", DONE, {"status": 200})
    journal.close()
    assert read_journal(path)["a"] == Entry(DONE, {"status": 200})


def test_nothing_is_sent_when_marking_rows_sending_fails(
    tmp_path: Path, simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row goes out only once the journal holds it; a failing journal stops the job."""

    def locked(self: Journal) -> None:
        if self._pending:  # reading the journal works; writing marks does not
            raise sqlite3.OperationalError("database is locked")

    source = tmp_path / "in.csv"
    source.write_text(
        "thread_id,assistant_id\n" + "".join(f"thread_{n},asst_1\n" for n in range(20)),
        encoding="utf-8",
    )
    monkeypatch.setattr(Journal, "flush", locked)
    report = run_file(source, tmp_path / "out.csv", settings_for(simulator.base_url, concurrency=1))
    assert simulator.stats()["runs_created"] == 0
    # The job stops (exit 3) and still writes its output: every row says why it was not sent.
    assert report.summary.exit_code is ExitCode.ABORTED
    assert re.search(r"journal .* failed: database is locked", report.summary.aborted or "")
    rows = read_rows(report.output)
    assert len(rows) == 20 and all(r["error"].startswith("not sent: job stopped") for r in rows)


def test_read_journal_reads_a_journal_from_before_the_log(tmp_path: Path) -> None:
    path = tmp_path / "out.csv.journal.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    db.execute("INSERT INTO rows VALUES ('a', 'done', '{\"status\":200}', 0)")
    db.close()
    assert read_journal(path) == {"a": Entry(DONE, {"status": 200})}


def test_a_journal_from_a_newer_batchrun_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.csv.journal.sqlite"
    Journal(path, endpoint="http://sim/v1", source="in.csv").close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(JournalMismatch, match=r"newer batchrun.*--journal") as refused:
        Journal(path, endpoint="http://sim/v1", source="in.csv")
    # --fresh starts a new job in the same file, which is refused the same way: the
    # message must not send the user there.
    assert "--fresh" not in str(refused.value)
    with pytest.raises(JournalMismatch, match=r"newer batchrun"):
        Journal(path, endpoint="http://sim/v1", source="in.csv", fresh=True)


def test_looking_up_rewrites_a_log_of_many_states_per_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "COMPACT_AFTER_ENTRIES", 10)
    path = tmp_path / "out.csv.journal.sqlite"
    journal = Journal(path, endpoint="http://sim/v1", source="in.csv")
    for attempt in range(5):  # five reruns' worth of states for the same rows
        journal.mark_sending([(f"k{n}", {"attempts": attempt}) for n in range(4)])
        for n in range(4):
            journal.record(f"k{n}", FAILED, {"attempts": attempt + 1})
        journal.flush()
    journal.forget(["k3"])
    expected = {f"k{n}": Entry(FAILED, {"attempts": 5}) for n in range(3)}
    assert journal.lookup([f"k{n}" for n in range(4)]) == expected
    journal.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM log").fetchone() == (1,)
    db.close()
    assert read_journal(path) == expected


def test_a_rows_entry_leaves_out_its_defaults_and_restores_them() -> None:
    from batchrun.report import Outcome, RowResult
    from batchrun.sending.states import Event

    marked = RowResult(0, thread_id="t", body={"model": "m"}, key="k", sent_at=1.5)
    assert marked.to_journal() == {"next": "send", "attempts": 0, "sent_at": 1.5}
    answered = RowResult(1, key="k2", status=200, response='{"id": "r"}', run_id="r")
    answered.run_status, answered.usage, answered.reply = "completed", {"input_tokens": 3}, "hi"
    answered.attempts, answered.sent_at, answered.outcome = 2, 2.5, Outcome.OK
    answered.move(Event.GOING)
    answered.move(Event.FINISHED)
    unsure = RowResult(2, key="k3", error="HTTP 503", superseded=["old"], ghost="made")
    unsure.move(Event.MAYBE_ARRIVED)
    unsure.unsure_until, unsure.reconciled, unsure.last_error = 9.0, True, "late"
    for row in (marked, answered, unsure):
        entry = row.to_journal()
        assert all(value or name == "attempts" for name, value in entry.items())
        restored = RowResult(row.index, thread_id=row.thread_id, body=row.body, key=row.key)
        restored.restore(entry)
        for name in RowResult.__slots__:
            if name not in ("reconciled_before", "sent_now", "users_word"):
                assert getattr(restored, name) == getattr(row, name), name
    # An entry of an older batchrun (every field written) reads back the same.
    full = dict.fromkeys(("error", "run_id", "run_status", "last_error", "reply", "ghost"), "")
    full |= {"status": None, "response": "", "attempts": 1, "usage": {}, "reconciled": False}
    full |= {"ambiguous": False, "sent_at": 3.0, "unsure_until": 0.0, "outcome": None}
    full |= {"next": "send", "superseded": []}
    restored = RowResult(5, key="k5")
    restored.restore(full, SENDING)
    assert (restored.attempts, restored.sent_at, restored.unsure) == (1, 3.0, True)


def test_a_block_of_marks_syncs_off_the_loop_and_a_state_recorded_meanwhile_comes_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import threading

    from batchrun.report import RowResult
    from batchrun.sending.durability import JournalWrites, MarkedAhead
    from batchrun.sending.states import RowState

    path = tmp_path / "in.batchrun.sqlite"
    journal = Journal(path, endpoint="http://sim/v1", source="in.csv")
    rows = [RowResult(n, thread_id=f"t{n}", key=f"k{n}") for n in range(3)]
    ahead = MarkedAhead(JournalWrites(journal, on_failure=print), rows)
    syncing, release = threading.Event(), threading.Event()
    mark_sending = journal.mark_sending

    def slow_disk(entries: Any) -> None:
        syncing.set()
        assert release.wait(5)
        mark_sending(entries)

    monkeypatch.setattr(journal, "mark_sending", slow_disk)

    async def job() -> None:
        first = asyncio.create_task(ahead.mark(rows[0]))
        # The block's commit has begun, on its own thread, while the loop waits here.
        assert await asyncio.to_thread(syncing.wait, 5)
        assert not first.done()  # the loop is free meanwhile
        rows[2].state = RowState.DONE  # a look settled a row of the block meanwhile
        ahead.record(rows[2])
        release.set()
        await first
        ahead.commit_now()

    asyncio.run(job())
    journal.close()
    states = {key: entry.state for key, entry in read_journal(path).items()}
    assert states == {"k0": SENDING, "k1": SENDING, "k2": DONE}
