"""A 100,000-row ``--batch`` job, end to end: rows -> JSONL -> batches -> joined CSV.

    python benchmarks/batch_100k.py [--rows 100000] [--repeat 3] [--serve-only]

``--serve-only`` leaves out the ``--simulate`` rounds (at 1,000,000 rows the in-process
simulator's own memory, not batchrun's, is what they would show):
``python benchmarks/batch_100k.py --rows 1000000 --repeat 1 --serve-only``.

``batchrun run IN.csv --endpoint responses --batch --simulate`` in a subprocess: the rows
are written as batch JSONL (two files: a file holds at most 50,000 lines), uploaded to the
in-process simulator, which finishes each batch 2 s after its creation, followed, and the
output and error files downloaded and joined back to the CSV. Wall time and the peak RSS
of the process (``os.wait4``) then include the simulator, which answers every line itself
and keeps the result files in memory; so the same job is also run against ``batchrun
serve`` in a process of its own, which shows the job's own time and memory. Each round is a
fresh job in a fresh folder. Prints every round and the medians.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import tempfile
from pathlib import Path

from _common import Simulator, median, run_batchrun, table


def write_prompts(path: Path, rows: int) -> Path:
    """A responses sheet: model, instructions, input and a note carried through."""
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["model", "instructions", "input", "metadata.team", "note"])
        for n in range(rows):
            writer.writerow(
                ["gpt-4o-mini", "Answer in one sentence.", f"Summarise ticket {n:06d}.", "ops", n]
            )
    return path


def check(output: Path, rows: int) -> None:
    """Every row back, in input order, ok."""
    with output.open(newline="", encoding="utf-8") as stream:
        found = list(csv.DictReader(stream))
    assert len(found) == rows, f"{len(found)} rows in the output, not {rows}"
    assert all(row["outcome"] == "ok" for row in found), "some rows are not ok"
    assert [int(row["note"]) for row in found] == list(range(rows)), "rows out of order"


def rounds(rows: int, repeat: int, timeout: float, base_url: str | None) -> list[list[object]]:
    """``repeat`` fresh jobs; one table row each, then the medians.

    ``base_url``: the simulator's, when it runs as a process of its own; None: the job's
    own in-process simulator (``--simulate``).
    """
    walls, rss, lines = [], [], []
    with tempfile.TemporaryDirectory(prefix="brbench-") as scratch:
        sheet = write_prompts(Path(scratch) / "prompts.csv", rows)
        for round_no in range(1, repeat + 1):
            # A folder per round: a fresh journal, and a simulator run log with no batches
            # of earlier rounds to replay.
            folder = Path(scratch) / f"round{round_no}"
            folder.mkdir()
            source = Path(shutil.copy(sheet, folder / sheet.name))
            output = folder / "out.csv"
            cli = ["run", str(source), "-o", str(output), "--endpoint", "responses"]
            cli += ["--batch", "--no-progress"]
            cli += ["--simulate"] if base_url is None else ["--base-url", base_url]
            job = run_batchrun(cli, timeout=timeout)
            check(output, rows)
            walls.append(job.wall)
            rss.append(job.max_rss_mb)
            cpu = job.cpu_user + job.cpu_sys
            lines.append([round_no, job.wall, rows / job.wall, job.max_rss_mb, cpu])
    lines.append(["median", median(walls), rows / median(walls), median(rss), ""])
    return lines


def main() -> None:
    """Run the rounds both ways, print the tables and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per job")
    parser.add_argument(
        "--serve-only", action="store_true", help="only the rounds against `batchrun serve`"
    )
    args = parser.parse_args()
    header = ["round", "wall s", "rows/s", "peak RSS MB", "CPU s"]
    if not args.serve_only:
        print(f"{args.rows:,} rows, --batch --simulate (in-process simulator, batch_seconds 2)")
        print(table(header, rounds(args.rows, args.repeat, args.timeout, None)))
    with Simulator("--batch-seconds", "2") as sim:
        print(f"\n{args.rows:,} rows, --batch against `batchrun serve --batch-seconds 2`")
        print("(the simulator in a process of its own: the job's own time and memory)")
        print(table(header, rounds(args.rows, args.repeat, args.timeout, sim.base_url)))


if __name__ == "__main__":
    main()
