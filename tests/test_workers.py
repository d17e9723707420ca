"""Worker processes: capped at the cores present (said once), and gone within seconds of a kill -9 of their parent."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tal_common.workers import clamp_workers, usable_cores
from test_extract_cli import ENV, FAST, ROOT, start_until_first_part, write_video

GONE_WITHIN_S = 3.0

# A parent that forks two children calling exit_with_parent (optionally without prctl: the watchdog thread),
# prints their pids and waits to be killed.
PARENT = """
import multiprocessing, os, sys, time
from tal_common import workers
if sys.argv[1] == "watchdog":
    workers._set_parent_death_signal = lambda: False
def child(parent):
    workers.exit_with_parent(parent)
    time.sleep(120)
ctx = multiprocessing.get_context("fork")
procs = [ctx.Process(target=child, args=(os.getpid(),)) for _ in range(2)]
for p in procs:
    p.start()
time.sleep(0.5)
print(" ".join(str(p.pid) for p in procs), flush=True)
time.sleep(120)
"""

# extract-features whose decodes of every video but w0 take a minute: once w0 is committed, every decode worker
# is in the middle of a decode, the case where a worker outlives a killed parent unless the kernel or a watchdog
# stops it.
SLOW_DECODES = """
import sys, time
from feature_extraction import dataset
decode = dataset.ClipDataset._decode
def slow(self, chunk):
    if self.videos[chunk.video_index].video_id != "w0":
        time.sleep(60)
    return decode(self, chunk)
dataset.ClipDataset._decode = slow
from feature_extraction.cli import main
sys.exit(main(sys.argv[1:]))
"""
WORKERS = 3


def children(pid: int) -> set[int]:
    """Pids whose parent is ``pid``, read from ``/proc/*/stat``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (a dead child nobody has reaped yet)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: set[int]) -> set[int]:
    deadline = time.monotonic() + GONE_WITHIN_S
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return {p for p in pids if alive(p)}


def kill_group(pid: int) -> None:
    """Clean up after a failed test: whatever is left of the session started for ``pid``."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_clamp_workers_caps_at_the_cores_and_says_which_option():
    said: list[str] = []
    cores = usable_cores()
    assert cores == len(os.sched_getaffinity(0))
    assert clamp_workers(cores + 3, "run.workers", said.append) == cores
    assert said == [f"run.workers {cores + 3} > {cores} cores available: using {cores} worker processes"]
    assert clamp_workers(cores, "run.workers", said.append) == cores and clamp_workers(0, "x", said.append) == 0
    assert len(said) == 1


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize("mode", ["prctl", "watchdog"])
def test_children_die_with_their_parent(mode):
    proc = subprocess.Popen([sys.executable, "-c", PARENT, mode], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        pids = {int(p) for p in proc.stdout.readline().split()}
        assert len(pids) == 2 and pids == children(proc.pid) and all(alive(p) for p in pids)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert wait_gone(pids) == set(), f"children outlived their parent ({mode})"
    finally:
        kill_group(proc.pid)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("orphan_videos")
    for i in range(8):
        write_video(root / f"w{i}.mp4", 200, 15)
    return root


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_kill_9_of_extract_features_leaves_no_decode_worker(videos, tmp_path):
    out = tmp_path / "f.h5"
    parts = out.with_name(out.name + ".parts")
    cmd = [sys.executable, "-c", SLOW_DECODES, str(videos), "-o", str(out), *FAST,
           "--set", f"run.workers={WORKERS}", "--set", "run.batch_size=2", "--set", "run.chunk_clips=2"]
    proc = start_until_first_part(cmd, parts)
    try:
        workers = children(proc.pid)
        assert proc.poll() is None, "the run finished before it could be killed"
        assert len(workers) >= min(WORKERS, usable_cores()), workers  # the decode workers (and any helper)
        os.kill(proc.pid, signal.SIGKILL)  # the main process only: its workers must notice by themselves
        proc.wait(timeout=30)
        assert wait_gone(workers) == set(), "decode workers outlived the killed extract-features"
        err = proc.stderr.read()  # the workers held stderr open too
    finally:
        kill_group(proc.pid)
    # more workers than cores: torch's "suggested max number of worker" warning is replaced by one line of ours
    clamped = f"run.workers {WORKERS} > {usable_cores()} cores available"
    assert err.count(clamped) == (1 if usable_cores() < WORKERS else 0), err
    assert "suggested max number of worker" not in err
