"""Purpose-built HTTP servers on a free loopback port, for tests of hostile answers.

    with serve_app(app) as base_url:          # "http://127.0.0.1:PORT/v1"
        ...

``serve_app`` runs an ``aiohttp.web`` application in its own event loop on a daemon
thread and stops it (cutting requests still in flight) when the block ends.
:class:`RunStore` is a minimal in-memory stand-in for a server's runs, so handlers can
create runs and answer ``GET /v1/threads/{id}/runs`` the way batchrun reconciles them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

CREATE_ROUTE = "/v1/threads/{thread_id}/runs"
RUN_ROUTE = "/v1/threads/{thread_id}/runs/{run_id}"


@contextlib.contextmanager
def serve_app(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (https with ``ssl_context``); yields the ``/v1`` base URL."""
    ready: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, asyncio.Event, int]] = (
        concurrent.futures.Future()
    )

    async def main() -> None:
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        try:
            sock = socket.create_server(("127.0.0.1", 0))
            site = web.SockSite(runner, sock, ssl_context=ssl_context)
            await site.start()
            stop = asyncio.Event()
            ready.set_result((asyncio.get_running_loop(), stop, sock.getsockname()[1]))
            await stop.wait()
        except BaseException as error:
            if not ready.done():
                ready.set_exception(error)
            raise
        finally:
            await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    loop, stop, port = ready.result(timeout=10)
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}/v1"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        assert not thread.is_alive(), "the test server did not stop"


class RunStore:
    """Runs a purpose-built server has created, by thread, and the requests it saw."""

    def __init__(self, *, keep_metadata: bool = True) -> None:
        self.keep_metadata = keep_metadata
        self.runs: dict[str, list[dict[str, Any]]] = {}
        self.posts: list[str] = []  # thread ids of every create request, in arrival order
        self.gets: list[str] = []  # paths of every GET

    def create(self, thread_id: str, body: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """Store and return a new run for ``thread_id`` built from the request ``body``."""
        runs = self.runs.setdefault(thread_id, [])
        run: dict[str, Any] = {
            "id": f"run_{thread_id}_{len(runs) + 1}",
            "object": "thread.run",
            "created_at": int(time.time()),
            "thread_id": thread_id,
            "assistant_id": body.get("assistant_id"),
            "status": "queued",
        }
        if self.keep_metadata:
            run["metadata"] = body.get("metadata") or {}
        run.update(fields)
        runs.append(run)
        return run

    def created(self) -> int:
        """How many runs exist, over all threads."""
        return sum(map(len, self.runs.values()))

    async def list_runs(self, request: web.Request) -> web.Response:
        """``GET /v1/threads/{id}/runs``: newest first, as batchrun asks for them."""
        self.gets.append(request.path_qs)
        runs = list(reversed(self.runs.get(request.match_info["thread_id"], [])))
        return web.json_response({"object": "list", "data": runs, "has_more": False})

    async def get_run(self, request: web.Request) -> web.Response:
        """``GET /v1/threads/{id}/runs/{run_id}``: the stored run, or 404."""
        self.gets.append(request.path_qs)
        for run in self.runs.get(request.match_info["thread_id"], []):
            if run["id"] == request.match_info["run_id"]:
                return web.json_response(run)
        return web.json_response({"error": {"message": "No run found"}}, status=404)


def app_with(
    create: Any, store: RunStore | None = None, *, extra: list[web.RouteDef] | None = None
) -> web.Application:
    """An app whose ``POST .../runs`` is ``create`` and whose reads are ``store``'s."""
    app = web.Application()
    routes = [web.post(CREATE_ROUTE, create)]
    if store is not None:
        routes += [web.get(CREATE_ROUTE, store.list_runs), web.get(RUN_ROUTE, store.get_run)]
    app.add_routes(routes + (extra or []))
    return app
