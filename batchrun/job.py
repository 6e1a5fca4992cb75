"""A job resolved once: its settings, the endpoint they name, its schema and its journal.

Built where a job starts (:func:`batchrun.jobs.run_file`, :func:`batchrun.jobs.validate_file`,
:func:`batchrun.library.run_frame`, ...) and passed down, so no layer below looks the
endpoint up by name again::

    job = Job.resolve(settings, journal)
    job.endpoint.id_column  # "run_id", "response_id", "completion_id"
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from batchrun.config import Settings
from batchrun.endpoints import Endpoint, endpoint_named

if TYPE_CHECKING:
    from batchrun.sending.journal import Journal


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

    @classmethod
    def resolve(cls, settings: Settings, journal: Journal | None = None) -> Job:
        """The job of ``settings``, recorded in ``journal`` when it sends."""
        return cls(settings, endpoint_named(settings.endpoint), settings.schema, journal)

    def recorded_in(self, journal: Journal) -> Job:
        """This job, recorded in ``journal`` (opened once the sheet was found sound)."""
        return replace(self, journal=journal)

    @property
    def sending_journal(self) -> Journal:
        """The journal of a job that sends rows (it always has one)."""
        if self.journal is None:
            raise ValueError("a job that sends rows needs a journal")
        return self.journal
