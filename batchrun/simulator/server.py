"""Ways to run the simulator: in a thread for sync code and tests, inside a running loop,
or in the foreground for ``batchrun serve``.

Each binds its own listening socket first, so port 0 gives a free loopback port whose
number is known before the first request, and ``base_url`` is always the real address.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from batchrun.simulator.app import SIMULATOR_KEY, Simulator, create_app
from batchrun.simulator.settings import SimulatorConfig
from batchrun.simulator.wire import Clock

# A stopped server cuts requests still in flight (hung ones) after this long.
SHUTDOWN_SECONDS = 0.5
CALL_TIMEOUT = 10.0
T = TypeVar("T")


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return socket.create_server((host, port), family=family, backlog=1024)


def _base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"  # a wildcard address is not one a client can send to
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/v1"


@contextlib.asynccontextmanager
async def _serving(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    """Serve ``app`` on ``host:port`` in the running loop; yields the base URL."""
    runner = web.AppRunner(
        app,
        access_log=None,  # the simulator must not print, and logging costs throughput
        handler_cancellation=True,  # a client that gives up frees its hung handler
        shutdown_timeout=SHUTDOWN_SECONDS,
    )
    await runner.setup()
    try:
        sock = _listen(host, port)
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            raise
        yield _base_url(sock)
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_async(
    config: SimulatorConfig | None = None, *, port: int = 0
) -> AsyncIterator[str]:
    """Serve the simulator inside the running event loop; yields its base URL.

    ``batchrun run --simulate`` uses this in the client's own loop::

        async with serve_async(SimulatorConfig(run_seconds=0.5)) as base_url:
            ...  # send to base_url ("http://127.0.0.1:PORT/v1")

    ``port`` 0 (the default) picks a free port; ``config.port`` is not used.
    """
    config = config or SimulatorConfig()
    async with _serving(create_app(config), config.host, port) as base_url:
        yield base_url


def serve_forever(config: SimulatorConfig, announce: Callable[[str], None]) -> None:
    """Serve on ``config.host:config.port`` until Ctrl-C or SIGTERM (``batchrun serve``).

    Once listening, calls ``announce`` once with the banner line, e.g.
    ``"batchrun simulator listening on http://127.0.0.1:8000/v1 (Ctrl-C to stop)"``.
    Returns normally on Ctrl-C or SIGTERM. A port in use raises ``OSError`` before
    ``announce`` is called.
    """
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(config, announce))


async def _serve_until_stopped(config: SimulatorConfig, announce: Callable[[str], None]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Ctrl-C is asyncio.run's own business (it cancels this task); SIGTERM is ours.
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with _serving(create_app(config), config.host, config.port) as base_url:
        announce(f"batchrun simulator listening on {base_url} (Ctrl-C to stop)")
        await stop.wait()


class RunningSimulator:
    """A simulator serving from its own event loop in a daemon thread.

    For sync code and tests::

        with RunningSimulator(SimulatorConfig(run_seconds=0.2)) as sim:
            client = OpenAI(base_url=sim.base_url, api_key="sk-test")
            ...
            assert sim.stats()["duplicate_runs"] == 0

    ``port`` 0 (the default) picks a free loopback port; ``config.port`` is not used.
    ``clock`` (seconds since the epoch) drives run lifecycles and rate limits; tests pass
    a fake one to step time instead of sleeping.
    """

    def __init__(
        self, config: SimulatorConfig | None = None, *, port: int = 0, clock: Clock = time.time
    ) -> None:
        self.config = config or SimulatorConfig()
        self.port = port
        self.clock = clock
        self._base_url: str | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._simulator: Simulator | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: where to send requests."""
        if self._base_url is None:
            raise RuntimeError("the simulator is not running; call start() first")
        return self._base_url

    def start(self) -> RunningSimulator:
        """Start serving; returns once the port is listening."""
        if self._thread is not None:
            raise RuntimeError("the simulator is already running")
        ready: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._main(ready),), name="batchrun-simulator", daemon=True
        )
        self._thread.start()
        try:
            self._base_url = ready.result(timeout=CALL_TIMEOUT)
        except BaseException:
            self._thread.join(CALL_TIMEOUT)
            self._thread = None
            raise
        return self

    async def _main(self, ready: concurrent.futures.Future[str]) -> None:
        app = create_app(self.config, clock=self.clock)
        try:
            async with _serving(app, self.config.host, self.port) as base_url:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                self._simulator = app[SIMULATOR_KEY]
                ready.set_result(base_url)
                await self._stop.wait()
        except Exception as error:
            # A failure to start (port in use) belongs to the caller of start().
            if ready.done():
                raise
            ready.set_exception(error)

    def _call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the simulator's loop, where its state lives, and return its value."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the simulator is not running; call start() first")

        async def call() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(CALL_TIMEOUT)

    def stats(self) -> dict[str, Any]:
        """The same counters as ``GET /_simulator/stats``."""
        simulator = self._simulator
        assert simulator is not None, "start() sets it"
        return self._call(simulator.stats)

    def reset(self) -> None:
        """Clear state and counters, as ``POST /_simulator/reset``."""
        simulator = self._simulator
        assert simulator is not None, "start() sets it"
        self._call(simulator.reset)

    def stop(self) -> None:
        """Stop serving and wait for the thread to end; safe to call twice."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(CALL_TIMEOUT + SHUTDOWN_SECONDS)
        self._thread = self._loop = self._stop = self._simulator = None
        self._base_url = None

    def __enter__(self) -> RunningSimulator:
        return self if self._thread is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_in_thread(
    config: SimulatorConfig | None = None, *, port: int = 0, clock: Clock = time.time
) -> RunningSimulator:
    """A started :class:`RunningSimulator`; call ``.stop()`` (or use ``with``) when done."""
    return RunningSimulator(config, port=port, clock=clock).start()
