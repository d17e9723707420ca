"""Several ranks on CPU: a rank killed under torchrun, or one that hangs on another "node", stops the run with a
clear message well within a minute, and rerunning the same command completes a file equal to an uninterrupted run.

The videos, the fast demo settings and the one-process reference come from ``test_extract_cli.py``.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from test_extract_cli import ENV, FAST, ROOT, _assert_same_contents, many_videos, reference  # noqa: F401 (fixtures)

TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def heartbeat_pid(parts: Path, rank: int) -> int | None:
    try:
        return json.loads((parts / "ranks" / f"rank{rank}.json").read_text())["pid"]
    except (OSError, ValueError):
        return None


def test_killed_rank_under_torchrun_stops_the_run_and_the_rerun_resumes(many_videos, reference, tmp_path):
    out = tmp_path / "f.h5"
    parts = out.with_name(out.name + ".parts")
    cmd = [TORCHRUN, "--nproc_per_node=2", f"--master_port={free_port()}", "-m", "feature_extraction.cli",
           str(many_videos), "-o", str(out), *FAST, "--device", "cpu"]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for(lambda: heartbeat_pid(parts, 1) is not None or proc.poll() is not None, 60, "rank 1's heartbeat")
        assert proc.poll() is None, "the run ended before rank 1 could be killed"
        os.kill(heartbeat_pid(parts, 1), signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.monotonic() - start < 60
    assert proc.returncode != 0 and not out.exists()
    assert "rank 0: stopped by SIGTERM" in err and "rerun the same command to resume" in err, err[-3000:]

    cmd[2] = f"--master_port={free_port()}"
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_contents(out, reference)
    assert not parts.exists()


def test_hung_rank_on_another_node_is_found_by_its_heartbeat(many_videos, reference, tmp_path):
    """Two ranks started by hand (as on two nodes, where no launcher stops the survivors); rank 1 is frozen."""
    out = tmp_path / "f.h5"
    parts = out.with_name(out.name + ".parts")
    port = str(free_port())
    cmd = [sys.executable, "-m", "feature_extraction.cli", str(many_videos), "-o", str(out), *FAST, "--device", "cpu",
           "--rank-timeout-s", "4"]
    procs = []
    for rank in range(2):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port}
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True))
    try:
        wait_for(lambda: any(parts.glob("*.h5")) or procs[0].poll() is not None, 90, "the first finished video")
        assert not (parts / "ranks" / "rank1.done").exists(), "rank 1 finished before it could be frozen"
        os.killpg(procs[1].pid, signal.SIGSTOP)  # hangs: its connection stays open, only its heartbeat stops
        stopped = time.monotonic()
        _, err = procs[0].communicate(timeout=60)
        assert time.monotonic() - stopped < 4 + 10
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert procs[0].returncode == 3, err[-3000:]
    assert f"rank 0: rank 1 (pid {procs[1].pid} on " in err and "has sent no heartbeat" in err, err[-3000:]
    assert "rerun the same command to resume" in err and not out.exists()
    kept = len(list(parts.glob("*.h5")))
    assert 1 <= kept < 10

    done = subprocess.run(cmd[:-2], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{kept} already done" in done.stderr
    _assert_same_contents(out, reference)
