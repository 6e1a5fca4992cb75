"""No row stuck forever (issue 23): every row a job cannot settle has a way out, and a
server's own way of saying "everything fails" stops the job.

Jobs run against ``compatible_server`` (a self-hosted server somebody else wrote) over real
HTTP; a crash is a real SIGKILL of ``python -m batchrun`` while the server holds a create.
"""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from compatible_server import CompatibleServer, Quirks, compatible_server
from job_support import TEST_KEY, read_rows, settings_for
from loopback_server import serve_app
from test_batch_kills import HoldingProxy
from test_batch_kills import command as batch_command

from batchrun.errors import ExitCode
from batchrun.jobs import JobReport, run_file
from batchrun.sending.journal import read_journal
from batchrun.simulator import RunningSimulator

ENV = {"OPENAI_API_KEY": TEST_KEY, "PATH": "/usr/bin:/bin"}


def write_sheet(path: Path, threads: list[str], instructions: str = "hi") -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["thread_id", "assistant_id", "instructions"])
        writer.writerows((thread, "asst_1", instructions) for thread in threads)
    return path


def run(tmp_path: Path, base_url: str, **options: Any) -> tuple[JobReport, list[dict[str, str]]]:
    report = run_file(
        tmp_path / "in.csv",
        tmp_path / "out.csv",
        settings_for(base_url, **{"timeout": 5, **options}),
    )
    return report, read_rows(report.output)


def cli(tmp_path: Path, base_url: str, *extra: str) -> list[str]:
    return [
        *(sys.executable, "-m", "batchrun", "run", str(tmp_path / "in.csv")),
        *("-o", str(tmp_path / "out.csv"), "--base-url", base_url, "--no-progress", *extra),
    ]


def kill_while_held(tmp_path: Path, server: CompatibleServer, base_url: str, *extra: str) -> None:
    """Start the job in a process of its own and SIGKILL it while the server holds a create."""
    job = subprocess.Popen(cli(tmp_path, base_url, *extra), env=ENV, stderr=subprocess.DEVNULL)
    try:
        assert server.held.wait(30), "the held create never came"
        job.send_signal(signal.SIGKILL)
    finally:
        job.wait(10)
    assert job.returncode == -signal.SIGKILL


def ours(server: CompatibleServer, thread: str) -> list[dict[str, Any]]:
    """The runs on ``thread`` that batchrun made (tagged)."""
    return [run for run in server.runs(thread) if (run.get("metadata") or {}).get("batchrun_key")]


# --- 1. another client's run hides a row's absence -----------------------------------------


def test_after_a_kill_another_clients_run_without_metadata_does_not_hide_an_unsent_row(
    tmp_path: Path,
) -> None:
    # t_0 is created (its tag comes back: the server keeps metadata), t_1's create is held
    # and the job killed: t_1..t_3 are marked `sending` and were never sent. Another client
    # then runs on each of those threads, without metadata (shown as null).
    threads = ["t_0", "t_1", "t_2", "t_3"]
    write_sheet(tmp_path / "in.csv", threads)
    quirks = Quirks(hold_threads=frozenset({"t_1"}), unset_metadata="null", run_seconds=0.2)
    with compatible_server(quirks) as (server, base_url):
        kill_while_held(tmp_path, server, base_url, "--concurrency", "1")
        for thread in threads[1:]:
            server.add_run(thread, status="completed")
        rerun = subprocess.run(
            cli(tmp_path, base_url), env=ENV, capture_output=True, text=True, timeout=60
        )
        out = read_rows(tmp_path / "out.csv")
        assert rerun.returncode == 0, (rerun.stderr, out)
        assert [row["outcome"] for row in out] == ["ok"] * 4
        assert "does not return run metadata" not in rerun.stderr
        for thread in threads:
            assert len(ours(server, thread)) == 1, thread


# --- 2. finished rows re-marked, and runs beyond the newest page ---------------------------


def journal_states(tmp_path: Path) -> list[str]:
    return sorted(entry.state for entry in read_journal(tmp_path / "in.batchrun.sqlite").values())


def test_a_row_adopted_on_rerun_is_never_marked_sending_again(tmp_path: Path) -> None:
    # t_1's run is made and its answer never comes: killed, the job leaves t_1 `sending`
    # (and t_2, t_3 marked ahead). The rerun adopts t_1 by its tag, then sends t_2: the
    # block it marks ahead must not take in t_1, whose state is final.
    threads = ["t_0", "t_1", "t_2", "t_3"]
    write_sheet(tmp_path / "in.csv", threads)
    quirks = Quirks(hold_threads=frozenset({"t_1"}), hold_when="after", run_seconds=0.0)
    with compatible_server(quirks) as (server, base_url):
        kill_while_held(tmp_path, server, base_url, "--concurrency", "1")
        _, out = run(tmp_path, base_url, concurrency=1)
        assert [row["outcome"] for row in out] == ["ok"] * 4
        assert out[1]["run_id"] == ours(server, "t_1")[0]["id"]
        assert journal_states(tmp_path) == ["done"] * 4
        again, _ = run(tmp_path, base_url)
    assert again.summary.line().count("4 from the journal") == 1, again.summary.line()
    assert again.summary.sent == 0
    assert server.runs_created == 4


def test_a_rows_run_behind_a_full_page_of_newer_runs_is_found_by_paging(tmp_path: Path) -> None:
    write_sheet(tmp_path / "in.csv", ["t_1"])
    quirks = Quirks(hold_threads=frozenset({"t_1"}), hold_when="after", run_seconds=0.0)
    with compatible_server(quirks) as (server, base_url):
        kill_while_held(tmp_path, server, base_url)
        for _ in range(45):  # another client's runs, newer than the row's
            server.add_run("t_1", status="completed", metadata={"owner": "another client"})
        report, out = run(tmp_path, base_url)
        (mine,) = ours(server, "t_1")
    assert report.summary.exit_code is ExitCode.OK, out
    assert out[0]["run_id"] == mine["id"] and report.summary.reconciled == 1
    listed = [seen.path for seen in server.requests if seen.method == "GET"]
    assert len(listed) == 3 and "after=" in listed[-1]  # pages of 20 until the row's run


def test_a_run_whose_tag_the_list_leaves_out_is_read_back_and_adopted_not_made_again(
    tmp_path: Path,
) -> None:
    # t_2's run is stored, its answer never comes; the list shows runs without metadata,
    # each run read by itself shows it (t_1's, read back, tells the job tags are kept).
    write_sheet(tmp_path / "in.csv", ["t_1", "t_2"])
    quirks = Quirks(
        hold_threads=frozenset({"t_2"}), hold_when="after", list_metadata=False, run_seconds=0.0
    )
    with compatible_server(quirks) as (server, base_url):
        report, out = run(tmp_path, base_url, concurrency=1, timeout=1)
        assert [row["outcome"] for row in out] == ["ok", "ok"], out
        assert out[1]["run_id"] == ours(server, "t_2")[0]["id"]
        assert report.summary.reconciled == 1
        assert server.runs_created == 2  # before: t_2 made again once its wait ran out


def test_a_row_whose_look_could_not_read_the_runs_says_its_run_may_exist(tmp_path: Path) -> None:
    write_sheet(tmp_path / "in.csv", ["t_1"])
    quirks = Quirks(hold_threads=frozenset({"t_1"}), hold_when="after", run_seconds=0.0)
    with compatible_server(quirks) as (server, base_url):
        server.fail_lists = True
        _, out = run(tmp_path, base_url, timeout=1, max_retries=1)
        (row,) = out
        assert row["outcome"] == "not sent"
        # Its request went out: the run may exist (before: "nothing was sent twice").
        assert row["error"].startswith("not sent again: a run may have been created"), row
        assert "never sent twice" in row["error"]
        server.fail_lists = False
        _, out = run(tmp_path, base_url, timeout=1, max_retries=1)
        assert out[0]["outcome"] == "ok" and out[0]["run_id"] == ours(server, "t_1")[0]["id"]
        assert server.runs_created == 1


# --- 3. a server that cannot look anything up ----------------------------------------------


def test_without_a_runs_list_rows_a_kill_left_unsure_say_so_and_retry_failed_sends_them(
    tmp_path: Path,
) -> None:
    # The first create is held and the job killed: the first row was sent, the others
    # only reserved (on this boot, known never sent); none was created.
    threads = ["t_1", "t_2", "t_3"]
    write_sheet(tmp_path / "in.csv", threads)
    quirks = Quirks(hold_threads=frozenset({"t_1"}), list_runs=False, run_seconds=0.0)
    with compatible_server(quirks) as (server, base_url):
        kill_while_held(tmp_path, server, base_url, "--concurrency", "1")
        rerun, out = run(tmp_path, base_url)
        unsure = [row for row in out if row["outcome"] != "ok"]
        assert [row["thread_id"] for row in unsure] == ["t_1"]
        (row,) = unsure
        assert row["outcome"] == "failed", row
        assert "may have been created" in row["error"] and "--retry-failed" in row["error"]
        assert any("cannot list runs" in note for note in rerun.summary.notes)
        assert rerun.summary.sent == 2  # the rows the killed job never sent
        plain, _ = run(tmp_path, base_url)
        assert plain.summary.sent == 0
        retried, out = run(tmp_path, base_url, retry_failed=True)
        assert retried.summary.exit_code is ExitCode.OK, out
        assert retried.summary.sent == 1
        for thread in threads:
            assert len(ours(server, thread)) == 1, thread
        assert not any(seen.path.startswith("GET") for seen in server.requests[-3:])


# --- 4. the server's own "everything fails" ------------------------------------------------

NO_DB = (400, "No connected db.", "no_db_connection")


def test_the_same_400_on_the_first_rows_stops_the_job_and_leaves_every_row_for_the_next(
    tmp_path: Path,
) -> None:
    write_sheet(tmp_path / "in.csv", [f"t_{n}" for n in range(20)])
    with compatible_server() as (server, base_url):
        server.refuse_creates = NO_DB
        stopped, out = run(tmp_path, base_url)
        assert stopped.summary.exit_code is ExitCode.ABORTED
        assert "No connected db." in (stopped.summary.aborted or "")
        assert stopped.summary.left == 20
        assert {row["outcome"] for row in out} <= {"failed", "not sent"}
        server.refuse_creates = None  # the right key, say
        again, out = run(tmp_path, base_url)
    assert again.summary.exit_code is ExitCode.OK, out
    assert again.summary.sent == 20 and server.runs_created == 20


# --- 5. smaller ones -----------------------------------------------------------------------


def test_when_the_runs_route_is_missing_the_sheet_and_the_summary_agree(tmp_path: Path) -> None:
    write_sheet(tmp_path / "in.csv", [f"t_{n}" for n in range(20)])
    with compatible_server() as (server, base_url):
        report, out = run(tmp_path, base_url.replace("/api/v1", "/v1"))
    summary = report.summary
    assert summary.exit_code is ExitCode.ABORTED
    assert summary.outcomes == {"not sent": 20}
    assert (summary.sent, summary.left) == (0, 20)
    assert "20 not sent" in summary.line() and "0 sent, 20 left for the next run" in summary.line()
    answered = [row for row in out if row["status"] == "404"]
    assert answered and all(row["error"].startswith("not sent: HTTP 404") for row in answered)
    assert server.runs_created == 0


def test_a_batch_job_on_a_server_without_files_stops_with_the_base_url_hint(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("model,input\n" + "".join(f"local-model,Question {n}\n" for n in range(3)))
    with compatible_server() as (_, base_url):
        report, out = run(tmp_path, base_url, endpoint="responses", batch=True)
    assert report.summary.exit_code is ExitCode.ABORTED
    assert "check --base-url" in (report.summary.aborted or "")
    assert "--batch" in (report.summary.aborted or "")
    assert [row["outcome"] for row in out] == ["not sent"] * 3
    assert report.summary.left == 3


def test_a_rerun_that_finds_the_batch_a_killed_run_created_does_not_say_it_submitted_one(
    make_simulator: Callable[..., RunningSimulator], tmp_path: Path
) -> None:
    sim = make_simulator(batch_seconds=0.2)
    proxy = HoldingProxy(sim.base_url)
    with serve_app(proxy.app()) as base_url:
        source = tmp_path / "prompts.csv"
        source.write_text("model,input\ngpt-4o,Question 1\ngpt-4o,Question 2\n")
        out = tmp_path / "out.csv"
        proxy.hold = ("POST", re.compile(r"/v1/batches$"), "after")  # made, answer lost
        first = subprocess.Popen(batch_command(source, out, base_url), env=ENV)
        try:
            assert proxy.held.wait(30), "the batch create never came"
            first.send_signal(signal.SIGKILL)
        finally:
            first.wait(10)
        proxy.hold = None
        rerun = subprocess.run(
            batch_command(source, out, base_url),
            env=ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert rerun.returncode == 0, rerun.stderr
    (batch,) = [line for line in rerun.stderr.splitlines() if "batch:" in line]
    assert "submitted (" not in batch.split("found")[0], batch
    assert "1 found, submitted by the run before" in batch
    assert sim.stats()["batches_created"] == 1


# --- every "may exist" row names the one command that resolves it, and it does -------------


def test_a_may_exist_row_on_a_server_dropping_metadata_is_sent_by_retry_failed(
    tmp_path: Path,
) -> None:
    # t_1's create is stored and answered 500; the server shows no metadata, so nothing
    # tells whether the run it lists is the row's: the row says to check, then
    # --retry-failed. A plain rerun sends nothing; --retry-failed sends it.
    write_sheet(tmp_path / "in.csv", ["t_1", "t_2"])
    quirks = Quirks(
        metadata="absent", ghost_threads=frozenset({"t_1"}), max_ghosts=1, run_seconds=0.0
    )
    with compatible_server(quirks) as (server, base_url):
        _, out = run(tmp_path, base_url, max_retries=1)
        assert out[0]["outcome"] == "failed" and "--retry-failed" in out[0]["error"], out[0]
        assert out[1]["outcome"] == "ok"
        plain, _ = run(tmp_path, base_url)
        assert plain.summary.sent == 0
        retried, out = run(tmp_path, base_url, retry_failed=True)
        assert retried.summary.exit_code is ExitCode.OK, out
        assert server.creates("t_1") == 2  # on the user's word, after checking the thread


def test_a_may_exist_row_without_a_run_tag_is_sent_by_retry_failed(tmp_path: Path) -> None:
    write_sheet(tmp_path / "in.csv", ["t_1"])
    quirks = Quirks(ghost_threads=frozenset({"t_1"}), max_ghosts=1, run_seconds=0.0)
    with compatible_server(quirks) as (server, base_url):
        _, out = run(tmp_path, base_url, run_tag=False, max_retries=1)
        assert out[0]["outcome"] == "failed" and "--retry-failed" in out[0]["error"], out[0]
        retried, out = run(tmp_path, base_url, run_tag=False, retry_failed=True)
        assert retried.summary.exit_code is ExitCode.OK, out
        assert server.creates("t_1") == 2


def gateway_without_a_chat_list() -> tuple[web.Application, list[str]]:
    """A gateway whose chat create makes the completion, then fails the first answer (500);
    ``GET /v1/chat/completions`` is a 405, as a route that only POSTs."""
    made: list[str] = []

    async def create(request: web.Request) -> web.Response:
        made.append(str(len(made) + 1))
        if len(made) == 1:
            return web.json_response({"detail": "Internal Server Error"}, status=500)
        choice = {"index": 0, "message": {"role": "assistant", "content": "hi"}}
        completion = {"id": f"cmpl-{len(made)}", "object": "chat.completion", "created": 1}
        return web.json_response({**completion, "choices": [{**choice, "finish_reason": "stop"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", create)
    return app, made


def test_a_chat_gateway_without_a_list_route_makes_store_rows_retry_failed_rows(
    tmp_path: Path,
) -> None:
    (tmp_path / "in.csv").write_text("model,user,store\nlocal-model,Hello,true\n")
    app, made = gateway_without_a_chat_list()
    with serve_app(app) as base_url:
        first, out = run(tmp_path, base_url, endpoint="chat", max_retries=1)
        assert out[0]["outcome"] == "failed", out[0]
        assert "may have been created" in out[0]["error"] and "--retry-failed" in out[0]["error"]
        assert any("cannot list completions" in note for note in first.summary.notes)
        retried, out = run(tmp_path, base_url, endpoint="chat", retry_failed=True)
    assert retried.summary.exit_code is ExitCode.OK, out
    assert len(made) == 2
