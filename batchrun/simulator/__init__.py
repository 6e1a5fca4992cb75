"""A local OpenAI API (the parts batchrun uses), faithful enough for the SDK.

Routes, all under ``/v1`` and needing ``Authorization: Bearer``; the Assistants ones (see
:mod:`.assistants`) also need ``OpenAI-Beta: assistants=v1|v2``::

    POST /v1/threads                                   create a thread
    GET  /v1/threads/{thread_id}                       read a thread
    POST /v1/threads/{thread_id}/runs                  create a run (body checked)
    GET  /v1/threads/{thread_id}/runs                  list runs (limit, order, after, before)
    GET  /v1/threads/{thread_id}/runs/{run_id}         read a run
    POST /v1/threads/{thread_id}/runs/{run_id}/cancel  cancel a run
    GET  /v1/threads/{thread_id}/messages              list messages (same + run_id)

OpenAI's live endpoints, which need no beta header (see :mod:`.conversations`,
:mod:`.responses` and :mod:`.chat`)::

    POST /v1/conversations                             create a conversation
    GET  /v1/conversations/{conversation_id}           read a conversation
    GET  /v1/conversations/{conversation_id}/items     list its items
    POST /v1/responses                                 create a response (body checked)
    GET  /v1/responses/{response_id}                   read a response
    POST /v1/responses/{response_id}/cancel            cancel a background response
    POST /v1/chat/completions                          create a chat completion
    GET  /v1/chat/completions                          list stored ones (metadata[KEY]=V)
    GET  /v1/chat/completions/{completion_id}          read a stored one

and OpenAI's Batch API (see :mod:`.files` and :mod:`.batches`), which needs no beta header
either::

    POST   /v1/files                                   upload (multipart: file, purpose)
    GET    /v1/files                                   list files (purpose, limit, order, after)
    GET    /v1/files/{file_id}                         read a file's metadata
    GET    /v1/files/{file_id}/content                 its bytes
    DELETE /v1/files/{file_id}                         delete it
    POST   /v1/batches                                 create a batch (input lines checked)
    GET    /v1/batches                                 list batches (limit, after)
    GET    /v1/batches/{batch_id}                      read a batch
    POST   /v1/batches/{batch_id}/cancel               cancel a batch

and, without auth, ``GET /_simulator/stats`` (counters) and ``POST /_simulator/reset``.
Any other route answers 404 "Invalid URL (METHOD /path)". Errors use OpenAI's envelope
``{"error": {"message", "type", "param", "code"}}``.

Behaviour (see :class:`SimulatorConfig`): any well-formed thread id exists unless
``strict_threads``; one active run per thread; runs go queued -> in_progress -> completed
over ``run_seconds`` and leave a deterministic assistant reply and ``usage``; instruction
markers ``[sim:fail]``, ``[sim:expire]``, ``[sim:requires_action]`` and ``[sim:slow]`` pick
other outcomes. Every answer carries ``x-ratelimit-*`` headers; ``rpm``/``read_rpm`` enforce
token buckets with 429 + ``retry-after``; ``quota_exhausted`` makes every creation an
``insufficient_quota`` 429. "Creation" is ``POST .../runs``, ``POST /v1/responses`` and
``POST /v1/chat/completions``: they share ``rpm`` and the hang and reset faults.

A batch goes validating -> in_progress -> finalizing -> completed over ``batch_seconds``,
each line answered as a direct ``POST`` to its endpoint would be, into an output file (200s)
and an error file (the rest), each in shuffled order. Its faults: ``batch_expire`` ends
every batch ``expired`` with only the first half of its lines answered (the rest in neither
file); ``batch_fail_lines``, a regular expression searched in ``custom_id``, puts the lines
it matches in the error file with code ``server_error`` (``batchrun serve --batch-expire``,
``--batch-fail-lines REGEX``).

Faults, reproducible with ``seed`` (one random stream per route, drawn on arrival):
``latency_ms`` delays every answer; ``fail_rate`` answers 500/502/503 before any state
changes; ``hang_rate`` (creation) creates the run (response, completion), then holds the
answer back for ``hang_seconds``; ``reset_rate`` (creation) creates it, then drops the
connection.

Starting it::

    with RunningSimulator(SimulatorConfig(run_seconds=0.2)) as sim:   # sync code, tests
        ...sim.base_url, sim.stats(), sim.reset()
    async with serve_async(config) as base_url:                       # inside a running loop
        ...
    serve_forever(config, announce=print)                             # batchrun serve

The simulator never prints; it imports no client code except :mod:`batchrun.schema`.
"""

from __future__ import annotations

from batchrun.simulator.app import SIMULATOR_KEY, Simulator, create_app
from batchrun.simulator.server import (
    RunningSimulator,
    serve_async,
    serve_forever,
    start_in_thread,
)
from batchrun.simulator.settings import DEFAULT_HOST, DEFAULT_PORT, SimulatorConfig

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "SIMULATOR_KEY",
    "RunningSimulator",
    "Simulator",
    "SimulatorConfig",
    "create_app",
    "serve_async",
    "serve_forever",
    "start_in_thread",
]
