"""``extract-features inspect`` and ``verify``: what a feature file holds, and whether it is complete."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import yaml

from feature_extraction.clips import ClipSampler, to_fraction
from feature_extraction.video import find_videos, probe_videos
from tal_common.h5 import FORMAT_VERSION, PROVENANCE_ATTRS, FeatureFileError, FeatureReader, read_timing


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
    timings = [dataclasses.asdict(reader.timing(v)) for v in ids]  # checked: an error names video and attribute
    with h5py.File(path, "r") as f:
        shapes = np.array([f[v].shape for v in ids], dtype=np.int64).reshape(-1, 2)
        padded = [v for v in ids if bool(f[v].attrs.get("padded", False))]
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
    """Check the file's provenance attributes, every video's timing attributes (:func:`timing_problems`), and that
    every video under ``video_dirs`` is in ``path`` with the clip count its probed duration implies.

    Returns 0 when all hold, 1 otherwise (each problem is printed, naming the video and attribute).
    """
    reader = FeatureReader(path)
    attrs = reader.file_attrs()
    sampler = _file_sampler(reader)
    present = set(reader.video_ids())
    videos = find_videos(video_dirs, video_list)
    file_problems = [f"{path}: missing provenance attribute '{key}'" for key in PROVENANCE_ATTRS if key not in attrs]
    if "format_version" in attrs and attrs["format_version"] != FORMAT_VERSION:
        file_problems.append(f"{path}: provenance attribute 'format_version' is {attrs['format_version']!r}, expected {FORMAT_VERSION}")
    problems: dict[str, list[str]] = {}  # video id -> its problems
    with h5py.File(path, "r") as f:
        for vid in sorted(present):
            found = timing_problems(f[vid], sampler)
            if found:
                problems[vid] = found
        for video_path, info, reason in probe_videos(list(videos.values()), workers=workers, timeout_s=timeout_s):
            vid = video_path.stem
            if vid not in present:
                problems.setdefault(vid, []).append(f"{vid}: missing" + (f" (unreadable: {reason})" if info is None else ""))
            elif info is None:
                problems.setdefault(vid, []).append(f"{vid}: in the file but the video is unreadable now: {reason}")
            else:
                expected, got = sampler.num_clips(info.duration_s), f[vid].shape[0]
                if expected != got:
                    problems.setdefault(vid, []).append(f"{vid}: {got} clips, its duration {info.duration_s:.3f} s implies {expected}")
    lines = file_problems + sorted(line for found in problems.values() for line in found)
    for line in lines:
        print(line)
    print(f"verify: {len(videos) - len(problems.keys() & videos.keys())} of {len(videos)} videos OK, {len(lines)} problems")
    return int(bool(lines))


def timing_problems(dataset: h5py.Dataset, sampler: ClipSampler) -> list[str]:
    """What is wrong with one video's timing attributes (empty when nothing), each naming the video and attribute.

    Beyond :func:`read_timing`'s checks: the sampling attributes equal the file's sampling config, the clip
    count is the one ``duration_s`` implies, and every clip centre lies within ``[0, duration_s]`` (to one
    source frame: the recorded centres are a least-squares line through the frames used).
    """
    where = f"{dataset.file.filename}: video {dataset.name.lstrip('/')!r}"
    if dataset.ndim != 2 or dataset.shape[0] == 0:
        return [f"{where}: expected a (num_clips>0, dim) dataset, got shape {dataset.shape}"]
    try:
        timing = read_timing(dataset)
    except FeatureFileError as exc:
        return [str(exc)]
    expected = {"sample_fps": float(sampler.sample_fps), "clip_len": sampler.clip_len,
                "frame_interval": sampler.frame_interval, "stride": sampler.stride, "stride_s": float(sampler.stride_s)}
    problems = [f"{where}: timing attribute {key!r} is {getattr(timing, key)!r}, the file's sampling config says {value!r}"
                for key, value in expected.items() if not np.isclose(getattr(timing, key), value, rtol=1e-9, atol=0)]
    clips = sampler.num_clips(timing.duration_s)
    if dataset.shape[0] != clips:
        problems.append(f"{where}: {dataset.shape[0]} clips, timing attribute 'duration_s' {timing.duration_s:g} s implies {clips}")
    last = timing.first_center_s + (dataset.shape[0] - 1) * timing.stride_s
    if last > timing.duration_s + 1 / timing.source_fps:
        problems.append(f"{where}: timing attribute 'first_center_s' {timing.first_center_s:g} puts the last clip centre "
                        f"at {last:g} s, past timing attribute 'duration_s' {timing.duration_s:g} s")
    return problems
