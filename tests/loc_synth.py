"""Synthetic feature files and annotations for the localization tests.

Features are 8-dim clips every 0.5 s whose values say "action of class c here" plus noise: inside an action
of HACS class ``c`` channel ``c`` is 1; inside an EK100 action channel ``verb`` and channel ``4 + noun`` are 1.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np

from tal_common.annotations import EK100_COLUMNS
from tal_common.h5 import ClipTiming, write_file_attrs, write_video

FEAT_DIM = 8
STRIDE_S = 0.5
HACS_CLASSES = ("jump", "run", "swim")


def timing(duration: float) -> ClipTiming:
    """Clips of 16 frames at 30 fps every 15 frames (0.5 s), first centre 0.25 s."""
    return ClipTiming(
        source_fps=30.0, num_source_frames=int(round(duration * 30)), duration_s=duration, sample_fps=30.0,
        clip_len=16, frame_interval=1, stride=15, first_center_s=0.25, stride_s=STRIDE_S, crops=1,
    )


def features_for(duration: float, actions: list[tuple[float, float, list[int]]], rng: np.random.Generator,
                 noise: float = 0.25) -> np.ndarray:
    """``(N, 8)`` features: channels in each action's list are 1 while the clip centre is inside it."""
    t = timing(duration)
    n = int(np.floor((duration - t.first_center_s) / STRIDE_S)) + 1
    centers = t.centers(n)
    feats = rng.normal(0.0, noise, size=(n, FEAT_DIM)).astype(np.float32)
    for start, end, channels in actions:
        inside = (centers >= start) & (centers < end)
        for c in channels:
            feats[inside, c] += 1.0
    return feats


def _place_actions(rng: np.random.Generator, duration: float, count: int, lo: float, hi: float) -> list[tuple[float, float]]:
    """``count`` non-overlapping [start, end] (2 dp) with at least 1 s of background around each."""
    out: list[tuple[float, float]] = []
    cursor = 1.0
    for k in range(count):
        room = duration - 1.0 - cursor - (count - k - 1) * (lo + 1.0)
        length = float(rng.uniform(lo, min(hi, max(lo, room - 0.5))))
        gap = float(rng.uniform(0.0, max(0.0, room - length) / (count - k)))
        start = round(cursor + gap, 2)
        end = round(start + length, 2)
        out.append((start, end))
        cursor = end + 1.0
    return out


def make_hacs(root: Path, n_train: int = 24, n_val: int = 8, seed: int = 0) -> tuple[Path, Path]:
    """A feature file and a HACS-style JSON; every video shows one class 1-3 times.

    Even-numbered videos are stored in the feature file with a ``v_`` prefix (as ActivityNet features are).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    h5_path, ann_path = root / "feats.h5", root / "hacs.json"
    database = {}
    with h5py.File(h5_path, "w") as f:
        write_file_attrs(f, "synthetic", "random", "", "synthetic: true\n")
        for i in range(n_train + n_val):
            vid = f"vid{i:03d}"
            duration = round(float(rng.uniform(20.0, 40.0)), 2)
            cls = i % len(HACS_CLASSES)
            spans = _place_actions(rng, duration, int(rng.integers(1, 4)), 3.0, 8.0)
            feats = features_for(duration, [(s, e, [cls]) for s, e in spans], rng)
            write_video(f, f"v_{vid}" if i % 2 == 0 else vid, feats, timing(duration))
            database[vid] = {
                "subset": "training" if i < n_train else "validation",
                "duration": duration,
                "annotations": [{"label": HACS_CLASSES[cls], "segment": [s, e]} for s, e in spans],
            }
    ann_path.write_text(json.dumps({"version": "synthetic", "database": database}))
    return h5_path, ann_path


def _hms(seconds: float) -> str:
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h):02d}:{int(m):02d}:{s:05.2f}"


def make_ek100(root: Path, n_train: int = 16, n_val: int = 6, seed: int = 1) -> tuple[Path, Path, Path, Path]:
    """A feature file, EK100 train / validation CSVs and a video-info CSV (3 verbs, 3 nouns, 40-60 s videos,
    3-6 actions of 1.5-5 s each)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    h5_path = root / "feats_ek.h5"
    rows: dict[str, list[dict[str, str]]] = {"train": [], "validation": []}
    info = []
    with h5py.File(h5_path, "w") as f:
        write_file_attrs(f, "synthetic", "random", "", "synthetic: true\n")
        for i in range(n_train + n_val):
            vid = f"P01_{i + 1:03d}"
            split = "train" if i < n_train else "validation"
            duration = round(float(rng.uniform(40.0, 60.0)), 2)
            spans = _place_actions(rng, duration, int(rng.integers(3, 7)), 1.5, 5.0)
            labels = [(int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in spans]
            feats = features_for(duration, [(s, e, [v, 4 + n]) for (s, e), (v, n) in zip(spans, labels)], rng)
            write_video(f, vid, feats, timing(duration))
            info.append({"video_id": vid, "duration": f"{duration:.2f}", "fps": "30.0", "resolution": "456x256"})
            for k, ((s, e), (v, n)) in enumerate(zip(spans, labels)):
                rows[split].append({
                    "narration_id": f"{vid}_{k}", "participant_id": "P01", "video_id": vid,
                    "narration_timestamp": _hms(s), "start_timestamp": _hms(s), "stop_timestamp": _hms(e),
                    "start_frame": str(int(s * 30) + 1), "stop_frame": str(int(e * 30)),
                    "narration": f"verb{v} noun{n}", "verb": f"verb{v}", "verb_class": str(v),
                    "noun": f"noun{n}", "noun_class": str(n), "all_nouns": f"['noun{n}']", "all_noun_classes": f"[{n}]",
                })
    paths = []
    for split in ("train", "validation"):
        path = root / f"EPIC_100_{split}.csv"
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(EK100_COLUMNS))
            writer.writeheader()
            writer.writerows(rows[split])
        paths.append(path)
    info_path = root / "EPIC_100_video_info.csv"
    with open(info_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["video_id", "duration", "fps", "resolution"])
        writer.writeheader()
        writer.writerows(info)
    return h5_path, paths[0], paths[1], info_path
