"""A loopback proxy that holds creates and passes them on after the client gave up.

    with holding_proxy(sim.base_url) as proxy:        # proxy.base_url: ".../v1"
        ...                                           # POSTs wait until proxy.release()
        proxy.release(); proxy.drain()                # every held create reached the server

A slow server, as a client sees it: a create is answered only once the server has made
what it asked, so a client with a shorter ``--timeout`` gives up while the server is still
at it (a client's time-out cancels nothing on the server). Every POST is held until
:meth:`HoldingProxy.release` (or for ``hold`` seconds), then passed on to the upstream
server even if the client has left; reads (GET) pass at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator

import aiohttp
from aiohttp import web
from loopback_server import serve_app

HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


class HoldingProxy:
    """Holds POSTs, passes everything on to ``upstream`` (a ``.../v1`` base URL)."""

    def __init__(
        self,
        upstream: str,
        hold: float | None = None,
        held: int | None = None,
        only: str = "",
    ) -> None:
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.hold = hold
        self.held = held  # how many creates are held (None: all); the others pass at once
        self.passed: list[bytes] = []  # bodies of the creates passed on, in that order
        self.only = only  # hold only creates whose path ends so ("": every create)
        self.base_url = ""
        self.posts = 0  # creates received
        self.gets = 0  # reads received
        self._released = False
        self._opened: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = threading.Condition()
        self._pending = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._started)
        return app

    async def _started(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        self._opened = asyncio.Event()
        if self._released:
            self._opened.set()

    def release(self) -> None:
        """Let every held create (and every later one) through."""
        self._released = True
        if self._loop is not None and self._opened is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._opened.set)

    def wait_until(self, seen: Callable[[], bool], timeout: float = 60.0) -> bool:
        """Wait until ``seen()`` holds, checked at every request the proxy receives."""
        with self._idle:
            return self._idle.wait_for(seen, timeout)

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until every create received has been passed on and answered."""
        with self._idle:
            assert self._idle.wait_for(lambda: self._pending == 0, timeout), "held creates"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        if request.method == "GET" or not request.path.endswith(self.only):
            with self._idle:
                self.gets += 1
                self._idle.notify_all()
            return await self._forward(request.method, request.path_qs, headers, body)
        with self._idle:
            self.posts += 1
            self._pending += 1
            self._idle.notify_all()
            at_once = self.held is not None and self.posts > self.held
        # Passed on even when the client gives up (the handler is cancelled then).
        task = asyncio.ensure_future(
            self._held(request.method, request.path_qs, headers, body, at_once)
        )
        return await asyncio.shield(task)

    async def _held(
        self, method: str, path: str, headers: dict[str, str], body: bytes, at_once: bool
    ) -> web.Response:
        try:
            assert self._opened is not None
            if not at_once:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._opened.wait(), self.hold)
            self.passed.append(body)
            return await self._forward(method, path, headers, body)
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    async def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> web.Response:
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.upstream + path, headers=headers, data=body) as answer,
        ):
            text = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
            return web.Response(status=answer.status, body=text, headers=kept)


@contextlib.contextmanager
def holding_proxy(
    upstream: str, hold: float | None = None, held: int | None = None, only: str = ""
) -> Iterator[HoldingProxy]:
    """A :class:`HoldingProxy` in front of ``upstream`` on a free loopback port."""
    proxy = HoldingProxy(upstream, hold, held, only)
    try:
        with serve_app(proxy.app()) as base_url:
            proxy.base_url = base_url
            yield proxy
            proxy.release()
            proxy.drain()
    finally:
        proxy.release()
