"""One process per journal: an OS lock on ``<journal>.lock``, which names its holder.

    lock = JournalLock(Path("sheet.batchrun.sqlite"))   # JournalBusy if another holds it
    ...
    lock.release()

The OS drops the lock when the process ends, however it ends (SIGKILL, power cut), so a
stale lock file never blocks the next job. The file holds the holder's pid, for the
message; on Windows the lock is on a byte far past that text, so reading the pid never
meets the byte-range lock.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from batchrun.errors import JournalBusy

LOCKED_BYTE = 1 << 20  # past any pid text

if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> None:
        os.lseek(fd, LOCKED_BYTE, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)

    def _unlock(fd: int) -> None:
        os.lseek(fd, LOCKED_BYTE, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    # flock, not lockf: its lock belongs to the open file, so a second job in the same
    # process (a library caller's threads) is refused too.
    def _try_lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


class JournalLock:
    """Holds the lock of the journal at ``journal`` until :meth:`release`."""

    __slots__ = ("_fd", "path")

    def __init__(self, journal: Path) -> None:
        self.path = Path(f"{journal}.lock")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _try_lock(fd)
        except OSError:
            holder = _read_pid(fd)
            os.close(fd)
            raise JournalBusy(
                f"the journal {journal} is in use by another batchrun job (pid {holder}); "
                "let it finish, or stop it and run again"
            ) from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
        self._fd: int | None = fd

    def release(self) -> None:
        """Let another job take the journal."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            _unlock(fd)
        os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text or "unknown"
