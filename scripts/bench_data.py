#!/usr/bin/env python3
"""Time one training window item on a long EK100-sized video: whole-video read (the old path) vs the rows a
window needs (what ``WindowDataset`` now does).

The video: 20 minutes of 6144-d features (EK100 TAdaConv features: 3 crops x 2048, one clip every 8 frames at
60 fps, 9000 clips, 211 MiB float32), written to a temporary HDF5 file with the project's writer, with a one-action
EK100 CSV and video-info CSV. Windows: the task's (default ``ek100``, the TAdaConv protocol of
``configs/localize/ek100_bmn.yaml``: 200 bins from 400 feature rows, 50 % overlap; ``--task thumos14``: the
sliding-window task's bin interpolation on the same geometry). Baseline, measured in the same run on the same
windows: read the whole dataset (``FeatureReader.read``: every row plus the finiteness check over all of it), then
build the window from it, which is what each item cost before. Both give the same ``(C, T)`` array (checked).

Output: ``whole_video_ms``, ``window_ms`` per item (medians), ``window_read_speedup: X.X`` (whole / window) and
``bytes_read_ratio`` (rows of the video / rows one window reads: the ratio of I/O when the file is not in the page
cache; with a warm cache the whole read is a memory copy, and the window's own fixed cost, the resampling and the
``(T, C) -> (C, T)`` transpose, weighs more).
Example (about 1 minute): ``python scripts/bench_data.py --items 20``.
"""
from __future__ import annotations

import argparse
import csv
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
from localization.data import VideoEntry, Window, bin_centers, build_entries, make_dataset  # noqa: E402
from localization.tasks import Task, Vocabulary, make_task  # noqa: E402
from tal_common.annotations import EK100_COLUMNS, read_annotations  # noqa: E402
from tal_common.config import load_config  # noqa: E402
from tal_common.h5 import ClipTiming, FeatureReader, write_file_attrs, write_video  # noqa: E402


def make_video(folder: Path, minutes: float, dim: int) -> tuple[Path, Path, Path]:
    """One long video's features, a one-action EK100 CSV and its video-info CSV."""
    stride_s = 8 / 60  # 8 frames at 60 fps
    n = int(minutes * 60 / stride_s)
    timing = ClipTiming(source_fps=60.0, num_source_frames=int(minutes * 3600), duration_s=minutes * 60, sample_fps=60.0,
                        clip_len=8, frame_interval=8, stride=8, first_center_s=7 / 60, stride_s=stride_s, crops=3)
    path = folder / "long.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        write_file_attrs(f, "synthetic", "random", "", "")
        write_video(f, "P01_01", rng.standard_normal((n, dim), dtype=np.float32), timing)
    row = {"narration_id": "P01_01_0", "participant_id": "P01", "video_id": "P01_01", "narration_timestamp": "00:00:10.00",
           "start_timestamp": "00:00:10.00", "stop_timestamp": "00:00:12.00", "start_frame": "601", "stop_frame": "720",
           "narration": "open door", "verb": "open", "verb_class": "3", "noun": "door", "noun_class": "8",
           "all_nouns": "['door']", "all_noun_classes": "[8]"}
    ann = folder / "EPIC_100_validation.csv"
    with open(ann, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(EK100_COLUMNS))
        writer.writeheader()
        writer.writerow(row)
    info = folder / "EPIC_100_video_info.csv"
    info.write_text(f"video_id,duration,fps,resolution\nP01_01,{minutes * 60:.2f},60.0,456x256\n")
    return path, ann, info


def whole_video_item(task: Task, reader: FeatureReader, entry: VideoEntry, window: Window) -> np.ndarray:
    """The old path: every row of the video read (and checked), then the task's window built from them."""
    feats, _ = reader.read(entry.feature_id)

    class WholeVideo:  # the reader interface a task uses, serving rows from the array read above
        def read_rows(self, video_id: str, start: int, stop: int) -> np.ndarray:
            return feats[start:stop]

    return task.window_features(WholeVideo(), entry, window)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--dim", type=int, default=6144)
    parser.add_argument("--items", type=int, default=20, help="windows timed per method")
    parser.add_argument("--task", choices=("ek100", "thumos14"), default="ek100", help="whose window geometry and resampling")
    args = parser.parse_args(argv)
    cfg = load_config(LocalizeConfig, ROOT / "configs/localize/ek100_bmn.yaml", [f"data.task={args.task}"])
    task = make_task(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        path, ann, info = make_video(Path(tmp), args.minutes, args.dim)
        print(f"video: {args.minutes:g} min, {path.stat().st_size / 2**20:.0f} MiB of {args.dim}-d features; task {task.name}")
        reader = FeatureReader(path)
        entries = build_entries(reader, read_annotations(ann, video_info=info), task)
        dataset = make_dataset(task, reader, entries, None, Vocabulary(labels=("a",)), None, purpose="infer")
        picks = np.linspace(0, len(dataset) - 1, min(args.items, len(dataset))).astype(int)
        print(f"{len(dataset)} windows of {cfg.data.tscale} bins x {cfg.data.window_bin_s} s; timing {len(picks)}")
        whole, window, rows_read = [], [], []
        for index in picks:
            w = dataset.windows[index]
            entry = entries[w.video]
            start = time.perf_counter()
            ref = whole_video_item(task, reader, entry, w)
            whole.append(time.perf_counter() - start)
            start = time.perf_counter()
            got = task.window_features(reader, entry, w)
            window.append(time.perf_counter() - start)
            np.testing.assert_array_equal(got, ref)
            times = bin_centers(w, cfg.data.tscale)
            centers = entry.timing.centers(entry.num_clips)
            rows_read.append(min(int(np.searchsorted(centers, times[-1])) + 1, entry.num_clips)
                             - max(int(np.searchsorted(centers, times[0], side="right")) - 1, 0))
        a, b = statistics.median(whole) * 1e3, statistics.median(window) * 1e3
        print(f"whole_video_ms: {a:.1f}")
        print(f"window_ms: {b:.2f}")
        print(f"window_read_speedup: {a / b:.1f}")
        print(f"bytes_read_ratio: {entries[0].num_clips / statistics.median(rows_read):.1f} "
              f"(clips in the video / clips a window reads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
