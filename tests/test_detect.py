"""``detect`` on real generated videos with a run trained here: JSON equals ``localize`` on the same features,
the CSV equals the JSON, the pictures open at their size, and mismatched weights are refused."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from feature_extraction import cli as extract_cli
from localization import detect_cli, localize_cli, train_cli
from tal_common.demo_dataset import DemoConfig, make_demo_dataset
from tal_common.h5 import FeatureReader

ROOT = Path(__file__).resolve().parents[1]
DATA = DemoConfig(train_videos=8, val_videos=3, seed=5, duration_range=(10.0, 12.0), action_range=(3.0, 5.0), max_actions=1)
TRAIN = ["--config", str(ROOT / "configs/localize/demo_bmn.yaml"), "--set", "train.epochs=2", "--set", "train.lr_steps=[]",
         "--set", "data.tscale=16", "--set", "data.dscale=16", "--set", "model.num_samples=4",
         "--set", "model.hidden_dim_1d=16", "--set", "model.hidden_dim_2d=8", "--set", "model.hidden_dim_3d=16",
         "--set", "classifier.hidden_dim=16", "--set", "train.batch_size=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect")
    make_demo_dataset(root / "data", DATA, workers=2)
    features = root / "features.h5"
    assert extract_cli.main([str(root / "data" / "videos"), "-o", str(features), "--preset", "demo", "--device", "cpu",
                             "--set", "run.workers=1"]) == 0
    run = root / "run"
    assert train_cli.main([*TRAIN, "--features", str(features), "--annotations", str(root / "data/annotations/hacs.json"),
                           "--work-dir", str(run)]) == 0
    return root, run


def test_detect_writes_json_csv_pictures_equal_to_localize(trained, tmp_path):
    root, run = trained
    videos = sorted((root / "data" / "videos").glob("*.mp4"))[:2]
    out = tmp_path / "out"
    gt = root / "data/annotations/hacs.json"
    assert detect_cli.main([*map(str, videos), "--run", str(run), "-o", str(out), "--ground-truth", str(gt)]) == 0
    submission = json.loads((out / "detections.json").read_text())
    assert sorted(submission["results"]) == sorted(v.stem for v in videos)

    # localize on the same features, with the decoded durations as annotations, gives the same JSON
    reader = FeatureReader(out / "features.h5")
    database = {vid: {"subset": "validation", "duration": reader.read(vid)[1].duration_s, "annotations": []}
                for vid in reader.video_ids()}
    ann = tmp_path / "durations.json"
    ann.write_text(json.dumps({"database": database}))
    assert localize_cli.main(["--run", str(run), "--features", str(out / "features.h5"), "--annotations", str(ann),
                              "-o", str(tmp_path / "loc.json")]) == 0
    assert json.loads((tmp_path / "loc.json").read_text())["results"] == submission["results"]

    with open(out / "detections.csv") as f:
        rows = list(csv.DictReader(f))
    flat = [(vid, d) for vid, dets in sorted(submission["results"].items()) for d in dets]
    assert len(rows) == len(flat) > 0
    for row, (vid, d) in zip(rows, flat):
        assert row["video"] == vid and row["label"] == d["label"]
        np.testing.assert_allclose([float(row["start_s"]), float(row["end_s"]), float(row["score"])],
                                   [*d["segment"], d["score"]], atol=1e-3)
    for video in videos:
        per_video = json.loads((out / f"{video.stem}.json").read_text())
        assert per_video["results"] == {video.stem: submission["results"][video.stem]}
        with Image.open(out / "timelines" / f"{video.stem}.png") as image:
            assert image.width == 1200 and image.height > 200
            strip = np.asarray(image.convert("RGB"))[10:60, 250:1100]
            assert strip.std() > 5  # the thumbnail strip holds real frames, not a blank band
        assert f"timelines/{video.stem}.png" in (out / "index.md").read_text()
    # a rerun resumes from the cached features and writes the same
    assert detect_cli.main([*map(str, videos), "--run", str(run), "-o", str(out)]) == 0
    assert json.loads((out / "detections.json").read_text())["results"] == submission["results"]


def test_detect_refuses_wrong_inputs(trained, tmp_path, capsys):
    root, run = trained
    video = sorted((root / "data" / "videos").glob("*.mp4"))[0]
    weights = tmp_path / "w.pyth"
    weights.write_bytes(b"x")
    assert detect_cli.main([str(video), "--run", str(run), "-o", str(tmp_path / "o"), "--weights", str(weights)]) == 2
    assert "trained on features from random weights" in capsys.readouterr().err
    assert detect_cli.main([str(tmp_path / "missing.mp4"), "--run", str(run), "-o", str(tmp_path / "o")]) == 2
    assert "missing.mp4: no such video file or folder" in capsys.readouterr().err
    assert detect_cli.main([str(video), "--run", str(tmp_path / "norun"), "-o", str(tmp_path / "o")]) == 2
    assert "no such run folder" in capsys.readouterr().err
