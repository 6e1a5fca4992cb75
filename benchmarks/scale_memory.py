"""Peak memory of ``batchrun run`` as the sheet grows: the curve should be flat.

    python benchmarks/scale_memory.py [--rows 30000 300000 1000000] [--format csv|jsonl]
                                      [--concurrency 64] [--endpoint runs|responses|chat]

Each size is one fresh job (CSV or JSONL in, the same format out) against a simulator in
its own process at zero latency (runs finish at once); the job's own peak RSS comes from
``os.wait4`` (see ``_common.py``), so the simulator, which keeps every run it made, does
not blur it. Every round checks that exactly one run a row was created. The simulator keeps
every run it makes (about 10 KB each), so past a few million rows use ``--endpoint chat``:
chat completions without ``store`` are kept by nobody, and the job's memory is the same story.
Targets (issue 26, DESIGN.md "Performance"): within 1.3x of the 30,000-row peak at every
size, under 400 MB at 300,000 rows and under 500 MB at 10,000,000.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from pathlib import Path

import orjson
from _common import Simulator, run_args, run_batchrun, table, write_csv


def write_jsonl(source: Path, target: Path) -> Path:
    """The CSV's rows as JSON objects, one a line."""
    with source.open(newline="", encoding="utf-8") as rows, target.open("wb") as out:
        for row in csv.DictReader(rows):
            out.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
    return target


def main() -> None:
    """Run one job per size, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[30_000, 300_000, 1_000_000])
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--endpoint", choices=("runs", "responses", "chat"), default="runs")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds per job")
    args = parser.parse_args()
    table_rows = []
    first = 0.0
    with Simulator() as sim:
        for rows in args.rows:
            with tempfile.TemporaryDirectory(prefix="brbench-") as scratch:
                source = write_csv(Path(scratch) / "in.csv", rows, endpoint=args.endpoint)
                if args.format == "jsonl":
                    source = write_jsonl(source, Path(scratch) / "in.jsonl")
                output = source.with_name(f"out.{args.format}")
                sim.reset()
                flags = ("--concurrency", str(args.concurrency), "--endpoint", args.endpoint)
                job = run_batchrun(
                    run_args(source, output, sim.base_url, *flags), timeout=args.timeout
                )
                sim.check(rows, f"{rows:,} rows", args.endpoint)
            first = first or job.max_rss_mb
            table_rows.append(
                [
                    f"{rows:,}",
                    job.max_rss_mb,
                    f"{job.max_rss_mb / first:.2f}x",
                    job.wall,
                    rows / job.wall,
                    job.cpu_user + job.cpu_sys,
                ]
            )
            print(f"{rows:,} rows: {job.max_rss_mb:.0f} MB, {job.wall:.0f} s", flush=True)
    print(
        f"{args.format.upper()} in and out, --endpoint {args.endpoint}, concurrency "
        f"{args.concurrency}, zero latency "
        f"(load avg {os.getloadavg()[0]:.1f})"
    )
    print(
        table(
            ["rows", "peak RSS MB", "vs first", "wall s", "rows/s", "CPU s"],
            table_rows,
        )
    )


if __name__ == "__main__":
    main()
