"""`batchrun validate` at scale, and how fast `batchrun --help` answers.

    python benchmarks/validate_scale.py [--rows 1000000] [--repeat 3]

Generates a CSV (once, cached under benchmarks/.data/) whose rows carry tools as JSON
and as a comma list, a metadata JSON cell and a metadata.* column, then times
`batchrun validate` in a subprocess (wall time, and the peak RSS of its largest process,
main or worker) and `batchrun --help`. Targets: >= 25,000 rows/s (goal 50,000),
peak memory < 1 GB, --help < 0.3 s. Prints the medians.
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).with_name(".data")
BATCHRUN = [sys.executable, "-m", "batchrun"]
TOOLS = [
    "code_interpreter",
    "code_interpreter, file_search",
    '[{"type": "function", "function": {"name": "lookup_order", "parameters": '
    '{"type": "object", "properties": {"id": {"type": "string"}}}}}]',
    "",
]


def make_csv(rows: int) -> Path:
    """A realistic sheet of ``rows`` rows (1% invalid), generated once."""
    path = DATA / f"validate-{rows}.csv"
    if path.exists():
        return path
    DATA.mkdir(exist_ok=True)
    pick = random.Random(7)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(
            [
                "thread_id",
                "assistant_id",
                "model",
                "instructions",
                "temperature",
                "tools",
                "metadata",
                "metadata.team",
                "notes",
            ]
        )
        for n in range(rows):
            writer.writerow(
                [
                    f"thread_{n:09d}",
                    "asst_support_v3",
                    "gpt-4o",
                    "Summarise the ticket in two sentences.",
                    pick.choice(["0.2", "0.7", "1", "", "3.5" if n % 100 == 0 else "0.5"]),
                    pick.choice(TOOLS),
                    f'{{"customer": "C{n % 200_000:06d}", "tier": "gold"}}',
                    pick.choice(["ops", "sales"]),
                    f"note {n}",
                ]
            )
    return path


def wall_seconds(args: list[str]) -> float:
    """Wall seconds of one command."""
    started = time.perf_counter()
    subprocess.run(args, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    source = make_csv(options.rows)
    output = DATA / "validate.out.csv"
    walls, peaks = [], []
    for _ in range(options.repeat):
        # Each measurement in a fresh child, so ru_maxrss is that run's own peak.
        code = (
            "import resource, subprocess, sys; "
            f"subprocess.run({[*BATCHRUN, 'validate', str(source), '-o', str(output), '-q']!r}); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        walls.append(time.perf_counter() - started)
        peaks.append(int(done.stdout.split()[-1]) / 1024)
    command = str(Path(sys.executable).with_name("batchrun"))
    helps = [wall_seconds([command, "--help"]) for _ in range(5)]
    wall = statistics.median(walls)
    print(
        f"validate {options.rows:,} rows: median {wall:.1f} s = {options.rows / wall:,.0f} rows/s "
        f"(runs: {', '.join(f'{w:.1f}' for w in walls)}); peak RSS {max(peaks):.0f} MB"
    )
    print(f"batchrun --help: median {statistics.median(helps) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
