"""batchrun's whole-job rows/s against a bare aiohttp loop and the official SDK, interleaved.

    /work/venv/bin/python benchmarks/run_overhead.py [--rows 5000] [--concurrency 64] [--repeat 3]
        [--endpoint runs|responses|chat] [--against TREE]

Against the simulator in its own process (zero latency, runs finish at once), each round
sends the same ``--rows`` create-run requests (same bodies, same headers, one thread per row)
three ways, in the order A, B, C, A, B, C, ...:

- A ``batchrun run IN.csv -o OUT.csv --concurrency N --fresh`` as a subprocess: the whole
  job (interpreter start, imports, reading, validation, journal, sending, writing). Also
  shown: the job without interpreter start (``in-proc``) and its sending phase alone
  (``send``, the summary's seconds).
- B a bare aiohttp loop: N workers over one ClientSession (the baseline).
- C the official ``openai`` SDK's ``AsyncOpenAI`` with an ``asyncio.Semaphore(N)`` and
  default settings, i.e. what users write instead.

B and C each run in a fresh interpreter, as a user's script would, and time only their
sending (their imports and bodies are not timed); see ``_common.in_fresh_process`` for why
not in this process. The simulator is reset before every round and must report exactly
``--rows`` runs created.
With ``--endpoint responses`` every row is one ``POST /responses`` (no conversation; the
simulator answers in the foreground at once), the same measure for the Responses API;
with ``--endpoint chat`` one ``POST /chat/completions`` (a system and a user message).
With ``--against TREE`` (a ``git archive`` of another commit), each round also runs that
tree's batchrun (A0) beside A, the two taking turns to go first; A/A0 is the change.
Targets (DESIGN.md, "Performance"): A/B >= 0.8 (goal 0.9); A several times C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from _common import (
    Bodies,
    JobTiming,
    Simulator,
    in_fresh_process,
    job_round,
    median,
    request_bodies,
    table,
    write_csv,
)


def run_a(
    sim: Simulator,
    source: Path,
    rows: int,
    label: str,
    concurrency: int,
    endpoint: str,
    tree: Path | None = None,
) -> JobTiming:
    """The whole batchrun job as a subprocess, in a checked round (``tree``: that tree's
    batchrun, see ``--against``)."""
    flags = ("--concurrency", str(concurrency), "--endpoint", endpoint)
    return job_round(sim, source, rows, label, *flags, endpoint=endpoint, tree=tree)[0]


async def _sdk(base_url: str, bodies: Bodies, concurrency: int) -> None:
    from openai import AsyncOpenAI

    semaphore = asyncio.Semaphore(concurrency)
    async with AsyncOpenAI(api_key="sk-bench", base_url=base_url) as client:

        async def create(path: str, body: dict[str, Any]) -> None:
            async with semaphore:
                if path == "/responses":
                    await client.responses.create(**body)
                elif path == "/chat/completions":
                    await client.chat.completions.create(**body)
                else:
                    thread = path.split("/")[2]
                    await client.beta.threads.runs.create(thread_id=thread, **body)

        await asyncio.gather(*(create(path, body) for path, body in bodies))


def sdk_seconds(base_url: str, rows: int, concurrency: int, endpoint: str = "runs") -> float:
    """The official SDK with a semaphore: seconds of sending (for a fresh process)."""
    # The Assistants resources are deprecated in the SDK; the warning is not the point here.
    warnings.simplefilter("ignore", DeprecationWarning)
    import openai  # noqa: F401  (not timed)

    bodies = request_bodies(rows, endpoint=endpoint)
    started = time.perf_counter()
    asyncio.run(_sdk(base_url, bodies, concurrency))
    return time.perf_counter() - started


def run_b(sim: Simulator, rows: int, concurrency: int, endpoint: str) -> float:
    """The bare aiohttp loop in a fresh interpreter; seconds."""
    return in_fresh_process("_common:bare_seconds", sim.base_url, rows, concurrency, endpoint)


def run_c(sim: Simulator, rows: int, concurrency: int, endpoint: str) -> float:
    """The official SDK in a fresh interpreter; seconds."""
    return in_fresh_process("run_overhead:sdk_seconds", sim.base_url, rows, concurrency, endpoint)


def main() -> None:
    """Warm up, run the interleaved rounds, print the table, medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup-rows", type=int, default=500)
    parser.add_argument("--endpoint", choices=["runs", "responses", "chat"], default="runs")
    parser.add_argument(
        "--no-sdk", action="store_true", help="skip C (for large --rows: the SDK is slow)"
    )
    parser.add_argument(
        "--against",
        type=Path,
        help="a batchrun tree (`git archive` of a commit) run as A0 beside A in each round, "
        "the two taking turns to go first: A/A0 is the change between the two",
    )
    args = parser.parse_args()
    rows, concurrency, endpoint = args.rows, args.concurrency, args.endpoint
    load_at_start = os.getloadavg()[0]
    results: dict[str, list[float]] = {"A": [], "A in-proc": [], "A send": [], "B": [], "C": []}
    before: list[float] = []  # A0's wall seconds (--against)
    table_rows = []
    with tempfile.TemporaryDirectory(prefix="brbench-") as scratch, Simulator() as sim:
        source = write_csv(Path(scratch) / "in.csv", rows, endpoint=endpoint)
        warm = write_csv(Path(scratch) / "warm.csv", args.warmup_rows, endpoint=endpoint)
        # Warm-up (not reported): the page cache, the simulator's code paths.
        run_a(sim, warm, args.warmup_rows, "warm-up", concurrency, endpoint)
        run_b(sim, args.warmup_rows, concurrency, endpoint)
        if not args.no_sdk:
            run_c(sim, args.warmup_rows, concurrency, endpoint)
        if args.against is not None:
            run_a(sim, warm, args.warmup_rows, "warm-up", concurrency, endpoint, args.against)
        for round_no in range(1, args.repeat + 1):
            label, tree = f"A0 round {round_no}", args.against
            if tree is not None and round_no % 2 == 0:  # A0 first in every other round
                before.append(run_a(sim, source, rows, label, concurrency, endpoint, tree).wall)
            job = run_a(sim, source, rows, f"A round {round_no}", concurrency, endpoint)
            if tree is not None and round_no % 2 == 1:
                before.append(run_a(sim, source, rows, label, concurrency, endpoint, tree).wall)
            results["A"].append(job.wall)
            results["A in-proc"].append(job.in_process)
            results["A send"].append(job.send)
            sim.reset()
            results["B"].append(run_b(sim, rows, concurrency, endpoint))
            sim.check(rows, f"B round {round_no}", endpoint)
            if not args.no_sdk:
                sim.reset()
                results["C"].append(run_c(sim, rows, concurrency, endpoint))
                sim.check(rows, f"C round {round_no}", endpoint)
            phases = job.phases
            table_rows.append(
                [
                    round_no,
                    rows / job.wall,
                    rows / job.in_process,
                    rows / job.send,
                    rows / results["B"][-1],
                    rows / results["C"][-1] if results["C"] else "-",
                    f"{results['B'][-1] / job.wall:.2f}",
                    f"{before[-1] / job.wall:.2f}" if before else "-",
                    f"{phases['imported']:.2f}/{phases['prepared']:.2f}/"
                    f"{phases['send']:.2f}/{phases['written'] - phases['sent']:.2f}",
                ]
            )
    # C is NaN when skipped (the median of nothing).
    rates = {name: rows / median(seconds) for name, seconds in results.items()}
    per_round = median([b / a for a, b in zip(results["A"], results["B"], strict=True)])
    table_rows.append(
        [
            "median",
            *(rates[k] for k in ("A", "A in-proc", "A send", "B", "C")),
            f"{per_round:.2f}",
            f"{median([b / a for a, b in zip(results['A'], before, strict=True)]):.2f}"
            if before
            else "-",
            "",
        ]
    )
    print(
        f"{rows:,} rows ({endpoint}), concurrency {concurrency}, simulator at zero latency "
        f"(own process), load avg at start {load_at_start:.1f}, at end "
        f"load avg {os.getloadavg()[0]:.1f}; rows/s"
    )
    print(
        table(
            [
                "round",
                "A batchrun",
                "A in-proc",
                "A send",
                "B aiohttp",
                "C openai",
                "A/B",
                "A/A0",
                "A at imported/prepared; send, write s",
            ],
            table_rows,
        )
    )
    if before:
        print(f"A0 ({args.against}): {rows / median(before):,.0f} rows/s (median)")
    a, b, c = rates["A"], rates["B"], rates["C"]
    print(f"A/B = {a / b:.2f} (target >= 0.8, goal 0.9)   A/C = {a / c:.2f}")
    print(
        f"without interpreter start: A/B = {rates['A in-proc'] / b:.2f};  "
        f"sending phase alone: A/B = {rates['A send'] / b:.2f}"
    )


if __name__ == "__main__":
    main()
