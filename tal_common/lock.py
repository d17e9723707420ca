"""An exclusive lock file beside an output, so a second run on the same output stops with a clear message.

The lock is an ``flock`` on ``<output>.lock``, which also holds the owner's pid and host for the messages. The
kernel drops an ``flock`` when its holder dies (``kill -9`` included), so a lock file left by a dead run is
simply taken over (and said so); a live holder makes :func:`output_lock` raise :class:`OutputLockedError`.
Forked children (decode workers) close their copy of the descriptor, so a worker that outlives its parent
does not keep the output locked.
"""
from __future__ import annotations

import fcntl
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["OutputLockedError", "output_lock"]


_HELD: set[int] = set()  # descriptors of the locks this process holds, closed in forked children


def _close_in_child() -> None:
    for fd in _HELD:
        os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class OutputLockedError(ValueError):
    """Another live process holds the lock of an output; the message names the lock file and the holder."""


@contextmanager
def output_lock(path: Path, what: str) -> Iterator[None]:
    """Hold the lock file ``path`` while the block runs (``what``, e.g. ``"features.h5"``, names the output).

    The file is removed when the block ends. Raises :class:`OutputLockedError` when another process holds it.
    """
    path = Path(path)
    fd = _acquire(path, what)
    _HELD.add(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        _HELD.discard(fd)
        os.close(fd)


def _acquire(path: Path, what: str) -> int:
    """Open, lock and stamp ``path``; retried when the file was replaced between opening and locking."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise OutputLockedError(
                f"{path}: another run ({owner or 'owner unknown'}) is writing {what}; wait for it to finish or "
                "choose another output (two runs on one output would overwrite each other's files)"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the previous holder removed it as it finished
            same = False
        if not same:
            os.close(fd)
            continue
        previous = _read_owner(fd)
        if previous:
            print(f"{path}: taking over the lock left by {previous}, which is no longer running", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        os.fsync(fd)
        return fd


def _read_owner(fd: int) -> str:
    return os.pread(fd, 200, 0).decode(errors="replace").strip()
