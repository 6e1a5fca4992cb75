"""A job resolved once: its settings, the endpoint they name, its schema, its journal and,
with ``--simulate``, the server that answers it.

Built where a job starts (:func:`batchrun.jobs.run_file`, :func:`batchrun.jobs.validate_file`,
:func:`batchrun.library.run_frame`, ...) and passed down, so no layer below looks the
endpoint up by name again::

    job = Job.resolve(settings, journal)
    job.endpoint.id_column  # "run_id", "response_id", "completion_id"
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from batchrun.config import Settings
from batchrun.endpoints import Endpoint, endpoint_named

if TYPE_CHECKING:
    from batchrun.sending.journal import Journal

# A server that answers a job's requests itself, started on the job's own event loop: the
# sending session enters it before anything is sent and sends to the base URL it yields.
Server = Callable[[], AbstractAsyncContextManager[str]]


@dataclass(frozen=True, slots=True)
class Job:
    """One job's settings and what they resolve to."""

    settings: Settings
    # The endpoint of --endpoint: what a row's request is and how its answer is read.
    endpoint: Endpoint
    # The request-body schema in force: the Assistants version (v1, v2) for runs, else the
    # endpoint's own ("responses", "chat").
    schema: str
    # Where the job's rows are recorded; None for a job that sends nothing (validate).
    journal: Journal | None = None
    # What answers the job's requests in place of settings.base_url (--simulate), if any.
    server: Server | None = None

    @classmethod
    def resolve(cls, settings: Settings, journal: Journal | None = None) -> Job:
        """The job of ``settings``, recorded in ``journal`` when it sends."""
        job = cls(settings, endpoint_named(settings.endpoint), settings.schema)
        return job if journal is None else job.recorded_in(journal)

    def recorded_in(self, journal: Journal) -> Job:
        """This job, recorded in ``journal`` (opened once the sheet was found sound)."""
        server = simulator_beside(journal.path) if self.settings.simulate else None
        return replace(self, journal=journal, server=server)

    @property
    def sending_journal(self) -> Journal:
        """The journal of a job that sends rows (it always has one)."""
        if self.journal is None:
            raise ValueError("a job that sends rows needs a journal")
        return self.journal


def simulator_beside(journal_path: Path | None) -> Server:
    """The built-in simulator (``--simulate``) on a free loopback port.

    The runs it makes are logged beside the journal (when it is a file), so a rerun's
    simulator knows them: a pending run can be followed, a row caught in flight reconciled.
    """
    run_log = None if journal_path is None else f"{journal_path}.simulator.jsonl"

    def serve() -> AbstractAsyncContextManager[str]:
        from batchrun.simulator import SimulatorConfig, serve_async

        return serve_async(SimulatorConfig(port=0, run_log=run_log))

    return serve
