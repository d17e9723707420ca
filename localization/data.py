"""Feature datasets for BMN: annotated videos + the HDF5 features -> fixed-size windows and their targets.

Every BMN input is a *window*: ``tscale`` bins of ``bin_s`` seconds starting at ``start_s``; bin ``i`` is
centred on ``start_s + (i + 0.5) * bin_s``. Features are linearly interpolated from the clip centre times
(``ClipTiming.centers``) onto the bin centres; bins that fall outside ``[0, duration]`` are zero (after
normalisation, i.e. the mean feature).

- HACS / ActivityNet: one window per video, ``bin_s = duration / tscale`` (the video rescaled to ``tscale``).
- EK100: sliding windows of fixed ``bin_s`` on a global grid (window ``k`` starts at bin ``k * step``), so
  overlapping windows share bins and their outputs can be fused on the video's timeline.

Targets are the BMN maps of the segments normalised to the window (``(seg - start_s) / (tscale * bin_s)``,
clipped to ``[0, 1]``), plus the classifier targets (HACS: the video's label distribution; EK100: the
verb/noun of each bin, background = the last class).

Video ids in the annotations match feature ids with or without the ``v_`` prefix. Annotated videos absent
from the feature file are skipped and reported once (count and a few ids); malformed entries are errors.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from localization.targets import bmn_targets
from tal_common.annotations import AnnotationSet
from tal_common.h5 import ClipTiming, FeatureFileError, FeatureReader, read_timing

LOG = logging.getLogger(__name__)

Mode = Literal["hacs", "ek100"]


@dataclass(frozen=True)
class VideoEntry:
    """One annotated video that has features.

    ``segments`` is ``(K, 2)`` float64 seconds; ``labels``/``verbs``/``nouns`` are per segment (verb/noun -1
    where the annotation has none); ``duration`` in seconds (what the windows cover).
    """

    video_id: str
    feature_id: str
    duration: float
    num_clips: int
    feat_dim: int
    timing: ClipTiming
    segments: np.ndarray
    labels: tuple[str, ...]
    verbs: tuple[int, ...]
    nouns: tuple[int, ...]


@dataclass(frozen=True)
class Window:
    """``tscale`` bins of ``bin_s`` seconds of video ``video`` (an index into the entries), from ``start_s``."""

    video: int
    start_s: float
    bin_s: float


def match_video_ids(wanted: Iterable[str], available: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Map annotation ids to feature ids, accepting a ``v_`` prefix on either side.

    Returns ``({annotation_id: feature_id}, [annotation ids without features])``.
    """
    have = set(available)
    found: dict[str, str] = {}
    missing: list[str] = []
    for vid in wanted:
        candidates = (vid, f"v_{vid}", vid[2:] if vid.startswith("v_") else None)
        match = next((c for c in candidates if c is not None and c in have), None)
        if match is None:
            missing.append(vid)
        else:
            found[vid] = match
    return found, missing


def build_entries(reader: FeatureReader, annotations: AnnotationSet, mode: Mode) -> list[VideoEntry]:
    """The videos of ``annotations`` that have features, in sorted id order, with their timing.

    Durations: HACS takes the annotation's duration (the one the segments refer to); EK100 takes it from the
    annotation when it came from a video-info file (``fps`` known), else the decoded duration stored with the
    features. Missing videos are skipped with one warning; an entry without the timing attributes or with a
    wrong shape raises :class:`FeatureFileError` naming the file and video.
    """
    mapping, missing = match_video_ids(sorted(annotations.videos), reader.video_ids())
    if missing:
        LOG.warning(
            "%d of %d annotated videos have no features in %s and are skipped (e.g. %s)",
            len(missing), len(annotations.videos), reader.path, ", ".join(missing[:5]),
        )
    entries = []
    with h5py.File(reader.path, "r") as handle:
        for vid, fid in mapping.items():
            dset = handle[fid]
            if not isinstance(dset, h5py.Dataset) or dset.ndim != 2 or dset.shape[0] == 0:
                raise FeatureFileError(f"{reader.path}: video {fid!r}: expected a (num_clips>0, dim) dataset")
            timing = read_timing(dset)
            ann = annotations.videos[vid]
            if mode == "hacs" or ann.fps is not None:
                duration = ann.duration if ann.duration > 0 else timing.duration_s
            else:
                duration = timing.duration_s
            if not math.isfinite(duration) or duration <= 0:
                raise FeatureFileError(f"{reader.path}: video {fid!r}: no usable duration ({duration})")
            segs = np.array([[s.start, s.end] for s in ann.segments], dtype=np.float64).reshape(-1, 2)
            entries.append(VideoEntry(
                video_id=vid, feature_id=fid, duration=float(duration), num_clips=int(dset.shape[0]),
                feat_dim=int(dset.shape[1]), timing=timing, segments=segs,
                labels=tuple(s.label for s in ann.segments),
                verbs=tuple(-1 if s.verb is None else s.verb for s in ann.segments),
                nouns=tuple(-1 if s.noun is None else s.noun for s in ann.segments),
            ))
    if not entries:
        raise FeatureFileError(f"{reader.path}: none of the {len(annotations.videos)} annotated videos has features")
    dims = {e.feat_dim for e in entries}
    if len(dims) != 1:
        raise FeatureFileError(f"{reader.path}: videos have different feature dims {sorted(dims)}")
    return entries


def hacs_windows(entries: Sequence[VideoEntry], tscale: int) -> list[Window]:
    """One window per video covering ``[0, duration]`` with ``tscale`` equal bins."""
    return [Window(i, 0.0, e.duration / tscale) for i, e in enumerate(entries)]


def ek100_windows(
    entries: Sequence[VideoEntry],
    tscale: int,
    bin_s: float,
    overlap: float,
    require_action: bool,
) -> list[Window]:
    """Sliding windows on each video's global bin grid.

    Window ``k`` starts at ``k * step * bin_s`` with ``step = round(tscale * (1 - overlap))`` bins; windows
    continue until one reaches the end of the video. With ``require_action`` (training) only windows that
    fully contain at least one segment are kept.
    """
    step = window_step(tscale, overlap)
    length = tscale * bin_s
    out = []
    for i, e in enumerate(entries):
        count = max(1, math.ceil(max(e.duration - length, 0.0) / (step * bin_s)) + 1)
        for k in range(count):
            start = k * step * bin_s
            if require_action:
                segs = e.segments
                inside = (segs[:, 0] >= start) & (segs[:, 1] <= start + length)
                if not inside.any():
                    continue
            out.append(Window(i, start, bin_s))
    return out


def window_step(tscale: int, overlap: float) -> int:
    """Bins between consecutive window starts (at least 1)."""
    return max(1, round(tscale * (1.0 - overlap)))


def bin_centers(window: Window, tscale: int) -> np.ndarray:
    """Centre time in seconds of each bin of ``window``, ``(tscale,)`` float64."""
    return window.start_s + (np.arange(tscale, dtype=np.float64) + 0.5) * window.bin_s


def interpolate_features(features: np.ndarray, centers: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Linear interpolation of clip features onto ``times``.

    Args:
        features: ``(N, C)`` clip features.
        centers: ``(N,)`` increasing clip centre times (seconds).
        times: ``(T,)`` query times; times before the first / after the last centre take the edge clip.

    Returns:
        ``(C, T)`` float32.
    """
    if len(centers) == 1:
        return np.repeat(features[0][:, None], len(times), axis=1).astype(np.float32)
    pos = np.interp(times, centers, np.arange(len(centers), dtype=np.float64))
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(centers) - 1)
    frac = (pos - lo)[:, None]
    out = features[lo] * (1.0 - frac) + features[hi] * frac
    return np.ascontiguousarray(out.T, dtype=np.float32)


@dataclass(frozen=True)
class FeatureStats:
    """Per-channel mean and std ``(C,)`` of the training features (float32)."""

    mean: np.ndarray
    std: np.ndarray

    def apply(self, features: np.ndarray) -> np.ndarray:
        """Normalise ``(C, T)`` features."""
        return (features - self.mean[:, None]) / self.std[:, None]


def compute_feature_stats(reader: FeatureReader, entries: Sequence[VideoEntry]) -> FeatureStats:
    """Mean/std per channel over every clip of ``entries`` (std floored at 1e-6)."""
    total = np.zeros(entries[0].feat_dim, dtype=np.float64)
    total_sq = np.zeros_like(total)
    count = 0
    for e in entries:
        feats, _ = reader.read(e.feature_id)
        total += feats.sum(axis=0, dtype=np.float64)
        total_sq += np.square(feats, dtype=np.float64).sum(axis=0)
        count += len(feats)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return FeatureStats(mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32))


def window_segments(entry: VideoEntry, window: Window, tscale: int, min_fraction: float) -> np.ndarray:
    """The video's segments in window units ``[0, 1]``, ``(K, 2)`` float64 (may be empty).

    A segment counts when at least ``min_fraction`` of it lies inside the window (zero-length segments: when
    they lie inside); it is clipped to the window.
    """
    length = tscale * window.bin_s
    segs = (entry.segments - window.start_s) / length
    inter = np.clip(segs[:, 1], 0, 1) - np.clip(segs[:, 0], 0, 1)
    span = segs[:, 1] - segs[:, 0]
    inside = (segs[:, 0] >= 0) & (segs[:, 1] <= 1)
    keep = np.where(span > 0, inter >= min_fraction * np.maximum(span, 1e-12), inside)
    return np.clip(segs[keep], 0.0, 1.0)


def snippet_labels(
    entry: VideoEntry, window: Window, tscale: int, num_verbs: int, num_nouns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Verb and noun class of each bin, ``(T,)`` int64 each; background bins get ``num_verbs``/``num_nouns``.

    A bin takes the shortest segment that contains its centre (the most specific action when they overlap).
    """
    times = bin_centers(window, tscale)
    verbs = np.full(tscale, num_verbs, dtype=np.int64)
    nouns = np.full(tscale, num_nouns, dtype=np.int64)
    order = np.argsort(-(entry.segments[:, 1] - entry.segments[:, 0]), kind="stable")  # longest first
    for k in order:
        start, end = entry.segments[k]
        hit = (times >= start) & (times < end)
        verbs[hit] = entry.verbs[k]
        nouns[hit] = entry.nouns[k]
    return verbs, nouns


class WindowDataset(Dataset):
    """BMN windows with their targets (``with_targets``) or without (inference).

    Items are dicts of tensors: ``features (C, T)``, ``valid (T,)`` (bin inside the video), ``index`` (window
    index); with targets also ``iou_map (D, T)``, ``start (T,)``, ``end (T,)`` and the classifier targets:
    HACS ``video_label (num_classes,)`` (the video's label distribution, by segment duration), EK100
    ``verb (T,)``, ``noun (T,)`` (int64, background = ``num_verbs``/``num_nouns``).

    The feature file is opened lazily in each process that reads items (DataLoader workers included, whether
    they are forked or spawned): an HDF5 handle is never shared across a fork.
    """

    def __init__(
        self,
        reader: FeatureReader,
        entries: Sequence[VideoEntry],
        windows: Sequence[Window],
        mode: Mode,
        tscale: int,
        dscale: int,
        stats: FeatureStats | None,
        with_targets: bool,
        class_index: dict[str, int] | None = None,
        num_verbs: int = 0,
        num_nouns: int = 0,
        min_segment_fraction: float = 0.5,
    ) -> None:
        self.path = reader.path
        self._reader: FeatureReader | None = None
        self._reader_pid = -1
        self.entries = list(entries)
        self.windows = list(windows)
        self.mode = mode
        self.tscale = tscale
        self.dscale = dscale
        self.stats = stats
        self.with_targets = with_targets
        self.class_index = class_index or {}
        self.num_verbs = num_verbs
        self.num_nouns = num_nouns
        self.min_segment_fraction = min_segment_fraction
        if with_targets and mode == "hacs" and not self.class_index:
            raise ValueError("WindowDataset: HACS targets need a class_index")

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        window = self.windows[index]
        entry = self.entries[window.video]
        feats, timing = self._read(entry.feature_id)
        times = bin_centers(window, self.tscale)
        x = interpolate_features(feats, timing.centers(len(feats)), times)
        if self.stats is not None:
            x = self.stats.apply(x)
        valid = (times >= 0) & (times <= entry.duration)
        x[:, ~valid] = 0.0
        item = {
            "features": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            "valid": torch.from_numpy(valid),
            "index": torch.tensor(index),
        }
        if self.with_targets:
            item.update(self._targets(entry, window))
        return item

    def _read(self, feature_id: str) -> tuple[np.ndarray, ClipTiming]:
        if self._reader is None or self._reader_pid != os.getpid():
            self._reader = FeatureReader(self.path)
            self._reader_pid = os.getpid()
        return self._reader.read(feature_id)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_reader": None, "_reader_pid": -1}

    def _targets(self, entry: VideoEntry, window: Window) -> dict[str, torch.Tensor]:
        segs = window_segments(entry, window, self.tscale, self.min_segment_fraction)
        if len(segs):
            iou_map, start, end = bmn_targets(segs, self.tscale, self.dscale)
        else:  # a window of pure background (EK100 validation): all-zero targets
            iou_map = np.zeros((self.dscale, self.tscale), np.float32)
            start = np.zeros(self.tscale, np.float32)
            end = np.zeros(self.tscale, np.float32)
        out = {"iou_map": torch.from_numpy(iou_map), "start": torch.from_numpy(start), "end": torch.from_numpy(end)}
        if self.mode == "hacs":
            out["video_label"] = torch.from_numpy(video_label_distribution(entry, self.class_index))
        else:
            verbs, nouns = snippet_labels(entry, window, self.tscale, self.num_verbs, self.num_nouns)
            out["verb"] = torch.from_numpy(verbs)
            out["noun"] = torch.from_numpy(nouns)
        return out


def video_label_distribution(entry: VideoEntry, class_index: dict[str, int]) -> np.ndarray:
    """``(num_classes,)`` float32: each label's share of the video's annotated time (uniform over segments when
    all have zero length). Labels unknown to ``class_index`` are an error naming the video."""
    out = np.zeros(len(class_index), dtype=np.float32)
    spans = entry.segments[:, 1] - entry.segments[:, 0]
    weights = spans if spans.sum() > 0 else np.ones_like(spans)
    for label, w in zip(entry.labels, weights):
        if label not in class_index:
            raise ValueError(f"video {entry.video_id!r}: label {label!r} is not in the classifier's vocabulary")
        out[class_index[label]] += w
    return out / max(out.sum(), 1e-12)
