"""Server misbehaviour the client must survive, one purpose-built handler per case.

Each case runs one sheet whose ``bad_*`` threads meet the misbehaving answer while the
``ok_*`` threads get a plain, healthy run. Whatever the bad answer, the job finishes in
bounded time without an exception, every row ends with either a run or a clear ``error``,
the healthy rows succeed, and no thread gets a second run.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from loopback_server import RunStore, app_with, serve_app

from batchrun.config import Settings, environment_settings
from batchrun.errors import ExitCode
from batchrun.jobs import run_file

KEY = "sk-test-hostile-server-0123456789"
THREADS = ["ok_1", "bad_1", "ok_2", "bad_2", "ok_3"]
BAD = [t for t in THREADS if t.startswith("bad_")]
OK = [t for t in THREADS if t.startswith("ok_")]
TIMEOUT = 1.0  # --timeout of every job here
DRIP_SECONDS = 0.2  # between two bytes of a slow answer: 200 bytes take 40 s
BIG = 11 * 1024 * 1024  # over batchrun's 10 MB answer cap

Misbehave = Callable[[web.Request, RunStore, str, dict[str, Any]], Awaitable[web.StreamResponse]]


# --- the misbehaving answers ---------------------------------------------------------------


def fixed(status: int, body: bytes, content_type: str = "application/json") -> Misbehave:
    """Always the same answer; nothing is created."""

    async def answer(
        request: web.Request, store: RunStore, thread: str, body_in: dict[str, Any]
    ) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    return answer


async def drip(request: web.Request, data: bytes, status: int = 200) -> web.StreamResponse:
    """Send headers at once, then the body a byte at a time, slower than --timeout allows."""
    response = web.StreamResponse(status=status, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    for position in range(len(data)):
        await response.write(data[position : position + 1])
        await asyncio.sleep(DRIP_SECONDS)
    await response.write_eof()
    return response


async def drip_a_created_run(
    request: web.Request, store: RunStore, thread: str, body: dict[str, Any]
) -> web.StreamResponse:
    return await drip(request, json.dumps(store.create(thread, body)).encode())


async def drip_an_error(
    request: web.Request, store: RunStore, thread: str, body: dict[str, Any]
) -> web.StreamResponse:
    error = {"error": {"message": "overloaded", "type": "server_error", "param": None}}
    return await drip(request, json.dumps(error).encode(), status=503)


async def huge_created_run(
    request: web.Request, store: RunStore, thread: str, body: dict[str, Any]
) -> web.StreamResponse:
    """A run padded past 10 MB, with a Content-Length."""
    run = store.create(thread, body)
    return web.json_response({**run, "padding": "x" * BIG})


async def huge_chunked_answer(
    request: web.Request, store: RunStore, thread: str, body: dict[str, Any]
) -> web.StreamResponse:
    """An endless-looking chunked answer (no Content-Length) past 10 MB; nothing created."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    block = b" " * (1 << 20)
    for _ in range(BIG // len(block) + 1):
        await response.write(block)
    await response.write_eof()
    return response


async def odd_ids(
    request: web.Request, store: RunStore, thread: str, body: dict[str, Any]
) -> web.StreamResponse:
    """A compatible server's run: no ``run_`` prefix, a float ``created_at``."""
    run = store.create(thread, body, id=f"{thread}-7f3a", created_at=time.time())
    return web.json_response(run)


async def odd_ids_then_500(
    request: web.Request, store: RunStore, thread: str, body: dict[str, Any]
) -> web.StreamResponse:
    """The same odd run is stored, then the answer fails: it is found by reading back."""
    store.create(thread, body, id=f"{thread}-7f3a", created_at=time.time())
    return web.json_response({"error": {"message": "upstream failed"}}, status=500)


async def gzip_lie(
    request: web.Request, store: RunStore, thread: str, body: dict[str, Any]
) -> web.StreamResponse:
    """Creates the run, then answers with a body that claims gzip and is not."""
    run = store.create(thread, body)
    return web.Response(
        body=json.dumps(run).encode(),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )


async def created_then_500_without_metadata(
    request: web.Request, store: RunStore, thread: str, body: dict[str, Any]
) -> web.StreamResponse:
    """A server that drops metadata stores the run, then fails the answer."""
    store.keep_metadata = False
    store.create(thread, body)
    error = {"error": {"message": "The server had an error", "type": "server_error"}}
    return web.json_response(error, status=500)


HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
FASTAPI_422 = json.dumps(
    {
        "detail": [
            {
                "loc": ["body", "assistant_id"],
                "msg": "field required",
                "type": "value_error.missing",
            }
        ]
    }
).encode()
RATE_LIMIT = json.dumps(
    {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
).encode()


async def retry_tomorrow(
    request: web.Request, store: RunStore, thread: str, body: dict[str, Any]
) -> web.StreamResponse:
    return web.Response(
        status=429,
        body=RATE_LIMIT,
        headers={"Content-Type": "application/json", "Retry-After": "86400"},
    )


# --- running a job against them ------------------------------------------------------------


def hostile_app(misbehave: Misbehave, store: RunStore) -> web.Application:
    async def create(request: web.Request) -> web.StreamResponse:
        thread = request.match_info["thread_id"]
        store.posts.append(thread)
        body = await request.json()
        if thread.startswith("bad_"):
            return await misbehave(request, store, thread, body)
        return web.json_response(store.create(thread, body))

    return app_with(create, store)


@dataclass
class Job:
    rows: list[dict[str, str]]
    exit_code: ExitCode
    notes: tuple[str, ...]
    reconciled: int
    seconds: float
    store: RunStore

    def row(self, thread: str) -> dict[str, str]:
        return next(r for r in self.rows if r["thread_id"] == thread)

    def posts(self, thread: str) -> int:
        return self.store.posts.count(thread)

    def runs(self, thread: str) -> int:
        return len(self.store.runs.get(thread, []))


def write_sheet(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["thread_id", "assistant_id"])
        writer.writerows([thread, "asst_1"] for thread in THREADS)
    return path


def run_job(
    tmp_path: Path, misbehave: Misbehave, *, keep_metadata: bool = True, **options: Any
) -> Job:
    store = RunStore(keep_metadata=keep_metadata)
    with serve_app(hostile_app(misbehave, store)) as base_url:
        settings = Settings(
            **environment_settings(
                {"base_url": base_url, "max_retries": 1, "timeout": TIMEOUT, **options},
                {"OPENAI_API_KEY": KEY},
            )
        )
        started = time.monotonic()
        report = run_file(write_sheet(tmp_path / "in.csv"), tmp_path / "out.csv", settings)
        seconds = time.monotonic() - started
    with report.output.open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    summary = report.summary
    return Job(rows, summary.exit_code, summary.notes, summary.reconciled, seconds, store)


@pytest.fixture(autouse=True)
def no_client_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Nothing on the client side may log an error (unretrieved task exceptions, leaks)."""
    with caplog.at_level(logging.WARNING):
        yield
    client = [r for r in caplog.records if not r.name.startswith(("aiohttp.server", "aiohttp.web"))]
    assert not client, [r.getMessage() for r in client]


def assert_healthy_rows_succeeded(job: Job) -> None:
    assert [r["thread_id"] for r in job.rows] == THREADS
    for thread in OK:
        row = job.row(thread)
        assert (row["status"], row["error"]) == ("200", ""), row
        assert row["run_id"] == f"run_{thread}_1" and job.runs(thread) == 1


# --- the cases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fails:
    """The bad rows fail: their status, words their error must hold, POSTs per bad row."""

    status: str
    words: tuple[str, ...]
    posts: int = 1


FAILING = [
    pytest.param(
        fixed(200, b"Run queued, thanks!", "text/plain"),
        Fails("200", ("not a run", "--retry-failed")),
        id="200-with-a-non-json-body",
    ),
    pytest.param(fixed(200, b""), Fails("200", ("not a run",)), id="200-with-an-empty-body"),
    pytest.param(
        fixed(200, b'{"ok": true}'), Fails("200", ("not a run",)), id="200-json-object-not-a-run"
    ),
    pytest.param(fixed(200, b"[]"), Fails("200", ("not a run",)), id="200-json-array"),
    pytest.param(fixed(200, b"null"), Fails("200", ("not a run",)), id="200-json-null"),
    pytest.param(fixed(200, b'"run_1"'), Fails("200", ("not a run",)), id="200-json-string"),
    pytest.param(
        fixed(200, b'{"id": 5, "status": "queued"}'),
        Fails("200", ("not a run",)),
        id="200-run-with-a-numeric-id",
    ),
    pytest.param(
        fixed(200, b'{"id": "run_1"}'), Fails("200", ("not a run",)), id="200-run-without-status"
    ),
    pytest.param(
        fixed(200, b'{"id": "run_\xff\xfe", "status": '),
        Fails("200", ("not a run",)),
        id="200-invalid-utf8-and-json",
    ),
    pytest.param(
        fixed(502, HTML_502, "text/html"),
        Fails("502", ("HTTP 502", "Bad Gateway", "after 2 attempts"), posts=2),
        id="html-502-from-a-proxy",
    ),
    pytest.param(
        fixed(422, FASTAPI_422),
        Fails("422", ("HTTP 422", "assistant_id", "field required")),
        id="422-fastapi-detail-list",
    ),
    pytest.param(
        fixed(404, b'{"detail": "Not Found"}'),
        Fails("404", ("HTTP 404: Not Found",)),
        id="404-fastapi-detail-string",
    ),
    pytest.param(
        huge_chunked_answer,
        Fails("", ("larger than 10 MB", "after 2 attempts"), posts=2),
        id="chunked-body-over-10mb",
    ),
    pytest.param(
        drip_an_error,
        Fails("", ("timed out", "after 2 attempts"), posts=2),
        id="slow-drip-error-answer",
    ),
]


@pytest.mark.parametrize(("misbehave", "expected"), FAILING)
def test_a_bad_answer_fails_its_row_clearly_and_the_job_goes_on(
    tmp_path: Path, misbehave: Misbehave, expected: Fails
) -> None:
    job = run_job(tmp_path, misbehave)
    assert_healthy_rows_succeeded(job)
    for thread in BAD:
        row = job.row(thread)
        assert row["status"] == expected.status, row
        assert row["run_id"] == "" and row["run_status"] == ""
        error = row["error"]
        assert all(word in error for word in expected.words), error
        assert "\n" not in error and "\r" not in error and len(error) < 600, error
        assert job.posts(thread) == expected.posts
        assert job.runs(thread) == 0
    assert job.exit_code is ExitCode.ROWS_FAILED
    assert job.seconds < 15


SUCCEEDING = [
    pytest.param(odd_ids, False, id="ids-without-run-prefix-and-float-created_at"),
    pytest.param(odd_ids_then_500, True, id="odd-ids-read-back-after-a-500"),
    pytest.param(huge_created_run, True, id="created-run-answer-over-10mb"),
    pytest.param(drip_a_created_run, True, id="slow-drip-of-a-created-run"),
    pytest.param(gzip_lie, True, id="created-run-with-a-false-gzip-encoding"),
]


@pytest.mark.parametrize(("misbehave", "reconciled"), SUCCEEDING)
def test_an_odd_answer_to_a_created_run_still_gives_that_run_exactly_once(
    tmp_path: Path, misbehave: Misbehave, reconciled: bool
) -> None:
    job = run_job(tmp_path, misbehave)
    assert_healthy_rows_succeeded(job)
    for thread in BAD:
        row = job.row(thread)
        assert row["status"] == "200", row
        # A run made although its create was answered with an error says so on the row.
        ghost = "the create answered HTTP 500, but the run was made (found by its run tag)"
        assert row["error"] == (ghost if misbehave is odd_ids_then_500 else ""), row
        assert row["run_id"] == job.store.runs[thread][0]["id"]
        assert job.posts(thread) == 1 and job.runs(thread) == 1
    assert job.exit_code is ExitCode.OK
    assert job.reconciled == (len(BAD) if reconciled else 0)
    assert job.seconds < 15


def test_a_server_dropping_metadata_never_gets_a_second_run_after_a_500(tmp_path: Path) -> None:
    # The server drops metadata from the start (a server seen keeping tags, then showing
    # runs without them, would be showing another client's runs).
    job = run_job(tmp_path, created_then_500_without_metadata, keep_metadata=False)
    assert [r["thread_id"] for r in job.rows] == THREADS
    for thread in BAD:
        row = job.row(thread)
        assert row["status"] == "500"
        assert "--retry-failed" in row["error"] and "metadata" in row["error"], row["error"]
        assert job.store.runs[thread][0]["id"] in row["error"]
        assert job.posts(thread) == 1 and job.runs(thread) == 1
    assert len(job.notes) == 1 and "metadata" in job.notes[0]
    assert job.exit_code is ExitCode.ROWS_FAILED


def test_a_429_asking_for_a_day_says_so_and_the_next_run_sends_the_row(tmp_path: Path) -> None:
    limited = {"on": True}

    async def day_then_fine(
        request: web.Request, store: RunStore, thread: str, body: dict[str, Any]
    ) -> web.StreamResponse:
        if limited["on"]:
            return await retry_tomorrow(request, store, thread, body)
        return web.json_response(store.create(thread, body))

    store = RunStore()
    source, output = write_sheet(tmp_path / "in.csv"), tmp_path / "out.csv"
    with serve_app(hostile_app(day_then_fine, store)) as base_url:
        settings = Settings(
            **environment_settings(
                {"base_url": base_url, "max_retries": 1, "timeout": TIMEOUT},
                {"OPENAI_API_KEY": KEY},
            )
        )
        first = run_file(source, output, settings)
        with output.open(newline="", encoding="utf-8") as stream:
            errors = [r["error"] for r in csv.DictReader(stream) if r["thread_id"] in BAD]
        limited["on"] = False
        second = run_file(source, output, settings)
    # The whole job stops (exit 3) instead of failing each row on a 429 of its own.
    assert first.summary.exit_code is ExitCode.ABORTED
    assert all("86400" in error and "rerun" in error for error in errors), errors
    assert second.summary.exit_code is ExitCode.OK
    assert all(len(store.runs.get(thread, [])) == 1 for thread in THREADS)
