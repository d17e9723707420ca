"""Clip sampling on a video's source timeline: which source frames each clip uses, and where its centre is.

A :class:`ClipSampler` places clip ``i`` at ``start_s = i * stride_s`` (``stride_s = stride / sample_fps``)
over a window of ``window_s = clip_len * frame_interval / sample_fps`` seconds. Only clips whose window
fits inside the video are kept (the tail shorter than one stride is dropped); a video shorter than one
window yields exactly one clip whose missing frames repeat the last frame (``padded``). Two rules pick
the ``clip_len`` frames inside a window:

``nominal``
    frame ``j`` is shown at ``start_s + j * frame_interval / sample_fps`` seconds, mapped to the source by
    presentation timestamps (the last frame shown at or before that time). At 30 fps and interval 8 the
    frames are ``s, s+8, ..., s+56``: the last 7 frames of the window are never used.

``tadaconv``
    the official TAdaConv test rule (``BaseVideoDataset._interval_based_sampling``) applied at each clip
    start. In source-frame units, with ``f`` the source's average rate::

        L = clip_len * frame_interval * f / sample_fps        # window length in source frames
        s = start_s * f                                        # clip start in source frames
        p_j = linspace(s, s + L - 1, clip_len)[j]              # float32, as torch.linspace computes it
        frame_j = clamp(floor(p_j), 0, num_frames - 1)

    The frames spread over the whole window (``s, s+9, ..., s+63`` at 30 fps): the step is
    ``(L - 1) / (clip_len - 1)`` source frames, not the nominal ``L / clip_len`` (at a 25 fps source the
    official frames are 0,7,14,22,29,37,44,52 where nominal spacing gives 0,6,13,20,26,33,40,46).
    For a constant-rate source (every timestamp within a quarter frame of ``k / f``) this is the official
    rule bit for bit; for a variable-rate source the positions become times ``p_j / f`` and map to frames
    by timestamp, like the nominal rule.

The centre of a clip is the midpoint of the span its frames are shown: from the start of its first
frame to the end of its last (the next frame's start, or the video's end). The HDF5 records a linear
model ``first_center_s + i * stride_s``: ``stride_s`` is the exact spacing of clip starts and
``first_center_s`` the least-squares intercept of the clips' midpoints, so the recorded centres
follow the frames actually used (to within the frame-rounding jitter, below one source frame).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, NamedTuple

import numpy as np
import torch

from tal_common.h5 import ClipTiming

# Decoders report timestamps as float32 (~0.5 ms resolution at 1.5 h): a sample time within 0.1 ms
# or two float32 steps of a frame's start counts as reaching it, a clip ending within 1 ms of the
# video's end as fitting.
_TIMESTAMP_TOLERANCE_S = 1e-4
_TOLERANCE = Fraction(1, 1000)
# A source is constant-rate when every frame starts within this fraction of a frame period of k / fps.
_CFR_TOLERANCE_FRAMES = 0.25

SamplingRule = Literal["nominal", "tadaconv"]
SAMPLING_RULES: tuple[str, ...] = ("nominal", "tadaconv")


class Clip(NamedTuple):
    """One clip's window on the source timeline, in seconds."""

    index: int
    start_s: Fraction
    end_s: Fraction
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
    """``clip_len`` frames over ``clip_len * frame_interval`` frames at ``sample_fps``, one clip every
    ``stride`` sampled frames; ``rule`` picks the frames inside each window (see the module docstring)."""

    sample_fps: Fraction
    clip_len: int
    frame_interval: int
    stride: int
    rule: SamplingRule = "nominal"

    def __post_init__(self) -> None:
        if not isinstance(self.sample_fps, Fraction) or self.sample_fps <= 0:
            raise ValueError(f"sample_fps must be a positive Fraction, got {self.sample_fps!r}")
        for name in ("clip_len", "frame_interval", "stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.rule not in SAMPLING_RULES:
            raise ValueError(f"sampling rule must be one of {SAMPLING_RULES}, got {self.rule!r}")

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
        """Window of clip ``index`` of a video lasting ``duration_s`` seconds."""
        duration = _as_duration(duration_s)
        start = index * self.stride_s
        end = start + self.window_s
        return Clip(index, start, end, padded=end > duration + _TOLERANCE)

    def clips(self, duration_s: float | Fraction) -> list[Clip]:
        """All clip windows of a video lasting ``duration_s`` seconds."""
        return [self.clip(i, duration_s) for i in range(self.num_clips(duration_s))]

    def frame_indices(self, clip_indices: np.ndarray, frame_starts_s: np.ndarray, fps: float) -> np.ndarray:
        """Source frames of the clips ``clip_indices`` ``(N,)`` -> int64 ``(N, clip_len)``.

        ``frame_starts_s`` ``(F,)`` are the source frames' presentation times relative to the first frame
        (ascending), ``fps`` the source's average rate (what the decoder reports).
        """
        clips = np.asarray(clip_indices, dtype=np.int64).reshape(-1)
        starts = np.asarray(frame_starts_s, dtype=np.float64)
        if self.rule == "nominal":
            # sampled frame n is at n / sample_fps: n * den / num is exact until the division (correctly rounded)
            n = clips[:, None] * self.stride + np.arange(self.clip_len, dtype=np.int64)[None, :] * self.frame_interval
            times = (n * self.sample_fps.denominator).astype(np.float64) / self.sample_fps.numerator
            return frame_indices(times, starts)
        positions = self.tadaconv_positions(clips, fps)
        if is_constant_rate(starts, fps):
            return np.clip(np.floor(positions).astype(np.int64), 0, starts.size - 1)
        return frame_indices(positions.astype(np.float64) / fps, starts)

    def tadaconv_positions(self, clip_indices: np.ndarray, fps: float) -> np.ndarray:
        """The official interval-based positions in source frames, float32 ``(N, clip_len)`` (before floor)."""
        length = self.clip_len * self.frame_interval * float(fps) / float(self.sample_fps)
        rows = [interval_positions(int(c) * self.stride * float(fps) / float(self.sample_fps), length, self.clip_len)
                for c in np.asarray(clip_indices, dtype=np.int64).reshape(-1)]
        return np.stack(rows) if rows else np.zeros((0, self.clip_len), np.float32)

    def timing(self, source_fps: float, num_source_frames: int, duration_s: float, crops: int) -> ClipTiming:
        """The HDF5 timing attributes of a video sampled by this sampler.

        The clip centres are those of the frames this sampler picks from a constant-rate source at
        ``source_fps`` (a variable-rate source is placed at its average rate).
        """
        starts = np.arange(num_source_frames, dtype=np.float64) / source_fps
        clips = np.arange(self.num_clips(duration_s))
        centers = frame_span_centers(self.frame_indices(clips, starts, source_fps), starts, duration_s)
        stride_s = float(self.stride_s)
        return ClipTiming(
            source_fps=float(source_fps),
            num_source_frames=int(num_source_frames),
            duration_s=float(duration_s),
            sample_fps=float(self.sample_fps),
            clip_len=self.clip_len,
            frame_interval=self.frame_interval,
            stride=self.stride,
            first_center_s=float(np.mean(centers - stride_s * clips)),
            stride_s=stride_s,
            crops=crops,
        )


def interval_positions(start: float, length: float, num_frames: int) -> np.ndarray:
    """``num_frames`` positions from ``start`` to ``start + length - 1`` source frames, float32 ``(num_frames,)``.

    The official interval-based rule before truncation, computed as ``torch.linspace`` does in float32
    (the official code's arithmetic), so truncating gives its frame indices bit for bit.
    """
    return torch.linspace(start, start + length - 1, num_frames, dtype=torch.float32).numpy()


def frame_span_centers(indices: np.ndarray, frame_starts_s: np.ndarray, duration_s: float) -> np.ndarray:
    """Midpoint of the span each clip's frames are shown, seconds ``(N,)``, for frame indices ``(N, T)``.

    A frame is shown from its start to the next frame's start (the last one until ``duration_s``); the
    span runs from the start of the earliest frame of a clip to the end of its latest.
    """
    starts = np.asarray(frame_starts_s, dtype=np.float64)
    ends = np.append(starts[1:], max(float(duration_s), starts[-1]))
    idx = np.asarray(indices, dtype=np.int64)
    return (starts[idx.min(axis=1)] + ends[idx.max(axis=1)]) / 2


def is_constant_rate(frame_starts_s: np.ndarray, fps: float) -> bool:
    """Whether every frame starts within a quarter frame of ``k / fps`` (then frame = floor(position))."""
    starts = np.asarray(frame_starts_s, dtype=np.float64)
    nominal = np.arange(starts.size, dtype=np.float64) / fps
    return bool(np.all(np.abs(starts - nominal) <= _CFR_TOLERANCE_FRAMES / fps))


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
