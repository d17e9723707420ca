"""``extract-features import``: features released by others -> our HDF5 layout with full timing.

Usage::

    extract-features import SRC [SRC ...] -o features.h5 --format FORMAT
        [--preset tadaconv-hacs|tadaconv-ek100 | --fps F --clip-len L --frame-interval I --stride S]
        [--annotations A.json|A.csv] [--video-info EPIC_100_video_info.csv]

``FORMATS`` maps a format name to a reader (one function each; a new format is one function plus one
entry). A reader turns the source folders/files into ``(video id, features (T, C), source path)``:

* ``npy`` / ``pt`` / ``pkl``: one file per video, ``(T, C)`` (``--channels-first`` for ``(C, T)``);
* ``tsp-h5``: a flat HDF5 with one ``(T, C)`` dataset per video and no attributes (TSP, ActionFormer);
* ``mmaction-csv``: mmaction2's ``csv_mean_100`` -- one CSV per video, a header row ``f0,f1,...``, one row
  per temporal position (mmaction2's ``LoadLocalizationFeature`` skips the header and transposes to
  ``(C, T)``); the positions evenly cover the span the features were pooled from, position ``i`` at
  ``i / T`` of it (mmaction2's BMN convention), so the timing is per video;
* ``tadaconv-hacs``: the TAdaConv feature zoo's HACS features, one ``torch.save`` ``.pkl`` per video;
* ``tadaconv-ek100``: its EK100 features, one ``.pkl`` per 5-second chunk named
  ``<video>_<start ms>_<end ms>.pkl``, concatenated in time order.

Clip ``k`` of the TAdaConv features is centred at ``(stride - 1 + k * stride) / fps`` seconds, the mapping
of ``_transform_feature_scale`` in TAdaConv's ``datasets/base/epickitchen100_feature.py``; for EK100 each
chunk holds exactly the clips centred inside ``[start, end]`` (both ends included), and a video's last
chunk may carry one extra row, which TAdaConv drops and so do we. Features with timing from the command
line are centred as our extraction centres them, half a window after the clip start.

Durations (and frame counts) come from ``--annotations`` (HACS/ActivityNet/mmaction2 JSON, or an EK100
CSV with ``--video-info``) or ``--video-info`` alone. Nothing is unpickled beyond arrays: ``.pt``/``.pkl``
files go through ``torch.load(weights_only=True)`` or an unpickler that allows only numpy's array
globals, so a malicious file is refused without running its code. The output is published atomically.
"""
from __future__ import annotations

import argparse
import codecs
import math
import pickle
import re
import sys
import zipfile
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import h5py
import numpy as np
import torch
import yaml

from tal_common.annotations import read_annotations, read_video_info
from tal_common.atomic import write_atomic
from tal_common.cli import HelpFormatter
from tal_common.h5 import ClipTiming, FeatureFileError, write_file_attrs, write_video


class ImportInputError(FeatureFileError):
    """Input that cannot be imported; the message names the file (and the video)."""


@dataclass(frozen=True)
class Sampling:
    """How the clips were sampled: ``clip_len`` frames ``frame_interval`` apart at ``sample_fps``, one clip every
    ``stride`` sampled frames, clip ``k`` centred ``first_center_frames + k * stride`` sampled frames in."""

    sample_fps: Fraction
    clip_len: int
    frame_interval: int
    stride: int
    first_center_frames: Fraction
    crops: int = 1
    backbone: str = "unknown"

    def center_s(self, k: int) -> Fraction:
        """Exact centre time of clip ``k`` in seconds."""
        return (self.first_center_frames + k * self.stride) / self.sample_fps

    def clips_centred_in(self, start_s: Fraction, end_s: Fraction) -> range:
        """Indices ``k`` whose centre lies in ``[start_s, end_s]`` (both ends included)."""
        lo = math.ceil((start_s * self.sample_fps - self.first_center_frames) / self.stride)
        hi = math.floor((end_s * self.sample_fps - self.first_center_frames) / self.stride)
        return range(max(lo, 0), hi + 1)


PRESETS: dict[str, Sampling] = {
    # TAdaConv FEATURE_ZOO "features_s16_fps30": TAda2D 8x8 at 30 fps, one clip every 16 frames.
    "tadaconv-hacs": Sampling(Fraction(30), 8, 8, 16, Fraction(15), crops=1, backbone="tada2d_r50"),
    # TAdaConv EK100 "features_s8_fps60": TAda2D 8x8 at 60 fps, one clip every 8 frames, 3 crops (6144-d).
    "tadaconv-ek100": Sampling(Fraction(60), 8, 8, 8, Fraction(7), crops=3, backbone="tada2d_r50"),
}


@dataclass(frozen=True)
class Durations:
    """Per-video duration (s) and frame rate (``None``: unknown), and where they came from."""

    by_video: dict[str, tuple[float, float | None]]
    source: str
    feature_span: dict[str, float]

    def lookup(self, video_id: str, where: str) -> tuple[float, float | None]:
        """The entry of ``video_id`` (HACS ids match with or without the ``v_`` prefix)."""
        for key in (video_id, video_id.removeprefix("v_"), f"v_{video_id}"):
            if key in self.by_video:
                return self.by_video[key]
        raise ImportInputError(f"{where}: video {video_id!r} has no duration in {self.source}")


@dataclass(frozen=True)
class ImportedVideo:
    """One video's features ``(T, C)`` with its timing, and a note for the report (e.g. chunks joined)."""

    video_id: str
    features: np.ndarray
    timing: ClipTiming
    note: str = ""


Reader = Callable[[Sequence[Path], Sampling | None, Durations, bool], Iterator[ImportedVideo]]


# --------------------------------------------------------------------------- safe loading


_NUMPY_CORE = getattr(np, "_core", None) or np.core  # numpy >= 2 moved numpy.core to numpy._core
# The globals a pickled numpy array needs (numpy 1 files name numpy.core.*; protocol 5 uses _frombuffer), and
# _codecs.encode (protocol 2 bytes). None of them runs anything but array construction.
_ARRAY_GLOBALS: dict[str, Any] = {
    "numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype, "_codecs.encode": codecs.encode,
    **{f"numpy.{core}.multiarray.{name}": getattr(_NUMPY_CORE.multiarray, name)
       for core in ("core", "_core") for name in ("_reconstruct", "scalar")},
    **{f"numpy.{core}.numeric._frombuffer": _NUMPY_CORE.numeric._frombuffer for core in ("core", "_core")},
    **{f"numpy.dtypes.{name}": getattr(np.dtypes, name) for name in np.dtypes.__all__},
}
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays (and plain containers) only: any other global is refused before it is called."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ARRAY_GLOBALS[f"{module}.{name}"]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (only numpy arrays are allowed)") from None


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` that also accepts numpy arrays saved with ``torch.save``."""
    allowed = [(obj, name) for name, obj in _ARRAY_GLOBALS.items()]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_array_file(path: Path) -> np.ndarray:
    """A ``.pt``/``.pkl`` file holding one tensor or array (or a mapping with exactly one), without executing code.

    ``torch.save`` files (zip or legacy) are read with ``torch.load(weights_only=True)``, plain pickles with
    :class:`_ArrayUnpickler`. Returns the array as saved (any shape), float32.
    """
    try:
        if zipfile.is_zipfile(path):
            obj = _torch_load(path)
        else:
            with open(path, "rb") as fh:
                obj = _ArrayUnpickler(fh).load()
            if isinstance(obj, int) and obj == _TORCH_LEGACY_MAGIC:
                obj = _torch_load(path)
    except FileNotFoundError:
        raise ImportInputError(f"{path}: file not found") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise ImportInputError(f"{path}: refused or unreadable (only tensors/arrays are loaded, no code is run): {exc}") from None
    if isinstance(obj, dict):
        arrays = [v for v in obj.values() if isinstance(v, (torch.Tensor, np.ndarray))]
        if len(arrays) != 1:
            raise ImportInputError(f"{path}: a mapping must hold exactly one tensor/array, found keys {sorted(map(str, obj))}")
        obj = arrays[0]
    if isinstance(obj, torch.Tensor):
        return obj.detach().to(torch.float32).numpy()
    if isinstance(obj, np.ndarray) and obj.dtype.kind in "fiu":
        return obj.astype(np.float32)
    raise ImportInputError(f"{path}: expected a tensor or a numeric array, got {type(obj).__name__}")


# --------------------------------------------------------------------------- readers


def _files(sources: Sequence[Path], suffix: str) -> dict[str, Path]:
    """``stem -> path`` of the ``suffix`` files in the source folders (or files); duplicate stems are an error."""
    found: dict[str, Path] = {}
    for src in sources:
        if not src.exists():
            raise ImportInputError(f"{src}: not found")
        paths = [src] if src.is_file() else sorted(src.glob(f"*{suffix}"))
        for path in paths:
            if path.stem in found:
                raise ImportInputError(f"video {path.stem!r} appears twice: {found[path.stem]} and {path}")
            found[path.stem] = path
    if not found:
        raise ImportInputError(f"no {suffix} files in {', '.join(map(str, sources))}")
    return found


def _as_clips(array: np.ndarray, where: str | Path, channels_first: bool) -> np.ndarray:
    """Check a per-video array (from ``where``, named in errors): 2-D, non-empty, finite; returns ``(T, C)``
    (transposed from ``(C, T)`` if asked)."""
    if array.ndim != 2 or 0 in array.shape:
        raise ImportInputError(f"{where}: expected a 2-D (T, C) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ImportInputError(f"{where}: features contain NaN or inf")
    return np.ascontiguousarray(array.T if channels_first else array, dtype=np.float32)


def _timing(sampling: Sampling, duration: float, fps: float | None) -> ClipTiming:
    """The timing attributes of a video lasting ``duration`` s (source frame rate ``fps``, default the sample fps)."""
    source_fps = float(fps) if fps else float(sampling.sample_fps)
    return ClipTiming(
        source_fps=source_fps, num_source_frames=int(round(duration * source_fps)), duration_s=float(duration),
        sample_fps=float(sampling.sample_fps), clip_len=sampling.clip_len, frame_interval=sampling.frame_interval,
        stride=sampling.stride, first_center_s=float(sampling.center_s(0)),
        stride_s=float(Fraction(sampling.stride) / sampling.sample_fps), crops=sampling.crops,
    )


def _per_file(load: Callable[[Path], np.ndarray], suffix: str) -> Reader:
    """A reader for one file per video, loaded by ``load``, with the command-line timing."""

    def read(sources: Sequence[Path], sampling: Sampling | None, durations: Durations, channels_first: bool) -> Iterator[ImportedVideo]:
        assert sampling is not None
        for vid, path in _files(sources, suffix).items():
            feats = _as_clips(load(path), path, channels_first)
            duration, fps = durations.lookup(vid, str(path))
            yield ImportedVideo(vid, feats, _timing(sampling, duration, fps))

    return read


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ImportInputError(f"{path}: not a plain .npy array ({exc})") from None
    if array.dtype.kind not in "fiu":
        raise ImportInputError(f"{path}: expected a numeric array, got dtype {array.dtype}")
    return array.astype(np.float32)


def _read_tsp_h5(sources: Sequence[Path], sampling: Sampling | None, durations: Durations, channels_first: bool) -> Iterator[ImportedVideo]:
    assert sampling is not None
    seen: dict[str, Path] = {}
    for path in sources:
        try:
            handle = h5py.File(path, "r")
        except OSError as exc:
            raise ImportInputError(f"{path}: not a readable HDF5 file ({exc})") from None
        with handle:
            ids = sorted(k for k, v in handle.items() if isinstance(v, h5py.Dataset))
            if not ids:
                raise ImportInputError(f"{path}: no datasets at the root (expected one (T, C) dataset per video)")
            for vid in ids:
                if vid in seen:
                    raise ImportInputError(f"video {vid!r} appears twice: {seen[vid]} and {path}")
                seen[vid] = path
                feats = _as_clips(np.asarray(handle[vid][()], dtype=np.float32), f"{path}: video {vid!r}", channels_first)
                duration, fps = durations.lookup(vid, str(path))
                yield ImportedVideo(vid, feats, _timing(sampling, duration, fps))


def _load_mmaction_csv(path: Path) -> np.ndarray:
    """mmaction2 ``csv_mean_100``: header ``f0,...,f{C-1}``, then ``T`` rows of ``C`` values -> ``(T, C)``."""
    try:
        with open(path, encoding="utf-8") as fh:
            header = fh.readline().strip().split(",")
            rows = np.loadtxt(fh, dtype=np.float64, delimiter=",", ndmin=2)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImportInputError(f"{path}: not an mmaction2 feature CSV (rows of equal length after a header): {exc}") from None
    if rows.size and rows.shape[1] != len(header):
        raise ImportInputError(f"{path}: header has {len(header)} columns but rows have {rows.shape[1]}")
    return rows.astype(np.float32)


def _read_mmaction_csv(sources: Sequence[Path], sampling: Sampling | None, durations: Durations, channels_first: bool) -> Iterator[ImportedVideo]:
    for vid, path in _files(sources, ".csv").items():
        feats = _as_clips(_load_mmaction_csv(path), path, channels_first)
        duration, fps = durations.lookup(vid, str(path))
        span = durations.feature_span.get(vid, duration)
        steps = len(feats)
        rate = steps / span  # one position per "sampled frame"
        source_fps = float(fps) if fps else rate
        timing = ClipTiming(
            source_fps=source_fps, num_source_frames=int(round(duration * source_fps)), duration_s=float(duration),
            sample_fps=rate, clip_len=1, frame_interval=1, stride=1, first_center_s=0.0, stride_s=span / steps, crops=1,
        )
        yield ImportedVideo(vid, feats, timing, note=f"{steps} positions over {span:.3f} s")


_CHUNK = re.compile(r"^(?P<video>.+)_(?P<start>\d+)_(?P<end>\d+)$")


def _read_ek100_chunks(sources: Sequence[Path], sampling: Sampling | None, durations: Durations, channels_first: bool) -> Iterator[ImportedVideo]:
    """TAdaConv EK100 5-second chunks ``<video>_<start ms>_<end ms>.pkl`` -> one ``(T, C)`` array per video."""
    assert sampling is not None
    chunks: dict[str, list[tuple[int, int, Path]]] = {}
    for stem, path in _files(sources, ".pkl").items():
        match = _CHUNK.match(stem)
        if match is None:
            raise ImportInputError(f"{path}: not an EK100 chunk name <video>_<start ms>_<end ms>.pkl")
        start, end = int(match["start"]), int(match["end"])
        if end <= start:
            raise ImportInputError(f"{path}: chunk ends at {end} ms, not after its start {start} ms")
        chunks.setdefault(match["video"], []).append((start, end, path))
    for vid in sorted(chunks):
        parts = sorted(chunks[vid])
        duration, fps = durations.lookup(vid, str(parts[0][2]))
        _check_contiguous(vid, parts, duration)
        blocks, note = [], ""
        for i, (start, end, path) in enumerate(parts):
            block = _as_clips(load_array_file(path), path, channels_first)
            expected = len(sampling.clips_centred_in(Fraction(start, 1000), Fraction(end, 1000)))
            if i == len(parts) - 1 and len(block) == expected + 1:
                block, note = block[:-1], f"dropped the extra last row of {path.name}"
            elif len(block) != expected:
                raise ImportInputError(f"{path}: {len(block)} rows, but {expected} clips are centred in "
                                       f"[{start / 1000:g}, {end / 1000:g}] s at this timing")
            if blocks and block.shape[1] != blocks[0].shape[1]:
                raise ImportInputError(f"{path}: {block.shape[1]} channels, but {parts[0][2].name} has {blocks[0].shape[1]}")
            blocks.append(block)
        feats = np.concatenate(blocks)
        if not len(feats):
            raise ImportInputError(f"{parts[0][2]}: video {vid!r}: no clip centred inside its chunks")
        yield ImportedVideo(vid, feats, _timing(sampling, duration, fps),
                            note=f"{len(parts)} chunks, 0-{parts[-1][1] / 1000:g} s" + (f"; {note}" if note else ""))


def _check_contiguous(vid: str, parts: list[tuple[int, int, Path]], duration: float) -> None:
    """Chunks must tile ``[0, end]`` without gaps or overlaps and reach the video's end (TAdaConv skips < 0.2 s)."""
    if parts[0][0] != 0:
        raise ImportInputError(f"video {vid!r}: missing chunk before {parts[0][2].name}: no features for [0, {parts[0][0] / 1000:g}] s")
    for (_, prev_end, prev), (start, _, path) in zip(parts, parts[1:]):
        if start > prev_end:
            raise ImportInputError(f"video {vid!r}: missing chunk between {prev.name} and {path.name}: "
                                   f"no features for [{prev_end / 1000:g}, {start / 1000:g}] s")
        if start < prev_end:
            raise ImportInputError(f"video {vid!r}: chunks overlap: {prev.name} ends at {prev_end / 1000:g} s, "
                                   f"{path.name} starts at {start / 1000:g} s")
    last_end = parts[-1][1] / 1000
    if duration - last_end > 0.2 + 1e-3:
        raise ImportInputError(f"video {vid!r}: chunks end at {last_end:g} s ({parts[-1][2].name}) but the video lasts "
                               f"{duration:g} s: its last chunk(s) are missing")


FORMATS: dict[str, Reader] = {
    "npy": _per_file(_load_npy, ".npy"),
    "pt": _per_file(load_array_file, ".pt"),
    "pkl": _per_file(load_array_file, ".pkl"),
    "tsp-h5": _read_tsp_h5,
    "mmaction-csv": _read_mmaction_csv,
    "tadaconv-hacs": _per_file(load_array_file, ".pkl"),
    "tadaconv-ek100": _read_ek100_chunks,
}
DEFAULT_PRESET = {"tadaconv-hacs": "tadaconv-hacs", "tadaconv-ek100": "tadaconv-ek100"}
TIMING_FROM_DURATIONS = {"mmaction-csv"}


# --------------------------------------------------------------------------- the command


def load_durations(annotations: Path | None, video_info: Path | None) -> Durations:
    """Durations from an annotation file (EK100 CSVs take ``video_info``) or from ``video_info`` alone."""
    if annotations is None and video_info is None:
        raise ImportInputError("durations are needed: pass --annotations (HACS/ActivityNet/mmaction2 JSON or EK100 CSV) "
                               "or --video-info (EPIC_100_video_info.csv layout)")
    if annotations is None:
        return Durations(read_video_info(video_info), str(video_info), {})
    ann = read_annotations(annotations, video_info=video_info)
    spans = {}
    for vid, frames in ann.extra.get("feature_frame", {}).items():
        spans[vid] = frames / ann.videos[vid].fps  # feature_frame / duration_frame * duration_second (mmaction2)
    return Durations({vid: (v.duration, v.fps) for vid, v in ann.videos.items()}, str(annotations), spans)


def import_features(
    fmt: str,
    sources: Sequence[Path],
    out: Path,
    sampling: Sampling | None,
    durations: Durations,
    channels_first: bool = False,
) -> list[tuple[str, int, str]]:
    """Read ``sources`` in format ``fmt`` and publish them as our HDF5 at ``out`` (atomically, one video in memory
    at a time). Returns ``(video id, clips, note)`` per video."""
    reader = FORMATS[fmt]
    written: list[tuple[str, int, str]] = []
    config = {"import": {
        "format": fmt, "sources": [str(s) for s in sources], "durations": durations.source,
        "channels_first": channels_first,
        "sampling": None if sampling is None else {k: str(v) for k, v in asdict(sampling).items()},
    }}

    def fill(tmp: Path) -> None:
        dims: tuple[int, str] | None = None
        with h5py.File(tmp, "w") as h5:
            backbone = sampling.backbone if sampling is not None else "unknown"
            write_file_attrs(h5, f"{backbone} (imported)", f"imported from {', '.join(map(str, sources))} ({fmt})", "",
                             yaml.safe_dump(config, sort_keys=False))
            for video in reader(sources, sampling, durations, channels_first):
                if dims is None:
                    dims = (video.features.shape[1], video.video_id)
                elif video.features.shape[1] != dims[0]:
                    raise ImportInputError(f"video {video.video_id!r}: {video.features.shape[1]} channels, "
                                           f"but video {dims[1]!r} has {dims[0]} (ragged feature dims)")
                write_video(h5, video.video_id, video.features, video.timing)
                written.append((video.video_id, len(video.features), video.note))

    write_atomic(out, fill)
    return written


def build_parser() -> argparse.ArgumentParser:
    """Options of ``extract-features import``."""
    p = argparse.ArgumentParser(prog="extract-features import", formatter_class=HelpFormatter,
                                description="Import others' features into our HDF5 layout.",
                                epilog="example:\n  extract-features import tadaconv_pkls/ -o hacs.h5 --format tadaconv-hacs "
                                "--annotations HACS_segments_v1.1.1.json\n")
    p.add_argument("sources", nargs="+", type=Path, metavar="SRC", help="folder(s) of per-video files, or an HDF5 file (tsp-h5)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output HDF5 file (replaced atomically)")
    p.add_argument("--format", choices=sorted(FORMATS), required=True, dest="fmt",
                   help="the source layout (see the README's table of import formats)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="timing of a known feature release")
    p.add_argument("--fps", type=Fraction, default=None, help="sample fps of the clips (e.g. 30 or 30000/1001)")
    p.add_argument("--clip-len", type=int, default=None, help="frames per clip")
    p.add_argument("--frame-interval", type=int, default=None, help="sampled frames between a clip's frames")
    p.add_argument("--stride", type=int, default=None, help="sampled frames between clip starts")
    p.add_argument("--crops", type=int, default=None, help="spatial crops concatenated per clip (default: 1, or the preset's)")
    p.add_argument("--backbone", default=None, help="backbone name to record (default: the preset's, else 'unknown')")
    p.add_argument("--channels-first", action="store_true", help="per-video arrays are (C, T), not (T, C)")
    p.add_argument("--annotations", type=Path, default=None, help="durations from HACS/ActivityNet/mmaction2 JSON or EK100 CSV")
    p.add_argument("--video-info", type=Path, default=None, help="EPIC_100_video_info.csv layout (video_id,duration,fps)")
    return p


def sampling_from_args(a: argparse.Namespace) -> Sampling | None:
    """The clip timing: a preset (the format's default; ``--crops``/``--backbone`` may still be set) or all four
    of ``--fps --clip-len --frame-interval --stride``; ``None`` for formats timed by the durations."""
    given = {k: getattr(a, k) for k in ("fps", "clip_len", "frame_interval", "stride") if getattr(a, k) is not None}
    flags = " ".join(f"--{k.replace('_', '-')}" for k in given)
    if a.fmt in TIMING_FROM_DURATIONS:
        if given or a.preset or a.crops:
            raise ImportInputError(f"--format {a.fmt}: the timing comes from each video's duration; drop --preset/--fps/--clip-len/--frame-interval/--stride/--crops")
        return None
    preset = a.preset or DEFAULT_PRESET.get(a.fmt)
    if preset is not None:
        if given:
            raise ImportInputError(f"preset {preset!r} fixes the clip timing; drop {flags} (or give all four without a preset)")
        sampling = PRESETS[preset]
    else:
        missing = [f"--{k.replace('_', '-')}" for k in ("fps", "clip_len", "frame_interval", "stride") if k not in given]
        if missing:
            raise ImportInputError(f"--format {a.fmt}: give the clip timing with --preset or {' '.join(missing)}")
        if given["fps"] <= 0 or min(given["clip_len"], given["frame_interval"], given["stride"]) < 1:
            raise ImportInputError(f"--fps must be > 0 and --clip-len/--frame-interval/--stride >= 1, got {given}")
        sampling = Sampling(given["fps"], given["clip_len"], given["frame_interval"], given["stride"],
                            Fraction(given["clip_len"] * given["frame_interval"], 2))  # our centring: half a window in
    if a.crops is not None:
        if a.crops < 1:
            raise ImportInputError(f"--crops must be >= 1, got {a.crops}")
        sampling = replace(sampling, crops=a.crops)
    if a.backbone:
        sampling = replace(sampling, backbone=a.backbone)
    return sampling


def main(argv: Sequence[str]) -> int:
    """``extract-features import ...``; returns the exit status (errors are raised as ``ValueError``)."""
    a = build_parser().parse_args(argv)
    sampling = sampling_from_args(a)
    durations = load_durations(a.annotations, a.video_info)
    videos = import_features(a.fmt, a.sources, a.output, sampling, durations, a.channels_first)
    for vid, _, note in videos:
        if note:
            print(f"extract-features import: {vid}: {note}", file=sys.stderr)
    clips = sum(n for _, n, _ in videos)
    print(f"extract-features import: wrote {a.output}: {len(videos)} videos, {clips} clips ({a.fmt})")
    return 0
