"""How closely ``batchrun run --rpm R`` keeps to R, against a server that enforces R.

    /work/venv/bin/python benchmarks/rate_accuracy.py [--rpm 600,1200,3000] [--seconds 12]
        [--repeat 3]

For each R a simulator runs in its own process with ``--rpm R`` (a token bucket holding one
second's worth, refusing with 429 beyond it), and ``batchrun run --rpm R --concurrency 64``
sends one second's burst plus ``--seconds`` worth of rows. The job records the monotonic
time of every create request it sends (``_common.py --stamps``, client side: the server's
``created_at`` has 1 s resolution). The first burst is one second's worth (``b`` = R/60
requests), which the limiter allows by design, so:

    achieved = (rows - b) / (last request - first request)            (the target's figure)
    steady   = (rows - b - 1) / (last request - first request after the burst)
    stall    = the gap between the burst and the next request (ideal: 50 ms grace + 60/R)

Targets (DESIGN.md, "Performance"): achieved within 2% of R, and the server sends no 429
(``rate_limited`` 0).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _common import Simulator, job_round, median, table, write_csv


def achieved_rates(stamps: list[float], burst: int) -> tuple[float, float, float]:
    """(achieved per minute, steady per minute after the burst, stall after the burst s)."""
    times = sorted(stamps)
    after = times[burst:]
    achieved = len(after) / (times[-1] - times[0]) * 60
    steady = (len(after) - 1) / (after[-1] - after[0]) * 60
    return achieved, steady, after[0] - times[burst - 1]


def main() -> None:
    """Run every rate, print the table and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpm", default="600,1200,3000", help="comma-separated rates")
    parser.add_argument("--seconds", type=float, default=12.0, help="paced seconds per job")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    table_rows = []
    medians = []
    with tempfile.TemporaryDirectory(prefix="brbench-") as scratch:
        for rpm in (float(r) for r in args.rpm.split(",")):
            burst = max(1, int(rpm / 60))  # batchrun's bucket: one second's worth
            rows = burst + round(rpm / 60 * args.seconds)
            source = write_csv(Path(scratch) / f"in{rpm:.0f}.csv", rows)
            achieved_list, refused = [], []
            with Simulator("--rpm", f"{rpm:g}") as sim:
                for round_no in range(1, args.repeat + 1):
                    job, stats = job_round(
                        sim,
                        source,
                        rows,
                        f"rpm {rpm:g} round {round_no}",
                        "--rpm",
                        f"{rpm:g}",
                        "--concurrency",
                        str(args.concurrency),
                        stamps=True,
                    )
                    achieved, steady, stall = achieved_rates(job.stamps, burst)
                    achieved_list.append(achieved)
                    refused.append(stats["rate_limited"])
                    table_rows.append(
                        [
                            f"{rpm:g}",
                            round_no,
                            rows,
                            len(job.stamps),
                            achieved,
                            f"{(achieved / rpm - 1) * 100:+.2f}%",
                            steady,
                            stall,
                            stats["rate_limited"],
                            job.send,
                        ]
                    )
            medians.append(
                [
                    f"{rpm:g}",
                    "median",
                    rows,
                    "",
                    median(achieved_list),
                    f"{(median(achieved_list) / rpm - 1) * 100:+.2f}%",
                    "",
                    "",
                    max(refused),
                    "",
                ]
            )
    header = [
        "R/min",
        "round",
        "rows",
        "POSTs",
        "achieved/min",
        "vs R",
        "steady/min",
        "stall s",
        "429s",
        "send s",
    ]
    print(
        f"batchrun run --rpm R against a simulator enforcing R (load avg {os.getloadavg()[0]:.1f})"
    )
    print(table(header, table_rows + medians))
    print("429s in a median row: the worst round. Targets: achieved within 2% of R, no 429.")


if __name__ == "__main__":
    main()
