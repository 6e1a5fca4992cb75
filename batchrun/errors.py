"""Exit codes and the exceptions that stop a whole job.

Row problems are data (see :mod:`batchrun.report`); only these raise::

    BatchrunError              anything that stops the job; .exit_code says how
    ├── UsageError             bad option, bad config file, output name clash    (exit 2)
    ├── InputError             unreadable or unusable input sheet                (exit 2)
    ├── JournalMismatch        the journal belongs to another input              (exit 2)
    ├── JournalBusy            another process works the same journal            (exit 2)
    └── OutputNotWritten       rows were sent, then the output could not be      (exit 3)
                               written: their results are in the journal

The CLI turns each into one line on stderr and its exit code. A server that refuses every
row (key, quota, route) is not an exception: the sending core stops the job and reports it
as aborted (exit 3).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, the contract with shell scripts and schedulers."""

    OK = 0
    ROWS_FAILED = 1
    USAGE = 2
    ABORTED = 3
    INTERNAL = 4  # a bug: one line, the traceback with --traceback
    # EX_TEMPFAIL (sysexits.h): a --batch --no-wait job whose batches are still running;
    # running the same command again moves it on.
    BATCH_RUNNING = 75
    INTERRUPTED = 130


class BatchrunError(Exception):
    """A problem that stops the whole job."""

    exit_code: ExitCode = ExitCode.USAGE


class UsageError(BatchrunError):
    """An option, config file or output name is unusable; nothing was sent."""


class InputError(BatchrunError):
    """The input sheet cannot be read or lacks what every row needs; nothing was sent."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class JournalMismatch(BatchrunError):
    """The journal was written for another input (or by a newer batchrun)."""


class JournalBusy(BatchrunError):
    """Another batchrun process is working the same journal; nothing was sent."""


class OutputNotWritten(BatchrunError):
    """Rows were sent (or taken from the journal), then the output could not be written.

    Their results are safe in the journal: the same command with another ``-o`` writes
    them without sending anything.
    """

    exit_code = ExitCode.ABORTED
