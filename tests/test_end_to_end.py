"""The whole pipeline on a tiny demo dataset: real H.264 videos -> extract-features -> train-localizer ->
localize -> evaluate, in HACS mode, against the random baseline scored by the same evaluator."""
import json
from pathlib import Path

import pytest

from eval import chance
from eval import cli as evaluate_cli
from feature_extraction import cli as extract_cli
from localization import localize_cli, train_cli
from tal_common.demo_dataset import DemoConfig, make_demo_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY_DATA = DemoConfig(train_videos=18, val_videos=6, seed=3, duration_range=(12.0, 16.0), action_range=(3.0, 6.0),
                       max_actions=2)
EXTRACT = ["--preset", "demo", "--device", "cpu", "--set", "run.workers=1", "--set", "run.batch_size=16"]
TRAIN = ["--config", str(ROOT / "configs/localize/demo_bmn.yaml"), "--set", "train.epochs=2", "--set", "train.lr_steps=[]",
         "--set", "data.tscale=32", "--set", "data.dscale=32", "--set", "model.num_samples=8",
         "--set", "model.hidden_dim_1d=32", "--set", "model.hidden_dim_2d=16", "--set", "model.hidden_dim_3d=32",
         "--set", "train.batch_size=2", "--set", "train.lr=0.003"]


def _average_map(root: Path, name: str, gt: Path, predictions: Path) -> float:
    out = root / "reports" / name
    # A small validation split lacks some training classes: detections of those are false positives.
    argv = ["--dataset", "hacs", "--ground-truth", str(gt), "--subset", "validation", "--predictions", str(predictions),
            "--unknown-labels", "false_positive", "--out", str(out)]
    assert evaluate_cli.main(argv) == 0
    assert (out / "report.md").is_file() and list(out.glob("*.png"))
    return json.loads((out / "report.json").read_text())["average_mAP"]


def test_videos_to_map_report_beats_random_baseline(tmp_path):
    data = tmp_path / "data"
    make_demo_dataset(data, TINY_DATA, workers=2)
    gt = data / "annotations" / "hacs.json"
    features = tmp_path / "features.h5"
    assert extract_cli.main([str(data / "videos"), "-o", str(features), *EXTRACT]) == 0
    run = tmp_path / "runs" / "hacs"
    assert train_cli.main([*TRAIN, "--features", str(features), "--annotations", str(gt), "--work-dir", str(run)]) == 0
    detections = tmp_path / "detections.json"
    assert localize_cli.main(["--run", str(run), "--features", str(features), "--annotations", str(gt),
                              "--subset", "validation", "-o", str(detections)]) == 0
    random = tmp_path / "random.json"
    assert chance.main(["--dataset", "hacs", "--annotations", str(gt), "-o", str(random)]) == 0

    model_map = _average_map(tmp_path, "model", gt, detections)
    random_map = _average_map(tmp_path, "random", gt, random)
    print(f"average mAP: model {model_map:.2f}, random {random_map:.2f}")
    assert model_map > random_map + 5, (model_map, random_map)
    database = json.loads(gt.read_text())["database"]
    validation = sorted(v for v, entry in database.items() if entry["subset"] == "validation")
    submission = json.loads(detections.read_text())
    assert sorted(submission["results"]) == validation
    assert submission["external_data"]["used"] is False  # extract-features wrote features from random weights


def test_chance_baseline_layouts(tmp_path):
    """The random baseline is a valid submission in both official formats, with labels of the ground truth."""
    data = tmp_path / "data"
    make_demo_dataset(data, DemoConfig(train_videos=1, val_videos=2, seed=1, duration_range=(8.0, 10.0),
                                       action_range=(2.0, 3.0), max_actions=1, width=32, height=32), workers=1)
    ann = data / "annotations"
    hacs_out, ek_out = tmp_path / "h.json", tmp_path / "e.json"
    assert chance.main(["--dataset", "hacs", "--annotations", str(ann / "hacs.json"), "--per-video", "7", "-o", str(hacs_out)]) == 0
    hacs = json.loads(hacs_out.read_text())
    database = json.loads((ann / "hacs.json").read_text())["database"]
    labels = {a["label"] for v in database.values() if v["subset"] == "validation" for a in v["annotations"]}
    assert len(hacs["results"]) == 2 and all(len(d) == 7 for d in hacs["results"].values())
    for vid, dets in hacs["results"].items():
        for d in dets:
            assert d["label"] in labels and 0 <= d["segment"][0] <= d["segment"][1] <= float(database[vid]["duration"])
    ek = ann / "ek100"
    assert chance.main(["--dataset", "ek100", "--annotations", str(ek / "EPIC_100_validation.csv"),
                        "--video-info", str(ek / "EPIC_100_video_info.csv"), "-o", str(ek_out)]) == 0
    entry = next(iter(json.loads(ek_out.read_text())["results"].values()))[0]
    assert entry["action"] == f"{entry['verb']},{entry['noun']}"
    assert evaluate_cli.main(["--dataset", "ek100", "--ground-truth", str(ek / "EPIC_100_validation.csv"),
                              "--predictions", str(ek_out), "--out", str(tmp_path / "r")]) == 0
    with pytest.raises(SystemExit):
        chance.main(["--dataset", "hacs"])
