"""``extract-features inspect`` and ``verify``: what a feature file holds, and whether it is complete."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import yaml

from feature_extraction.clips import ClipSampler, to_fraction
from feature_extraction.video import find_videos, probe_videos
from tal_common.h5 import FeatureReader


def _file_sampler(reader: FeatureReader) -> ClipSampler:
    """The sampler recorded in a feature file's resolved config."""
    try:
        sampling = yaml.safe_load(reader.file_attrs()["config"])["sampling"]
        return ClipSampler(to_fraction(sampling["sample_fps"]), sampling["clip_len"], sampling["frame_interval"], sampling["stride"])
    except (KeyError, TypeError, yaml.YAMLError) as exc:
        raise ValueError(f"{reader.path}: no readable sampling config in the file attributes ({exc})") from exc


def inspect_file(path: Path) -> int:
    """Print a summary of a feature file: provenance, videos, clips, dims, timing, padding, failures."""
    reader = FeatureReader(path)
    attrs = reader.file_attrs()
    ids = reader.video_ids()
    with h5py.File(path, "r") as f:
        shapes = np.array([f[v].shape for v in ids], dtype=np.int64).reshape(-1, 2)
        timings = [dict(f[v].attrs) for v in ids]
    print(f"file:      {path}")
    for key in ("format_version", "package_version", "created", "backbone", "weights", "weights_sha256"):
        print(f"{key + ':':<17}{attrs.get(key, '(missing)')}")
    print(f"videos:    {len(ids)}")
    if ids:
        clips = shapes[:, 0]
        print(f"clips:     {int(clips.sum())} (per video min {clips.min()}, median {int(np.median(clips))}, max {clips.max()})")
        print(f"dims:      {sorted(set(shapes[:, 1].tolist()))}")
        hours = sum(float(t["duration_s"]) for t in timings) / 3600
        print(f"duration:  {hours:.2f} h in total")
        for key in ("sample_fps", "clip_len", "frame_interval", "stride", "stride_s", "first_center_s", "crops"):
            values = sorted({round(float(t[key]), 6) for t in timings if key in t})
            print(f"{key + ':':<17}{', '.join(f'{v:g}' for v in values)}")
        padded = [v for v, t in zip(ids, timings) if bool(t.get("padded", False))]
        print(f"padded:    {len(padded)}" + (f" ({', '.join(padded[:5])}{' ...' if len(padded) > 5 else ''})" if padded else ""))
    manifest = path.with_name(path.name + ".failures.jsonl")
    failures = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()] if manifest.is_file() else []
    print(f"failures:  {len(failures)}" + ("" if manifest.is_file() else " (no manifest found)"))
    for failure in failures[:10]:
        print(f"  {failure['video']}: {failure['reason']}")
    if len(failures) > 10:
        print(f"  ... {len(failures) - 10} more in {manifest}")
    return 0


def verify_file(path: Path, video_dirs: Sequence[Path], video_list: Path | None, workers: int, timeout_s: float) -> int:
    """Check every video under ``video_dirs`` is in ``path`` with the clip count its duration implies.

    Returns 0 when all match, 1 otherwise (each problem is printed).
    """
    reader = FeatureReader(path)
    sampler = _file_sampler(reader)
    present = set(reader.video_ids())
    videos = find_videos(video_dirs, video_list)
    problems: list[str] = []
    with h5py.File(path, "r") as f:
        for video_path, info, reason in probe_videos(list(videos.values()), workers=workers, timeout_s=timeout_s):
            vid = video_path.stem
            if vid not in present:
                problems.append(f"{vid}: missing" + (f" (unreadable: {reason})" if info is None else ""))
            elif info is None:
                problems.append(f"{vid}: in the file but the video is unreadable now: {reason}")
            else:
                expected, got = sampler.num_clips(info.duration_s), f[vid].shape[0]
                if expected != got:
                    problems.append(f"{vid}: {got} clips, its duration {info.duration_s:.3f} s implies {expected}")
    for line in sorted(problems):
        print(line)
    print(f"verify: {len(videos) - len(problems)} of {len(videos)} videos OK, {len(problems)} problems")
    return int(bool(problems))
