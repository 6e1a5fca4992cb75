"""A --batch job killed (SIGKILL) at each step, then run again: every part ends up with
exactly one batch and every row joined.

A small proxy between batchrun and the simulator catches each moment: it holds one
request before it reaches the simulator ("before"), or after the simulator answered it
but before the answer reaches batchrun ("after": the batch or file exists, batchrun never
learnt its id). The test kills the process while the request is held, then reruns the same
command through the same proxy (the job is its input and base URL), holding nothing.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from conftest import send
from job_support import TEST_KEY, read_rows
from loopback_server import serve_app

from batchrun.simulator import RunningSimulator

Make = Callable[..., RunningSimulator]
HEADERS = {"Authorization": f"Bearer {TEST_KEY}"}
# The CLI with two lines a part and quick polls, as `python -m batchrun` would run it.
HARNESS = (
    "import sys; from batchrun.batch import job, lines; lines.MAX_LINES = 2; "
    "job.POLL_FIRST = 0.05; from batchrun.cli.commands import main; main(sys.argv[1:])"
)
HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "host"}


class HoldingProxy:
    """Forwards every request to ``target``; holds the first one matching ``hold``."""

    def __init__(self, target: str) -> None:
        self.target = target.removesuffix("/v1")
        self.hold: tuple[str, re.Pattern[str], str] | None = None
        self.held = threading.Event()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        return app

    async def forward(self, request: web.Request) -> web.StreamResponse:
        when = self._matches(request)
        if when == "before":
            await self._held()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.target + request.path_qs,
                data=await request.read(),
                headers=headers,
            ) as answer,
        ):
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
        if when == "after":
            await self._held()
        return web.Response(status=answer.status, body=body, headers=kept)

    def _matches(self, request: web.Request) -> str | None:
        if self.hold is None or self.held.is_set():
            return None
        method, path, when = self.hold
        return when if request.method == method and path.search(request.path) else None

    async def _held(self) -> None:
        self.held.set()
        await asyncio.sleep(3600)  # until the server stops


@pytest.fixture
def proxied(make_simulator: Make) -> Iterator[tuple[RunningSimulator, HoldingProxy, str]]:
    sim = make_simulator(batch_seconds=0.5)
    proxy = HoldingProxy(sim.base_url)
    with serve_app(proxy.app()) as base_url:
        yield sim, proxy, base_url


def command(source: Path, out: Path, base_url: str) -> list[str]:
    return [
        *(sys.executable, "-c", HARNESS, "run", str(source), "-o", str(out)),
        *("--endpoint", "responses", "--batch", "--base-url", base_url, "--no-progress"),
    ]


ENV = {"OPENAI_API_KEY": TEST_KEY, "PATH": "/usr/bin:/bin"}


@pytest.mark.parametrize(
    ("method", "path", "when"),
    [
        pytest.param("POST", r"/v1/files$", "after", id="upload-answered-then-killed"),
        pytest.param("POST", r"/v1/batches$", "before", id="killed-before-the-create-arrived"),
        pytest.param("POST", r"/v1/batches$", "after", id="create-answered-then-killed"),
        pytest.param("GET", r"/v1/batches/batch_\w+$", "before", id="killed-while-following"),
        pytest.param("GET", r"/v1/files/[\w-]+/content$", "before", id="killed-while-downloading"),
    ],
)
def test_a_job_killed_at_any_step_finishes_on_rerun_with_one_batch_per_part(
    proxied: tuple[RunningSimulator, HoldingProxy, str],
    tmp_path: Path,
    method: str,
    path: str,
    when: str,
) -> None:
    sim, proxy, base_url = proxied
    source = tmp_path / "prompts.csv"
    source.write_text("model,input\n" + "".join(f"gpt-4o,Question {n}\n" for n in range(4)))
    out = tmp_path / "out.csv"
    proxy.hold = (method, re.compile(path), when)
    first = subprocess.Popen(command(source, out, base_url), env=ENV, stderr=subprocess.DEVNULL)
    try:
        assert proxy.held.wait(30), "the held request never came"
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(10)
    assert first.returncode == -signal.SIGKILL
    proxy.hold = None
    rerun = subprocess.run(
        command(source, out, base_url), env=ENV, capture_output=True, text=True, timeout=60
    )
    assert rerun.returncode == 0, rerun.stderr
    rows = read_rows(out)
    assert [row["outcome"] for row in rows] == ["ok"] * 4
    assert len({row["response_id"] for row in rows}) == 4
    stats = sim.stats()
    assert stats["batches_created"] == 2
    made = send(sim.base_url, "GET", "/batches", headers=HEADERS).json["data"]
    assert sorted(batch["metadata"]["batchrun_part"] for batch in made) == ["1", "2"]
    assert [batch["request_counts"]["total"] for batch in made] == [2, 2]
    # A lost upload answer leaves one stray file; nothing else is uploaded twice.
    assert stats["files_uploaded"] == (3 if path.startswith(r"/v1/files$") else 2)
    if when == "after" and "batches" in path:
        assert sum(stats["requests"]["GET /v1/batches"].values()) >= 1  # looked, adopted
    again = subprocess.run(
        command(source, tmp_path / "again.csv", base_url), env=ENV, capture_output=True, timeout=60
    )
    assert again.returncode == 0 and sim.stats()["batches_created"] == 2
    assert read_rows(tmp_path / "again.csv") == rows


def test_ctrl_c_while_following_exits_130_with_the_batches_recorded_for_the_rerun(
    proxied: tuple[RunningSimulator, HoldingProxy, str], tmp_path: Path
) -> None:
    sim, proxy, base_url = proxied
    source = tmp_path / "prompts.csv"
    source.write_text("model,input\n" + "".join(f"gpt-4o,Question {n}\n" for n in range(3)))
    out = tmp_path / "out.csv"
    proxy.hold = ("GET", re.compile(r"/v1/batches/batch_\w+$"), "before")
    first = subprocess.Popen(command(source, out, base_url), env=ENV, stderr=subprocess.PIPE)
    assert proxy.held.wait(30), "the job never read its batch"
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=30)
    assert first.returncode == 130, stderr
    assert b"interrupted: rerun the same command to resume" in stderr
    assert {row["outcome"] for row in read_rows(out)} == {"pending"}
    proxy.hold = None
    rerun = subprocess.run(
        command(source, out, base_url), env=ENV, capture_output=True, text=True, timeout=60
    )
    assert rerun.returncode == 0, rerun.stderr
    assert [row["outcome"] for row in read_rows(out)] == ["ok"] * 3
    assert sim.stats()["batches_created"] == 2  # two lines a part: 2 + 1
