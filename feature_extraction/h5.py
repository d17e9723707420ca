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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FORMAT_VERSION = 1
PACKAGE_VERSION = "0.1.0"


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

    @classmethod
    def from_attrs(cls, attrs: Any, where: str = "") -> "ClipTiming":
        """Parse dataset attributes (error naming ``where`` and the missing attribute)."""
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in attrs:
                if f.name == "crops":
                    continue
                raise FeatureFileError(f"{where}: missing timing attribute '{f.name}'")
            raw = attrs[f.name]
            values[f.name] = int(raw) if f.type in (int, "int") else float(raw)
        return cls(**values)


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
    chunks = (min(feats.shape[0], 256), feats.shape[1])
    dset = h5file.create_dataset(video_id, data=feats.astype(dtype, copy=False), chunks=chunks, compression=compression)
    for key, value in timing.to_attrs().items():
        dset.attrs[key] = value
    dset.attrs["padded"] = bool(padded)
    return dset


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
    """The :class:`ClipTiming` stored on one video's dataset."""
    return ClipTiming.from_attrs(dataset.attrs, where=f"{dataset.file.filename}: video {dataset.name.lstrip('/')!r}")


class FeatureReader:
    """Read-only access to a feature file, opened lazily so it can be pickled into DataLoader workers."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FeatureFileError(f"feature file not found: {self.path}")
        self._file: h5py.File | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_file": None}

    def _handle(self) -> h5py.File:
        if self._file is None:
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise FeatureFileError(f"{self.path}: not a readable HDF5 file ({exc})") from exc
        return self._file

    def video_ids(self) -> list[str]:
        """All video ids in the file (sorted)."""
        return sorted(k for k, v in self._handle().items() if isinstance(v, h5py.Dataset))

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._handle()

    def read(self, video_id: str) -> tuple[np.ndarray, ClipTiming]:
        """Features ``(num_clips, feature_dim)`` as float32 and their timing."""
        handle = self._handle()
        if video_id not in handle:
            raise FeatureFileError(f"{self.path}: no features for video {video_id!r}")
        dset = handle[video_id]
        feats = np.asarray(dset[()], dtype=np.float32)
        if feats.ndim != 2 or feats.shape[0] == 0:
            raise FeatureFileError(f"{self.path}: video {video_id!r}: expected (num_clips, dim), got {feats.shape}")
        if not np.isfinite(feats).all():
            raise FeatureFileError(f"{self.path}: video {video_id!r}: features contain NaN or inf")
        return feats, read_timing(dset)

    def file_attrs(self) -> dict[str, Any]:
        """The file-level provenance attributes."""
        return {k: _plain(v) for k, v in self._handle().attrs.items()}

    def close(self) -> None:
        """Close the underlying file (reopened on next access)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
