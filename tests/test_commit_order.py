"""Videos are committed early and in order: the decode schedule, a real 2-worker run observed batch by batch,
and a Ctrl-C (SIGINT) after the first committed video that keeps it for the rerun."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from feature_extraction import pipeline
from feature_extraction.cli import main
from feature_extraction.dataset import SLICE_BATCHES, Chunk, scheduled_batches
from test_extract_cli import ENV, FAST, ROOT, _assert_same_contents, start_until_first_part, write_video

# Clip counts of the demo sampler (8 frames x interval 2 at 15 fps, stride 8): 8 * (n - 1) + 16 frames -> n clips.
# With the previous schedule (each worker one contiguous half of all clips) the first video was whole after 32 clips
# of 60 and the third after 48; committing window by window they are whole after 16 and 32.
CLIPS = [16, 8, 8, 16, 6, 6]
SMALL = [*FAST, "--set", "run.workers=2", "--set", "run.batch_size=2", "--set", "run.chunk_clips=2"]


def make_chunks(counts: list[int], chunk_clips: int) -> list[Chunk]:
    return [Chunk(v, first, min(chunk_clips, n - first)) for v, n in enumerate(counts) for first in range(0, n, chunk_clips)]


def delivered_at_commit(chunks: list[Chunk], batches: list[list[int]], counts: list[int]) -> list[int]:
    """Per video: the clips the main process has received (in batch order) when the video's last clip arrives."""
    seen = [0] * len(counts)
    delivered, commit = 0, [-1] * len(counts)
    for batch in batches:
        for index in batch:
            chunk = chunks[index]
            delivered += chunk.num_clips
            seen[chunk.video_index] += chunk.num_clips
        for v, n in enumerate(counts):
            if commit[v] < 0 and seen[v] == n:
                commit[v] = delivered
    return commit


def per_worker(chunks: list[Chunk], batches: list[list[int]], workers: int) -> list[list[Chunk]]:
    """The chunks each DataLoader worker decodes, in its order (worker ``w`` gets batches ``w, w + W, ...``)."""
    return [[chunks[i] for batch in batches[w::workers] for i in batch] for w in range(workers)]


def assert_forward_only(sequence: list[Chunk]) -> None:
    """A worker never returns to a video it left and reads each video forward: one reader open at a time."""
    for a, b in zip(sequence, sequence[1:]):
        assert (b.video_index, b.first_clip) > (a.video_index, a.first_clip), (a, b)


def test_schedule_commits_each_window_by_its_end():
    chunks = make_chunks(CLIPS, 2)
    batches = scheduled_batches(chunks, batch_size=2, num_streams=2)
    assert sorted(i for b in batches for i in b) == list(range(len(chunks)))
    assert all(sum(chunks[i].num_clips for i in b) <= 2 for b in batches)
    # Windows of >= 2 workers x SLICE_BATCHES x 2 clips = 16: [v0] (16), [v1, v2] (16), [v3] (16), [v4, v5] (12).
    assert SLICE_BATCHES == 4
    # v0 is split between the two workers (clips 0-7 and 8-15), so it is whole after its own 16 clips; v1 and v2
    # are decoded side by side (v1's last batch comes just before v2's: 30, 32); v3 is split like v0 (48).
    assert delivered_at_commit(chunks, batches, CLIPS) == [16, 30, 32, 48, 58, 60]
    work = per_worker(chunks, batches, 2)
    for sequence in work:
        assert_forward_only(sequence)
    assert [sum(c.num_clips for c in s) for s in work] == [8 + 8 + 8 + 6, 8 + 8 + 8 + 6]


def test_schedule_on_many_videos_keeps_workers_busy_and_commits_in_windows():
    rng = np.random.default_rng(0)
    counts = [int(n) for n in rng.integers(1, 120, size=40)]
    chunks = make_chunks(counts, 4)
    workers, batch = 3, 8
    batches = scheduled_batches(chunks, batch_size=batch, num_streams=workers)
    assert sorted(i for b in batches for i in b) == list(range(len(chunks)))
    work = per_worker(chunks, batches, workers)
    for sequence in work:
        assert_forward_only(sequence)
    # Windows written plainly: whole videos until >= workers * SLICE_BATCHES * batch clips.
    target, windows, current = workers * SLICE_BATCHES * batch, [], []
    for v, n in enumerate(counts):
        current.append(v)
        if sum(counts[u] for u in current) >= target or v == len(counts) - 1:
            windows.append(current)
            current = []
    commit = delivered_at_commit(chunks, batches, counts)
    end = 0
    for window in windows:
        start, end = end, end + sum(counts[v] for v in window)
        assert all(start < commit[v] <= end for v in window), window  # committed within its own window
        # the window's clips are spread evenly: no worker holds more than its share plus one chunk
        shares = [sum(c.num_clips for c in s if c.video_index in window) for s in work]
        assert max(shares) - min(shares) <= 2 * 4, (window, shares)
    assert len(windows) >= 10 and commit[0] <= target + max(counts)
    # One worker (NVDEC in the main process) decodes in plain order.
    single = scheduled_batches(chunks, batch_size=batch, num_streams=1)
    assert [i for b in single for i in b] == list(range(len(chunks)))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("commit_videos")
    for i, n in enumerate(CLIPS):
        write_video(root / f"v{i}.mp4", 8 * (n - 1) + 16, 15)
    return root


@pytest.fixture(scope="module")
def observed(videos, tmp_path_factory):
    """An uninterrupted 2-worker run; after every batch: (clips done, part files published)."""
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    parts = out.with_name(out.name + ".parts")
    seen: list[tuple[int, int]] = []
    original = pipeline.ExtractStep.__call__

    def watched(step, batch):
        original(step, batch)
        seen.append((step.bar.n, len(list(parts.glob("*.h5")))))

    mp = pytest.MonkeyPatch()
    mp.setattr(pipeline.ExtractStep, "__call__", watched)
    try:
        assert main([str(videos), "-o", str(out), *SMALL]) == 0
    finally:
        mp.undo()
    return out, seen


def test_first_video_is_committed_before_half_the_clips(observed):
    _, seen = observed
    total = sum(CLIPS)
    assert seen[-1] == (total, len(CLIPS))
    first = next(done for done, published in seen if published >= 1)
    assert first / total < 0.5, seen
    three = next(done for done, published in seen if published >= 3)
    assert three / total <= 0.6, seen


def test_interrupt_keeps_finished_videos_and_rerun_completes(videos, observed, tmp_path):
    reference, _ = observed
    out = tmp_path / "f.h5"
    parts = out.with_name(out.name + ".parts")
    cmd = [sys.executable, "-m", "feature_extraction.cli", str(videos), "-o", str(out), *SMALL]
    proc = start_until_first_part(cmd, parts)
    try:
        os.kill(proc.pid, signal.SIGINT)  # the main process only, as Ctrl-C would reach it first
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted; finished videos are kept" in err
    kept = sorted(p.name for p in parts.glob("*.h5"))
    assert 1 <= len(kept) < len(CLIPS) and not out.exists()
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{len(CLIPS)} videos, {len(kept)} already done, {len(CLIPS) - len(kept)} to do" in done.stderr
    _assert_same_contents(out, reference)
    assert not parts.exists()
