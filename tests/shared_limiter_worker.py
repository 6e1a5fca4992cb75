"""One process sharing a Redis budget, for the multi-process tests of the shared limiter.

    python shared_limiter_worker.py URL KEY RPM COUNT CONCURRENCY [CLOCK_OFFSET]

``CONCURRENCY`` callers acquire ``COUNT`` slots in all (COUNT 0: until killed), and each
grant's time is printed as it happens, one line each, on CLOCK_MONOTONIC (one clock for
every process of the machine, so the parent can merge them). ``CLOCK_OFFSET`` seconds are
added to this process's ``time.time`` and ``time.monotonic`` (the event loop's clock
included) before batchrun is imported: a machine whose clocks are far off.
"""

from __future__ import annotations

import asyncio
import sys
import time


def shift_clocks(offset: float) -> None:
    """Move this process's wall and monotonic clocks by ``offset`` seconds."""
    wall, monotonic = time.time, time.monotonic
    time.time = lambda: wall() + offset
    time.monotonic = lambda: monotonic() + offset


def stamp() -> float:
    """The machine's monotonic clock, untouched by :func:`shift_clocks`."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


async def main(url: str, key: str, rpm: float, count: int, concurrency: int) -> None:
    from batchrun.sending.shared_limiter import SharedRateLimiter, connect

    client = await connect(url)
    limiter = SharedRateLimiter(client, key, rpm)
    left = count

    async def caller() -> None:
        nonlocal left
        while count == 0 or left > 0:
            left -= 1
            await limiter.acquire()
            print(f"{stamp():.6f}", flush=True)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    await client.aclose()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    if len(arguments) > 5:
        shift_clocks(float(arguments[5]))
    print("ready", flush=True)
    asyncio.run(
        main(arguments[0], arguments[1], float(arguments[2]), int(arguments[3]), int(arguments[4]))
    )
