"""Clip sampling: counts, windows, padding, the official TAdaConv frame rule, recorded centres, timestamp mapping."""
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from feature_extraction.clips import ClipSampler, frame_indices, interval_positions, to_fraction

DATA = Path(__file__).parent / "data" / "tadaconv_sampling"

HACS = ClipSampler(Fraction(30), clip_len=8, frame_interval=8, stride=16)


def test_window_and_stride_are_exact():
    assert HACS.window_s == Fraction(64, 30)
    assert HACS.stride_s == Fraction(16, 30)
    sampler = ClipSampler(to_fraction("30000/1001"), 8, 2, 8)
    assert sampler.stride_s == Fraction(8 * 1001, 30000)


@pytest.mark.parametrize(
    "duration, expected",
    [
        (64 / 30, 1),  # exactly one window
        (64 / 30 + 16 / 30 - 1e-3 * 2, 1),  # just short of the second clip
        (64 / 30 + 16 / 30, 2),
        (10.0, 1 + int((10.0 - 64 / 30) // (16 / 30))),
        (0.5, 1),  # shorter than a window: one padded clip
    ],
)
def test_num_clips(duration, expected):
    assert HACS.num_clips(duration) == expected


def test_clip_windows_and_padding():
    clips = HACS.clips(4.004)  # carphone: 120 frames at 29.97 fps
    assert len(clips) == 4
    third = clips[2]
    assert third.start_s == Fraction(32, 30) and third.end_s == Fraction(96, 30)
    assert not any(c.padded for c in clips)
    short = HACS.clips(1.0)
    assert len(short) == 1 and short[0].padded


def test_interval_positions_equal_the_official_fixture():
    """At the official start, our rule gives BaseVideoDataset._interval_based_sampling's indices (fixture from its code)."""
    cases = json.loads((DATA / "interval_based_sampling.json").read_text())
    assert len(cases) == 60
    for case in cases:
        length = case["num_frames"] * case["interval"] * case["fps"] / case["target_fps"]
        assert length == case["clip_length"]
        positions = interval_positions(case["start_idx"], length, case["num_frames"])
        got = np.clip(np.floor(positions), 0, case["vid_length"] - 1).astype(int).tolist()
        assert got == case["index"], case


@pytest.mark.parametrize("fps", [25.0, 30000 / 1001, 30.0, 60.0, 24.0])
def test_first_clip_of_a_sampler_equals_the_official_fixture(fps):
    """Clip 0 starts at frame 0, like the official first of several views: same frames through ClipSampler."""
    cases = [c for c in json.loads((DATA / "interval_based_sampling.json").read_text())
             if c["fps"] == fps and c["num_clips"] == 10 and c["clip_idx"] == 0]
    assert cases
    sampler = ClipSampler(Fraction(30), 8, 8, 16, rule="tadaconv")
    for case in cases:
        starts = np.arange(case["vid_length"]) / fps
        assert sampler.frame_indices(np.array([0]), starts, fps)[0].tolist() == case["index"]


def test_tadaconv_rule_at_25_fps_differs_from_nominal():
    starts = np.arange(300) / 25.0
    official = ClipSampler(Fraction(30), 8, 8, 16, rule="tadaconv")
    nominal = ClipSampler(Fraction(30), 8, 8, 16, rule="nominal")
    assert official.frame_indices(np.array([0]), starts, 25.0).tolist() == [[0, 7, 14, 22, 29, 37, 44, 52]]
    assert nominal.frame_indices(np.array([0]), starts, 25.0).tolist() == [[0, 6, 13, 20, 26, 33, 40, 46]]
    # clip 3 starts 3 * 16 / 30 s = 40 source frames in: floor(40 + linspace(0, 52.33, 8))
    assert official.frame_indices(np.array([3]), starts, 25.0).tolist() == [[40, 47, 54, 62, 69, 77, 84, 92]]


def test_tadaconv_rule_variable_rate_maps_by_timestamp():
    sampler = ClipSampler(Fraction(30), 4, 2, 4, rule="tadaconv")
    starts = np.array([0.0, 0.01, 0.02, 0.2, 0.21, 0.5, 0.6, 0.7, 0.8])  # not constant-rate
    fps = 10.0  # L = 4 * 2 * 10 / 30 = 2.67 frames: positions 0, 0.56, 1.11, 1.67 -> times 0, 0.056, 0.111, 0.167 s
    got = sampler.frame_indices(np.array([0]), starts, fps)
    assert got[0].tolist() == [0, 2, 2, 2]  # the last frame started at or before each time


@pytest.mark.parametrize("fps", [25.0, 30000 / 1001, 30.0])
@pytest.mark.parametrize("rule", ["tadaconv", "nominal"])
def test_recorded_centres_are_the_midpoints_of_the_sampled_frames(fps, rule):
    """first_center_s + i * stride_s is the midpoint of clip i's frames (first frame's start to last frame's end)."""
    num_frames = 900
    duration = num_frames / fps
    sampler = ClipSampler(Fraction(30), 8, 8, 16, rule=rule)
    timing = sampler.timing(fps, num_frames, duration, crops=1)
    n = sampler.num_clips(duration)
    starts = np.arange(num_frames) / fps
    index = sampler.frame_indices(np.arange(n), starts, fps)
    midpoints = (index.min(1) + index.max(1) + 1) / 2 / fps  # frame k is shown from k / fps to (k + 1) / fps
    error = timing.centers(n) - midpoints
    assert abs(error.mean()) < 1e-9  # unbiased
    assert np.abs(error).max() <= 0.5 / fps + 1e-9  # within half a source frame of every clip's midpoint
    assert timing.stride_s == pytest.approx(16 / 30, abs=1e-12)


def test_centre_at_30_fps_is_exact():
    sampler = ClipSampler(Fraction(30), 8, 8, 16, rule="tadaconv")
    timing = sampler.timing(30.0, 300, 10.0, crops=1)
    assert timing.first_center_s == pytest.approx(32 / 30, abs=1e-12)  # frames 0..63 shown over [0, 64/30)
    nominal = ClipSampler(Fraction(30), 8, 8, 16).timing(30.0, 300, 10.0, crops=1)
    assert nominal.first_center_s == pytest.approx(28.5 / 30, abs=1e-12)  # frames 0..56 shown over [0, 57/30)


def test_frame_indices_nearest_at_or_before():
    fps = Fraction(48000, 1001)  # 47.952
    starts = np.array([float(i / fps) for i in range(100)], dtype=np.float32)  # decoders report float32
    times = np.array([float(Fraction(k, 15)) for k in range(30)])
    got = frame_indices(times, starts)
    expected = [int(Fraction(k, 15) * fps) for k in range(30)]  # floor(t * fps): frame shown at t
    assert got.tolist() == expected
    assert frame_indices(np.array([[0.0, 99.0]]), starts).tolist() == [[0, 99]]  # past the end: last frame


def test_frame_indices_variable_rate():
    starts = np.array([0.0, 0.002, 0.008, 0.5, 0.51, 1.2])
    assert frame_indices(np.array([0.0, 0.005, 0.49, 0.5, 1.0, 2.0]), starts).tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("kwargs", [dict(clip_len=0), dict(stride=-1), dict(frame_interval=1.5)])
def test_invalid_sampler(kwargs):
    args = dict(sample_fps=Fraction(30), clip_len=8, frame_interval=8, stride=16) | kwargs
    with pytest.raises(ValueError):
        ClipSampler(**args)


def test_to_fraction():
    assert to_fraction(29.97) == Fraction(2997, 100)
    assert to_fraction("30000/1001") == Fraction(30000, 1001)
    assert to_fraction(15) == 15
