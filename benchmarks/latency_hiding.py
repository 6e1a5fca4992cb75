"""Whether batchrun hides server latency: 2,000 rows, 250 ms a request, concurrency 100.

    /work/venv/bin/python benchmarks/latency_hiding.py [--rows 2000] [--latency 250]
        [--concurrency 100] [--repeat 3]

The simulator runs in its own process with ``--latency 250`` (every answer 250 ms late);
``batchrun run --concurrency 100`` sends the rows, one thread each. The ideal is
rows / concurrency x latency = 20 x 0.25 s = 5 s. Shown per round: the whole job's wall
time (as a user sees it, interpreter start included), the job without interpreter start
(``in-proc``), and its sending phase (the summary's seconds); and for reference, a bare
aiohttp loop sending the same requests at the same concurrency from this process (it shows
what the simulator and loopback allow; interleaved with batchrun's rounds).
Target (DESIGN.md, "Performance"): within 1.1x of the ideal, i.e. <= 5.5 s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _common import (
    Simulator,
    job_round,
    median,
    request_bodies,
    send_bare,
    table,
    write_csv,
)


def main() -> None:
    """Run the rounds, print the table and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000)
    parser.add_argument("--latency", type=float, default=250.0, help="ms per answer")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    ideal = args.rows / args.concurrency * args.latency / 1000
    walls, inprocs, sends, bares, table_rows = [], [], [], [], []
    bodies = request_bodies(args.rows)
    with (
        tempfile.TemporaryDirectory(prefix="brbench-") as scratch,
        Simulator("--latency", f"{args.latency:g}") as sim,
    ):
        source = write_csv(Path(scratch) / "in.csv", args.rows)
        for round_no in range(1, args.repeat + 1):
            job, _ = job_round(
                sim, source, args.rows, f"round {round_no}", "--concurrency", str(args.concurrency)
            )
            sim.reset()
            bares.append(send_bare(sim, bodies, args.concurrency))
            sim.check(args.rows, f"bare loop round {round_no}")
            walls.append(job.wall)
            inprocs.append(job.in_process)
            sends.append(job.send)
            table_rows.append(
                [
                    round_no,
                    job.wall,
                    job.wall / ideal,
                    job.in_process,
                    job.send,
                    job.send / ideal,
                    bares[-1],
                ]
            )
    table_rows.append(
        [
            "median",
            median(walls),
            median(walls) / ideal,
            median(inprocs),
            median(sends),
            median(sends) / ideal,
            median(bares),
        ]
    )
    print(
        f"{args.rows:,} rows, {args.latency:g} ms latency, concurrency {args.concurrency}: "
        f"ideal {ideal:.2f} s (load avg {os.getloadavg()[0]:.1f})"
    )
    header = ["round", "wall s", "x ideal", "in-proc s", "send s", "send x ideal", "bare loop s"]
    print(table(header, table_rows))
    print(f"target: wall <= {ideal * 1.1:.2f} s (1.1x ideal)")


if __name__ == "__main__":
    main()
