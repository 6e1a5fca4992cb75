"""How closely a chat job keeps to a server's tokens-per-minute limit, and how many 429s.

    python benchmarks/token_rate.py [--tpm 600000] [--rows 240] [--most 1000] [--repeat 3]

A simulator runs in its own process with ``--tpm R``: each create is charged
characters/4 of its prompt plus its ``max_completion_tokens``, against a token bucket
holding one second's worth (429 beyond it). ``batchrun run --endpoint chat`` sends
``--rows`` rows of ``--most`` + 10 tokens each (a 40-character prompt), in three setups:

    headers    the server states its limits in x-ratelimit-*; batchrun has no flag
    --tpm      the server states none (--no-limit-headers); batchrun --tpm R
    blind      the server states none; batchrun has no flag (429 handling alone)

The job records the monotonic time of each create request it sends (``_common.py
--stamps``). With T the tokens of all rows and b = R/60 the first burst (one second's
worth, which both buckets allow by design):

    ideal    = (T - b) / (R / 60)               seconds from the first create to the last
    span     = last create - first create
    achieved = (T - b) / span * 60              tokens per minute
    send     = the job's sending phase (its summary's seconds), against ideal + b / (R/60)

Targets (issue 24): 240 rows of ~1,010 tokens against 600,000 TPM finish within 1.10x the
ideal time with at most 6 429s, each row made once: from the headers, and with --tpm on a
server that states none.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
from pathlib import Path

from _common import Simulator, job_round, median, table

PROMPT_CHARACTERS = 40


def write_chat_csv(path: Path, rows: int, most: int) -> Path:
    """``rows`` chat rows: a 40-character prompt (10 tokens) and ``most`` output tokens."""
    with path.open("w", newline="", encoding="utf-8") as stream:
        out = csv.writer(stream)
        out.writerow(["model", "user", "max_completion_tokens"])
        for index in range(rows):
            text = f"Ticket {index:06d}: the printer is on fire"
            out.writerow(["gpt-4o-mini", text.ljust(PROMPT_CHARACTERS, ".")[:40], str(most)])
    return path


SETUPS = {
    "headers": ((), ()),
    "--tpm": (("--no-limit-headers",), ("--tpm", "{tpm}")),
    "blind": (("--no-limit-headers",), ()),
}


def main() -> None:
    """Run every setup, print the table and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tpm", type=float, default=600_000.0)
    parser.add_argument("--rows", type=int, default=240)
    parser.add_argument("--most", type=int, default=1_000, help="max_completion_tokens")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--setups", default=",".join(SETUPS))
    args = parser.parse_args()
    per_row = PROMPT_CHARACTERS // 4 + args.most
    total = per_row * args.rows
    burst = args.tpm / 60
    ideal = (total - burst) / burst
    table_rows, medians = [], []
    with tempfile.TemporaryDirectory(prefix="brbench-") as scratch:
        source = write_chat_csv(Path(scratch) / "chat.csv", args.rows, args.most)
        for name in args.setups.split(","):
            server_flags, job_flags = SETUPS[name]
            flags = [flag.format(tpm=f"{args.tpm:g}") for flag in job_flags]
            spans, sends, refused = [], [], []
            with Simulator("--tpm", f"{args.tpm:g}", *server_flags) as sim:
                for round_no in range(1, args.repeat + 1):
                    job, stats = job_round(
                        sim,
                        source,
                        args.rows,
                        f"{name} round {round_no}",
                        "--endpoint",
                        "chat",
                        "--concurrency",
                        str(args.concurrency),
                        *flags,
                        stamps=True,
                        endpoint="chat",
                    )
                    if stats["tokens_admitted"] != total:
                        raise SystemExit(f"{name}: {stats['tokens_admitted']} tokens, not {total}")
                    times = sorted(job.stamps)
                    span = times[-1] - times[0]
                    spans.append(span)
                    sends.append(job.send)
                    refused.append(stats["rate_limited"])
                    limits = job.stderr.strip().splitlines()[-1].removeprefix("limits: ")
                    table_rows.append(
                        [
                            name,
                            round_no,
                            len(times),
                            stats["rate_limited"],
                            span,
                            span / ideal,
                            (total - burst) / span * 60,
                            job.send,
                            limits,
                        ]
                    )
            medians.append(
                [
                    name,
                    "median",
                    "",
                    max(refused),
                    median(spans),
                    median(spans) / ideal,
                    (total - burst) / median(spans) * 60,
                    median(sends),
                    "",
                ]
            )
    header = [
        "setup",
        "round",
        "POSTs",
        "429s",
        "span s",
        "x ideal",
        "achieved TPM",
        "send s",
        "limits in force",
    ]
    print(
        f"{args.rows} chat rows of {per_row:,} tokens ({total:,} in all) against a simulator "
        f"enforcing {args.tpm:,.0f} TPM (ideal span {ideal:.2f} s; "
        f"load avg {os.getloadavg()[0]:.1f})"
    )
    print(table(header, table_rows + medians))
    print("429s in a median row: the worst round. Targets: <= 1.10x ideal, <= 6 429s.")


if __name__ == "__main__":
    main()
