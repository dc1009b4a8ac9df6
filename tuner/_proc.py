"""Process helpers shared by the trial worker, the ranks it forks and launched scripts
(stdlib only)."""

from __future__ import annotations

import os
import signal
import time

__all__ = ["die_with_parent", "dump_stacks", "kill_group"]


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG), so a
    trial never outlives its worker (nor a DDP rank its trial). A no-op elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(70)
    except (OSError, AttributeError):
        pass


def dump_stacks(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGUSR1)
        time.sleep(0.5)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
