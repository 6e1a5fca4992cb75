"""Small helpers shared by the tests that run whole jobs: settings with a test key, CSV I/O,
and :func:`wait_for`, which waits for a state a job reaches instead of for a fixed time."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchrun.config import Settings, environment_settings

TEST_KEY = "sk-test-0123456789abcdef"


def settings_for(base_url: str, key: str = TEST_KEY, **options: Any) -> Settings:
    """Settings sending to ``base_url`` with ``key`` as if read from OPENAI_API_KEY."""
    return Settings(
        **environment_settings({"base_url": base_url, **options}, {"OPENAI_API_KEY": key})
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    """A CSV output's rows as dicts of text."""
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def command(source: Path, output: Path, base_url: str, *extra: str) -> list[str]:
    """``python -m batchrun run SOURCE -o OUTPUT --base-url URL --no-progress EXTRA...``."""
    return [
        *(sys.executable, "-m", "batchrun", "run", str(source), "-o", str(output)),
        *("--base-url", base_url, "--no-progress", *extra),
    ]


def wait_for(
    reached: Callable[[], bool],
    what: str,
    *,
    process: subprocess.Popen[Any] | None = None,
    timeout: float = 60.0,
) -> None:
    """Poll until ``reached()``: a marker the job reaches (a simulator counter, a journal
    state), never a time, so a loaded machine only makes the wait longer. Fails naming
    ``what`` after ``timeout`` seconds, or at once if ``process`` ended first."""
    deadline = time.monotonic() + timeout
    while not reached():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the job ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout:.0f} s: {what}")
        time.sleep(0.02)


def counted(simulator: Any, at_least: int, counter: str = "runs_created") -> Callable[[], bool]:
    """A marker for :func:`wait_for`: the simulator's ``counter`` has reached ``at_least``."""
    return lambda: int(simulator.stats()[counter]) >= at_least


def killed_once(simulator: Any, args: list[str], counter: str, at_least: int) -> int:
    """Run the job ``args`` (with OPENAI_API_KEY set) and kill -9 it once the simulator's
    ``counter`` reaches ``at_least``; the counter after the kill."""
    env = {**os.environ, "OPENAI_API_KEY": TEST_KEY}
    job = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(counted(simulator, at_least, counter), f"{at_least} {counter}", process=job)
    finally:
        job.kill()
        job.wait()
    return int(simulator.stats()[counter])


def signal_taken(process: subprocess.Popen[Any], signum: int) -> Callable[[], bool]:
    """A marker for :func:`wait_for`: ``process`` has no ``signum`` pending any more, so a
    second one sent now is a second signal, never merged with the first by the kernel
    (however late a loaded machine runs the process). Read from ``/proc/PID/status``
    (Linux); where there is none, it holds at once."""
    status = Path(f"/proc/{process.pid}/status")
    bit = 1 << (signum - 1)

    def taken() -> bool:
        try:
            lines = status.read_text(encoding="ascii").splitlines()
        except OSError:
            return True
        pending = (line.split()[1] for line in lines if line.startswith(("ShdPnd:", "SigPnd:")))
        return not any(int(mask, 16) & bit for mask in pending)

    return taken
