"""Feature datasets for the localizer: annotated videos + the HDF5 features -> fixed-size windows and their targets.

Every BMN input is a *window*: ``tscale`` bins of ``bin_s`` seconds starting at ``start_s``; bin ``i`` is
centred on ``start_s + (i + 0.5) * bin_s``. Features are linearly interpolated from the clip centre times
(``ClipTiming.centers``) onto the bin centres; bins that fall outside ``[0, duration]`` are zero (after
normalisation, i.e. the mean feature).

Which windows a video yields, which segments count in a window and what the classifier learns are the
task's (``localization.tasks``); the geometry helpers they use live here:

- :func:`whole_video_windows`: one window per video, ``bin_s = duration / tscale`` (the video rescaled).
- :func:`sliding_windows`: windows of fixed ``bin_s`` on a global grid (window ``k`` starts at bin ``k * step``),
  so overlapping windows share bins and their outputs can be fused on the video's timeline.

Head targets come from the head (``head.target_builder()``) applied to the window's segments in window units
(``(seg - start_s) / (tscale * bin_s)``); classifier targets from the task. Only the feature rows a window
needs are read (plus the interpolation neighbours), so an item costs the same on a 10-second or a 1-hour video.

Video ids in the annotations match feature ids with or without the ``v_`` prefix. Annotated videos absent
from the feature file are skipped and reported once (count and a few ids); malformed entries are errors.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from tal_common.annotations import AnnotationSet
from tal_common.h5 import ClipTiming, FeatureFileError, FeatureReader, read_timing

if TYPE_CHECKING:
    from localization.tasks.base import Task, Vocabulary

LOG = logging.getLogger(__name__)


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


def build_entries(reader: FeatureReader, annotations: AnnotationSet, task: "Task") -> list[VideoEntry]:
    """The videos of ``annotations`` that have features, in sorted id order, with their timing.

    Durations come from ``task.duration`` (the annotation's or the decoded one). Missing videos, and videos whose
    annotated duration is more than twice what their features cover (truncated downloads), are skipped with one
    warning each; an entry without the timing attributes or with a wrong shape raises :class:`FeatureFileError`
    naming the file and video.
    """
    mapping, missing = match_video_ids(sorted(annotations.videos), reader.video_ids())
    if missing:
        LOG.warning(
            "%d of %d annotated videos have no features in %s and are skipped (e.g. %s)",
            len(missing), len(annotations.videos), reader.path, ", ".join(missing[:5]),
        )
    entries, truncated = [], []
    with h5py.File(reader.path, "r") as handle:
        for vid, fid in mapping.items():
            dset = handle[fid]
            if not isinstance(dset, h5py.Dataset) or dset.ndim != 2 or dset.shape[0] == 0:
                raise FeatureFileError(f"{reader.path}: video {fid!r}: expected a (num_clips>0, dim) dataset")
            timing = read_timing(dset)
            ann = annotations.videos[vid]
            duration = task.duration(ann, timing)
            if not math.isfinite(duration) or duration <= 0:
                raise FeatureFileError(f"{reader.path}: video {fid!r}: no usable duration ({duration})")
            if duration > 2 * timing.duration_s + timing.window_s:
                truncated.append(f"{vid} ({duration:g} s annotated, features cover {timing.duration_s:g} s)")
                continue
            segs = np.array([[s.start, s.end] for s in ann.segments], dtype=np.float64).reshape(-1, 2)
            entries.append(VideoEntry(
                video_id=vid, feature_id=fid, duration=float(duration), num_clips=int(dset.shape[0]),
                feat_dim=int(dset.shape[1]), timing=timing, segments=segs,
                labels=tuple(s.label for s in ann.segments),
                verbs=tuple(-1 if s.verb is None else s.verb for s in ann.segments),
                nouns=tuple(-1 if s.noun is None else s.noun for s in ann.segments),
            ))
    if truncated:
        LOG.warning(
            "%d videos of %s are skipped: their annotated 'duration' is more than twice what their features in %s cover "
            "(a truncated download or a wrong duration), e.g. %s", len(truncated), annotations.source, reader.path,
            "; ".join(truncated[:3]),
        )
    if not entries:
        raise FeatureFileError(f"{reader.path}: none of the {len(annotations.videos)} annotated videos has usable features"
                               + (f" ({len(truncated)} look truncated, see the warning)" if truncated else ""))
    dims = {e.feat_dim for e in entries}
    if len(dims) != 1:
        raise FeatureFileError(f"{reader.path}: videos have different feature dims {sorted(dims)}")
    return entries


def whole_video_windows(entries: Sequence[VideoEntry], tscale: int) -> list[Window]:
    """One window per video covering ``[0, duration]`` with ``tscale`` equal bins."""
    return [Window(i, 0.0, e.duration / tscale) for i, e in enumerate(entries)]


def sliding_windows(
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


def snippet_classes(entry: VideoEntry, window: Window, tscale: int, classes: Sequence[int], background: int) -> np.ndarray:
    """The class of each bin, ``(T,)`` int64: ``classes[k]`` of the segment containing the bin centre, else ``background``.

    A bin takes the shortest segment that contains its centre (the most specific action when they overlap).
    """
    times = bin_centers(window, tscale)
    out = np.full(tscale, background, dtype=np.int64)
    order = np.argsort(-(entry.segments[:, 1] - entry.segments[:, 0]), kind="stable")  # longest first
    for k in order:
        start, end = entry.segments[k]
        out[(times >= start) & (times < end)] = classes[k]
    return out


class WindowDataset(Dataset):
    """Windows with their targets (``with_targets``) or without (inference).

    Items are dicts of tensors: ``features (C, T)``, ``valid (T,)`` (bin inside the video), ``index`` (window
    index); with targets also the head's (``head_targets`` of the window's segments) and the task's classifier
    targets (``task.classifier_targets``).

    The reader is a :class:`FeatureReader`, which reopens its file in each process (DataLoader workers included,
    forked or spawned); only the rows a window needs are read.
    """

    def __init__(
        self,
        reader: FeatureReader,
        entries: Sequence[VideoEntry],
        windows: Sequence[Window],
        task: "Task",
        stats: FeatureStats | None,
        head_targets: Callable[[np.ndarray], dict[str, np.ndarray]] | None,
        vocab: "Vocabulary | None" = None,
    ) -> None:
        self.reader = reader
        self.entries = list(entries)
        self.windows = list(windows)
        self.task = task
        self.tscale = task.data.tscale
        self.stats = stats
        self.head_targets = head_targets
        self.vocab = vocab
        if head_targets is not None and vocab is None:
            raise ValueError("WindowDataset: targets need the vocabulary")

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        window = self.windows[index]
        entry = self.entries[window.video]
        times = bin_centers(window, self.tscale)
        x = self.task.window_features(self.reader, entry, window)
        if self.stats is not None:
            x = self.stats.apply(x)
        valid = (times >= 0) & (times <= entry.duration)
        x[:, ~valid] = 0.0
        item = {
            "features": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            "valid": torch.from_numpy(valid),
            "index": torch.tensor(index),
        }
        if self.head_targets is not None:
            targets = self.head_targets(self.task.window_segments(entry, window))
            targets.update(self.task.classifier_targets(entry, window, self.vocab))
            item.update({k: torch.from_numpy(v) for k, v in targets.items()})
        return item


def interpolated_window(reader: FeatureReader, entry: VideoEntry, times: np.ndarray) -> np.ndarray:
    """Features of ``entry`` interpolated at ``times`` (increasing), ``(C, T)``, reading only the clips around them."""
    centers = entry.timing.centers(entry.num_clips)
    lo = max(int(np.searchsorted(centers, times[0], side="right")) - 1, 0)
    hi = min(int(np.searchsorted(centers, times[-1], side="left")) + 1, entry.num_clips)
    hi = max(hi, lo + 1)
    rows = reader.read_rows(entry.feature_id, lo, hi)
    return interpolate_features(rows, centers[lo:hi], times)


def make_dataset(
    task: "Task",
    reader: FeatureReader,
    entries: list[VideoEntry],
    stats: FeatureStats | None,
    vocab: "Vocabulary",
    head_targets: Callable[[np.ndarray], dict[str, np.ndarray]] | None,
    purpose: str,
) -> WindowDataset:
    """The task's windows of ``entries`` for ``purpose`` (``train``, ``validate`` or ``infer``); with
    ``head_targets`` (a head's ``target_builder()``), items carry the head's and the task's targets."""
    return WindowDataset(reader, entries, task.windows(entries, purpose), task, stats, head_targets, vocab)
