"""Feature datasets for BMN: id matching, seconds <-> bins, windows, targets, missing and corrupt entries."""
import logging
from functools import partial

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from localization.config import LocalizeConfig
from localization.data import (
    FeatureStats,
    WindowDataset,
    build_entries,
    compute_feature_stats,
    interpolate_features,
    match_video_ids,
    sliding_windows,
    snippet_classes,
    whole_video_windows,
    window_segments,
)
from localization.heads.bmn_head import bmn_window_targets
from localization.tasks import Vocabulary, make_task
from localization.targets import bmn_targets
from loc_synth import FEAT_DIM, HACS_CLASSES, make_ek100, make_hacs, timing
from tal_common.annotations import read_annotations
from tal_common.config import load_config
from tal_common.h5 import FeatureFileError, FeatureReader, write_video


def task(name: str, *overrides: str):
    return make_task(load_config(LocalizeConfig, overrides=[f"data.task={name}", *overrides]))


HACS = task("hacs")
EK100 = task("ek100", "data.tscale=32", "data.dscale=16", "data.window_bin_s=0.5")


def targets_for(tscale: int, dscale: int):
    return partial(bmn_window_targets, tscale=tscale, dscale=dscale)


@pytest.fixture(scope="module")
def hacs(tmp_path_factory):
    return make_hacs(tmp_path_factory.mktemp("hacs"), n_train=6, n_val=2)


@pytest.fixture(scope="module")
def ek(tmp_path_factory):
    return make_ek100(tmp_path_factory.mktemp("ek"), n_train=4, n_val=2)


def test_match_video_ids_with_or_without_prefix():
    found, missing = match_video_ids(["abc", "v_def", "ghi", "xyz"], ["v_abc", "def", "ghi"])
    assert found == {"abc": "v_abc", "v_def": "def", "ghi": "ghi"}
    assert missing == ["xyz"]


def test_interpolate_features_is_linear_in_time():
    centers = np.array([0.25, 0.75, 1.25, 1.75])
    feats = np.stack([2 * centers, -centers + 1], axis=1).astype(np.float32)  # (N=4, C=2), linear in time
    times = np.array([0.25, 0.5, 1.0, 1.6, 3.0])
    out = interpolate_features(feats, centers, times)
    assert out.shape == (2, 5) and out.dtype == np.float32
    inside = np.minimum(times, 1.75)  # past the last centre: the edge clip
    np.testing.assert_allclose(out[0], 2 * inside, rtol=1e-6)
    np.testing.assert_allclose(out[1], -inside + 1, rtol=1e-6)


def test_hacs_window_features_and_targets(hacs):
    h5_path, ann_path = hacs
    reader = FeatureReader(h5_path)
    ann = read_annotations(ann_path).subset("training")
    entries = build_entries(reader, ann, HACS)
    assert [e.video_id for e in entries] == sorted(ann.videos)
    assert entries[0].feature_id == "v_vid000" and entries[1].feature_id == "vid001"
    tscale = 16
    ds = WindowDataset(
        reader, entries, whole_video_windows(entries, tscale), task("hacs", "data.tscale=16"), None,
        targets_for(tscale, tscale), Vocabulary(labels=HACS_CLASSES),
    )
    item = ds[1]
    e = entries[1]
    assert item["features"].shape == (FEAT_DIM, tscale) and item["valid"].all()
    # bin i of the rescaled video sits at (i + 0.5) * duration / T seconds
    feats, t = reader.read(e.feature_id)
    times = (np.arange(tscale) + 0.5) * e.duration / tscale
    expected = interpolate_features(feats, t.centers(len(feats)), times)
    np.testing.assert_allclose(item["features"].numpy(), expected, rtol=1e-6)
    segs = np.clip(e.segments / e.duration, 0, 1)
    for got, want in zip((item["iou_map"], item["start"], item["end"]), bmn_targets(segs, tscale, tscale)):
        np.testing.assert_array_equal(got.numpy(), want)
    assert item["video_label"].tolist() == [0.0, 1.0, 0.0]  # video 1 shows class 1 only


def test_normalisation_uses_training_statistics(hacs):
    h5_path, ann_path = hacs
    reader = FeatureReader(h5_path)
    entries = build_entries(reader, read_annotations(ann_path).subset("training"), HACS)
    stats = compute_feature_stats(reader, entries)
    allf = np.concatenate([reader.read(e.feature_id)[0] for e in entries])
    np.testing.assert_allclose(stats.mean, allf.mean(0), atol=1e-5)
    np.testing.assert_allclose(stats.std, allf.std(0), atol=1e-5)
    x = np.ones((FEAT_DIM, 3), np.float32)
    np.testing.assert_allclose(stats.apply(x), np.broadcast_to((1 - stats.mean[:, None]) / stats.std[:, None], (FEAT_DIM, 3)))
    assert isinstance(stats, FeatureStats)


def test_ek100_windows_cover_video_and_training_windows_hold_an_action(ek):
    h5_path, train_csv, _, info = ek
    reader = FeatureReader(h5_path)
    entries = build_entries(reader, read_annotations(train_csv, video_info=info), EK100)
    tscale, bin_s = 32, 0.5
    length = tscale * bin_s
    every = sliding_windows(entries, tscale, bin_s, 0.5, require_action=False)
    for v, e in enumerate(entries):
        starts = [w.start_s for w in every if w.video == v]
        assert starts == [k * 8.0 for k in range(len(starts))]  # 50 % overlap: every 16 bins of 0.5 s
        assert starts[-1] + length >= e.duration > starts[-1] + 8.0 - 1e-9 or len(starts) == 1
    train = sliding_windows(entries, tscale, bin_s, 0.5, require_action=True)
    assert 0 < len(train) <= len(every)
    for w in train:
        segs = entries[w.video].segments
        assert ((segs[:, 0] >= w.start_s) & (segs[:, 1] <= w.start_s + length)).any()


def test_window_segments_and_snippet_labels(ek):
    h5_path, train_csv, _, info = ek
    reader = FeatureReader(h5_path)
    entries = build_entries(reader, read_annotations(train_csv, video_info=info), EK100)
    e = entries[0]
    w = sliding_windows(entries, 32, 0.5, 0.5, require_action=True)[0]
    segs = window_segments(e, w, 32, min_fraction=0.5)
    assert segs.shape[1] == 2 and ((segs >= 0) & (segs <= 1)).all()
    inside = (e.segments[:, 0] >= w.start_s) & (e.segments[:, 1] <= w.start_s + 16.0)
    for want in (e.segments[inside] - w.start_s) / 16.0:  # every whole action is a target, unclipped
        assert np.isclose(segs, want).all(axis=1).any()
    verbs = snippet_classes(e, w, 32, e.verbs, background=3)
    nouns = snippet_classes(e, w, 32, e.nouns, background=3)
    centers = w.start_s + (np.arange(32) + 0.5) * 0.5
    for k, (s, t) in enumerate(e.segments):
        hit = (centers >= s) & (centers < t)
        assert (verbs[hit] == e.verbs[k]).all() and (nouns[hit] == e.nouns[k]).all()
    covered = np.zeros(32, bool)
    for s, t in e.segments:
        covered |= (centers >= s) & (centers < t)
    assert (verbs[~covered] == 3).all() and (nouns[~covered] == 3).all()


def test_loader_with_workers_opens_file_lazily(ek):
    h5_path, train_csv, _, info = ek
    reader = FeatureReader(h5_path)
    entries = build_entries(reader, read_annotations(train_csv, video_info=info), EK100)
    windows = sliding_windows(entries, 32, 0.5, 0.5, require_action=False)
    ds = WindowDataset(reader, entries, windows, EK100, None, targets_for(32, 16), Vocabulary(num_verbs=3, num_nouns=3))
    first = ds[0]  # opens the file in this process; forked workers must open their own
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))
    assert sum(len(b["index"]) for b in batches) == len(windows)
    assert torch.equal(batches[0]["features"][0], first["features"])
    b = batches[-1]
    assert b["iou_map"].shape[1:] == (16, 32) and b["verb"].dtype == torch.int64
    last = windows[b["index"][-1]]
    # the last window runs past the video's end: those bins are invalid and zero
    beyond = last.start_s + (np.arange(32) + 0.5) * 0.5 > entries[last.video].duration
    assert beyond.any() and (b["valid"][-1].numpy() == ~beyond).all()
    assert (b["features"][-1][:, torch.from_numpy(beyond)] == 0).all()


def test_missing_video_is_skipped_and_reported_once(hacs, tmp_path, caplog):
    h5_path, ann_path = hacs
    small = tmp_path / "partial.h5"
    reader = FeatureReader(h5_path)
    with h5py.File(small, "w") as f:
        for vid in ("v_vid000", "vid001"):
            feats, t = reader.read(vid)
            write_video(f, vid, feats, t)
    ann = read_annotations(ann_path).subset("training")
    with caplog.at_level(logging.WARNING, logger="localization.data"):
        entries = build_entries(FeatureReader(small), ann, HACS)
    assert [e.video_id for e in entries] == ["vid000", "vid001"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "4 of 6 annotated videos have no features" in warnings[0]
    assert "vid002" in warnings[0]


def test_corrupt_entries_are_clear_errors(hacs, tmp_path):
    _, ann_path = hacs
    ann = read_annotations(ann_path).subset("training")
    no_attrs = tmp_path / "no_attrs.h5"
    with h5py.File(no_attrs, "w") as f:
        f.create_dataset("vid000", data=np.zeros((10, FEAT_DIM), np.float32))
    with pytest.raises(FeatureFileError, match=r"vid000.*missing timing attribute"):
        build_entries(FeatureReader(no_attrs), ann, HACS)

    nan = tmp_path / "nan.h5"
    with h5py.File(nan, "w") as f:
        write_video(f, "vid000", np.zeros((10, FEAT_DIM), np.float32), timing(20.0))
        f["vid000"][3, 2] = np.nan
    reader = FeatureReader(nan)
    entries = build_entries(reader, ann, HACS)
    ds = WindowDataset(reader, entries, whole_video_windows(entries, 8), task("hacs", "data.tscale=8"), None, None)
    with pytest.raises(FeatureFileError, match=r"nan.h5: video 'vid000': features contain NaN"):
        ds[0]

    nothing = tmp_path / "unrelated.h5"
    with h5py.File(nothing, "w") as f:
        write_video(f, "other", np.zeros((10, FEAT_DIM), np.float32), timing(20.0))
    with pytest.raises(FeatureFileError, match="none of the 6 annotated videos has usable features"):
        build_entries(FeatureReader(nothing), ann, HACS)


class CountingReader(FeatureReader):
    """A reader that records which rows each read asked for."""

    def __init__(self, path):
        super().__init__(path)
        self.calls = []

    def read_rows(self, video_id, start, stop):
        self.calls.append((video_id, start, stop))
        return super().read_rows(video_id, start, stop)


def test_windows_read_only_the_rows_they_need(tmp_path):
    # one long video (1 clip every 0.5 s for 10 minutes): each 16 s window must read ~34 rows, not 1200
    rng = np.random.default_rng(0)
    path = tmp_path / "long.h5"
    feats = rng.normal(size=(1200, FEAT_DIM)).astype(np.float32)
    with h5py.File(path, "w") as f:
        write_video(f, "long", feats, timing(600.0))
    ann = tmp_path / "ann.json"
    ann.write_text('{"database": {"long": {"subset": "validation", "duration": 600.0, '
                   '"annotations": [{"segment": [10.0, 20.0], "label": "jump"}]}}}')
    reader = CountingReader(path)
    entries = build_entries(reader, read_annotations(ann).subset("validation"), EK100)
    windows = sliding_windows(entries, 32, 0.5, 0.5, require_action=False)
    ds = WindowDataset(reader, entries, windows, EK100, None, None)
    centers = timing(600.0).centers(1200)
    for index in (0, 7, len(windows) - 1):
        got = ds[index]["features"].numpy()
        w = windows[index]
        times = w.start_s + (np.arange(32) + 0.5) * 0.5
        want = interpolate_features(feats, centers, times)  # from the whole video
        valid = times <= 600.0
        np.testing.assert_allclose(got[:, valid], want[:, valid], rtol=1e-6, atol=1e-6)
        _, start, stop = reader.calls[-1]
        assert stop - start <= 34, (start, stop)
        assert centers[start] <= max(times[0], centers[0]) and centers[stop - 1] >= min(times[-1], centers[-1])


def test_validation_labels_outside_the_vocabulary_are_background(hacs):
    h5_path, ann_path = hacs
    reader = FeatureReader(h5_path)
    entries = build_entries(reader, read_annotations(ann_path).subset("training"), HACS)
    vocab = Vocabulary(labels=("jump", "swim"))  # "run" unknown
    unknown = HACS.unknown_labels(entries, vocab)
    assert set(unknown) == {"run"} and unknown["run"] == sum(lab == "run" for e in entries for lab in e.labels)
    ds = WindowDataset(reader, entries, whole_video_windows(entries, 100), HACS, None, targets_for(100, 100), vocab)
    for i, e in enumerate(entries):
        label = ds[i]["video_label"].numpy()
        if set(e.labels) == {"run"}:
            assert (label == 0).all()
        else:
            assert label.sum() == pytest.approx(1.0)
