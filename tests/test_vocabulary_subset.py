"""One vocabulary rule from training to evaluation, on class subsets: the run knows the training annotations' classes;
a validation class outside them is counted (never a crash, also in a DataLoader worker), ``localize`` emits only
known classes, and ``evaluate`` accepts that output and counts what could not match, by video and by class."""
import hashlib
import json
from collections import Counter
from pathlib import Path

import pandas as pd
import torch

from eval import cli as eval_cli
from localization import localize_cli, train_cli
from loc_synth import make_ek100, make_hacs

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--config", "demo_bmn", "--set", "data.tscale=16", "--set", "data.dscale=16", "--set", "model.num_samples=8",
    "--set", "model.hidden_dim_1d=16", "--set", "model.hidden_dim_2d=8", "--set", "model.hidden_dim_3d=16",
    "--set", "classifier.hidden_dim=16", "--set", "train.batch_size=2", "--set", "train.epochs=2",
    "--set", "train.lr_steps=[5]", "--set", "train.num_threads=1", "--set", "data.num_workers=1",
]


def _subset_annotations(path: Path) -> tuple[Path, dict]:
    """Training without "swim", validation without "run": each side has a class the other lacks."""
    data = json.loads(path.read_text())
    kept = {}
    for vid, video in data["database"].items():
        labels = {a["label"] for a in video["annotations"]}
        if not ((video["subset"] == "training" and "swim" in labels) or (video["subset"] == "validation" and "run" in labels)):
            kept[vid] = video
    data["database"] = kept
    out = path.with_name("subset.json")
    out.write_text(json.dumps(data))
    return out, kept


def test_subset_trains_localizes_and_evaluates(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    h5_path, full = make_hacs(tmp_path / "data", n_train=9, n_val=6, seed=4)
    ann, database = _subset_annotations(full)
    val = {vid: v for vid, v in database.items() if v["subset"] == "validation"}
    val_labels = Counter(a["label"] for v in val.values() for a in v["annotations"])
    assert set(val_labels) == {"jump", "swim"}
    work = tmp_path / "run"

    assert train_cli.main([*TINY, "--features", str(h5_path), "--annotations", str(ann), "--work-dir", str(work)]) == 0
    log = (work / "train.log").read_text()
    assert f"{val_labels['swim']} validation segments have labels the training set lacks (they count as background): " \
           f"'swim' x{val_labels['swim']}" in log
    best = torch.load(work / "checkpoints" / "best.pt", weights_only=True)
    assert best["vocabulary"]["labels"] == ["jump", "run"]
    metrics = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    best_epoch = min(metrics, key=lambda m: m["val_loss"])
    assert best["epoch"] == best_epoch["epoch"]
    assert (f"best.pt is epoch {best_epoch['epoch']} of 0..1: the lowest validation loss ({best_epoch['val_loss']:.4g}); "
            "last.pt is epoch 1") in log

    config = (work / "config.yaml").read_text()  # the run's inputs, with their sha256
    for key, path in (("features", h5_path), ("annotations", ann)):
        assert f"#   {key}: {path.resolve()}  (sha256 {hashlib.sha256(path.read_bytes()).hexdigest()})" in config

    detections = tmp_path / "detections.json"
    assert localize_cli.main(["--run", str(work), "--features", str(h5_path), "--annotations", str(ann),
                              "--subset", "validation", "-o", str(detections)]) == 0
    results = json.loads(detections.read_text())["results"]
    assert set(results) == set(val)
    predicted = Counter(d["label"] for dets in results.values() for d in dets)
    assert set(predicted) == {"jump", "run"}  # top-2 of the two classes the run knows, never "swim"
    capsys.readouterr()

    out = tmp_path / "report"
    status = eval_cli.main(["--dataset", "hacs", "--ground-truth", str(ann), "--predictions", str(detections),
                            "--out", str(out)])
    err = capsys.readouterr().err
    assert status == 0 and "Traceback" not in err
    matching = json.loads((out / "report.json").read_text())["matching"]
    by_class = matching["by_class"]["label"]
    assert by_class["ground_truth_per_class_without_predictions"] == {"swim": val_labels["swim"]}
    assert by_class["predictions_per_unknown_label"] == {"run": predicted["run"]}
    assert matching["ground_truth_videos_without_predictions"] == 0 and matching["predictions_outside_evaluated_videos"] == 0
    assert (f"{predicted['run']} predictions have labels that are no ground-truth class, not scored ('run' x{predicted['run']})"
            in err)
    assert f"1 ground-truth classes ({val_labels['swim']} segments) have no prediction, AP 0 ('swim' x{val_labels['swim']})" in err
    md = (out / "report.md").read_text()
    assert f"| swim | {val_labels['swim']} |" in md and f"| run | {predicted['run']} |" in md
    report = json.loads((out / "report.json").read_text())
    assert report["per_class_AP"]["swim"] == [0.0] * 10  # scored, and zero: no prediction can match it
    # the official rule (an unknown label is fatal) stays one switch away
    assert eval_cli.main(["--dataset", "hacs", "--ground-truth", str(ann), "--predictions", str(detections),
                          "--strict", "--out", str(tmp_path / "strict")]) == 2
    assert "field 'label' 'run' is not a class" in capsys.readouterr().err


EK_TINY = [
    "--config", "demo_ek100_bmn", "--set", "data.tscale=32", "--set", "data.dscale=16", "--set", "data.window_bin_s=0.5",
    "--set", "model.num_samples=8", "--set", "model.hidden_dim_1d=16", "--set", "model.hidden_dim_2d=8",
    "--set", "model.hidden_dim_3d=16", "--set", "classifier.hidden_dim=16", "--set", "train.batch_size=2",
    "--set", "train.epochs=1", "--set", "train.num_threads=1", "--set", "data.num_workers=1",
]


def test_ek100_subset_with_class_tables_beside_the_csv(tmp_path, capsys, monkeypatch):
    """Training without verb 2 (the run knows verbs 0-1), validation with it; class tables beside the validation CSV."""
    monkeypatch.chdir(tmp_path)
    h5_path, train_csv, val_csv, info = make_ek100(tmp_path / "data", n_train=6, n_val=3, seed=2)
    train = pd.read_csv(train_csv)
    train[train["verb_class"] != 2].to_csv(train_csv, index=False)
    val = pd.read_csv(val_csv)
    n_verb2 = int((val["verb_class"] == 2).sum())
    assert n_verb2 > 0
    for task in ("verb", "noun"):
        pd.DataFrame({"id": range(3), "key": [f"{task}{i}" for i in range(3)], "instances": "[]",
                      "category": "x"}).to_csv(val_csv.parent / f"EPIC_100_{task}_classes.csv", index=False)
    work = tmp_path / "run"
    assert train_cli.main([*EK_TINY, "--features", str(h5_path), "--annotations", str(train_csv), "--val-annotations",
                           str(val_csv), "--video-info", str(info), "--work-dir", str(work)]) == 0
    assert f"'verb 2' x{n_verb2}" in (work / "train.log").read_text()
    detections = tmp_path / "ek.json"
    assert localize_cli.main(["--run", str(work), "--features", str(h5_path), "--annotations", str(val_csv),
                              "--video-info", str(info), "-o", str(detections)]) == 0
    verbs = {d["verb"] for dets in json.loads(detections.read_text())["results"].values() for d in dets}
    assert verbs <= {0, 1}  # only the verbs the run knows
    capsys.readouterr()
    out = tmp_path / "report"
    assert eval_cli.main(["--dataset", "ek100", "--ground-truth", str(val_csv), "--predictions", str(detections),
                          "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "verb names from" in err and "(found beside the ground truth)" in err
    verb = json.loads((out / "report.json").read_text())["matching"]["by_class"]["verb"]
    assert verb["ground_truth_per_class_without_predictions"] == {"2": n_verb2}
    assert f"('verb2 (2)' x{n_verb2})" in err
    assert f"| verb2 (2) | {n_verb2} |" in (out / "report.md").read_text()
