"""Exactly once against slow servers: a server still making what a create asked, after the
client gave up, is waited out, never asked again (DESIGN.md "Sending").

A :class:`~holding_proxy.HoldingProxy` in front of the simulator holds every create and
passes it on after the client's ``--timeout``, as a slow server answers.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from holding_proxy import holding_proxy
from job_support import TEST_KEY, command, read_rows, settings_for

from batchrun.cli.progress import ProgressBar
from batchrun.jobs import run_file
from batchrun.report import Outcome, RowResult
from batchrun.simulator import RunningSimulator

Make = Callable[..., RunningSimulator]
ENV = {**os.environ, "OPENAI_API_KEY": TEST_KEY}


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def chat_rows(path: Path, count: int) -> Path:
    rows = [["gpt-4o", f"Question {n}", "true"] for n in range(count)]
    return write_csv(path, ["model", "user", "store"], rows)


def test_a_slow_stored_chat_completion_is_looked_for_until_it_is_made_not_sent_again(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0)
    source = chat_rows(tmp_path / "chat.csv", 3)
    # The client gives up after 1 s; the server makes each completion 3 s after its request.
    with holding_proxy(sim.base_url, hold=3.0) as proxy:
        settings = settings_for(proxy.base_url, endpoint="chat", timeout=1.0)
        report = run_file(source, tmp_path / "out.csv", settings)
    rows = read_rows(tmp_path / "out.csv")
    assert [row["outcome"] for row in rows] == ["ok"] * 3, [row["error"] for row in rows]
    assert report.summary.reconciled == 3
    assert proxy.posts == 3  # each row asked once
    assert sim.stats()["chat_completions_created"] == 3


class Events:
    """A progress receiver that keeps every event with its row's index."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def start(self, total: int) -> None:
        pass

    def update(self, event: str, row: RowResult) -> None:
        self.seen.append((event, row.index))


def test_a_row_looked_for_again_is_told_to_the_progress_bar_until_it_is_done(
    make_simulator: Make, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A rerun after a kill may look for such a row for minutes: the bar says why it stands.
    sim = make_simulator(run_seconds=0)
    source = chat_rows(tmp_path / "chat.csv", 1)
    events = Events()
    with holding_proxy(sim.base_url, hold=3.0) as proxy:
        settings = settings_for(proxy.base_url, endpoint="chat", timeout=1.0)
        run_file(source, tmp_path / "out.csv", settings, progress=events)
    assert [row["outcome"] for row in read_rows(tmp_path / "out.csv")] == ["ok"]
    assert events.seen == [("unsure", 0), ("created", 0), ("done", 0)]
    bar = ProgressBar()
    bar.start(1)
    capsys.readouterr()
    row = RowResult(index=0)
    bar.update("unsure", row)
    assert "looking=1" in capsys.readouterr().err
    row.outcome = Outcome.OK
    bar.update("done", row)
    bar.close()
    assert not bar.waiting


def test_a_run_made_late_by_a_slow_server_is_adopted_not_made_twice(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0)
    source = write_csv(
        tmp_path / "runs.csv",
        ["thread_id", "assistant_id"],
        [["thread_a", "asst_1"], ["thread_b", "asst_1"]],
    )
    with holding_proxy(sim.base_url, hold=3.0) as proxy:
        report = run_file(source, tmp_path / "out.csv", settings_for(proxy.base_url, timeout=1.0))
    rows = read_rows(tmp_path / "out.csv")
    assert [row["outcome"] for row in rows] == ["ok", "ok"], [row["error"] for row in rows]
    assert report.summary.reconciled == 2
    assert proxy.posts == 2
    assert sim.stats()["runs_created"] == 2


def test_a_job_stopped_while_a_row_is_unsure_leaves_it_unsure_and_the_rerun_adopts_it(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0)
    source = chat_rows(tmp_path / "chat.csv", 1)
    out = tmp_path / "out.csv"
    with holding_proxy(sim.base_url) as proxy:  # holds the create until released
        job = subprocess.Popen(
            [*command(source, out, proxy.base_url, "--endpoint", "chat", "--timeout", "1")],
            env=ENV,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The client gave up on its create and has looked for it twice, finding nothing.
        assert proxy.wait_until(lambda: proxy.gets >= 2), "the job never looked"
        job.send_signal(signal.SIGINT)
        _, stderr = job.communicate(timeout=60)
        assert job.returncode == 130, stderr
        (row,) = read_rows(out)
        assert row["outcome"] == "not sent"
        assert "may have been created" in row["error"] and "rerun" in row["error"]
        assert proxy.posts == 1
        # The server finishes the completion the first job asked for; the rerun finds it.
        proxy.release()
        proxy.drain()
        rerun = subprocess.run(
            command(source, out, proxy.base_url, "--endpoint", "chat", "--timeout", "1"),
            env=ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert rerun.returncode == 0, rerun.stderr
    (row,) = read_rows(out)
    assert row["outcome"] == "ok" and "1 reconciled" in rerun.stderr
    assert proxy.posts == 1
    assert sim.stats()["chat_completions_created"] == 1


def test_a_row_a_killed_job_left_in_flight_is_looked_for_until_made_not_sent_again(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0)
    source = chat_rows(tmp_path / "chat.csv", 1)
    out = tmp_path / "out.csv"
    with holding_proxy(sim.base_url) as proxy:  # the server makes nothing until released
        args = command(source, out, proxy.base_url, "--endpoint", "chat")
        job = subprocess.Popen(args, env=ENV, stderr=subprocess.DEVNULL)
        assert proxy.wait_until(lambda: proxy.posts >= 1), "the job never sent"
        job.kill()  # kill -9 while the server is still making the completion
        job.wait()
        rerun = subprocess.Popen(args, env=ENV, stderr=subprocess.PIPE, text=True)
        # The rerun looked for the row's completion and found none yet: it must look again
        # (the server may still be at it), not send the row a second time.
        assert proxy.wait_until(lambda: proxy.gets >= 2), "the rerun never looked again"
        proxy.release()
        proxy.drain()
        _, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr
    (row,) = read_rows(out)
    assert row["outcome"] == "ok" and "1 reconciled" in stderr
    assert row["attempts"] == "1"  # the killed job's (before: 0, its count died with it)
    assert proxy.posts == 1  # before: 2, a second completion for the same row
    assert sim.stats()["chat_completions_created"] == 1


def test_a_row_left_unresolved_holds_back_the_later_rows_of_its_conversation_on_every_rerun(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(run_seconds=0)
    texts = ["first", "second", "third"]
    source = write_csv(
        tmp_path / "c.csv",
        ["conversation", "model", "input"],
        [["conv_a", "gpt-4o", text] for text in texts],
    )
    out = tmp_path / "out.csv"

    def outcomes() -> list[str]:
        return [row["outcome"] for row in read_rows(out)]

    # Only the first create is held past the client's time-out: the response is made, but
    # the client cannot know (responses cannot be listed), so the row fails "may exist".
    with holding_proxy(sim.base_url, hold=2.0, held=1) as proxy:
        settings = settings_for(proxy.base_url, endpoint="responses", timeout=1.0)
        run_file(source, out, settings)
        proxy.drain()
        assert outcomes() == ["failed", "not sent", "not sent"]
        for row in read_rows(out)[1:]:  # said in the first run too: a plain rerun cannot help
            assert "--retry-failed" in row["error"] and "rerun to send" not in row["error"]
        for _ in range(2):  # plain reruns keep the conversation's order
            report = run_file(source, out, settings)
            rows = read_rows(out)
            assert outcomes() == ["failed", "not sent", "not sent"], rows
            assert "may have been created" in rows[0]["error"]
            for row in rows[1:]:
                assert "an earlier row on conversation conv_a is unresolved" in row["error"]
                assert "--retry-failed" in row["error"]
            assert report.summary.left == 2
            assert proxy.posts == 1
        # --retry-failed is the user's word: the first row again, then the rows after it.
        again = settings_for(proxy.base_url, endpoint="responses", timeout=1.0, retry_failed=True)
        report = run_file(source, out, again)
    assert outcomes() == ["ok", "ok", "ok"]
    sent = [json.loads(body)["input"] for body in proxy.passed]
    assert sent == ["first", "first", "second", "third"]


def test_a_slow_batch_create_is_looked_for_until_it_is_made_not_submitted_twice(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(batch_seconds=0.3)
    source = write_csv(
        tmp_path / "p.csv", ["model", "input"], [["gpt-4o", f"Question {n}"] for n in range(3)]
    )
    # The client gives up on POST /batches after 1 s; the server makes the batch at 3 s.
    with holding_proxy(sim.base_url, hold=3.0, only="/batches") as proxy:
        settings = settings_for(proxy.base_url, endpoint="responses", batch=True, timeout=1.0)
        report = run_file(source, tmp_path / "out.csv", settings)
    assert [row["outcome"] for row in read_rows(tmp_path / "out.csv")] == ["ok"] * 3
    assert report.summary.exit_code == 0
    assert proxy.posts == 1  # the batch was asked for once
    assert sim.stats()["batches_created"] == 1
