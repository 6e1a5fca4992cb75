"""Whole commits against each other: `batchrun run` wall time and `batchrun validate` start.

    git archive COMMIT batchrun | tar -x -C /tmp/old     # a tree to compare with
    python benchmarks/trees.py /tmp/old .  [--rows 20000] [--rounds 4]

For a reshaping that must change no behaviour and cost nothing (issue 22), whatever the
machine's speed that day: every tree runs the same job in the same rounds, in turns
(first and last swap each round), against one simulator in its own process at zero
latency, beside the bare aiohttp loop in a fresh interpreter. Each tree is put first on
``PYTHONPATH`` (and run from a scratch folder: ``-m`` and ``-c`` put the working folder
ahead of it), so it runs with this environment's dependencies, and works with any
batchrun old enough to have a ``batchrun`` package (the probes of run_overhead.py need the
current module layout). Then each tree's ``batchrun validate`` of the sample sheet is run
11 times (wall time, its median), and the modules it loads are counted, aiohttp named.
The first round of the jobs is a warm-up and is left out of the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Simulator, in_fresh_process, table, write_csv

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "threads.csv"
COUNT_MODULES = (
    "import runpy, sys\n"
    "sys.argv = ['batchrun', 'validate', {sample!r}, '-o', {out!r}, '-q']\n"
    "try:\n    runpy.run_module('batchrun', run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "print(len(sys.modules), 'aiohttp' in sys.modules)\n"
)


def tree_env(tree: str) -> dict[str, str]:
    """The environment that runs ``tree``'s batchrun (a key: the simulator takes any)."""
    return {**os.environ, "PYTHONPATH": str(Path(tree).resolve()), "OPENAI_API_KEY": "sk-bench"}


def job_seconds(tree: str, source: Path, base_url: str) -> float:
    """One fresh `batchrun run` of ``source`` by ``tree``; wall seconds."""
    output = source.with_name("out.csv")
    for left in source.parent.glob(f"{source.stem}.batchrun.sqlite*"):
        left.unlink()  # a tree refuses a newer tree's journal even with --fresh
    command = [sys.executable, "-m", "batchrun", "run", str(source), "-o", str(output)]
    command += ["--base-url", base_url, "--no-progress", "--fresh", "--concurrency", "64"]
    started = time.perf_counter()
    done = subprocess.run(
        command, env=tree_env(tree), cwd=source.parent, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{tree}: batchrun exited {done.returncode}: {done.stderr[-500:]}")
    return seconds


def validate_start(tree: str, scratch: Path) -> tuple[float, str]:
    """``tree``'s `batchrun validate` of the sample sheet: median wall seconds of 11, and
    the modules it loads (with whether aiohttp is one)."""
    out = str(scratch / "validated.csv")
    command = [sys.executable, "-m", "batchrun", "validate", str(SAMPLE), "-o", out, "-q"]
    walls = []
    for _ in range(11):
        started = time.perf_counter()
        subprocess.run(command, env=tree_env(tree), cwd=scratch, capture_output=True, check=False)
        walls.append(time.perf_counter() - started)
    code = COUNT_MODULES.format(sample=str(SAMPLE), out=out)
    counted = subprocess.run(
        [sys.executable, "-c", code],
        env=tree_env(tree),
        cwd=scratch,
        capture_output=True,
        text=True,
    ).stdout.split()
    if len(counted) != 2:  # batchrun before issue 22 left through os._exit
        return statistics.median(walls), "not counted"
    modules = f"{counted[0]} (aiohttp: {'yes' if counted[1] == 'True' else 'no'})"
    return statistics.median(walls), modules


def main() -> None:
    """Run the rounds, print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="folders holding a batchrun package")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {tree: [] for tree in args.trees}
    bare: list[float] = []
    with Simulator() as sim, tempfile.TemporaryDirectory(prefix="brbench-") as folder:
        scratch = Path(folder)
        source = write_csv(scratch / "in.csv", args.rows)
        for number in range(args.rounds):
            for tree in args.trees if number % 2 == 0 else args.trees[::-1]:
                sim.reset()
                walls[tree].append(job_seconds(tree, source, sim.base_url))
                sim.check(args.rows, f"{tree}, round {number + 1}")
            sim.reset()
            bare.append(in_fresh_process("_common:bare_seconds", sim.base_url, args.rows, 64))
        starts = {tree: validate_start(tree, scratch) for tree in args.trees}
    bare_median = statistics.median(bare[1:] or bare)
    rows = []
    for tree in args.trees:
        median = statistics.median(walls[tree][1:] or walls[tree])
        rounds = ", ".join(f"{args.rows / wall:,.0f}" for wall in walls[tree])
        rows.append([tree, args.rows / median, bare_median / median, rounds, *starts[tree]])
    print(
        f"{args.rows:,} rows (runs), concurrency 64, zero latency; bare loop "
        f"{args.rows / bare_median:,.0f} rows/s; load avg {os.getloadavg()[0]:.1f}"
    )
    header = ["tree", "rows/s", "A/B", "rounds rows/s", "validate s", "validate modules"]
    print(table(header, rows))


if __name__ == "__main__":
    main()
