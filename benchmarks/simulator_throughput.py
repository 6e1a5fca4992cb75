"""How many create-run requests a second the simulator answers at zero latency.

Starts the simulator in a subprocess (so server and client each get a core), sends N
``POST /v1/threads/{id}/runs`` requests to distinct threads from an aiohttp client at
concurrency 64, and prints requests/s for each of three rounds and their median::

    /work/venv/bin/python benchmarks/simulator_throughput.py [--requests 20000]

The target (DESIGN.md, "Performance"): at least 2,000 requests/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

import aiohttp
import orjson

CONCURRENCY = 64
HEADERS = {
    "Authorization": "Bearer sk-bench",
    "OpenAI-Beta": "assistants=v2",
    "Content-Type": "application/json",
}
BODY = orjson.dumps(
    {
        "assistant_id": "asst_bench",
        "instructions": "Summarise the row.",
        "temperature": 0.2,
        "metadata": {"batchrun_key": "0123456789abcdef", "row": "1"},
    }
)


def serve() -> None:
    """Child process: serve on a free port and print the base URL as the first line."""
    from batchrun.simulator import SimulatorConfig, serve_forever

    def announce(line: str) -> None:
        print(line.split()[4], flush=True)  # "batchrun simulator listening on URL (...)"

    serve_forever(SimulatorConfig(port=0), announce)


async def blast(base_url: str, total: int, round_no: int) -> float:
    """Send ``total`` create-run requests at concurrency 64; requests per second."""
    next_index = iter(range(total))
    failures = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        for index in next_index:
            url = f"{base_url}/threads/thread_r{round_no}_{index}/runs"
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()
                failures += response.status != 200

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{failures} requests did not answer 200")
    return total / elapsed


def main() -> None:
    """Start the server, run three rounds, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        base_url = child.stdout.readline().strip()
        asyncio.run(blast(base_url, 2_000, 0))  # warm-up: imports, schema compile, pools
        rates = [asyncio.run(blast(base_url, args.requests, n)) for n in (1, 2, 3)]
    finally:
        child.terminate()
        child.wait(10)
    for n, rate in enumerate(rates, 1):
        print(f"round {n}: {rate:,.0f} create-run requests/s")
    print(
        f"median: {statistics.median(rates):,.0f} requests/s "
        f"({args.requests} requests, concurrency {CONCURRENCY}, zero latency)"
    )


if __name__ == "__main__":
    main()
