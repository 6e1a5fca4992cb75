"""Ctrl-C and SIGTERM as calls on the event loop, on every platform.

``loop.add_signal_handler`` does not exist on Windows (it raises NotImplementedError), where
many Excel and KNIME users run batchrun; there the handler is installed with
:func:`signal.signal` and hands over to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def on_interrupt(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> Iterator[None]:
    """Call ``handler`` on the loop for each SIGINT or SIGTERM while the block runs."""
    try:
        for sig in SIGNALS:
            loop.add_signal_handler(sig, handler)
    except NotImplementedError:
        with _portable(loop, handler):
            yield
        return
    try:
        yield
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def _portable(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> Iterator[None]:
    def relay(signum: int, frame: Any) -> None:
        loop.call_soon_threadsafe(handler)

    previous = {sig: signal.signal(sig, relay) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
