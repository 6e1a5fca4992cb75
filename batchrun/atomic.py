"""Write a file so that readers see either the old version or the whole new one.

staged = StagedFile(Path("out.csv"))      # creates ".out.csv.<random>.tmp" beside it
with open(staged.temp, "w") as f: ...
staged.commit()                           # fsync, then rename onto out.csv
# or staged.discard(): the temp file goes, out.csv is untouched

check_writable(Path("out.csv"))           # the same errors as StagedFile, before any work
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from batchrun.errors import UsageError

__all__ = ["StagedFile", "check_writable"]


class StagedFile:
    """A temporary file beside ``target`` that replaces it on commit or vanishes on discard."""

    __slots__ = ("_done", "target", "temp")

    def __init__(self, target: Path) -> None:
        self.target = target
        # Same directory as the target: os.replace is atomic only within one file system.
        # A leading dot keeps the temp file out of casual listings; the random part lets
        # two jobs write beside each other.
        self.temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        self._done = False
        if target.is_dir():
            raise UsageError(f"{target}: is a directory, not a file")
        try:
            # "x" creates with the usual umask permissions (mkstemp would make it 0600).
            with open(self.temp, "xb"):
                pass
        except FileNotFoundError:
            raise UsageError(f"{target}: directory {target.parent} does not exist") from None
        except OSError as exc:
            raise UsageError(f"{target}: cannot write there ({exc.strerror})") from None

    def commit(self) -> None:
        """Flush the temp file to disk and move it onto the target."""
        if self._done:
            return
        self._done = True
        try:
            with open(self.temp, "rb+") as f:
                os.fsync(f.fileno())
            self.temp.replace(self.target)
        except BaseException:
            self.temp.unlink(missing_ok=True)
            raise
        _fsync_directory(self.target.parent)

    def discard(self) -> None:
        """Remove the temp file; the target stays as it was."""
        self._done = True
        self.temp.unlink(missing_ok=True)


def check_writable(target: Path) -> None:
    """Raise the :class:`UsageError` a :class:`StagedFile` of ``target`` would raise (a
    folder in its place, its folder missing or not writable), now rather than later:
    a job checks its output files before it sends anything."""
    StagedFile(target).discard()


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, and not fatal.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
