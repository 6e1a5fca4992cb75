"""Time and peak memory of writing and reading a million result rows.

    python benchmarks/write_scale.py                 # 1,000,000 rows, 3 runs each
    python benchmarks/write_scale.py --rows 100000 --repeat 1 --only csv,read-csv

Each measurement runs in a fresh subprocess so that its peak RSS (getrusage ru_maxrss)
is its own. Rows are made 50,000 at a time, as a streaming caller would hand them over:
five input columns and six result columns (a ~300-character JSON ``body``, ``status`` and
``attempts`` as numbers). ``generate`` only makes the rows, for the baseline. The table
shows medians of wall time, CPU time (user + system) and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CHUNK = 50_000
COLUMNS = [
    "thread_id",
    "assistant_id",
    "instructions",
    "metadata.customer",
    "request_json",
    "status",
    "body",
    "error",
    "run_id",
    "run_status",
    "attempts",
]
NUMBERS = frozenset({"status", "attempts"})
TASKS = ("generate", "csv", "tsv", "jsonl", "xlsx", "read-csv-stream", "read-csv-whole")


def chunks(rows: int) -> Iterator[object]:
    """Yield frames of realistic result rows, distinct per row."""
    import orjson
    import pandas as pd

    for start in range(0, rows, CHUNK):
        numbers = range(start, min(rows, start + CHUNK))
        threads = [f"thread_{i:024d}" for i in numbers]
        runs = [f"run_{i:024x}" for i in numbers]
        bodies = [
            orjson.dumps(
                {
                    "id": run,
                    "object": "thread.run",
                    "created_at": 1_714_571_100 + i,
                    "assistant_id": "asst_abc123DEF456ghi789JKL",
                    "thread_id": thread,
                    "status": "queued",
                    "model": "gpt-4o",
                    "tools": [{"type": "code_interpreter"}],
                    "metadata": {"batchrun_key": f"{i:016x}"},
                }
            ).decode()
            for i, thread, run in zip(numbers, threads, runs, strict=True)
        ]
        failed = [i % 50 == 0 for i in numbers]
        yield pd.DataFrame(
            {
                "thread_id": threads,
                "assistant_id": ["asst_abc123DEF456ghi789JKL"] * len(threads),
                "instructions": [f"Summarise ticket {i} in two sentences." for i in numbers],
                "metadata.customer": [f"cust-{i % 9973:05d}" for i in numbers],
                "request_json": ['{"max_prompt_tokens": 1000}'] * len(threads),
                "status": [429 if bad else 200 for bad in failed],
                "body": bodies,
                "error": ["rate_limit_exceeded after 6 attempts" if bad else "" for bad in failed],
                "run_id": ["" if bad else run for bad, run in zip(failed, runs, strict=True)],
                "run_status": ["" if bad else "queued" for bad in failed],
                "attempts": [7 if bad else 1 for bad in failed],
            },
            dtype=object,
        )


def worker(task: str, rows: int, folder: Path) -> dict[str, float]:
    """Run one measurement in this process; return seconds, peak RSS and file size."""
    from batchrun.sheets import iter_sheet, read_sheet
    from batchrun.sheets.writer import SheetWriter

    source = folder / "input.csv"
    started = time.perf_counter()
    cpu_started = _cpu_seconds()
    size = 0
    if task == "generate":
        for _ in chunks(rows):
            pass
    elif task.startswith("read-csv"):
        if task == "read-csv-stream":
            _, frames = iter_sheet(source)
            count = sum(len(frame) for frame in frames)
        else:
            count = len(read_sheet(source))
        assert count == rows, count
    else:
        target = folder / f"out.{task}"
        with SheetWriter(target, COLUMNS, number_columns=NUMBERS) as out:
            for frame in chunks(rows):
                out.write(frame)  # type: ignore[arg-type]
        size = target.stat().st_size
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"seconds": seconds, "cpu": cpu, "peak_mb": peak_mb, "size_mb": size / 1e6}


def _cpu_seconds() -> float:
    # CPU time moves less than wall time when other work shares the machine.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(task: str, rows: int, folder: Path) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        task,
        "--rows",
        str(rows),
        "--dir",
        str(folder),
    ]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default=",".join(TASKS), help="comma list of " + ", ".join(TASKS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.rows, args.dir)))
        return
    tasks = [t for t in args.only.split(",") if t]
    unknown = set(tasks) - set(TASKS)
    if unknown:
        parser.error(f"unknown task(s): {', '.join(sorted(unknown))}")
    folder = Path(tempfile.mkdtemp(prefix="batchrun-bench-"))
    try:
        if any(t.startswith("read-csv") for t in tasks):
            # The input for the read tasks: the csv output itself, made once, untimed.
            measure("csv", args.rows, folder)
            (folder / "out.csv").replace(folder / "input.csv")
        print(f"{args.rows:,} rows x {len(COLUMNS)} columns, median of {args.repeat} run(s)")
        print(
            f"{'task':<16} {'seconds':>8} {'CPU s':>7} {'rows/s':>10} {'peak RSS MB':>12}"
            f" {'file MB':>8}"
        )
        for task in tasks:
            runs = [measure(task, args.rows, folder) for _ in range(args.repeat)]
            seconds = statistics.median(r["seconds"] for r in runs)
            cpu = statistics.median(r["cpu"] for r in runs)
            peak = statistics.median(r["peak_mb"] for r in runs)
            size = statistics.median(r["size_mb"] for r in runs)
            size_text = f"{size:,.0f}" if size else "-"
            print(
                f"{task:<16} {seconds:>8.1f} {cpu:>7.1f} {args.rows / seconds:>10,.0f}"
                f" {peak:>12,.0f} {size_text:>8}",
                flush=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
