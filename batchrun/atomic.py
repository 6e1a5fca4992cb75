"""Write a file so that readers see either the old version or the whole new one.

staged = StagedFile(Path("out.csv"))      # creates ".out.csv.<random>.<pid>-<host>.tmp"
with open(staged.temp, "w") as f: ...
staged.commit()                           # fsync, then rename onto out.csv
# or staged.discard(): the temp file goes, out.csv is untouched

A process killed while it writes (SIGKILL, a power cut) cannot remove its temp file; the
next StagedFile of the same target does, once the process that wrote it is gone (the
process id and a hash of the host name in the file's name say whose it is).

check_writable(Path("out.csv"))           # the same errors as StagedFile, before any work
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
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
        # two jobs write beside each other; the owner lets a later job remove it.
        owner = f"{os.getpid()}-{HOST}"
        self.temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.{owner}.tmp")
        self._done = False
        if target.is_dir():
            raise UsageError(f"{target}: is a directory, not a file")
        _remove_abandoned(target)
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


# Whose temp files are whose: a process id means something on its own host only.
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _remove_abandoned(target: Path) -> None:
    """Remove the temp files of ``target`` that processes of this host which have ended
    left behind (killed while writing). Only where a process can be asked whether it
    runs without harming it (POSIX: signal 0); elsewhere they stay."""
    with contextlib.suppress(OSError):
        for temp in target.parent.glob(f".{_glob_escape(target.name)}.*.*-{HOST}.tmp"):
            pid = temp.name.removesuffix(f"-{HOST}.tmp").rpartition(".")[2]
            if pid.isdigit() and process_ended(int(pid)):
                temp.unlink(missing_ok=True)


def _glob_escape(name: str) -> str:
    """``name`` matched literally in a glob pattern."""
    return "".join(f"[{char}]" if char in "*?[" else char for char in name)


def process_ended(pid: int) -> bool:
    """Whether process ``pid`` of this host has ended, as far as can be told without
    harming it: on POSIX by signal 0; elsewhere (Windows, where os.kill would end it)
    never."""
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it runs, as another user
    return False


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, and not fatal.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
