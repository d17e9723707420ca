"""Hostile inputs and faults for ``extract-features``: corrupt timing attributes that ``verify`` and ``inspect`` must
name, a second run on the same output, a symlinked or half-removed work folder, video ids HDF5 cannot hold, a full
disk, ``-o`` a folder. Each is an exit status with a message naming the file and the field, never a traceback,
and what was extracted stays resumable."""
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import h5py
import numpy as np
import pytest

from feature_extraction import cli
from feature_extraction.clips import ClipSampler
from tal_common.h5 import FeatureReader, write_file_attrs, write_video

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--preset", "demo", "--set", "preprocess.short_side=32", "--set", "preprocess.crop_size=32",
        "--set", "run.workers=0", "--set", "run.probe_workers=1", "--set", "run.batch_size=8"]
# The demo preset's sampling (15 fps, 8 x 2 frames, stride 8), as extract-features records it in the file.
DEMO = ClipSampler(Fraction(15), clip_len=8, frame_interval=2, stride=8)
DEMO_CONFIG = "sampling: {sample_fps: 15, clip_len: 8, frame_interval: 2, stride: 8}\n"


def _video(path: Path, num_frames: int, rate: int = 15) -> Path:
    rng = np.random.default_rng(num_frames)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 40, 30, "yuv420p"
        for _ in range(num_frames):
            img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    _video(root / "a.mp4", 40)
    _video(root / "b.mp4", 25)
    return root


def _extract(capsys, videos: Path, out: Path, *extra: str) -> tuple[int, str]:
    status = cli.main([str(videos), "-o", str(out), *FAST, "--weights", "random", *extra])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


# --------------------------------------------------------------------------- verify / inspect


def _feature_file(path: Path) -> Path:
    """Three videos written as extract-features writes them (the demo sampler's timing and clip counts)."""
    with h5py.File(path, "w") as f:
        write_file_attrs(f, "tada2d", "random", "", DEMO_CONFIG)
        for vid, duration in (("a", 10.0), ("b", 0.7), ("c", 33.37)):
            timing = DEMO.timing(30.0, int(duration * 30), duration, 1)
            write_video(f, vid, np.zeros((DEMO.num_clips(duration), 4), np.float32), timing)
    return path


def _set(name, value):
    def change(f):
        f["a"].attrs[name] = value
    return change


def _delete(name):
    def change(f):
        del f["a"].attrs[name]
    return change


def _delete_file_attr(name):
    def change(f):
        del f.attrs[name]
    return change


def _reshape(f):
    attrs = dict(f["a"].attrs)
    del f["a"]
    f.create_dataset("a", data=np.zeros(17, np.float32)).attrs.update(attrs)


VERIFY_CASES = {
    "stride_s zero": (_set("stride_s", 0.0), "video 'a': timing attribute 'stride_s' must be > 0, got 0.0"),
    "stride_s negative": (_set("stride_s", -0.5), "video 'a': timing attribute 'stride_s' must be > 0, got -0.5"),
    "stride_s NaN": (_set("stride_s", np.nan), "video 'a': timing attribute 'stride_s' must be finite, got nan"),
    "duration_s NaN": (_set("duration_s", np.nan), "video 'a': timing attribute 'duration_s' must be finite, got nan"),
    "sample_fps zero": (_set("sample_fps", 0.0), "video 'a': timing attribute 'sample_fps' must be > 0, got 0.0"),
    "source_fps negative": (_set("source_fps", -30.0), "video 'a': timing attribute 'source_fps' must be > 0, got -30.0"),
    "clip_len zero": (_set("clip_len", 0), "video 'a': timing attribute 'clip_len' must be >= 1, got 0"),
    "stride fractional": (_set("stride", 8.5), "video 'a': timing attribute 'stride' must be a whole number, got 8.5"),
    "stride missing": (_delete("stride"), "video 'a': missing timing attribute 'stride'"),
    "first_center_s inf": (_set("first_center_s", np.inf), "video 'a': timing attribute 'first_center_s' must be finite"),
    "first_center_s negative": (_set("first_center_s", -1.0), "video 'a': timing attribute 'first_center_s' -1.0 lies outside"),
    "last centre past the end": (_set("first_center_s", 2.0), "video 'a': timing attribute 'first_center_s' 2 puts the "
                                 "last clip centre at 10.5333 s, past timing attribute 'duration_s' 10 s"),
    "stride_s off the config": (_set("stride_s", 0.5), "video 'a': timing attribute 'stride_s' is 0.5, the file's sampling "
                                "config says 0.5333"),
    "clips off the duration": (_set("duration_s", 12.0), "video 'a': 17 clips, timing attribute 'duration_s' 12 s implies 21"),
    "string attribute": (_set("stride_s", "abc"), "video 'a': timing attribute 'stride_s' must be a single number, got 'abc'"),
    "array attribute": (_set("duration_s", np.array([1.0, 2.0])),
                        "video 'a': timing attribute 'duration_s' must be a single number, got [1.0, 2.0]"),
    "provenance missing": (_delete_file_attr("weights_sha256"), "missing provenance attribute 'weights_sha256'"),
    "format_version": (lambda f: f.attrs.__setitem__("format_version", 7),
                       "provenance attribute 'format_version' is 7, expected 1"),
    "a 1-D dataset": (_reshape, "video 'a': expected a (num_clips>0, dim) dataset, got shape (17,)"),
}


def test_verify_accepts_a_good_file(tmp_path, capsys):
    path = _feature_file(tmp_path / "f.h5")
    (tmp_path / "none").mkdir()
    assert cli.main(["verify", str(path), "--videos", str(tmp_path / "none")]) == 0
    assert "0 problems" in capsys.readouterr().out


@pytest.mark.parametrize("case", VERIFY_CASES)
def test_verify_checks_timing_and_provenance(tmp_path, capsys, case):
    change, message = VERIFY_CASES[case]
    path = _feature_file(tmp_path / "f.h5")
    with h5py.File(path, "a") as f:
        change(f)
    (tmp_path / "none").mkdir()
    assert cli.main(["verify", str(path), "--videos", str(tmp_path / "none")]) == 1
    captured = capsys.readouterr()
    assert f"{path}: {message}" in captured.out, captured.out
    assert "verify: 0 of 0 videos OK, 1 problems" in captured.out
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("case, message", [
    ("string attribute", "video 'a': timing attribute 'stride_s' must be a single number, got 'abc'"),
    ("array attribute", "video 'a': timing attribute 'duration_s' must be a single number, got [1.0, 2.0]"),
    ("a 1-D dataset", "video 'a': expected a (num_clips>0, dim) dataset"),
])
def test_inspect_names_video_and_attribute(tmp_path, capsys, case, message):
    path = _feature_file(tmp_path / "f.h5")
    with h5py.File(path, "a") as f:
        VERIFY_CASES[case][0](f)
    assert cli.main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"extract-features: error: {path}: {message}" in err and "Traceback" not in err


# --------------------------------------------------------------------------- the output and its work folder


def test_second_run_on_the_same_output_is_refused(videos, tmp_path, capsys):
    out = tmp_path / "f.h5"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom tal_common.lock import output_lock\n"
         "with output_lock(sys.argv[1], 'f.h5'):\n    print('held', flush=True)\n    sys.stdin.read()", str(tmp_path / "f.h5.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        status, err = _extract(capsys, videos, out)
        assert status == 2
        assert f"{out}.lock: another run (pid {holder.pid} on " in err and f"is writing {out}" in err
        assert not out.exists() and not (tmp_path / "f.h5.parts").exists()
    finally:
        holder.communicate("")
    assert not (tmp_path / "f.h5.lock").exists()


def test_stale_lock_is_taken_over(videos, tmp_path, capsys):
    out = tmp_path / "f.h5"
    (tmp_path / "f.h5.lock").write_text("pid 999999999 on elsewhere\n")  # left by a run killed with -9
    status, err = _extract(capsys, videos, out)
    assert status == 0
    assert f"{out}.lock: taking over the lock left by pid 999999999 on elsewhere, which is no longer running" in err
    assert FeatureReader(out).video_ids() == ["a", "b"]
    assert not (tmp_path / "f.h5.lock").exists()


def test_output_in_a_folder_not_made_yet(videos, tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "f.h5"
    status, err = _extract(capsys, videos, out)
    assert status == 0, err
    assert FeatureReader(out).video_ids() == ["a", "b"] and not Path(f"{out}.lock").exists()


def test_a_worker_that_outlives_a_killed_run_does_not_hold_its_lock(tmp_path):
    """Decode workers are forked while the lock is held; they close their copy, so once the run is killed the
    lock is free even while a worker lingers."""
    lock, released = tmp_path / "f.h5.lock", tmp_path / "release"
    pid = os.fork()
    if pid == 0:  # the run: takes the lock, forks a worker that lingers, dies without releasing
        try:
            from tal_common.lock import output_lock
            with output_lock(lock, "f.h5"):
                if os.fork() == 0:
                    for _ in range(200):
                        if released.exists():
                            break
                        time.sleep(0.05)
                    os._exit(0)
                os._exit(0)
        finally:
            os._exit(1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    try:
        probe = subprocess.run([sys.executable, "-c", "import sys\nfrom tal_common.lock import output_lock\n"
                                "with output_lock(sys.argv[1], 'f.h5'): print('taken')", str(lock)],
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        released.touch()
    assert probe.returncode == 0 and probe.stdout == "taken\n", probe.stderr
    assert f"taking over the lock left by pid {pid} on " in probe.stderr


def test_symlinked_work_folder_is_refused(videos, tmp_path, capsys):
    out = tmp_path / "f.h5"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "f.h5.parts").symlink_to(elsewhere)
    status, err = _extract(capsys, videos, out)
    assert status == 2
    assert f"{out}.parts: the work folder of -o {out} is a symbolic link" in err
    assert list(elsewhere.iterdir()) == [] and not out.exists()


def test_half_removed_work_folder_is_cleaned_and_the_run_continues(videos, tmp_path, capsys, monkeypatch):
    """A kill inside the final removal of ``OUT.parts``, after ``failed/`` went and before the parts did: run.json
    was removed first, so the rerun sees a finished run's leftovers, removes them and extracts what is missing."""
    only_a = tmp_path / "list.txt"
    only_a.write_text("a\n")
    out = tmp_path / "f.h5"
    parts = tmp_path / "f.h5.parts"
    seen = []

    def killed_while_removing(path, *args, **kwargs):
        if Path(path) != parts:
            return real_rmtree(path, *args, **kwargs)
        seen.append(sorted(p.name for p in parts.iterdir()))
        real_rmtree(parts / "failed")
        raise KeyboardInterrupt  # stands in for the kill

    real_rmtree = shutil.rmtree
    with monkeypatch.context() as patch:
        patch.setattr(shutil, "rmtree", killed_while_removing)
        assert _extract(capsys, videos, out, "--video-list", str(only_a))[0] == 130
    assert seen == [["a.h5", "failed"]]  # run.json already gone when the removal began
    status, err = _extract(capsys, videos, out)
    assert status == 0, err
    assert f"removing {parts}, left over by a run that had finished or had not started" in err
    assert "1 already done, 1 to do" in err
    assert FeatureReader(out).video_ids() == ["a", "b"] and not parts.exists()


def test_work_folder_without_its_failed_folder(videos, tmp_path, capsys, monkeypatch):
    """An unfinished run whose ``failed/`` is gone (a kill in a removal that took ``failed/`` before ``run.json``, as
    btrfs and xfs may order it): the rerun records failures again instead of stopping on the missing folder."""
    root = tmp_path / "videos"
    shutil.copytree(videos, root)
    (root / "broken.mp4").write_bytes(b"")
    out = tmp_path / "f.h5"

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(h5py.Group, "copy", full_disk)  # stops the first run after its parts, before assembling
        assert _extract(capsys, root, out)[0] == 2
    parts = tmp_path / "f.h5.parts"
    assert (parts / "run.json").exists()
    shutil.rmtree(parts / "failed")
    status, err = _extract(capsys, root, out)
    assert status == 1, err  # broken.mp4 failed, and is recorded
    assert FeatureReader(out).video_ids() == ["a", "b"]
    assert [json.loads(line)["video"] for line in Path(f"{out}.failures.jsonl").read_text().splitlines()] == ["broken"]


@pytest.mark.parametrize("name, vid", [("..mp4", "."), ("...mp4", "..")])
def test_video_ids_hdf5_cannot_hold_are_refused_up_front(videos, tmp_path, capsys, name, vid):
    root = tmp_path / "videos"
    shutil.copytree(videos, root)
    shutil.copy(videos / "a.mp4", root / name)
    out = tmp_path / "f.h5"
    status, err = _extract(capsys, root, out)
    assert status == 2
    assert f"{root / name}: video id {vid!r} (the file name without its extension) cannot name a dataset" in err
    assert not (tmp_path / "f.h5.parts").exists()


def test_output_that_is_a_folder_or_under_a_file(videos, tmp_path, capsys):
    status, err = _extract(capsys, videos, tmp_path)
    assert status == 2 and f"-o {tmp_path}: is a folder; give the path of the file to write" in err
    (tmp_path / "file").write_text("x")
    status, err = _extract(capsys, videos, tmp_path / "file" / "sub" / "f.h5")
    assert status == 2 and f"-o {tmp_path / 'file' / 'sub' / 'f.h5'}: cannot be created, {tmp_path / 'file'} is a file" in err


def test_inspect_and_verify_on_a_folder(tmp_path, capsys):
    for command in (["inspect", str(tmp_path)], ["verify", str(tmp_path), "--videos", str(tmp_path)]):
        assert cli.main(command) == 2
        err = capsys.readouterr().err
        assert f"extract-features: error: {tmp_path}: a folder, not a feature file" in err and "Traceback" not in err


class _Payload:
    """Pickles to a call that writes ``marker``: loading it with code execution would leave the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "executed"))


@pytest.mark.parametrize("kind", ["pickled code", "not a torch file"])
def test_weights_that_are_not_a_checkpoint(videos, tmp_path, capsys, kind):
    import torch

    weights, marker = tmp_path / "weights.pth", tmp_path / "pwned"
    if kind == "pickled code":
        torch.save({"conv1.weight": _Payload(marker)}, weights)
    else:
        weights.write_bytes(b"not a zip at all")
    status = cli.main([str(videos), "-o", str(tmp_path / "f.h5"), "--preset", "hacs", "--weights", str(weights)])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err and "weights_only" not in err and not marker.exists()
    expected = ("not a backbone checkpoint (a state dict or an official TAdaConv checkpoint): it holds objects other "
                "than tensors and plain containers (e.g. getattr); it was not loaded and none of its code was run"
                if kind == "pickled code" else "not a readable backbone checkpoint (a state dict or an official TAdaConv "
                "checkpoint) (not a file written by torch.save)")
    assert f"{weights}: {expected}" in err


# --------------------------------------------------------------------------- a full disk


def test_too_little_free_space_stops_before_extracting(videos, tmp_path, capsys, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    out = tmp_path / "f.h5"
    status, err = _extract(capsys, videos, out)
    assert status == 2
    # a: 40 frames at 15 fps -> 3 clips, b: 25 frames -> 2 clips (DEMO), 64-d, float32
    clips = DEMO.num_clips(40 / 15) + DEMO.num_clips(25 / 15)
    need = clips * 64 * 4 / 1e6
    assert f"{out}.parts: not enough free space for the 2 videos to extract: about {need:.1f} MB needed, 0.0 MB free" in err
    assert not out.exists() and not list((tmp_path / "f.h5.parts").glob("*.h5"))


def test_disk_full_while_assembling_keeps_the_parts(videos, tmp_path, capsys, monkeypatch):
    out = tmp_path / "f.h5"

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.Group, "copy", full_disk)  # the assembly's copy of each video into OUT.tmp
    status, err = _extract(capsys, videos, out)
    assert status == 2
    assert f"{out}: no space left on the device while assembling; the extracted videos are kept in {out}.parts" in err
    assert sorted(p.name for p in (tmp_path / "f.h5.parts").glob("*.h5")) == ["a.h5", "b.h5"]
    assert not out.exists() and not Path(f"{out}.tmp").exists()
    monkeypatch.undo()
    status, err = _extract(capsys, videos, out)
    assert status == 0 and "2 already done, 0 to do" in err  # the rerun only assembles
    assert FeatureReader(out).video_ids() == ["a", "b"]


def test_disk_full_while_extracting_is_a_named_error(videos, tmp_path, capsys, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(f"Unable to synchronously write data (file write failed: errno = 28, error message = "
                      f"'No space left on device')")

    monkeypatch.setattr(cli, "extract_videos", full_disk)
    status, err = _extract(capsys, videos, tmp_path / "f.h5")
    assert status == 2
    assert "extract-features: error: no space left on the device (Unable to synchronously write data" in err
    assert "finished videos are kept: free some space and rerun the same command to resume" in err
