"""Released features, no videos: ``extract-features import`` then the three commands of the README recipes.

TAdaConv-style HACS features (one ``torch.save`` ``.pkl`` per video) with a HACS JSON, and TAdaConv-style EK100
5-second chunks with the EK100 CSVs, each: import -> train-localizer -> localize -> evaluate, with tiny settings.
The synthetic features say "class c here" on TAdaConv's clip grid (centre ``(stride - 1 + k * stride) / fps``), so
a localizer that learns from correctly timed features beats chance by far.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.cli import main as evaluate_main
from feature_extraction.cli import main as extract_main
from localization import localize_cli, train_cli
from loc_synth import FEAT_DIM, HACS_CLASSES, make_ek100, make_hacs
from tal_common.annotations import read_annotations

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--set", "data.tscale=32", "--set", "model.num_samples=8", "--set", "model.hidden_dim_1d=32",
    "--set", "model.hidden_dim_2d=16", "--set", "model.hidden_dim_3d=32", "--set", "classifier.hidden_dim=32",
    "--set", "train.batch_size=2", "--set", "train.lr=0.003", "--set", "train.num_threads=1",
]


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def _grid_features(centers: np.ndarray, segments, rng: np.random.Generator) -> np.ndarray:
    """``(len(centers), FEAT_DIM)``: noise, plus 1 on each segment's channels while the centre is inside it."""
    feats = rng.normal(0.0, 0.25, size=(len(centers), FEAT_DIM)).astype(np.float32)
    for start, end, channels in segments:
        inside = (centers >= start) & (centers < end)
        for c in channels:
            feats[inside, c] += 1.0
    return feats


def test_tadaconv_hacs_pkl_features_train_localize_evaluate(tmp_path):
    _, ann_path = make_hacs(tmp_path / "data", n_train=24, n_val=8)
    ann = read_annotations(ann_path)
    rng = np.random.default_rng(0)
    src = tmp_path / "features_s16_fps30"
    src.mkdir()
    for i, (vid, video) in enumerate(ann.videos.items()):
        centers = (15 + 16 * np.arange(int((video.duration * 30 - 15) // 16) + 1)) / 30
        segments = [(s.start, s.end, [HACS_CLASSES.index(s.label)]) for s in video.segments]
        name = f"v_{vid}" if i % 2 else vid  # HACS ids match with or without the v_ prefix
        torch.save(torch.from_numpy(_grid_features(centers, segments, rng)), src / f"{name}.pkl")
    features = tmp_path / "hacs.h5"
    assert extract_main(["import", str(src), "-o", str(features), "--format", "tadaconv-hacs",
                         "--annotations", str(ann_path)]) == 0
    work = tmp_path / "run"
    assert train_cli.main(["--config", "configs/localize/demo_bmn.yaml", *TINY, "--set", "data.dscale=32",
                           "--set", "train.epochs=20", "--set", "train.lr_steps=[16]",
                           "--features", str(features), "--annotations", str(ann_path), "--work-dir", str(work)]) == 0
    detections = tmp_path / "hacs_detections.json"
    assert localize_cli.main(["--run", str(work), "--features", str(features), "--annotations", str(ann_path),
                              "--subset", "validation", "-o", str(detections)]) == 0
    assert evaluate_main(["--dataset", "hacs", "--ground-truth", str(ann_path), "--subset", "validation",
                          "--predictions", str(detections), "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    print(f"imported TAdaConv-style HACS features: average mAP {report['average_mAP']:.2f} %")
    assert report["average_mAP"] > 30.0


def test_tadaconv_ek100_chunks_train_localize_evaluate(tmp_path):
    _, train_csv, val_csv, info = make_ek100(tmp_path / "data", n_train=12, n_val=4)
    rng = np.random.default_rng(1)
    src = tmp_path / "features_s8_fps60"
    src.mkdir()
    for csv in (train_csv, val_csv):
        for vid, video in read_annotations(csv, video_info=info).videos.items():
            end_ms = int(round(video.duration * 1000))
            k = np.arange(int((video.duration * 60 - 7) // 8) + 1)
            centers = (7 + 8 * k) / 60
            feats = _grid_features(centers, [(s.start, s.end, [s.verb, 4 + s.noun]) for s in video.segments], rng)
            for start in range(0, end_ms, 5000):
                stop = min(start + 5000, end_ms)
                rows = (centers * 1000 >= start) & (centers * 1000 <= stop)
                torch.save(torch.from_numpy(feats[rows]), src / f"{vid}_{start:07d}_{stop:07d}.pkl")
    features = tmp_path / "ek100.h5"
    assert extract_main(["import", str(src), "-o", str(features), "--format", "tadaconv-ek100",
                         "--video-info", str(info)]) == 0
    work = tmp_path / "run"
    assert train_cli.main(["--config", "configs/localize/demo_ek100_bmn.yaml", *TINY, "--set", "data.dscale=16",
                           "--set", "data.window_bin_s=0.53333332", "--set", "train.epochs=6", "--set", "train.lr_steps=[5]",
                           "--features", str(features), "--annotations", str(train_csv),
                           "--val-annotations", str(val_csv), "--video-info", str(info), "--work-dir", str(work)]) == 0
    detections = tmp_path / "ek100_detections.json"
    assert localize_cli.main(["--run", str(work), "--features", str(features), "--annotations", str(val_csv),
                              "--video-info", str(info), "-o", str(detections)]) == 0
    assert evaluate_main(["--dataset", "ek100", "--ground-truth", str(val_csv), "--predictions", str(detections),
                          "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    print(f"imported TAdaConv-style EK100 chunks: action average mAP {report['action']['average_mAP']:.2f} %")
    assert report["action"]["average_mAP"] > 30.0
