"""Coordination of the ranks of one extraction run (``torchrun`` or any launcher that sets ``RANK``/``WORLD_SIZE``).

What ranks exchange is small (the probed video list, "I am done"), so they coordinate over **gloo** on the
CPU whatever device they compute on; NCCL is never used, and each CUDA rank binds its own GPU
(``torch.cuda.set_device``) before anything else. Two mechanisms make a lost rank visible instead of
leaving the others waiting:

* **collectives** (barriers, ``all_gather_object``) run with a bounded timeout
  (:data:`COLLECTIVE_TIMEOUT`), and a peer that exits or drops its connection makes them fail at once; the
  failure is raised as :class:`RankLostError` naming the step;
* **heartbeats** cover the long phases where no collective runs (extraction, and the end where the first
  ranks to finish wait for the last): every rank publishes ``<parts>/ranks/rank<R>.json`` (pid, host, a
  counter) every few seconds from a background thread and watches the others' files; a rank whose counter
  has not changed for ``timeout_s`` seconds (measured on the watcher's own monotonic clock, so clocks of
  different nodes never matter) and that has not published ``rank<R>.done`` is declared lost, and the
  watcher stops its own process with :data:`EXIT_RANK_LOST` and a message saying which rank, and that
  rerunning resumes. This also catches a rank that hangs (e.g. a stopped process or a dead node) where no
  connection is closed. The parts folder is the run's shared folder already (rank 0 assembles from it), so
  multi-node runs need nothing more.

Stopping abruptly is safe: every finished video is already published atomically in the parts folder.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from tal_common.atomic import write_text_atomic
from tal_common.devices import bind_cuda

COLLECTIVE_TIMEOUT = dt.timedelta(hours=1)  # bounds a barrier/gather; dead peers are found by heartbeats
EXIT_RANK_LOST = 3
DEFAULT_RANK_TIMEOUT_S = 30.0


class RankLostError(RuntimeError):
    """A collective failed because another rank exited, crashed or dropped its connection."""


def _say(message: str) -> None:
    print(f"extract-features: {message}", file=sys.stderr, flush=True)


def _stop_now(message: str) -> None:
    """Print ``message`` and end this process at once (from any thread; parts on disk are all complete)."""
    _say(message)
    os._exit(EXIT_RANK_LOST)


class RankGroup:
    """Rank, world size and device of this process, and the collectives between ranks.

    A single-process run (``WORLD_SIZE`` unset or 1) has no process group and every method is trivial.
    """

    def __init__(self, cuda: bool) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        # before any collective or CUDA work: this rank owns its GPU
        self.device = bind_cuda() if cuda else torch.device("cpu")
        if cuda:
            count = torch.cuda.device_count()
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            if local_world > count and self.local_rank == 0:
                _say(f"{local_world} ranks on this node share {count} GPU(s) (rank with LOCAL_RANK r uses cuda:r%{count})")
        self._monitor: Heartbeat | None = None
        self._previous_sigterm: object = None
        if self.world > 1:
            if not dist.is_initialized():
                dist.init_process_group("gloo", timeout=COLLECTIVE_TIMEOUT)
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        _say(f"rank {self.rank}: stopped by SIGTERM (torchrun stops every rank when one fails: see the first error "
             "above); finished videos are kept, rerun the same command to resume")
        sys.exit(128 + signum)

    def _collective(self, what: str, run: Callable[[], None]) -> None:
        try:
            run()
        except RuntimeError as exc:  # gloo: connection closed / reset by peer, or the timeout
            raise RankLostError(
                f"rank {self.rank}: lost contact with the other ranks while {what} ({exc}); another rank failed or "
                "stopped (see its message); finished videos are kept, rerun the same command to resume"
            ) from exc

    def barrier(self, what: str) -> None:
        """Wait for every rank (``what`` names the step in the error if a rank is lost)."""
        if self.world > 1:
            self._collective(what, dist.barrier)

    def gather(self, obj: object, what: str) -> list:
        """Every rank's ``obj``, in rank order (``[obj]`` for a single process)."""
        if self.world == 1:
            return [obj]
        out: list = [None] * self.world
        self._collective(what, lambda: dist.all_gather_object(out, obj))
        return out

    def start_heartbeat(self, folder: Path, timeout_s: float) -> None:
        """Publish this rank's heartbeat in ``folder`` and watch the other ranks' (no-op for one process)."""
        if self.world > 1:
            self._monitor = Heartbeat(folder, self.rank, self.world, timeout_s)
            self._monitor.start()

    def finish(self) -> None:
        """Say this rank is done (its heartbeat stops); rank 0 then waits, still watching, until every rank is."""
        if self._monitor is None:
            return
        if self.rank == 0:
            self._monitor.mark_done()
            self._monitor.wait_for_all()
            self._monitor.stop()
        else:
            self._monitor.stop()
            self._monitor.mark_done()
        self._monitor = None

    def close(self) -> None:
        """Stop the heartbeat (if still running) and leave the process group."""
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None
        if self.world > 1:
            if self._previous_sigterm is not None:  # None: the previous handler was not set from Python
                signal.signal(signal.SIGTERM, self._previous_sigterm)  # type: ignore[arg-type]
            if dist.is_initialized():
                dist.destroy_process_group()


class Heartbeat:
    """One rank's heartbeat file and its watch over the others' (see the module docstring).

    ``on_lost(message)`` is called from the watcher thread when a rank is lost; the default prints the
    message and ends the process with :data:`EXIT_RANK_LOST`.
    """

    def __init__(self, folder: Path, rank: int, world: int, timeout_s: float,
                 on_lost: Callable[[str], None] = _stop_now) -> None:
        if timeout_s <= 0:
            raise ValueError(f"rank timeout must be > 0 s, got {timeout_s}")
        self.folder = Path(folder)
        self.rank = rank
        self.world = world
        self.timeout_s = timeout_s
        self.interval_s = min(2.0, timeout_s / 5)
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-rank{rank}", daemon=True)
        self._count = 0
        start = time.monotonic()
        self._seen: dict[int, tuple[str | None, float]] = {r: (None, start) for r in range(world) if r != rank}

    def path(self, rank: int) -> Path:
        return self.folder / f"rank{rank}.json"

    def done_path(self, rank: int) -> Path:
        return self.folder / f"rank{rank}.done"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def beat(self) -> None:
        """Publish this rank's heartbeat once (the counter changes on every call)."""
        self._count += 1
        record = {"rank": self.rank, "pid": os.getpid(), "host": socket.gethostname(), "beat": self._count}
        write_text_atomic(self.path(self.rank), json.dumps(record))

    def mark_done(self) -> None:
        write_text_atomic(self.done_path(self.rank), "done\n")

    def lost_ranks(self) -> list[tuple[int, float, str]]:
        """Check the other ranks once: ``(rank, seconds since its last beat, who)`` for each lost one."""
        now = time.monotonic()
        lost = []
        for rank, (last, since) in self._seen.items():
            if self.done_path(rank).exists():
                continue
            try:
                text = self.path(rank).read_text()
            except OSError:
                text = None
            if text is not None and text != last:
                self._seen[rank] = (text, now)
                continue
            if now - since > self.timeout_s:
                who = "never started its heartbeat"
                if last is not None:
                    info = json.loads(last)
                    who = f"pid {info['pid']} on {info['host']}"
                lost.append((rank, now - since, who))
        return lost

    def pending(self) -> list[int]:
        """Ranks that have not said they are done."""
        return [r for r in self._seen if not self.done_path(r).exists()]

    def wait_for_all(self) -> None:
        """Block until every other rank is done (the watcher thread handles lost ranks meanwhile)."""
        while self.pending():
            if self._stop.wait(0.2):
                return

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()
            lost = self.lost_ranks()
            if lost:
                rank, silent_s, who = lost[0]
                self.on_lost(
                    f"rank {self.rank}: rank {rank} ({who}) has sent no heartbeat for {silent_s:.0f} s (limit "
                    f"{self.timeout_s:g} s): it died or hangs; stopping this rank too. Finished videos are kept in "
                    f"{self.folder.parent}; rerun the same command to resume"
                )
                return
