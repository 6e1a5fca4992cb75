"""Peak memory and time of a large ``batchrun run``: 200,000 rows at zero latency.

    /work/venv/bin/python benchmarks/run_memory.py [--rows 200000] [--concurrency 64] [--repeat 1]

The simulator runs in its own process (zero latency, runs finish at once); the batchrun
job is a subprocess whose own peak RSS comes from ``os.wait4`` (the ``ru_maxrss`` that
``getrusage(RUSAGE_CHILDREN)`` would report, but for that child alone, so the simulator
process does not blur it). Also shown: its CPU time and phases.
Target (DESIGN.md, "Performance"): peak RSS under 1 GB.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _common import Simulator, job_round, median, table, write_csv


def main() -> None:
    """Run the job(s), print the table and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=170.0, help="seconds per job")
    args = parser.parse_args()
    rss, walls, table_rows = [], [], []
    with tempfile.TemporaryDirectory(prefix="brbench-") as scratch, Simulator() as sim:
        source = write_csv(Path(scratch) / "in.csv", args.rows)
        for round_no in range(1, args.repeat + 1):
            job, _ = job_round(
                sim,
                source,
                args.rows,
                f"round {round_no}",
                "--concurrency",
                str(args.concurrency),
                timeout=args.timeout,
            )
            rss.append(job.max_rss_mb)
            walls.append(job.wall)
            phases = job.phases
            table_rows.append(
                [
                    round_no,
                    job.max_rss_mb,
                    job.wall,
                    args.rows / job.wall,
                    job.cpu_user + job.cpu_sys,
                    phases["prepared"],
                    phases["send"],
                    phases["written"] - phases["sent"],
                ]
            )
    table_rows.append(
        ["median", median(rss), median(walls), args.rows / median(walls), "", "", "", ""]
    )
    print(
        f"{args.rows:,} rows, concurrency {args.concurrency}, zero latency "
        f"(load avg {os.getloadavg()[0]:.1f})"
    )
    print(
        table(
            [
                "round",
                "peak RSS MB",
                "wall s",
                "rows/s",
                "CPU s",
                "prepared s",
                "send s",
                "write s",
            ],
            table_rows,
        )
    )
    print("target: peak RSS < 1,024 MB")


if __name__ == "__main__":
    main()
