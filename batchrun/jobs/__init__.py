"""Whole jobs on files: read the sheet, validate or run it, write the output beside it.

The CLI calls :func:`run_file` and :func:`validate_file`; both return a :class:`JobReport`
and raise only :class:`~batchrun.errors.BatchrunError` for job-stopping problems.

- :mod:`~batchrun.jobs.run` — ``batchrun run``: rows sent chunk by chunk.
- :mod:`~batchrun.jobs.validate` — ``batchrun validate``: rows checked, nothing sent.
- :mod:`~batchrun.jobs.files` — the input as the settings read it, the output beside it.
"""

from batchrun.jobs.files import (
    JobReport,
    StreamedOutput,
    output_files,
    resolve_output,
    settings_path,
)
from batchrun.jobs.run import job_source, run_file
from batchrun.jobs.validate import validate_file

__all__ = [
    "JobReport",
    "StreamedOutput",
    "job_source",
    "output_files",
    "resolve_output",
    "run_file",
    "settings_path",
    "validate_file",
]
