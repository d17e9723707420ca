"""Clip sampling in seconds: counts, exact centres, padding, timestamp -> frame mapping."""
from fractions import Fraction

import numpy as np
import pytest

from feature_extraction.clips import ClipSampler, frame_indices, to_fraction

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


def test_clip_times_and_padding():
    clips = HACS.clips(4.004)  # carphone: 120 frames at 29.97 fps
    assert len(clips) == 4
    third = clips[2]
    assert third.start_s == Fraction(32, 30) and third.end_s == Fraction(96, 30)
    assert third.center_s == Fraction(32, 30) + Fraction(32, 30)
    assert third.frame_times_s == tuple(Fraction(32, 30) + Fraction(8 * j, 30) for j in range(8))
    assert not any(c.padded for c in clips)
    short = HACS.clips(1.0)
    assert len(short) == 1 and short[0].padded


def test_timing_matches_clip_centres():
    timing = HACS.timing(source_fps=29.97, num_source_frames=300, duration_s=10.01, crops=3)
    clips = HACS.clips(10.01)
    np.testing.assert_allclose(timing.centers(len(clips)), [float(c.center_s) for c in clips], rtol=0, atol=1e-12)
    assert timing.crops == 3 and timing.sample_fps == 30.0


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
