"""A --batch chat job against a simulator limiting the tokens enqueued at once.

    python benchmarks/batch_queue.py [--rows 200] [--limit 60000] [--batch-seconds 2]
        [--repeat 3]

A simulator runs in its own process with ``--batch-queue-tokens N``: a batch whose lines'
tokens (characters/4 of the prompt plus ``max_completion_tokens``) would take the tokens of
the unfinished batches past N fails with ``token_limit_exceeded``. ``batchrun run --batch``
sends ``--rows`` chat rows of 1,012 tokens each (a 48-character prompt and 1,000 output
tokens), with ``--batch-queue-tokens N`` and without it.

Targets (issue 24): every row ends ok, answered once; with the flag at most one batch is
refused; without it the job still finishes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import urllib.request
from pathlib import Path

from _common import API_KEY, Simulator, job_round, median, table

PROMPT = "Ticket {:06d}: the printer is on fire, again.."  # 48 characters: 12 tokens


def write_chat_csv(path: Path, rows: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as stream:
        out = csv.writer(stream)
        out.writerow(["model", "user", "max_completion_tokens"])
        for index in range(rows):
            out.writerow(["gpt-4o-mini", PROMPT.format(index), "1000"])
    return path


def batches(sim: Simulator) -> list[dict[str, object]]:
    """Every batch the simulator holds, newest first."""
    request = urllib.request.Request(
        sim.base_url + "/batches?limit=100", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        found: list[dict[str, object]] = json.load(answer)["data"]
    return found


def refused(batch: dict[str, object]) -> bool:
    errors = batch.get("errors")
    listed = errors.get("data") if isinstance(errors, dict) else None
    return any(
        isinstance(error, dict) and error.get("code") == "token_limit_exceeded"
        for error in listed or []
    )


def main() -> None:
    """Run both setups, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--limit", type=int, default=60_000)
    parser.add_argument("--batch-seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    table_rows = []
    with tempfile.TemporaryDirectory(prefix="brbench-") as scratch:
        source = write_chat_csv(Path(scratch) / "chat.csv", args.rows)
        server = ("--batch-queue-tokens", str(args.limit), "--batch-seconds")
        with Simulator(*server, f"{args.batch_seconds:g}") as sim:
            for name, flags in (
                ("--batch-queue-tokens", ("--batch-queue-tokens", str(args.limit))),
                ("no flag", ()),
            ):
                walls = []
                for round_no in range(1, args.repeat + 1):
                    job, _ = job_round(
                        sim,
                        source,
                        args.rows,
                        f"{name} round {round_no}",
                        "--endpoint",
                        "chat",
                        "--batch",
                        *flags,
                        endpoint="chat",
                    )
                    made = batches(sim)
                    walls.append(job.wall)
                    table_rows.append(
                        [
                            name,
                            round_no,
                            len(made),
                            sum(refused(batch) for batch in made),
                            job.wall,
                            "all ok" if f"{args.rows} ok" in job.stderr else job.stderr[-200:],
                        ]
                    )
                table_rows.append([name, "median", "", "", median(walls), ""])
    print(
        f"{args.rows} chat rows of 1,012 tokens through --batch against a simulator with "
        f"--batch-queue-tokens {args.limit:,} and --batch-seconds {args.batch_seconds:g} "
        f"(load avg {os.getloadavg()[0]:.1f})"
    )
    print(table(["setup", "round", "batches", "refused", "wall s", "rows"], table_rows))
    print("Each round checks every row was answered once (chat_completions_created, no repeat).")


if __name__ == "__main__":
    main()
