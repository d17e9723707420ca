"""The HDF5 feature layout: write, read back, timing <-> seconds, clear errors."""
import pickle

import h5py
import numpy as np
import pytest

from tal_common.h5 import ClipTiming, FeatureFileError, FeatureReader, write_file_attrs, write_video

TIMING = ClipTiming(
    source_fps=29.97, num_source_frames=300, duration_s=10.01, sample_fps=30.0, clip_len=8,
    frame_interval=8, stride=16, first_center_s=32 / 30.0 / 2, stride_s=16 / 30.0, crops=1,
)


def test_round_trip(tmp_path):
    path = tmp_path / "f.h5"
    feats = np.random.default_rng(0).standard_normal((18, 32)).astype(np.float32)
    with h5py.File(path, "w") as f:
        write_file_attrs(f, "tada2d_r50", "random", "", "model: {}\n", created="2026-01-01T00:00:00+00:00")
        write_video(f, "vid_a", feats, TIMING, padded=True)
    reader = FeatureReader(path)
    assert reader.video_ids() == ["vid_a"] and "vid_a" in reader
    got, timing = reader.read("vid_a")
    np.testing.assert_array_equal(got, feats)
    assert timing == TIMING
    attrs = reader.file_attrs()
    assert attrs["backbone"] == "tada2d_r50" and attrs["format_version"] == 1 and attrs["config"] == "model: {}\n"
    with h5py.File(path, "r") as f:
        assert bool(f["vid_a"].attrs["padded"]) is True
    # picklable for DataLoader workers, reopens lazily
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read("vid_a")[0], feats)


def test_centers_in_seconds():
    centers = TIMING.centers(3)
    np.testing.assert_allclose(centers, [32 / 60, 32 / 60 + 16 / 30, 32 / 60 + 32 / 30])


def test_errors_name_file_and_video(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        with pytest.raises(FeatureFileError, match="vid_b.*NaN"):
            write_video(f, "vid_b", np.full((2, 4), np.nan, np.float32), TIMING)
        with pytest.raises(FeatureFileError, match="vid_c.*num_clips"):
            write_video(f, "vid_c", np.zeros((0, 4), np.float32), TIMING)
        f.create_dataset("no_attrs", data=np.zeros((2, 4), np.float32))
    reader = FeatureReader(path)
    with pytest.raises(FeatureFileError, match="no_attrs.*source_fps"):
        reader.read("no_attrs")
    with pytest.raises(FeatureFileError, match="missing_vid"):
        reader.read("missing_vid")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(FeatureFileError, match="bad.h5"):
        FeatureReader(bad).video_ids()
    with pytest.raises(FeatureFileError, match="not found"):
        FeatureReader(tmp_path / "absent.h5")
