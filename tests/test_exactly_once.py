"""Exactly once in ordinary use: job identity, order per thread, stops, notebooks, signals."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from aiohttp import web
from conftest import send
from job_support import TEST_KEY, command, counted, read_rows, settings_for, wait_for
from loopback_server import CREATE_ROUTE, RunStore, app_with, serve_app

import batchrun
from batchrun.errors import ExitCode, UsageError
from batchrun.jobs import run as run_job
from batchrun.jobs import run_file
from batchrun.sending import session
from batchrun.sending.journal import Journal, default_journal_path, read_journal
from batchrun.sending.judge import Verdict, judge
from batchrun.simulator import RunningSimulator

MakeSimulator = Callable[..., RunningSimulator]
CREATE = "POST /v1/threads/{thread_id}/runs"


def write_sheet(path: Path, rows: list[tuple[str, str]]) -> Path:
    """Rows of (thread_id, instructions), all for assistant asst_1."""
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["thread_id", "assistant_id", "instructions"])
        writer.writerows((thread, "asst_1", text) for thread, text in rows)
    return path


def posts(sim: RunningSimulator) -> int:
    return sum(sim.stats()["requests"].get(CREATE, {}).values())


def cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env={**os.environ, "OPENAI_API_KEY": TEST_KEY, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- a job is its input and its endpoint ----------------------------------------------------


def test_a_rerun_with_another_output_sends_nothing_and_writes_the_same_run_ids(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    source = write_sheet(tmp_path / "in.csv", [(f"t_{n}", "hi") for n in range(30)])
    first = run_file(source, tmp_path / "a.csv", settings_for(simulator.base_url))
    second = run_file(source, tmp_path / "b.xlsx", settings_for(simulator.base_url))
    again = run_file(source, tmp_path / "c.csv", settings_for(simulator.base_url))
    assert simulator.stats()["runs_created"] == 30
    assert [r["run_id"] for r in read_rows(first.output)] == [
        r["run_id"] for r in read_rows(again.output)
    ]
    assert second.summary.sent == 0 and second.summary.from_journal == 30
    assert "this run: 0 sent, 30 from the journal" in again.summary.line()


def test_two_inputs_of_one_file_name_through_one_journal_are_two_jobs(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    rows = [(f"t_{n}", "hi") for n in range(3)]
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    first, second = (write_sheet(tmp_path / name / "data.csv", rows) for name in "AB")
    settings = settings_for(simulator.base_url, journal=tmp_path / "one.sqlite")
    a = run_file(first, tmp_path / "a.csv", settings)
    b = run_file(second, tmp_path / "b.csv", settings)
    assert b.summary.sent == 3 and b.summary.from_journal == 0, b.summary.line()
    assert simulator.stats()["runs_created"] == 6
    a_ids = {r["run_id"] for r in read_rows(a.output)}
    b_ids = {r["run_id"] for r in read_rows(b.output)}
    assert len(a_ids | b_ids) == 6
    again = run_file(second, tmp_path / "b2.csv", settings)
    assert again.summary.sent == 0 and {r["run_id"] for r in read_rows(again.output)} == b_ids


@pytest.mark.parametrize("journal", ["beside the input", "shared"])
def test_a_job_journaled_by_the_version_before_resumes_after_the_upgrade(
    tmp_path: Path, simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch, journal: str
) -> None:
    """The version before named a job by its input's bare file name."""
    (tmp_path / "A").mkdir()
    source = write_sheet(tmp_path / "A" / "data.csv", [(f"t_{n}", "hi") for n in range(3)])
    options: dict[str, Any] = {} if journal == "beside the input" else {"journal": tmp_path / "j"}
    settings = settings_for(simulator.base_url, **options)
    with monkeypatch.context() as old_version:
        old_version.setattr(run_job, "job_source", lambda source, journal: source.name)
        before = run_file(source, tmp_path / "before.csv", settings)
    after = run_file(source, tmp_path / "after.csv", settings)
    assert after.summary.sent == 0 and after.summary.from_journal == 3, after.summary.line()
    assert simulator.stats()["runs_created"] == 3
    ids = [r["run_id"] for r in read_rows(before.output)]
    assert [r["run_id"] for r in read_rows(after.output)] == ids


def test_a_folder_moved_with_its_journal_is_the_same_job(
    tmp_path: Path, simulator: RunningSimulator
) -> None:
    (tmp_path / "before").mkdir()
    source = write_sheet(tmp_path / "before" / "data.csv", [(f"t_{n}", "hi") for n in range(3)])
    run_file(source, None, settings_for(simulator.base_url))
    moved = (tmp_path / "before").rename(tmp_path / "after") / "data.csv"
    again = run_file(moved, None, settings_for(simulator.base_url))
    assert again.summary.sent == 0 and again.summary.from_journal == 3, again.summary.line()
    assert simulator.stats()["runs_created"] == 3


def test_a_second_process_on_one_journal_exits_2_at_once_naming_the_first(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(latency_ms=400, run_seconds=0)
    source = write_sheet(tmp_path / "in.csv", [(f"t_{n}", "hi") for n in range(60)])
    args = command(source, tmp_path / "a.csv", sim.base_url, "--concurrency", "2")
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY}
    first = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(counted(sim, 1), "the first job's first run", process=first)
        second = cli(command(source, tmp_path / "b.csv", sim.base_url))
        # At once: the first job (12 s of requests) is still running, not waited for.
        assert first.poll() is None
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        first.wait(timeout=60)
    assert first.returncode == 0
    assert sim.stats()["runs_created"] == 60 and sim.stats()["duplicate_runs"] == 0


def test_fresh_starts_a_new_job_whose_tags_never_match_an_older_jobs_run(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.batchrun.sqlite"
    old = Journal(path, endpoint="http://x/v1", source="in.csv")
    old_job = old.job_id
    old.close()
    new = Journal(path, endpoint="http://x/v1", source="in.csv", fresh=True)
    assert new.job_id != old_job
    new.close()
    yesterday = {"id": "run_old", "status": "completed", "metadata": {"batchrun_key": "k.old"}}
    verdict = judge([yesterday], tag="k.new", unsure=True, sent_at=0.0).verdict
    assert verdict is Verdict.ABSENT  # not adopted: a run of another job


def test_the_journal_lives_beside_the_input() -> None:
    assert default_journal_path(Path("data/sheet.xlsx")) == Path("data/sheet.batchrun.sqlite")


# --- threads: requires_action, order, busy -------------------------------------------------


def test_a_thread_stopped_at_requires_action_is_not_posted_to_again(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(run_seconds=0.2)
    source = write_sheet(tmp_path / "in.csv", [("t_1", "tools [sim:requires_action]")])
    run_file(source, tmp_path / "out.csv", settings_for(sim.base_url, wait=True))
    write_sheet(source, [("t_1", "tools [sim:requires_action]"), ("t_1", "next"), ("t_1", "last")])
    started = time.monotonic()
    report = run_file(source, tmp_path / "out.csv", settings_for(sim.base_url, wait_timeout=8))
    assert time.monotonic() - started < 6  # not the --wait-timeout of 8 s
    rows = read_rows(report.output)
    assert rows[1]["error"].endswith("waits for tool outputs (requires_action)")
    assert rows[2]["outcome" if "outcome" in rows[2] else "error"] != "ok"
    # The rerun read the thread before posting behind the kept paused run: nothing was
    # posted (before: a refused "active run" answer on every rerun, shown as status 400;
    # a server that allows two active runs would have made one).
    assert posts(sim) == 1 and rows[1]["status"] == ""
    for _ in range(2):  # and so on every rerun
        run_file(source, tmp_path / "out.csv", settings_for(sim.base_url))
        assert posts(sim) == 1
    # Once the paused run is dealt with (cancelled here), the next rerun sends the rest.
    cancel = f"/threads/t_1/runs/{rows[0]['run_id']}/cancel"
    assert send(sim.base_url, "POST", cancel).status == 200
    wait_for(
        lambda: send(sim.base_url, "GET", cancel[: -len("/cancel")]).json["status"] == "cancelled",
        "the run cancelled",
    )
    report = run_file(source, tmp_path / "out.csv", settings_for(sim.base_url))
    assert [row["outcome"] for row in read_rows(report.output)][1:] == ["ok", "ok"]
    assert posts(sim) == 3


async def refuse_first_row(request: web.Request, store: RunStore) -> web.Response:
    body = await request.json()
    if body.get("instructions") == "first":
        return web.json_response({"error": {"message": "upstream"}}, status=503)
    return web.json_response(store.create(request.match_info["thread_id"], body))


@pytest.mark.parametrize(
    "chunk_rows",
    [pytest.param(10_000, id="one-chunk"), pytest.param(1, id="a-chunk-a-row")],
)
def test_a_row_left_for_the_next_run_holds_back_later_rows_of_its_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int
) -> None:
    monkeypatch.setattr(run_job, "RUN_CHUNK_ROWS", chunk_rows)
    store = RunStore()

    async def create(request: web.Request) -> web.Response:
        store.posts.append(request.match_info["thread_id"])
        return await refuse_first_row(request, store)

    async def unreadable(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "down"}}, status=503)

    app = app_with(create, extra=[web.get(CREATE_ROUTE, unreadable)])
    source = write_sheet(tmp_path / "in.csv", [("t_1", "first"), ("t_1", "second"), ("t_2", "x")])
    with serve_app(app) as base_url:
        report = run_file(
            source, tmp_path / "out.csv", settings_for(base_url, max_retries=1, timeout=5)
        )
    rows = read_rows(report.output)
    assert "could not be read to check (HTTP 503: down); rerun" in rows[0]["error"]
    assert rows[1]["error"].startswith("not sent: an earlier row on thread t_1")
    # The first row's one attempt (its runs could not be read to check before another);
    # never the second row.
    assert store.posts.count("t_1") == 1
    assert rows[2]["status"] == "200"
    assert report.summary.left == 2


def test_a_row_whose_runs_time_out_when_read_says_the_timeout_is_why(tmp_path: Path) -> None:
    async def create(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "upstream"}}, status=503)

    async def slow_list(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.json_response({"object": "list", "data": [], "has_more": False})

    app = app_with(create, extra=[web.get(CREATE_ROUTE, slow_list)])
    source = write_sheet(tmp_path / "in.csv", [("t_1", "first")])
    with serve_app(app) as base_url:
        settings = settings_for(base_url, max_retries=1, timeout=0.5)
        report = run_file(source, tmp_path / "out.csv", settings)
    # Before, the error said the runs "could not be read" and not why: a user whose
    # server is slower than --timeout on every request could not tell what to change.
    assert read_rows(report.output)[0]["error"] == (
        "not sent again: a run may have been created and the runs could not be read to "
        "check (timed out waiting for the answer for 0.5 s; a larger --timeout may help); "
        "rerun to look for it again (it is never sent twice)"
    )


# --- notebooks, signals, proxies ------------------------------------------------------------


def frame() -> pd.DataFrame:
    return pd.DataFrame({"thread_id": ["t_1", "t_2"], "assistant_id": ["asst_1", "asst_1"]})


def test_run_frame_works_inside_a_running_event_loop(
    simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)

    async def notebook_cell() -> pd.DataFrame:
        return batchrun.run_frame(frame(), base_url=simulator.base_url)

    out = asyncio.run(notebook_cell())
    assert list(out["status"]) == [200, 200]


def test_run_frame_async_runs_on_the_callers_loop_and_its_cancellation_is_not_swallowed(
    make_simulator: MakeSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    quick, slow = make_simulator(), make_simulator(latency_ms=5000)

    async def main() -> tuple[pd.DataFrame, bool]:
        out = await batchrun.run_frame_async(frame(), base_url=quick.base_url)
        task = asyncio.create_task(batchrun.run_frame_async(frame(), base_url=slow.base_url))
        await asyncio.sleep(0.5)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return out, True
        return out, False

    out, cancelled = asyncio.run(main())
    assert list(out["status"]) == [200, 200]
    assert cancelled


FIVE_ROWS = pd.DataFrame({"thread_id": [f"t_{n}" for n in range(5)], "assistant_id": "asst_1"})
NOTEBOOK_CELL = """
import sys
import pandas as pd
import batchrun
frame = pd.DataFrame({"thread_id": [f"t_{n}" for n in range(5)], "assistant_id": "asst_1"})
print(",".join(batchrun.run_frame(frame, base_url=sys.argv[1])["run_id"]))
"""


def test_run_frame_called_again_sends_nothing_and_returns_the_same_ids(
    simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch, cache_folder: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    first = batchrun.run_frame(FIVE_ROWS, base_url=simulator.base_url)
    again = batchrun.run_frame(FIVE_ROWS.copy(), base_url=simulator.base_url)
    assert simulator.stats()["runs_created"] == 5
    assert again["run_id"].tolist() == first["run_id"].tolist()
    assert again["outcome"].tolist() == ["ok"] * 5
    assert len(list((cache_folder / "frames").glob("*.sqlite"))) == 1
    fresh = batchrun.run_frame(FIVE_ROWS, base_url=simulator.base_url, fresh=True)
    assert simulator.stats()["runs_created"] == 10
    assert not set(fresh["run_id"]) & set(first["run_id"])


def test_run_frame_after_a_kernel_restart_sends_nothing_and_returns_the_same_ids(
    simulator: RunningSimulator,
) -> None:
    def notebook() -> list[str]:
        cell = cli([sys.executable, "-c", NOTEBOOK_CELL, simulator.base_url])
        assert cell.returncode == 0, cell.stderr
        return cell.stdout.strip().split(",")

    first = notebook()
    assert notebook() == first and len(set(first)) == 5
    assert simulator.stats()["runs_created"] == 5


def test_run_frame_keeps_its_journal_where_journal_says(
    tmp_path: Path,
    simulator: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    cache_folder: Path,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    path = tmp_path / "frame.sqlite"
    first = batchrun.run_frame(FIVE_ROWS, base_url=simulator.base_url, journal=path)
    again = batchrun.run_frame(FIVE_ROWS, base_url=simulator.base_url, journal=str(path))
    assert again["run_id"].tolist() == first["run_id"].tolist()
    assert simulator.stats()["runs_created"] == 5
    assert path.exists() and not cache_folder.exists()


def test_run_frame_names_journal_when_the_cache_folder_cannot_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    blocker = tmp_path / "a file"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("BATCHRUN_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(UsageError, match=r"cannot open the journal .*pass journal=PATH"):
        batchrun.run_frame(FIVE_ROWS, base_url="http://127.0.0.1:9/v1")


class NoSignalHandlers(asyncio.SelectorEventLoop):
    """An event loop without add_signal_handler, as on Windows."""

    def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:
        raise NotImplementedError


def test_ctrl_c_stops_a_job_where_the_loop_has_no_signal_handlers(
    tmp_path: Path, make_simulator: MakeSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = make_simulator(latency_ms=200, run_seconds=0)
    monkeypatch.setattr(
        session, "event_loop", lambda: asyncio.Runner(loop_factory=NoSignalHandlers)
    )
    source = write_sheet(tmp_path / "in.csv", [(f"t_{n}", "hi") for n in range(200)])
    before = signal.getsignal(signal.SIGINT)

    def ctrl_c_once_runs_exist() -> None:
        wait_for(counted(sim, 4), "4 runs")
        signal.raise_signal(signal.SIGINT)

    pressing = threading.Thread(target=ctrl_c_once_runs_exist)
    pressing.start()
    try:
        report = run_file(
            source,
            tmp_path / "out.csv",
            settings_for(sim.base_url, concurrency=2),
            handle_signals=True,
        )
    finally:
        pressing.join()
    assert report.summary.exit_code is ExitCode.INTERRUPTED
    assert "rerun the same command to resume" in report.summary.line()
    assert 0 < sim.stats()["runs_created"] < 200
    assert signal.getsignal(signal.SIGINT) == before  # put back


def test_https_proxy_from_the_environment_is_used(
    tmp_path: Path, simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The simulator plays the proxy: it answers the absolute-URI requests a proxy receives.
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", simulator.base_url.removesuffix("/v1"))
    source = write_sheet(tmp_path / "in.csv", [("t_1", "hi")])
    settings = settings_for("http://api.example.invalid/v1", allow_insecure_http=True)
    report = run_file(source, tmp_path / "out.csv", settings)
    assert read_rows(report.output)[0]["status"] == "200"
    assert simulator.stats()["runs_created"] == 1


# --- stopping: no key, wrong port, long pauses, failing journal -----------------------------


def test_no_api_key_is_a_usage_error_naming_the_variable(tmp_path: Path) -> None:
    source = write_sheet(tmp_path / "in.csv", [("t_1", "hi")])
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "batchrun",
            "run",
            str(source),
            "--base-url",
            "http://127.0.0.1:9/v1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "OPENAI_API_KEY" in result.stderr and not (tmp_path / "in.out.csv").exists()


@pytest.mark.parametrize("rows", [1, 100])
def test_a_refused_port_stops_the_job_quickly_whatever_the_row_count(
    tmp_path: Path, rows: int
) -> None:
    source = write_sheet(tmp_path / "in.csv", [(f"t_{n}", "hi") for n in range(rows)])
    started = time.monotonic()
    report = run_file(source, tmp_path / "out.csv", settings_for("http://127.0.0.1:9/v1"))
    assert time.monotonic() - started < 5
    assert report.summary.exit_code is ExitCode.ABORTED
    assert "check --base-url" in (report.summary.aborted or "")
    assert report.summary.left == rows


def test_an_error_whose_message_is_null_fails_its_row_clearly(tmp_path: Path) -> None:
    async def null_message(request: web.Request) -> web.Response:
        error = {"message": None, "type": "invalid_request_error", "param": None, "code": None}
        return web.json_response({"error": error}, status=400)

    source = write_sheet(tmp_path / "in.csv", [("t_1", "hi")])
    with serve_app(app_with(null_message)) as base_url:
        report = run_file(source, tmp_path / "out.csv", settings_for(base_url))
    row = read_rows(report.output)[0]
    assert row["status"] == "400" and "internal error" not in row["error"]


def test_concurrency_bounds_polls_too(tmp_path: Path) -> None:
    store = RunStore()
    in_flight = {"now": 0, "most": 0}

    async def create(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(store.create(request.match_info["thread_id"], body))

    async def get_run(request: web.Request) -> web.Response:
        in_flight["now"] += 1
        in_flight["most"] = max(in_flight["most"], in_flight["now"])
        await asyncio.sleep(0.05)
        in_flight["now"] -= 1
        for run in store.runs.get(request.match_info["thread_id"], []):
            run["status"] = "completed"
            return web.json_response(run)
        return web.json_response({}, status=404)

    app = app_with(create, extra=[web.get(CREATE_ROUTE + "/{run_id}", get_run)])
    source = write_sheet(tmp_path / "in.csv", [(f"t_{n}", "hi") for n in range(12)])
    with serve_app(app) as base_url:
        report = run_file(
            source, tmp_path / "out.csv", settings_for(base_url, concurrency=2, wait=True)
        )
    assert report.summary.exit_code is ExitCode.OK
    assert in_flight["most"] <= 2


def test_a_failing_journal_while_following_stops_the_job_and_writes_the_output(
    tmp_path: Path, simulator: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Journal.record

    def record(self: Journal, key: str, state: str | None, result: dict[str, Any]) -> None:
        if state == "done":
            raise sqlite3.OperationalError("disk I/O error")
        original(self, key, state, result)

    monkeypatch.setattr(Journal, "record", record)
    source = write_sheet(tmp_path / "in.csv", [(f"t_{n}", "hi") for n in range(5)])
    report = run_file(source, tmp_path / "out.csv", settings_for(simulator.base_url, wait=True))
    assert report.summary.exit_code is ExitCode.ABORTED
    assert "disk I/O error" in (report.summary.aborted or "")
    assert len(read_rows(report.output)) == 5


def test_sending_marks_are_synced_to_disk(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite", endpoint="e", source="s")
    statements: list[str] = []
    journal._db.set_trace_callback(statements.append)
    journal.mark_sending([("k", {})])
    journal.close()
    insert = next(n for n, text in enumerate(statements) if text.startswith("INSERT INTO log"))
    assert "PRAGMA synchronous=FULL" in statements[:insert]


def test_a_simulate_rerun_follows_the_pending_runs_of_the_job_before(tmp_path: Path) -> None:
    source = write_sheet(tmp_path / "in.csv", [(f"t_{n}", "hi") for n in range(3)])
    options: dict[str, Any] = {"simulate": True, "wait": True}
    first = run_file(source, tmp_path / "out.csv", settings_for("", wait_timeout=0.2, **options))
    assert first.summary.outcomes == {"pending": 3}
    again = run_file(source, tmp_path / "out.csv", settings_for("", **options))
    assert again.summary.exit_code is ExitCode.OK, again.summary.line()
    assert again.summary.sent == 0
    assert [r["run_id"] for r in read_rows(first.output)] == [
        r["run_id"] for r in read_rows(again.output)
    ]
    log = tmp_path / "in.batchrun.sqlite.simulator.jsonl"
    assert len(log.read_text(encoding="utf-8").splitlines()) == 3  # no run made twice


def test_a_journal_in_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    source = write_sheet(tmp_path / "in.csv", [("t_1", "hi")])
    missing = str(tmp_path / "missing" / "j.sqlite")
    result = cli(
        [*command(source, tmp_path / "out.csv", "http://127.0.0.1:9/v1"), "--journal", missing]
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("batchrun: cannot open the journal")


def test_a_busy_thread_holds_no_worker_and_waits_once_for_all_its_rows(
    tmp_path: Path, make_simulator: MakeSimulator
) -> None:
    sim = make_simulator(run_seconds=30)
    source = write_sheet(tmp_path / "in.csv", [("busy", "someone else's run")])
    run_file(source, tmp_path / "first.csv", settings_for(sim.base_url))
    rows = [("busy", "a"), ("busy", "b"), ("busy", "c")] + [(f"t_{n}", "x") for n in range(6)]
    write_sheet(source, [("busy", "someone else's run"), *rows])
    started = time.monotonic()
    report = run_file(
        source, tmp_path / "out.csv", settings_for(sim.base_url, concurrency=1, wait_timeout=2)
    )
    # One --wait-timeout, not one per row (three would be 6 s): 4 s to spare for a loaded
    # machine.
    assert time.monotonic() - started < 6
    out = read_rows(report.output)
    assert all(row["status"] == "200" for row in out[4:])  # the one worker went on meanwhile
    assert "still busy" in out[1]["error"] and out[1]["error"].startswith("not sent")
    assert all(row["error"].startswith("not sent") for row in out[2:4])
    assert report.summary.left == 3


@pytest.mark.parametrize("retries", [0, 1])
def test_rows_whose_retries_a_refused_connection_used_up_are_left_for_the_next_run(
    tmp_path: Path, retries: int
) -> None:
    source = write_sheet(tmp_path / "in.csv", [(f"t_{n}", "hi") for n in range(5)])
    settings = settings_for("http://127.0.0.1:9/v1", max_retries=retries)
    report = run_file(source, tmp_path / "out.csv", settings)
    out = read_rows(tmp_path / "out.csv")
    assert report.summary.sent == 0 and report.summary.left == 5
    assert [row["outcome"] for row in out] == ["not sent"] * 5
    assert any("could not connect" in row["error"] for row in out)
    # Nothing reached the server: no row failed, so the next run sends every one of them
    # without --retry-failed.
    assert not read_journal(default_journal_path(source))


def test_rows_a_refused_connection_never_reached_are_not_counted_as_sent(tmp_path: Path) -> None:
    source = write_sheet(tmp_path / "in.csv", [(f"t_{n}", "hi") for n in range(5)])
    report = run_file(source, tmp_path / "out.csv", settings_for("http://127.0.0.1:9/v1"))
    assert report.summary.sent == 0 and report.summary.left == 5
    assert "this run: 0 sent, 5 left for the next run" in report.summary.line()
