"""The ``ek100`` task end to end against the TAdaConv reference fixtures (``tests/data/ek100_protocol``, produced by
the TAdaConv repository's own EK100 code): its windows, its training windows and labels, its window inputs read
from an HDF5 file, its fused maps and its proposals."""
import h5py
import numpy as np
import pytest

from localization.config import LocalizeConfig
from localization.data import VideoEntry
from localization.ek100_protocol import reference_centres, window_rows
from localization.heads.bmn_head import BMNHead
from localization.tasks import Vocabulary, WindowOutput, make_task
from tal_common.config import load_config
from tal_common.h5 import ClipTiming, FeatureReader, write_video
from test_ek100_protocol import VIDEOS, _load, _window_maps

CFG = load_config(LocalizeConfig, "configs/localize/ek100_bmn.yaml")
TASK = make_task(CFG)


def _entry(duration: float, num_clips: int, segments=np.zeros((0, 2)), feat_dim: int = 6) -> VideoEntry:
    """A video with TAdaConv's EK100 feature grid: one row every 8 frames at 60 fps, row i centred at (7 + 8i)/60 s."""
    timing = ClipTiming(source_fps=60.0, num_source_frames=int(duration * 60), duration_s=duration, sample_fps=60.0,
                        clip_len=8, frame_interval=1, stride=8, first_center_s=7 / 60, stride_s=8 / 60, crops=3)
    k = len(segments)
    return VideoEntry("P01_01", "P01_01", duration, num_clips, feat_dim, timing, np.asarray(segments, np.float64),
                      ("",) * k, (0,) * k, (0,) * k)


def _spans(windows, tscale=200):
    return np.array([[w.start_s, w.start_s + tscale * w.bin_s] for w in windows]).reshape(-1, 2)


def test_config_is_the_reference_protocol():
    assert (CFG.data.task, CFG.data.tscale, CFG.data.resolved_dscale, CFG.model.reference) == ("ek100", 200, 100, "tadaconv")
    assert (CFG.postprocess.soft_nms_alpha, CFG.postprocess.soft_nms_low, CFG.postprocess.soft_nms_high) == (0.4, 0.25, 0.9)


def test_windows_equal_reference_on_77_durations_from_20_s_to_1_h():
    ref = _load("windows")
    offset = 0
    for duration, count in zip(ref["durations"], ref["counts"]):
        entry = _entry(float(duration), int(duration * 60 / 8))
        spans = _spans(TASK.windows([entry], "infer"))
        assert len(spans) == count, f"duration {duration}"
        np.testing.assert_allclose(spans, ref["windows"][offset:offset + count], rtol=0, atol=1e-9)
        offset += count


def test_training_windows_and_labels_equal_reference():
    ref = _load("labels")
    got_windows, got_segments = [], []
    for video, duration in enumerate(ref["durations"]):
        segs = ref["segments"][ref["segment_video"] == video]
        entry = _entry(float(duration), int(duration * 60 / 8), segs)
        windows = TASK.windows([entry], "train")
        assert TASK.windows([entry], "validate") == windows  # the reference drops empty windows in both
        for w in windows:
            got_windows.append([video, w.start_s, w.start_s + 200 * w.bin_s])
            got_segments.append(TASK.window_segments(entry, w) * 200 * w.bin_s)
    np.testing.assert_allclose(np.array(got_windows), ref["window"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.concatenate(got_segments), ref["window_gts"].clip(0, 53.333332), atol=1e-6)


@pytest.mark.parametrize("video", VIDEOS)
def test_window_inputs_read_from_hdf5_equal_reference(video, tmp_path):
    ref = _load(f"window_features_{video}")
    entry = _entry(float(ref["duration"]), len(ref["features"]))
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        write_video(f, "P01_01", ref["features"], entry.timing)
    reader = FeatureReader(path)
    windows = TASK.windows([entry], "infer")
    np.testing.assert_allclose(_spans(windows), ref["windows"], atol=1e-9)
    for w, window in enumerate(windows):
        np.testing.assert_allclose(TASK.window_features(reader, entry, window), ref["window_features"][w], atol=1e-6)


@pytest.mark.parametrize("video", range(len(VIDEOS)))
def test_fused_maps_and_proposals_equal_reference(video):
    feats, ref = _load(f"window_features_{VIDEOS[video]}"), _load(f"fusion_{VIDEOS[video]}")
    n = len(feats["features"])
    entry = _entry(float(ref["duration"]), n)
    assert np.array_equal(window_rows(entry.timing.centers(n), feats["windows"][0]),
                          window_rows(reference_centres(n), feats["windows"][0]))
    windows = TASK.windows([entry], "infer")
    maps = _window_maps(video, len(windows))
    head = BMNHead(8, 200, 100, reference="tadaconv", num_samples=4, hidden_dim_1d=8, hidden_dim_2d=8, hidden_dim_3d=8)
    uniform = {"verb": np.full((4, 200), 0.25), "noun": np.full((4, 200), 0.25)}
    outputs = [WindowOutput(w, {"conf": maps["conf"][k], "start": maps["start"][k], "end": maps["end"][k]}, uniform)
               for k, w in enumerate(windows)]
    ratio = 2
    placements = []
    for out in outputs:
        cols = np.flatnonzero(window_rows(entry.timing.centers(n), (out.window.start_s, out.window.start_s + 200 * out.window.bin_s))[::ratio])
        placements.append((int(cols[0]), len(cols)))
    fused = head.fuse([o.head for o in outputs], placements, len(ref["fused_start"]))
    np.testing.assert_allclose(fused["start"], ref["fused_start"], atol=1e-6)
    np.testing.assert_allclose(fused["conf"], ref["fused_conf"], atol=1e-6)
    dets = TASK.detections(entry, outputs, head, Vocabulary(num_verbs=3, num_nouns=3))
    proposals = []
    for d in dets:
        if d["segment"] not in proposals:
            proposals.append(d["segment"])
    want = ref["det_segment"][::5]
    assert len(proposals) == len(want)
    np.testing.assert_allclose(sorted(map(tuple, proposals)), sorted(map(tuple, want)), atol=1e-9)
    assert all(len([d for d in dets if d["segment"] == p]) == 5 for p in proposals)  # 5 verb x noun pairs each
