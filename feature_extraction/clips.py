"""Clip sampling on a video's source timeline, defined in seconds with exact ``Fraction`` arithmetic.

A :class:`ClipSampler` samples frames at ``sample_fps`` (independent of the container's frame rate):
clip ``i`` covers the window ``[i * stride_s, i * stride_s + window_s)`` where
``window_s = clip_len * frame_interval / sample_fps`` and ``stride_s = stride / sample_fps``; its
``clip_len`` frames are taken at ``start_s + j * frame_interval / sample_fps`` (``j < clip_len``) and
its centre is ``start_s + window_s / 2``. Only clips whose window fits inside the video are kept
(the tail shorter than one stride is dropped); a video shorter than one window yields exactly one
clip whose missing frames repeat the last frame (``padded``).

Sample times map to source frames by presentation timestamps (the last frame shown at or before
each time), so odd and variable frame rates give correct clip times.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from tal_common.h5 import ClipTiming

# Decoders report timestamps as float32 (~0.5 ms resolution at 1.5 h): a sample time within 0.1 ms
# or two float32 steps of a frame's start counts as reaching it, a clip ending within 1 ms of the
# video's end as fitting.
_TIMESTAMP_TOLERANCE_S = 1e-4
_TOLERANCE = Fraction(1, 1000)


class Clip(NamedTuple):
    """One clip of one video: index, window in seconds and the times of its sampled frames."""

    index: int
    start_s: Fraction
    end_s: Fraction
    center_s: Fraction
    frame_times_s: tuple[Fraction, ...]
    padded: bool


def to_fraction(value: float | int | str | Fraction) -> Fraction:
    """An exact rate from ``30``, ``29.97``, ``"30000/1001"`` or a ``Fraction`` (floats read as decimals)."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool):
        raise ValueError(f"not a rate: {value!r}")
    if isinstance(value, float):
        return Fraction(repr(value))
    return Fraction(value)


@dataclass(frozen=True)
class ClipSampler:
    """``clip_len`` frames ``frame_interval`` apart at ``sample_fps``, one clip every ``stride`` sampled frames."""

    sample_fps: Fraction
    clip_len: int
    frame_interval: int
    stride: int

    def __post_init__(self) -> None:
        if not isinstance(self.sample_fps, Fraction) or self.sample_fps <= 0:
            raise ValueError(f"sample_fps must be a positive Fraction, got {self.sample_fps!r}")
        for name in ("clip_len", "frame_interval", "stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    @property
    def window_s(self) -> Fraction:
        """Seconds covered by one clip."""
        return Fraction(self.clip_len * self.frame_interval) / self.sample_fps

    @property
    def stride_s(self) -> Fraction:
        """Seconds between consecutive clip starts."""
        return Fraction(self.stride) / self.sample_fps

    def num_clips(self, duration_s: float | Fraction) -> int:
        """Clips whose window fits in ``duration_s`` seconds; 1 (padded) when the video is shorter than a window."""
        fit = _as_duration(duration_s) + _TOLERANCE
        if fit < self.window_s:
            return 1
        return math.floor((fit - self.window_s) / self.stride_s) + 1

    def clip(self, index: int, duration_s: float | Fraction) -> Clip:
        """Clip ``index`` of a video lasting ``duration_s`` seconds."""
        duration = _as_duration(duration_s)
        start = index * self.stride_s
        step = Fraction(self.frame_interval) / self.sample_fps
        times = tuple(start + j * step for j in range(self.clip_len))
        end = start + self.window_s
        return Clip(index, start, end, start + self.window_s / 2, times, padded=end > duration + _TOLERANCE)

    def clips(self, duration_s: float | Fraction) -> list[Clip]:
        """All clips of a video lasting ``duration_s`` seconds."""
        return [self.clip(i, duration_s) for i in range(self.num_clips(duration_s))]

    def timing(self, source_fps: float, num_source_frames: int, duration_s: float, crops: int) -> ClipTiming:
        """The HDF5 timing attributes for a video sampled by this sampler."""
        return ClipTiming(
            source_fps=float(source_fps),
            num_source_frames=int(num_source_frames),
            duration_s=float(duration_s),
            sample_fps=float(self.sample_fps),
            clip_len=self.clip_len,
            frame_interval=self.frame_interval,
            stride=self.stride,
            first_center_s=float(self.window_s / 2),
            stride_s=float(self.stride_s),
            crops=crops,
        )


def frame_indices(times_s: np.ndarray, frame_starts_s: np.ndarray) -> np.ndarray:
    """Source frame shown at each sample time: the last frame starting at or before it.

    ``times_s`` are seconds from the first frame, any shape; ``frame_starts_s`` ``(F,)`` are the
    frames' presentation times, ascending, relative to the first frame. Times past the end map to
    the last frame (padding); the result has the shape of ``times_s``.
    """
    starts = np.asarray(frame_starts_s, dtype=np.float64)
    if starts.ndim != 1 or starts.size == 0:
        raise ValueError(f"frame_starts_s must be a non-empty 1-D array, got shape {starts.shape}")
    times = np.asarray(times_s, dtype=np.float64)
    tolerance = np.maximum(_TIMESTAMP_TOLERANCE_S, 2 * np.spacing(np.abs(times).astype(np.float32)).astype(np.float64))
    idx = np.searchsorted(starts, times + tolerance, side="right") - 1
    return np.clip(idx, 0, starts.size - 1)


def _as_duration(duration_s: float | Fraction) -> Fraction:
    duration = duration_s if isinstance(duration_s, Fraction) else Fraction(repr(float(duration_s)))
    if duration <= 0:
        raise ValueError(f"video duration must be positive, got {duration_s!r}")
    return duration
