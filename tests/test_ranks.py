"""Rank coordination: heartbeats find a lost rank (dead, hung or never started), done ranks are not waited for."""
import json
import signal
import threading
import time

import pytest

from feature_extraction import cli, ranks
from feature_extraction.ranks import Heartbeat
from tal_common.devices import cuda_index


def test_a_silent_rank_is_lost_after_the_timeout_and_a_done_one_never(tmp_path):
    watcher = Heartbeat(tmp_path, rank=0, world=3, timeout_s=1.0)
    one = Heartbeat(tmp_path, rank=1, world=3, timeout_s=1.0)
    two = Heartbeat(tmp_path, rank=2, world=3, timeout_s=1.0)
    one.beat()
    two.beat()
    assert watcher.lost_ranks() == [] and watcher.pending() == [1, 2]
    for _ in range(3):  # rank 1 keeps beating, rank 2 is silent (within the limit), then says it is done
        time.sleep(0.1)
        one.beat()
        assert watcher.lost_ranks() == []
    two.mark_done()
    time.sleep(1.2)  # now rank 1 falls silent past the limit; done rank 2 is not watched any more
    record = json.loads(one.path(1).read_text())
    lost = watcher.lost_ranks()
    assert [(rank, who) for rank, _, who in lost] == [(1, f"pid {record['pid']} on {record['host']}")]
    assert lost[0][1] > 1.0 and watcher.pending() == [1]


def test_a_rank_that_never_beats_is_lost(tmp_path):
    watcher = Heartbeat(tmp_path, rank=1, world=2, timeout_s=0.2)
    assert watcher.lost_ranks() == []
    time.sleep(0.3)
    assert [(rank, who) for rank, _, who in watcher.lost_ranks()] == [(0, "never started its heartbeat")]


def test_the_watcher_thread_reports_a_lost_rank_and_waiting_ends_when_all_are_done(tmp_path):
    messages = []
    reported = threading.Event()

    def on_lost(message):
        messages.append(message)
        reported.set()

    watcher = Heartbeat(tmp_path, rank=0, world=2, timeout_s=0.5, on_lost=on_lost)
    peer = Heartbeat(tmp_path, rank=1, world=2, timeout_s=0.5)
    peer.beat()
    start = time.monotonic()
    watcher.start()
    assert json.loads(watcher.path(0).read_text())["rank"] == 0
    assert reported.wait(5)
    assert 0.5 < time.monotonic() - start < 2.0
    assert "rank 0: rank 1 (pid" in messages[0] and "has sent no heartbeat" in messages[0]
    assert "rerun the same command to resume" in messages[0]
    watcher.stop()

    waiter = Heartbeat(tmp_path / "b", rank=0, world=2, timeout_s=5, on_lost=on_lost)
    waiter.start()
    finisher = Heartbeat(tmp_path / "b", rank=1, world=2, timeout_s=5)
    threading.Timer(0.3, finisher.mark_done).start()
    waiter.wait_for_all()
    assert waiter.pending() == [] and len(messages) == 1
    waiter.stop()


def test_cuda_index_shares_gpus_round_robin():
    assert [cuda_index(r, 8) for r in range(8)] == list(range(8))
    assert [cuda_index(r, 1) for r in range(2)] == [0, 0]
    assert [cuda_index(r, 2) for r in range(4)] == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="no CUDA device"):
        cuda_index(0, 0)
    with pytest.raises(ValueError, match="rank timeout"):
        Heartbeat("unused", rank=0, world=2, timeout_s=0)


def test_a_cuda_rank_binds_its_gpu_before_the_gloo_group(monkeypatch):
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(ranks.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(ranks.torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    monkeypatch.setattr(ranks.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(ranks.dist, "init_process_group", lambda backend, timeout: calls.append(("init", backend)))
    before = signal.getsignal(signal.SIGTERM)
    group = ranks.RankGroup(cuda=True)
    assert calls == [("set_device", 1), ("init", "gloo")]
    assert group.device == ranks.torch.device("cuda", 1) and (group.rank, group.world) == (3, 4)
    assert signal.getsignal(signal.SIGTERM) == group._on_sigterm
    group.close()
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_rerun_forgets_the_heartbeats_of_the_interrupted_run(tmp_path):
    out, parts = tmp_path / "f.h5", tmp_path / "f.h5.parts"
    cli._prepare_workdir(out, parts, {"config": {}, "weights_sha256": ""})
    Heartbeat(parts / "ranks", rank=1, world=2, timeout_s=1).mark_done()  # a rank that finished before the crash
    cli._prepare_workdir(out, parts, {"config": {}, "weights_sha256": ""})
    assert not (parts / "ranks").exists() and (parts / "run.json").exists()


def test_every_stage_binds_the_same_gpu_for_a_rank(monkeypatch):
    from tal_common import devices

    calls = []
    monkeypatch.setenv("LOCAL_RANK", "5")
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(devices.torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(devices.torch.cuda, "set_device", calls.append)
    assert devices.local_device("auto") == devices.torch.device("cuda", 1) and calls == [1]
    assert devices.local_device("cpu") == devices.torch.device("cpu") and calls == [1]
    monkeypatch.setattr(devices.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device"):
        devices.local_device("cuda")
