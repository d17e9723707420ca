"""The HDF5 feature layout: the contract between extraction (stage 1) and localization (stage 2).

One dataset per video id at the root, shape ``(num_clips, feature_dim)``, float32, chunked. Each
dataset carries the timing attributes of :class:`ClipTiming`, enough to map a clip index to seconds
without any side file: clip ``i`` covers the sampled frames centred on
``first_center_s + i * stride_s``. The file carries provenance attributes (format version, backbone,
weights path and sha256, the resolved extraction config as YAML, package version, creation time).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from tal_common.atomic import durable_replace

FORMAT_VERSION = 1
PACKAGE_VERSION = "0.1.0"
PROVENANCE_ATTRS = ("format_version", "package_version", "backbone", "weights", "weights_sha256", "config", "created")


class FeatureFileError(ValueError):
    """A feature file or entry that does not follow the layout; names the file and video."""


@dataclass(frozen=True)
class ClipTiming:
    """How the clips of one video sit on its source timeline.

    ``source_fps``/``num_source_frames``/``duration_s`` describe the decoded video; the clips are
    sampled at ``sample_fps``, ``clip_len`` frames ``frame_interval`` sampled frames apart, one clip
    every ``stride`` sampled frames (``stride_s`` seconds); ``crops`` spatial crops are concatenated
    along the feature axis.
    """

    source_fps: float
    num_source_frames: int
    duration_s: float
    sample_fps: float
    clip_len: int
    frame_interval: int
    stride: int
    first_center_s: float
    stride_s: float
    crops: int = 1

    def centers(self, num_clips: int) -> np.ndarray:
        """Centre time in seconds of each of the first ``num_clips`` clips, shape ``(num_clips,)``."""
        return self.first_center_s + self.stride_s * np.arange(num_clips, dtype=np.float64)

    def to_attrs(self) -> dict[str, Any]:
        """The attribute dict stored on a video's dataset."""
        return dataclasses.asdict(self)

    @property
    def window_s(self) -> float:
        """Seconds one clip's sampled frames span (``clip_len * frame_interval / sample_fps``)."""
        return self.clip_len * self.frame_interval / self.sample_fps

    @classmethod
    def from_attrs(cls, attrs: Any, where: str = "") -> "ClipTiming":
        """Parse and check dataset attributes: each a finite number, counts whole, rates and steps positive,
        ``first_center_s`` within the video (error naming ``where`` and the attribute)."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in attrs:
                if f.name == "crops":
                    continue
                raise FeatureFileError(f"{where}: missing timing attribute '{f.name}'")
            values[f.name] = _timing_value(attrs[f.name], f.type in (int, "int"), f"{where}: timing attribute '{f.name}'")
        for name, (least, strict) in _TIMING_BOUNDS.items():
            value = values.get(name)
            if value is not None and (value < least or (strict and value == least)):
                raise FeatureFileError(f"{where}: timing attribute '{name}' must be {'>' if strict else '>='} {least}, got {value!r}")
        timing = cls(**values)
        if not 0 <= timing.first_center_s <= timing.duration_s + timing.window_s:
            raise FeatureFileError(f"{where}: timing attribute 'first_center_s' {timing.first_center_s!r} lies outside "
                                   f"the video (duration_s {timing.duration_s!r})")
        return timing

    def check_clip_count(self, num_clips: int, where: str) -> None:
        """Error naming ``where`` unless ``num_clips`` clips fit the video: the last centre may lie at most one
        window and one stride past ``duration_s`` (a lying shape or stride is caught before any row is read)."""
        last = self.first_center_s + (num_clips - 1) * self.stride_s
        if last > self.duration_s + self.window_s + self.stride_s:
            raise FeatureFileError(
                f"{where}: {num_clips} clips every {self.stride_s:g} s (timing attribute 'stride_s') end at {last:g} s, "
                f"past timing attribute 'duration_s' {self.duration_s:g} s"
            )


def create_video_dataset(
    h5file: h5py.File,
    video_id: str,
    num_clips: int,
    feature_dim: int,
    timing: ClipTiming,
    padded: bool = False,
    dtype: type = np.float32,
    compression: str | None = None,
) -> h5py.Dataset:
    """Create one video's empty ``(num_clips, feature_dim)`` dataset with its timing attributes (filled by the caller)."""
    if num_clips < 1 or feature_dim < 1:
        raise FeatureFileError(f"{h5file.filename}: video {video_id!r}: features must be (num_clips>0, dim>0), got ({num_clips}, {feature_dim})")
    chunks = (min(num_clips, 256), feature_dim)
    dset = h5file.create_dataset(video_id, shape=(num_clips, feature_dim), dtype=dtype, chunks=chunks, compression=compression)
    for key, value in timing.to_attrs().items():
        dset.attrs[key] = value
    dset.attrs["padded"] = bool(padded)
    return dset


def write_video(
    h5file: h5py.File,
    video_id: str,
    features: np.ndarray,
    timing: ClipTiming,
    padded: bool = False,
    compression: str | None = None,
) -> h5py.Dataset:
    """Write one video's features ``(num_clips, feature_dim)`` with its timing attributes."""
    feats = np.asarray(features)
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise FeatureFileError(f"{h5file.filename}: video {video_id!r}: features must be (num_clips>0, dim), got {feats.shape}")
    if not np.isfinite(feats).all():
        raise FeatureFileError(f"{h5file.filename}: video {video_id!r}: features contain NaN or inf")
    dtype = np.float16 if feats.dtype == np.float16 else np.float32
    dset = create_video_dataset(h5file, video_id, feats.shape[0], feats.shape[1], timing, padded, dtype, compression)
    dset[...] = feats
    return dset


class VideoPartWriter:
    """One video's features written row block by row block into ``<final>.tmp``, published atomically.

    Memory stays constant whatever the video's length. :meth:`commit` closes, fsyncs and renames the
    file onto ``final``, so ``final`` exists only complete; :meth:`abort` removes the temporary file.
    """

    def __init__(self, final: Path, video_id: str, num_clips: int, feature_dim: int, timing: ClipTiming,
                 padded: bool = False, compression: str | None = None) -> None:
        self.final = Path(final)
        self.tmp = self.final.with_name(self.final.name + ".tmp")
        self.video_id = video_id
        self._file = h5py.File(self.tmp, "w")
        self._dset = create_video_dataset(self._file, video_id, num_clips, feature_dim, timing, padded, compression=compression)
        self._written = np.zeros(num_clips, dtype=bool)

    @property
    def complete(self) -> bool:
        """Whether every clip has been written."""
        return bool(self._written.all())

    def write(self, first_clip: int, features: np.ndarray) -> None:
        """Store ``features`` ``(n, feature_dim)`` as clips ``first_clip .. first_clip + n - 1``."""
        if not np.isfinite(features).all():
            raise FeatureFileError(f"{self.tmp}: video {self.video_id!r}: features of clips from {first_clip} contain NaN or inf")
        self._dset[first_clip : first_clip + len(features)] = features
        self._written[first_clip : first_clip + len(features)] = True

    def commit(self) -> None:
        """Publish the complete file at ``final`` (fsync + rename)."""
        if not self.complete:
            raise FeatureFileError(f"{self.tmp}: video {self.video_id!r}: {int((~self._written).sum())} clips not written")
        self._file.close()
        durable_replace(self.tmp, self.final)

    def abort(self) -> None:
        """Drop the partial file."""
        if self._file.id.valid:
            self._file.close()
        self.tmp.unlink(missing_ok=True)


def assemble_file(
    out: Path,
    sources: Sequence[tuple[Path, str]],
    backbone: str,
    weights_path: str,
    weights_sha256: str,
    config_yaml: str,
) -> None:
    """Build ``out`` from ``(source file, video id)`` pairs plus provenance (see :func:`write_file_attrs`), atomically.

    Datasets are copied with their attributes, block by block (never loaded whole), into
    ``<out>.tmp``, which then replaces ``out``: a crash leaves the previous ``out`` or none.
    """
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    by_file: dict[Path, list[str]] = {}
    for path, video_id in sources:
        by_file.setdefault(Path(path), []).append(video_id)
    try:
        with h5py.File(tmp, "w") as dst:
            write_file_attrs(dst, backbone, weights_path, weights_sha256, config_yaml)
            for path, video_ids in by_file.items():
                with h5py.File(path, "r") as src:
                    for video_id in video_ids:
                        if video_id not in src:
                            raise FeatureFileError(f"{path}: no features for video {video_id!r}")
                        src.copy(src[video_id], dst, name=video_id)
    except Exception:
        tmp.unlink(missing_ok=True)  # a full disk, say: leave no partial file behind
        raise
    durable_replace(tmp, out)


def write_file_attrs(
    h5file: h5py.File,
    backbone: str,
    weights_path: str,
    weights_sha256: str,
    config_yaml: str,
    created: str | None = None,
) -> None:
    """Record provenance on the file: format/package version, backbone, weights, resolved config."""
    h5file.attrs["format_version"] = FORMAT_VERSION
    h5file.attrs["package_version"] = PACKAGE_VERSION
    h5file.attrs["backbone"] = backbone
    h5file.attrs["weights"] = weights_path
    h5file.attrs["weights_sha256"] = weights_sha256
    h5file.attrs["config"] = config_yaml
    h5file.attrs["created"] = created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_timing(dataset: h5py.Dataset) -> ClipTiming:
    """The :class:`ClipTiming` stored on one ``(num_clips, dim)`` video dataset, checked against its clip count."""
    where = f"{dataset.file.filename}: video {dataset.name.lstrip('/')!r}"
    timing = ClipTiming.from_attrs(dataset.attrs, where=where)
    if dataset.ndim >= 1:
        timing.check_clip_count(dataset.shape[0], where)
    return timing


# name -> (bound, strict): each timing attribute must be > bound (strict) or >= bound; first_center_s is checked apart.
_TIMING_BOUNDS = {
    "source_fps": (0, True), "num_source_frames": (0, False), "duration_s": (0, True), "sample_fps": (0, True),
    "clip_len": (1, False), "frame_interval": (1, False), "stride": (1, False), "stride_s": (0, True), "crops": (1, False),
}


def _timing_value(raw: Any, whole: bool, where: str) -> int | float:
    """One timing attribute as a finite float (an int for counts); an error naming ``where`` otherwise."""
    value = np.asarray(raw)
    if value.ndim != 0 or value.dtype.kind not in "iuf":
        raise FeatureFileError(f"{where} must be a single number, got {value.tolist() if value.ndim else _plain(raw)!r}")
    number = float(value)
    if not np.isfinite(number):
        raise FeatureFileError(f"{where} must be finite, got {number!r}")
    if whole:
        if not number.is_integer():
            raise FeatureFileError(f"{where} must be a whole number, got {number!r}")
        return int(number)
    return number


class FeatureReader:
    """Read-only access to a feature file.

    The HDF5 handle is opened lazily and reopened in any process other than the one that opened it, so one
    reader can be pickled into DataLoader workers (forked or spawned) and never shares a handle across a fork.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise FeatureFileError(f"{self.path}: a folder, not a feature file")
        if not self.path.is_file():
            raise FeatureFileError(f"feature file not found: {self.path}")
        self._file: h5py.File | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_file": None, "_pid": -1}

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise FeatureFileError(f"{self.path}: not a readable HDF5 file ({exc})") from exc
            self._pid = os.getpid()
        return self._file

    def video_ids(self) -> list[str]:
        """All video ids in the file (sorted)."""
        return sorted(k for k, v in self._handle().items() if isinstance(v, h5py.Dataset))

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._handle()

    def _dataset(self, video_id: str) -> h5py.Dataset:
        handle = self._handle()
        if video_id not in handle:
            raise FeatureFileError(f"{self.path}: no features for video {video_id!r}")
        dset = handle[video_id]
        if not isinstance(dset, h5py.Dataset) or dset.ndim != 2 or dset.shape[0] == 0:
            raise FeatureFileError(f"{self.path}: video {video_id!r}: expected a (num_clips>0, dim) dataset")
        return dset

    def read(self, video_id: str) -> tuple[np.ndarray, ClipTiming]:
        """Features ``(num_clips, feature_dim)`` as float32 and their timing."""
        dset = self._dataset(video_id)
        timing = read_timing(dset)  # before the rows: a shape its timing cannot hold is never read
        return self._checked(video_id, dset[()], 0), timing

    def timing(self, video_id: str) -> ClipTiming:
        """One video's timing attributes (no feature row is read)."""
        return read_timing(self._dataset(video_id))

    def read_rows(self, video_id: str, start: int, stop: int) -> np.ndarray:
        """Clips ``start .. stop - 1`` of one video, ``(stop - start, feature_dim)`` float32 (only those rows are read).

        ``0 <= start < stop <= num_clips``; finiteness is checked on the rows read.
        """
        dset = self._dataset(video_id)
        if not 0 <= start < stop <= dset.shape[0]:
            raise FeatureFileError(f"{self.path}: video {video_id!r}: rows {start}..{stop} outside 0..{dset.shape[0]}")
        return self._checked(video_id, dset[start:stop], start)

    def _checked(self, video_id: str, rows: np.ndarray, first: int) -> np.ndarray:
        feats = np.asarray(rows, dtype=np.float32)
        if not np.isfinite(feats).all():
            bad = first + int(np.flatnonzero(~np.isfinite(feats).all(axis=1))[0])
            raise FeatureFileError(f"{self.path}: video {video_id!r}: features contain NaN or inf (clip {bad})")
        return feats

    def file_attrs(self) -> dict[str, Any]:
        """The file-level provenance attributes."""
        return {k: _plain(v) for k, v in self._handle().attrs.items()}

    def close(self) -> None:
        """Close the underlying file (reopened on next access)."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = -1


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
