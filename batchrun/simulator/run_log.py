"""The run log a ``--simulate`` rerun replays: what the simulator of the job before created.

One JSON object a line, appended as things are created (see :func:`.wire.append_to_log`)::

    {"thread": ID, "run": ID, "at": T, "body": {...}}          a run
    {"response": ID, "at": T, "body": {...}}                    a response
    {"chat": ID, "at": T, "body": {...}}                        a stored chat completion
    {"file": ID, "at": T, "filename", "purpose", "bytes"}       an upload (bytes beside the
                                                                log, in <log>.files/ID)
    {"file_deleted": ID, "at": T}                               a deleted file
    {"batch": ID, "at": T, "body": {...}, "expire", "fail_lines"}  a batch, and its faults
    {"batch_cancel": ID, "at": T}                               a cancel

Replaying creates each again at its own time, in order, so a batch created by one process
completes in the next once ``batch_seconds`` of wall time have passed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from batchrun.simulator.app import Simulator


def replay(path: str, simulator: Simulator) -> None:
    """Create again what the log at ``path`` holds (a line cut short by a crash is skipped)."""
    try:
        with open(path, "rb") as log:
            lines = log.read().splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        _restore(entry, simulator)


def _restore(entry: dict[str, Any], simulator: Simulator) -> None:
    at = float(entry["at"])
    if "file" in entry:
        simulator.files.restore(entry)
    elif "file_deleted" in entry:
        simulator.files.forget(entry["file_deleted"])
    elif "batch" in entry:
        simulator.batches.restore(entry)
    elif "batch_cancel" in entry:
        simulator.batches.restore_cancel(entry["batch_cancel"], at)
    elif "response" in entry:
        simulator.responses.restore(entry["body"], at, entry["response"])
    elif "chat" in entry:
        simulator.chat.restore(entry["body"], at, entry["chat"])
    else:
        store = simulator.store
        thread = store.thread(entry["thread"], at)
        canonical = orjson.dumps(entry["body"], option=orjson.OPT_SORT_KEYS)
        if thread.active is None:
            version = entry.get("version", "v2")
            store.create_run(
                thread, entry["body"], canonical, at, run_id=entry["run"], version=version
            )
