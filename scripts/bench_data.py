#!/usr/bin/env python3
"""Time one training window item on a long EK100-sized video: whole-video read (the old path) vs the rows a
window needs (what ``WindowDataset`` now does).

The video: 20 minutes of 6144-d features (EK100 TAdaConv features: 3 crops x 2048), one clip every 0.1333 s
(9000 clips, 211 MiB float32), written to a temporary HDF5 file with the project's writer. Windows: the EK100
config's 200 bins x 0.2667 s, 50 % overlap. Baseline, measured in the same run on the same windows: read the
whole dataset (``FeatureReader.read``: every row plus the finiteness check over all of it), then interpolate
onto the window's bins, which is what each item cost before. Both produce the same ``(C, T)`` array (checked).

Output: ``whole_video_ms``, ``window_ms`` per item, ``window_read_speedup: X.X`` (whole / window) and
``bytes_read_ratio`` (rows of the video / rows one window reads: the ratio of I/O when the file is not in the page
cache; with a warm cache the whole read is a memory copy and the window's fixed cost, the ``(T, C) -> (C, T)``
blend, weighs more).
Example (about 1 minute): ``python scripts/bench_data.py --items 20``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from localization.config import LocalizeConfig  # noqa: E402
from localization.data import bin_centers, build_entries, interpolate_features, make_dataset  # noqa: E402
from localization.tasks import Vocabulary, make_task  # noqa: E402
from tal_common.annotations import read_annotations  # noqa: E402
from tal_common.config import load_config  # noqa: E402
from tal_common.h5 import ClipTiming, FeatureReader, write_file_attrs, write_video  # noqa: E402


def make_video(folder: Path, minutes: float, dim: int) -> tuple[Path, Path]:
    """One long video's features and a one-video ActivityNet-style annotation file (the window geometry is the
    same whatever the annotation format)."""
    stride_s = 8 / 60  # 8 frames at 60 fps
    n = int(minutes * 60 / stride_s)
    timing = ClipTiming(source_fps=60.0, num_source_frames=int(minutes * 3600), duration_s=minutes * 60, sample_fps=60.0,
                        clip_len=8, frame_interval=1, stride=8, first_center_s=stride_s / 2, stride_s=stride_s, crops=3)
    path = folder / "long.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        write_file_attrs(f, "synthetic", "random", "", "")
        write_video(f, "P01_01", rng.standard_normal((n, dim), dtype=np.float32), timing)
    ann = folder / "ann.json"
    ann.write_text('{"database": {"P01_01": {"subset": "validation", "duration": %.3f, "annotations": '
                   '[{"segment": [10.0, 12.0], "label": "a"}]}}}' % (minutes * 60))
    return path, ann


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--dim", type=int, default=6144)
    parser.add_argument("--items", type=int, default=20, help="windows timed per method")
    args = parser.parse_args(argv)
    cfg = load_config(LocalizeConfig, ROOT / "configs/localize/ek100_bmn.yaml", ["data.task=thumos14"])
    task = make_task(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        path, ann = make_video(Path(tmp), args.minutes, args.dim)
        print(f"video: {args.minutes:g} min, {path.stat().st_size / 2**20:.0f} MiB of {args.dim}-d features")
        reader = FeatureReader(path)
        entries = build_entries(reader, read_annotations(ann).subset("validation"), task)
        dataset = make_dataset(task, reader, entries, None, Vocabulary(labels=("a",)), None, purpose="infer")
        picks = np.linspace(0, len(dataset) - 1, min(args.items, len(dataset))).astype(int)
        print(f"{len(dataset)} windows of {cfg.data.tscale} bins x {cfg.data.window_bin_s} s; timing {len(picks)}")
        whole, window, rows_read = [], [], []
        for index in picks:
            w = dataset.windows[index]
            entry = entries[w.video]
            times = bin_centers(w, cfg.data.tscale)
            centers = entry.timing.centers(entry.num_clips)
            rows_read.append(min(int(np.searchsorted(centers, times[-1])) + 1, entry.num_clips)
                             - max(int(np.searchsorted(centers, times[0], side="right")) - 1, 0))
            start = time.perf_counter()
            feats, timing = reader.read(entries[w.video].feature_id)
            ref = interpolate_features(feats, timing.centers(len(feats)), bin_centers(w, cfg.data.tscale))
            whole.append(time.perf_counter() - start)
            start = time.perf_counter()
            got = task.window_features(reader, entries[w.video], w)
            window.append(time.perf_counter() - start)
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
        a, b = statistics.median(whole) * 1e3, statistics.median(window) * 1e3
        print(f"whole_video_ms: {a:.1f}")
        print(f"window_ms: {b:.2f}")
        print(f"window_read_speedup: {a / b:.1f}")
        print(f"bytes_read_ratio: {entries[0].num_clips / statistics.median(rows_read):.1f} "
              f"(clips in the video / clips a window reads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
