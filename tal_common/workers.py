"""Worker processes of every stage: how many the cores allow, and that they never outlive their parent.

``clamp_workers`` caps a requested DataLoader worker count at the cores this process may run on (what torch's
"suggested max number of worker" warning checks), saying so through the caller's ``say`` once per call site.
``exit_with_parent`` runs first thing in a child process: the kernel kills the child when its parent dies
(``PR_SET_PDEATHSIG`` on Linux), or, where that is not available, a watchdog thread polls the parent pid.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from typing import Callable

__all__ = ["usable_cores", "clamp_workers", "exit_with_parent"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_S = 0.5


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def clamp_workers(requested: int, name: str, say: Callable[[str], None]) -> int:
    """``requested`` worker processes, at most :func:`usable_cores`; ``say`` gets one line when it clamps.

    ``name`` is the option the user set (``run.workers``, ``--workers``), so the line says what to change.
    """
    cores = usable_cores()
    if requested > cores:
        say(f"{name} {requested} > {cores} cores available: using {cores} worker processes")
        return cores
    return requested


def exit_with_parent(parent_pid: int) -> None:
    """Make this process die (SIGKILL) as soon as ``parent_pid``, the process that started it, dies.

    Call it at the start of a child process. On Linux the kernel delivers the signal (``prctl
    PR_SET_PDEATHSIG``; it fires when the *thread* that forked exits, so fork workers from a thread that lives
    as long as they should); elsewhere a daemon thread checks the parent pid every ``PARENT_POLL_S`` seconds.
    A parent that died before this call is caught by the pid check that follows.
    """
    armed = _set_parent_death_signal()
    if os.getppid() != parent_pid:
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="parent-watchdog").start()


def _set_parent_death_signal() -> bool:
    """Ask the kernel for SIGKILL when the parent dies; ``False`` where prctl does not exist (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)
