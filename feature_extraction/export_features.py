"""``extract-features export``: our HDF5 -> one array file per video, as ActionFormer and OpenTAD load them.

Usage::

    extract-features export features.h5 --format {npy,npz,pt} -o DIR

Every video becomes ``DIR/<video id>.<format>`` holding float32 ``(T, C)`` (clips x channels), which is what
both peers read: ActionFormer ``np.load``\\ s ``file_prefix + id + file_ext`` (``.npz`` under the key ``feats``
for its EPIC-Kitchens loader) and transposes to ``(C, T)`` itself; OpenTAD's ``LoadFeats`` reads
``prefix + id + suffix + "." + feat_format`` (``npy``, ``npz`` key ``feats``, ``pt`` via ``torch.load``) and its
configs rearrange ``t c -> c t``. ``DIR/features.json`` records each video's timing attributes, clip count and
feature dim, and the command prints the config values each toolkit needs, derived from the attributes:

* ActionFormer maps clip ``i`` to ``(i * feat_stride + num_frames / 2) / fps`` seconds: ``default_fps`` =
  sample fps, ``feat_stride`` = stride, ``num_frames`` = twice the first clip centre in sampled frames;
* OpenTAD maps clip ``i`` to frame ``i * feature_stride * sample_stride + offset_frames`` at the dataset's
  ``fps``: ``fps`` = sample fps, ``feature_stride`` = stride, ``sample_stride`` = 1, ``offset_frames`` = the
  first clip centre in sampled frames.

Each file is published atomically; rerunning overwrites.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from tal_common.atomic import write_atomic, write_json_atomic
from tal_common.cli import HelpFormatter
from tal_common.h5 import ClipTiming, FeatureFileError, FeatureReader


def _save_npy(path: Path, feats: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, feats)


def _save_npz(path: Path, feats: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, feats=feats)


def _save_pt(path: Path, feats: np.ndarray) -> None:
    torch.save(torch.from_numpy(feats), path)


WRITERS: dict[str, Callable[[Path, np.ndarray], None]] = {"npy": _save_npy, "npz": _save_npz, "pt": _save_pt}


def export_features(features: Path, out_dir: Path, fmt: str) -> dict[str, dict]:
    """Write every video of ``features`` to ``out_dir/<id>.<fmt>`` as float32 ``(T, C)`` plus ``features.json``.

    Returns the ``features.json`` content: ``{video: {**timing attributes, "num_clips", "feature_dim"}}``.
    """
    save = WRITERS[fmt]
    reader = FeatureReader(features)
    index: dict[str, dict] = {}
    try:
        for vid in reader.video_ids():
            feats, timing = reader.read(vid)
            write_atomic(out_dir / f"{vid}.{fmt}", lambda tmp, f=feats: save(tmp, np.ascontiguousarray(f, dtype=np.float32)))
            index[vid] = {**timing.to_attrs(), "num_clips": int(feats.shape[0]), "feature_dim": int(feats.shape[1])}
    finally:
        reader.close()
    if not index:
        raise FeatureFileError(f"{features}: no videos to export")
    write_json_atomic(out_dir / "features.json", index, indent=1)
    return index


def _frames(value: float) -> int | float:
    """A frame count printed as an int when it is one (to 1e-6), else as a float."""
    return int(round(value)) if abs(value - round(value)) < 1e-6 else float(value)


def toolkit_settings(timing: ClipTiming) -> dict[str, dict[str, int | float]]:
    """The ActionFormer and OpenTAD dataset settings that reproduce ``timing``'s clip centres."""
    center_frames = timing.first_center_s * timing.sample_fps
    return {
        "actionformer": {"default_fps": _frames(timing.sample_fps), "feat_stride": timing.stride,
                         "num_frames": _frames(2 * center_frames)},
        "opentad": {"fps": _frames(timing.sample_fps), "feature_stride": timing.stride, "sample_stride": 1,
                    "offset_frames": _frames(center_frames)},
    }


def config_snippets(index: dict[str, dict], out_dir: Path, fmt: str) -> str:
    """Text to paste into each toolkit's config, or why one setting cannot serve every video."""
    settings = {}
    for vid, entry in index.items():
        timing = ClipTiming.from_attrs(entry, where=f"video {vid!r}")
        if abs(timing.stride_s - timing.stride / timing.sample_fps) > 1e-9:
            return f"# clip stride of video {vid!r} is not a whole number of sampled frames: use {out_dir}/features.json"
        settings[vid] = toolkit_settings(timing)
    distinct = {repr(s) for s in settings.values()}
    if len(distinct) > 1:
        return f"# the videos have different timings (e.g. rescaled features): read the per-video timing from {out_dir}/features.json"
    s = next(iter(settings.values()))
    af, ot = s["actionformer"], s["opentad"]
    lines = [
        "# ActionFormer (dataset section of the YAML config)",
        f"dataset: {{feat_folder: {out_dir}, file_prefix: '', file_ext: .{fmt}, default_fps: {af['default_fps']}, "
        f"feat_stride: {af['feat_stride']}, num_frames: {af['num_frames']}}}",
    ]
    if fmt == "pt":
        lines.append("# (ActionFormer reads .npy / .npz only: export --format npy for it)")
    lines += [
        "# OpenTAD (dataset dict of the Python config; pipeline: LoadFeats then Rearrange 't c -> c t')",
        f"dict(data_path='{out_dir}', fps={ot['fps']}, feature_stride={ot['feature_stride']}, "
        f"sample_stride={ot['sample_stride']}, offset_frames={ot['offset_frames']}), "
        f"dict(type='LoadFeats', feat_format='{fmt}')",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Options of ``extract-features export``."""
    p = argparse.ArgumentParser(prog="extract-features export", formatter_class=HelpFormatter,
                                description="Write one (T, C) float32 file per video plus features.json, for ActionFormer / OpenTAD.",
                                epilog="example:\n  extract-features export features.h5 --format npy -o features_npy/\n")
    p.add_argument("features", type=Path, help="our HDF5 feature file")
    p.add_argument("--format", choices=sorted(WRITERS), required=True, dest="fmt",
                   help="per-video file type: npy, npz (key 'feats') or pt")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    return p


def main(argv: Sequence[str]) -> int:
    """``extract-features export ...``; returns the exit status (errors are raised as ``ValueError``)."""
    a = build_parser().parse_args(argv)
    index = export_features(a.features, a.output, a.fmt)
    print(config_snippets(index, a.output, a.fmt))
    print(f"extract-features export: wrote {len(index)} videos to {a.output} ({a.fmt}), timing in {a.output / 'features.json'}",
          file=sys.stderr)
    return 0
