"""Dataset protocols through the command line: the THUMOS14-style task, and the errors every task shares
(checkpoints that are not ours, features of another width)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.detection import evaluate_detection
from localization import localize_cli, train_cli
from localization.tasks import TASKS
from loc_synth import make_hacs

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--set", "data.tscale=32", "--set", "data.dscale=16", "--set", "model.num_samples=8", "--set", "model.hidden_dim_1d=32",
    "--set", "model.hidden_dim_2d=16", "--set", "model.hidden_dim_3d=32", "--set", "classifier.hidden_dim=32",
    "--set", "train.batch_size=2", "--set", "train.lr=0.003", "--set", "train.num_threads=1",
]
THUMOS_CFG = ["--config", str(ROOT / "configs/localize/demo_thumos14_bmn.yaml"), *TINY]


@pytest.fixture(scope="module")
def thumos_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("thumos")
    h5_path, ann_path = make_hacs(root, n_train=18, n_val=6, seed=2)
    work = root / "run"
    assert train_cli.main([*THUMOS_CFG, "--set", "train.epochs=8", "--set", "train.lr_steps=[7]",
                           "--features", str(h5_path), "--annotations", str(ann_path), "--work-dir", str(work)]) == 0
    return root, h5_path, ann_path, work


def test_registry_names_every_task():
    assert set(TASKS) == {"hacs", "ek100", "ek100_sliding", "thumos14"}
    assert all(cls.name == name for name, cls in TASKS.items())


def test_thumos14_task_trains_localizes_and_beats_chance(thumos_run):
    root, h5_path, ann_path, work = thumos_run
    out = root / "thumos.json"
    assert localize_cli.main(["--run", str(work), "--features", str(h5_path), "--annotations", str(ann_path),
                              "--subset", "validation", "-o", str(out)]) == 0
    sub = json.loads(out.read_text())
    assert set(sub) == {"version", "results", "external_data"} and sub["external_data"]["used"] is False
    gt = json.loads(ann_path.read_text())["database"]
    val = {v: x for v, x in gt.items() if x["subset"] == "validation"}
    assert set(sub["results"]) == set(val)
    for vid, dets in sub["results"].items():
        n_props = len({tuple(d["segment"]) for d in dets})
        assert n_props <= int(np.ceil(100 * val[vid]["duration"] / 60))  # per-minute budget of the windowed tasks
        assert all(d["label"] in ("jump", "run", "swim") for d in dets)
    tious = np.array([0.3, 0.4, 0.5, 0.6, 0.7])
    ours = evaluate_detection(ann_path, sub, dataset="activitynet", tiou_thresholds=tious).average_mAP
    rng = np.random.default_rng(0)
    chance = json.loads(json.dumps(sub))
    for vid, dets in chance["results"].items():
        for d in dets:
            d["segment"] = sorted(rng.uniform(0, val[vid]["duration"], 2).tolist())
    base = evaluate_detection(ann_path, chance, dataset="activitynet", tiou_thresholds=tious).average_mAP
    print(f"THUMOS14-style synthetic: average mAP@0.3:0.7 {ours:.3f} (random segments {base:.3f})")
    assert ours > 0.3 and ours > 3 * base


def test_checkpoint_that_is_not_ours_is_refused_without_running_it(thumos_run, tmp_path, capsys):
    root, h5_path, ann_path, work = thumos_run
    fake = tmp_path / "fake_run"
    (fake / "checkpoints").mkdir(parents=True)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.write_text, (marker, "executed"))

    torch.save({"head": Payload()}, fake / "checkpoints" / "best.pt")
    argv = ["--run", str(fake), "--features", str(h5_path), "--annotations", str(ann_path), "-o", str(tmp_path / "x.json")]
    assert localize_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert "best.pt: not a train-localizer checkpoint" in err and "weights_only" not in err and "Traceback" not in err
    (fake / "checkpoints" / "best.pt").write_bytes(b"not a zip at all")
    assert localize_cli.main(argv) == 2
    assert "best.pt: not a readable train-localizer checkpoint" in capsys.readouterr().err
    # resume from the same kind of file: the same named error
    (work.parent / "bad_resume" / "checkpoints").mkdir(parents=True)
    torch.save({"head": Payload()}, work.parent / "bad_resume" / "checkpoints" / "last.pt")
    assert train_cli.main([*THUMOS_CFG, "--features", str(h5_path), "--annotations", str(ann_path),
                           "--work-dir", str(work.parent / "bad_resume"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "last.pt: not a train-localizer checkpoint" in err and not marker.exists()


def test_features_of_another_width_are_a_clear_error(thumos_run, tmp_path, capsys):
    root, h5_path, ann_path, work = thumos_run
    wide = tmp_path / "wide.h5"
    import h5py
    from tal_common.h5 import FeatureReader, write_file_attrs, write_video

    reader = FeatureReader(h5_path)
    with h5py.File(wide, "w") as f:
        write_file_attrs(f, "synthetic", "random", "", "")
        for vid in reader.video_ids():
            feats, timing = reader.read(vid)
            write_video(f, vid, np.concatenate([feats, feats], axis=1), timing)
    assert localize_cli.main(["--run", str(work), "--features", str(wide), "--annotations", str(ann_path),
                              "-o", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "features are 16-d but" in err and "trained on 8-d features" in err
