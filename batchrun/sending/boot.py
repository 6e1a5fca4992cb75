"""Which boot of this machine a process runs in, where the system says (see
:class:`batchrun.sending.durability.ReservedAhead`).

A write that was not synced to disk outlives a killed process (the system holds it) but
not a power cut or a crash of the machine, after which the machine boots again. So an
unsynced entry is as good as a synced one to a rerun on the same boot, and worth nothing
to a rerun on another.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

# Linux: a random id drawn at each boot.
LINUX_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@functools.cache
def boot_id() -> str | None:
    """This boot's id (Linux, macOS), or None where the system does not say."""
    try:
        if sys.platform.startswith("linux"):
            found = LINUX_BOOT_ID.read_text(encoding="ascii").strip()
        elif sys.platform == "darwin":
            found = subprocess.run(
                ["/usr/sbin/sysctl", "-n", "kern.bootsessionuuid"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        else:
            return None
    except (OSError, subprocess.SubprocessError):
        return None
    return found or None
