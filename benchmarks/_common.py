"""Shared pieces of the sending benchmarks: the simulator subprocess, input CSVs, timed CLI runs.

The simulator always runs as its own process (``python -m batchrun serve``), so server and
client each get a core instead of sharing one GIL. A batchrun job runs as a subprocess too,
through ``_probe.py`` (see there), which runs the CLI exactly as the ``batchrun`` console
script does and notes phase timings.

The child's own resource usage (peak RSS, CPU) comes from ``os.wait4``, so a simulator
child running alongside does not blur it.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

Bodies = list[tuple[str, dict[str, Any]]]  # (request path, body)
PYTHON = sys.executable
PROBE = Path(__file__).with_name("_probe.py")
TREE_PROBE = Path(__file__).with_name("_probe_tree.py")
API_KEY = "sk-bench"
ASSISTANT = "asst_bench"
INSTRUCTIONS = "Summarise the row in one sentence."
COLUMNS = ["thread_id", "assistant_id", "instructions", "tools", "metadata.team"]
# --endpoint responses: one independent prompt a row.
RESPONSES_COLUMNS = ["model", "instructions", "input", "metadata.team"]
# --endpoint chat: one independent completion a row (a system and a user message), not
# stored, so without metadata or run tag (OpenAI takes metadata only on stored ones).
CHAT_COLUMNS = ["model", "system", "user"]
MODEL = "gpt-4o"
# What the simulator counts as created, and as created twice, per endpoint.
CREATED = {
    "runs": ("runs_created", "duplicate_runs"),
    "responses": ("responses_created", "duplicate_responses"),
    "chat": ("chat_completions_created", "duplicate_chat_completions"),
}
# What batchrun sends besides Content-Length and Host (see batchrun.sending.client.ApiClient).
HEADERS = {
    "Authorization": f"Bearer {API_KEY}",
    "OpenAI-Beta": "assistants=v2",
    "Content-Type": "application/json",
    "User-Agent": "batchrun/0.1.0",
}
RESPONSES_HEADERS = {name: value for name, value in HEADERS.items() if name != "OpenAI-Beta"}


# -- the simulator ------------------------------------------------------------------------


class Simulator:
    """``python -m batchrun serve`` in a subprocess; a context manager."""

    def __init__(self, *args: str) -> None:
        self.args = ["--run-seconds", "0", *args]
        self.base_url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Simulator:
        self._process = subprocess.Popen(
            [PYTHON, "-m", "batchrun", "serve", "--port", "0", *self.args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        assert self._process.stderr is not None
        banner = self._process.stderr.readline()
        match = re.search(r"(http://\S+/v1)", banner)
        if match is None:
            self.stop()
            raise SystemExit(f"simulator did not start: {banner!r}")
        self.base_url = match.group(1)
        self.root = self.base_url.removesuffix("/v1")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the simulator (SIGTERM, then SIGKILL after 10 s)."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def stats(self) -> dict[str, Any]:
        """``GET /_simulator/stats``."""
        with urllib.request.urlopen(self.root + "/_simulator/stats", timeout=30) as answer:
            return json.load(answer)

    def reset(self) -> None:
        """``POST /_simulator/reset``: forget threads, runs and counts; refill buckets."""
        request = urllib.request.Request(self.root + "/_simulator/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def check(self, expected: int, label: str, endpoint: str = "runs") -> dict[str, Any]:
        """The stats, after checking exactly ``expected`` runs (or responses) were created,
        none twice."""
        stats = self.stats()
        created, twice = CREATED[endpoint]
        if stats[created] != expected or stats[twice]:
            raise SystemExit(
                f"{label}: {created}={stats[created]} (expected {expected}), "
                f"{twice}={stats[twice]}, requests={stats['requests']}"
            )
        return stats


# -- inputs -------------------------------------------------------------------------------


def thread_id(index: int, prefix: str = "thread_b") -> str:
    """A distinct, valid thread id per row."""
    return f"{prefix}{index:08d}"


def write_csv(path: Path, rows: int, prefix: str = "thread_b", endpoint: str = "runs") -> Path:
    """An input sheet of ``rows`` rows, each on its own thread (runs) or on its own
    (responses and chat: no conversation)."""
    with path.open("w", newline="", encoding="utf-8") as stream:
        out = csv.writer(stream)
        if endpoint == "responses":
            out.writerow(RESPONSES_COLUMNS)
            for i in range(rows):
                out.writerow([MODEL, INSTRUCTIONS, prompt(i, prefix), f"team-{i % 7}"])
            return path
        if endpoint == "chat":
            out.writerow(CHAT_COLUMNS)
            for i in range(rows):
                out.writerow([MODEL, INSTRUCTIONS, prompt(i, prefix)])
            return path
        out.writerow(COLUMNS)
        for i in range(rows):
            out.writerow(
                [thread_id(i, prefix), ASSISTANT, INSTRUCTIONS, "code_interpreter", f"team-{i % 7}"]
            )
    return path


def prompt(index: int, prefix: str = "thread_b") -> str:
    """A distinct prompt per row (--endpoint responses and chat)."""
    return f"Ticket {prefix}{index:08d}: the printer is on fire."


def request_bodies(rows: int, prefix: str = "thread_b", endpoint: str = "runs") -> Bodies:
    """(path, body) per row: the same JSON batchrun sends for :func:`write_csv`'s rows.

    The run tag is computed with batchrun's own key function (outside any timing), so a
    baseline sends byte-for-byte the bodies batchrun sends.
    """
    from batchrun.sending.journal_schema import body_digest, row_key

    bodies: Bodies = []
    if endpoint == "responses":
        for i in range(rows):
            body: dict[str, Any] = {
                "model": MODEL,
                "instructions": INSTRUCTIONS,
                "input": prompt(i, prefix),
                "metadata": {"team": f"team-{i % 7}"},
            }
            key = row_key(body_digest("responses", "", body), 1)
            body["metadata"] = {**body["metadata"], "batchrun_key": key}
            bodies.append(("/responses", body))
        return bodies
    if endpoint == "chat":
        for i in range(rows):
            body = {
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": INSTRUCTIONS},
                    {"role": "user", "content": prompt(i, prefix)},
                ],
            }
            bodies.append(("/chat/completions", body))
        return bodies
    for i in range(rows):
        tid = thread_id(i, prefix)
        body = {
            "assistant_id": ASSISTANT,
            "instructions": INSTRUCTIONS,
            "tools": [{"type": "code_interpreter"}],
            "metadata": {"team": f"team-{i % 7}"},
        }
        key = row_key(body_digest("v2", tid, body), 1)
        body["metadata"] = {**body["metadata"], "batchrun_key": key}
        bodies.append((f"/threads/{tid}/runs", body))
    return bodies


# -- the baseline ---------------------------------------------------------------------------


def send_bare(sim: Simulator, bodies: Bodies, concurrency: int) -> float:
    """Send ``bodies`` with a bare aiohttp loop (``concurrency`` workers, one session); seconds.

    The baseline batchrun is measured against: same bodies, same headers, nothing else.
    """
    return send_bare_to(sim.base_url, bodies, concurrency)


async def _bare(base_url: str, bodies: Bodies, concurrency: int) -> None:
    pending = iter(bodies)
    failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        for path, body in pending:
            headers = HEADERS if path.startswith("/threads/") else RESPONSES_HEADERS
            async with session.post(
                f"{base_url}{path}", data=orjson.dumps(body), headers=headers
            ) as response:
                orjson.loads(await response.read())
                failures += response.status != 200

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, skip_auto_headers=("User-Agent",)
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    if failures:
        raise SystemExit(f"bare loop: {failures} requests did not answer 200")


def bare_seconds(base_url: str, rows: int, concurrency: int, endpoint: str = "runs") -> float:
    """The bare loop's sending time for :func:`request_bodies` ``(rows)``; for a fresh process."""
    return send_bare_to(base_url, request_bodies(rows, endpoint=endpoint), concurrency)


def send_bare_to(base_url: str, bodies: Bodies, concurrency: int) -> float:
    """:func:`send_bare` against a base URL; seconds."""
    started = time.perf_counter()
    asyncio.run(_bare(base_url, bodies, concurrency))
    return time.perf_counter() - started


def in_fresh_process(function: str, *args: object) -> float:
    """Call ``module:function(*args)`` in a new interpreter; the seconds it returns.

    A baseline in the benchmark's own process runs at that process's speed: after
    ``import openai`` (for the SDK round) the bare loop ran 25% faster, as the import's
    long-lived objects made Python's full collections rarer. A fresh interpreter is how a
    user's own script, and batchrun, run.
    """
    module, name = function.split(":")
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        f"from {module} import {name}\n"
        f"print({name}(*{args!r}))\n"
    )
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"{function}{args} failed: {done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


# -- timed batchrun jobs --------------------------------------------------------------------


@dataclass
class JobTiming:
    """One batchrun subprocess: wall time, its own phases, and its resource usage."""

    wall: float  # parent's view: process start to exit
    phases: dict[str, float]  # child's view, see _probe()
    max_rss_mb: float
    cpu_user: float
    cpu_sys: float
    exit_code: int
    stderr: str
    stamps: list[float] = field(default_factory=list)

    @property
    def in_process(self) -> float:
        """Seconds from the child's first line to its exit: wall minus interpreter start."""
        return self.phases.get("total", float("nan"))

    @property
    def send(self) -> float:
        """The sending phase: the job summary's ``seconds``."""
        return self.phases.get("send", float("nan"))


def run_args(source: Path, output: Path, base_url: str, *extra: str) -> list[str]:
    """``batchrun run`` arguments for one fresh job against ``base_url``."""
    command = ["run", str(source), "-o", str(output), "--base-url", base_url]
    return [*command, "--no-progress", "--fresh", *extra]


def job_round(
    sim: Simulator,
    source: Path,
    rows: int,
    label: str,
    *flags: str,
    stamps: bool = False,
    timeout: float = 170,
    endpoint: str = "runs",
    tree: Path | None = None,
) -> tuple[JobTiming, dict[str, Any]]:
    """One checked round: reset the simulator, run batchrun on ``source`` (output beside it),
    check that exactly ``rows`` runs were created; the timing and the simulator's stats.
    ``tree``: run the batchrun of that tree instead of this checkout's, with a journal of
    its own (trees of different journal versions refuse each other's)."""
    sim.reset()
    output = source.with_name("out.csv")
    if tree is not None:
        journal = source.with_name(f"{source.stem}.{tree.name}.batchrun.sqlite")
        flags = (*flags, "--journal", str(journal))
    job = run_batchrun(
        run_args(source, output, sim.base_url, *flags), stamps=stamps, timeout=timeout, tree=tree
    )
    return job, sim.check(rows, label, endpoint)


def run_batchrun(
    cli_args: Sequence[str],
    *,
    stamps: bool = False,
    timeout: float = 170,
    tree: Path | None = None,
) -> JobTiming:
    """Run ``batchrun <cli_args>`` in a subprocess through the probe; its timings.
    ``tree``: the batchrun of that tree (see ``_probe_tree.py``)."""
    env = {**os.environ, "OPENAI_API_KEY": API_KEY}
    probe = PROBE
    if tree is not None:
        env["BATCHRUN_TREE"], probe = str(tree), TREE_PROBE
    with tempfile.TemporaryDirectory(prefix="brbench-") as scratch:
        report = Path(scratch) / "report.json"
        err_path = Path(scratch) / "stderr.txt"
        command = [PYTHON, str(probe), str(report), *(["--stamps"] if stamps else []), "--"]
        with err_path.open("w") as err:
            started = time.perf_counter()
            process = subprocess.Popen(
                [*command, *cli_args], stdout=subprocess.DEVNULL, stderr=err, env=env
            )
            deadline = started + timeout
            while True:
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    process.kill()
                    pid, status, usage = os.wait4(process.pid, 0)
                    break
                time.sleep(0.002)
            wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        data = json.loads(report.read_text()) if report.exists() else {}
        stderr = err_path.read_text()
    if process.returncode != 0:
        raise SystemExit(f"batchrun exited {process.returncode}: {stderr[-2000:]}")
    return JobTiming(
        wall=wall,
        phases=data.get("phases", {}),
        max_rss_mb=usage.ru_maxrss / 1024,
        cpu_user=usage.ru_utime,
        cpu_sys=usage.ru_stime,
        exit_code=process.returncode,
        stderr=stderr,
        stamps=data.get("stamps", []),
    )


# -- small statistics and tables --------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median (NaN for an empty sequence)."""
    return statistics.median(values) if values else float("nan")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain, right-aligned text table."""
    cells = [list(map(str, header))] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
