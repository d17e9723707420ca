"""Several ranks on CPU: a rank killed under torchrun, or one that hangs on another "node", stops the run with a
clear message well within a minute, and rerunning the same command completes a file equal to an uninterrupted run
(equal to float32 rounding: a video's clips may land in batches of other sizes, and the CPU kernels then round
differently in the last bits; every attribute is identical).

The videos, the fast demo settings and the one-process reference come from ``test_extract_cli.py``. Output goes to
files, not pipes: the processes of a killed rank may outlive it for a while, holding a pipe open.
"""
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from test_extract_cli import ENV, FAST, ROOT, _contents, many_videos, reference  # noqa: F401 (fixtures)

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


def assert_equal_up_to_rounding(path: Path, reference: Path) -> None:
    got, ref = _contents(path), _contents(reference)
    assert sorted(got) == sorted(ref)
    for key, (feats, attrs) in ref.items():
        np.testing.assert_allclose(got[key][0], feats, rtol=1e-5, atol=1e-6, err_msg=key)
        assert got[key][1].keys() == attrs.keys() and all(got[key][1][a] == v for a, v in attrs.items()), key


def start(cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


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
    began = time.monotonic()
    proc = start(cmd, tmp_path / "torchrun.log", ENV)
    rank1_group = None
    try:
        wait_for(lambda: heartbeat_pid(parts, 1) is not None or proc.poll() is not None, 60, "rank 1's heartbeat")
        assert proc.poll() is None, "the run ended before rank 1 could be killed"
        rank1 = heartbeat_pid(parts, 1)
        # torchrun starts each rank in its own process group: kill rank 1 with its decode/probe processes
        rank1_group = os.getpgid(rank1) if os.getpgid(rank1) != os.getpgid(proc.pid) else None
        if rank1_group is not None:
            os.killpg(rank1_group, signal.SIGKILL)
        else:
            os.kill(rank1, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        kill_group(proc)
        if rank1_group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(rank1_group, signal.SIGKILL)
    err = (tmp_path / "torchrun.log").read_text()
    assert time.monotonic() - began < 60
    assert proc.returncode != 0 and not out.exists()
    # rank 0 learns of the loss either from torchrun's SIGTERM or, when it is inside a collective at that moment,
    # from the closed connection: both say so in one line and say how to resume
    stopped = "rank 0: stopped by SIGTERM" in err or "rank 0: lost contact with the other ranks" in err
    assert stopped and "rerun the same command to resume" in err, err[-3000:]

    cmd[2] = f"--master_port={free_port()}"
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_equal_up_to_rounding(out, reference)
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
        procs.append(start(cmd, tmp_path / f"rank{rank}.log", env))
    try:
        wait_for(lambda: any(parts.glob("*.h5")) or procs[0].poll() is not None, 90, "the first finished video")
        assert not (parts / "ranks" / "rank1.done").exists(), "rank 1 finished before it could be frozen"
        os.killpg(procs[1].pid, signal.SIGSTOP)  # hangs: its connection stays open, only its heartbeat stops
        stopped = time.monotonic()
        procs[0].wait(timeout=60)
        assert time.monotonic() - stopped < 4 + 10
    finally:
        for proc in procs:
            kill_group(proc)
    err = (tmp_path / "rank0.log").read_text()
    assert procs[0].returncode == 3, err[-3000:]
    assert f"rank 0: rank 1 (pid {procs[1].pid} on " in err and "has sent no heartbeat" in err, err[-3000:]
    assert "rerun the same command to resume" in err and not out.exists()
    kept = len(list(parts.glob("*.h5")))
    assert 1 <= kept < 10

    done = subprocess.run(cmd[:-2], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{kept} already done" in done.stderr
    assert_equal_up_to_rounding(out, reference)
