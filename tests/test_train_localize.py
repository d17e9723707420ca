"""train-localizer + localize end to end on generated features: learning, run folder, resume, JSON layouts, errors."""
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.detection import evaluate_detection
from eval.proposals import evaluate_proposals
from localization import localize_cli, train_cli
from loc_synth import make_ek100, make_hacs
from tal_common.workers import usable_cores

TINY = [
    "--set", "data.tscale=32", "--set", "model.num_samples=8", "--set", "model.hidden_dim_1d=32",
    "--set", "model.hidden_dim_2d=16", "--set", "model.hidden_dim_3d=32", "--set", "classifier.hidden_dim=32",
    "--set", "train.batch_size=2", "--set", "train.lr=0.003", "--set", "train.num_threads=1",
]
HACS_CFG = ["--config", "configs/localize/demo_bmn.yaml", *TINY, "--set", "data.dscale=32"]
EK_CFG = ["--config", "configs/localize/demo_ek100_bmn.yaml", *TINY, "--set", "data.dscale=16", "--set", "data.window_bin_s=0.5"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def _random_like(detections: dict, durations: dict[str, float], seed: int) -> dict:
    """The same detections (labels, scores) with uniformly random segments: the chance baseline."""
    rng = np.random.default_rng(seed)
    out = json.loads(json.dumps(detections))
    for vid, dets in out["results"].items():
        for d in dets:
            a, b = np.sort(rng.uniform(0, durations[vid], 2))
            d["segment"] = [float(a), float(b)]
    return out


def _proposals(detections: dict) -> dict:
    """Class-agnostic proposals: each detected segment once, with its best score."""
    results = {}
    for vid, dets in detections["results"].items():
        best: dict[tuple, float] = {}
        for d in dets:
            key = tuple(d["segment"])
            best[key] = max(best.get(key, 0.0), d["score"])
        results[vid] = [{"segment": list(k), "score": s} for k, s in best.items()]
    return {"version": "VERSION 1.3", "results": results, "external_data": {}}


@pytest.fixture(scope="module")
def hacs_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hacs_run")
    h5_path, ann_path = make_hacs(root, n_train=24, n_val=8)
    os.chdir(ROOT)
    work = root / "run"
    argv = [*HACS_CFG, "--set", "train.epochs=10", "--set", "train.lr_steps=[8]",
            "--features", str(h5_path), "--annotations", str(ann_path), "--work-dir", str(work)]
    assert train_cli.main(argv) == 0
    out = root / "detections.json"
    assert localize_cli.main(["--run", str(work), "--features", str(h5_path), "--annotations", str(ann_path),
                              "--subset", "validation", "-o", str(out)]) == 0
    return h5_path, ann_path, work, json.loads(out.read_text())


def test_hacs_run_folder(hacs_run):
    _, _, work, _ = hacs_run
    assert (work / "config.yaml").read_text().startswith("data:\n  task: hacs\n  tscale: 32\n")
    log = (work / "train.log").read_text()
    assert re.search(r"epoch 0: .* \(1 of 10 epochs done, elapsed \d\d:\d\d, eta \d\d:\d\d\)\n", log)
    assert re.search(r"epoch 9: .* \(10 of 10 epochs done, elapsed \d\d:\d\d, eta 00:00\)\n", log)
    lines = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == list(range(10))
    assert {"loss", "tem", "pem_reg", "pem_cls", "cls", "val_loss", "lr"} <= set(lines[0])
    assert lines[-1]["loss"] < 0.5 * lines[0]["loss"]
    assert lines[8]["lr"] == pytest.approx(0.0003)  # x0.1 from epoch 8 (lr_steps [8])
    ckpt = torch.load(work / "checkpoints" / "best.pt", weights_only=True)
    assert {"head", "classifier", "epoch", "score", "config", "vocabulary", "feature_stats"} <= set(ckpt)
    assert ckpt["vocabulary"]["labels"] == ["jump", "run", "swim"]
    assert not list((work / "checkpoints").glob(".*tmp*"))
    assert "best.pt keeps the epoch with the lowest validation loss" in (work / "train.log").read_text()
    assert ckpt["epoch"] == min(lines, key=lambda m: m["val_loss"])["epoch"]
    config = (work / "config.yaml").read_text()
    assert f"features: {(work.parent / 'feats.h5').resolve()}  (sha256 " in config


def test_tensorboard_scalars_beside_metrics(hacs_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, work, _ = hacs_run
    events = EventAccumulator(str(work / "tensorboard"))
    events.Reload()
    lines = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss", "val_loss", "lr", "tem"):
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == list(range(10))
        np.testing.assert_allclose([s.value for s in scalars], [m[key] for m in lines], rtol=1e-6)


def test_hacs_detections_layout_and_quality(hacs_run):
    _, ann_path, _, detections = hacs_run
    assert set(detections) == {"version", "results", "external_data"}
    assert detections["external_data"]["used"] is False  # random-weight features
    gt = json.loads(ann_path.read_text())["database"]
    val = {vid: v for vid, v in gt.items() if v["subset"] == "validation"}
    assert set(detections["results"]) == set(val)  # keyed by the annotation ids (no v_ prefix)
    for vid, dets in detections["results"].items():
        assert 0 < len(dets) <= 200  # top-100 proposals x top-2 classes
        assert [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)
        for d in dets:
            assert set(d) == {"label", "score", "segment"}
            assert 0 <= d["segment"][0] < d["segment"][1] <= val[vid]["duration"] + 1e-9
    ours = evaluate_detection(ann_path, detections, dataset="hacs").average_mAP
    chance = evaluate_detection(ann_path, _random_like(detections, {v: x["duration"] for v, x in val.items()}, 0),
                                dataset="hacs").average_mAP
    ar_ours = evaluate_proposals(ann_path, _proposals(detections)).recall_at(100)
    ar_chance = evaluate_proposals(
        ann_path, _proposals(_random_like(detections, {v: x["duration"] for v, x in val.items()}, 1))
    ).recall_at(100)
    print(f"HACS synthetic: average mAP {ours:.3f} (random segments {chance:.3f}); AR@100 {ar_ours:.3f} ({ar_chance:.3f})")
    assert ours > 0.3 and ours > 4 * chance
    assert ar_ours > 0.6 and ar_ours > ar_chance + 0.3


def test_localize_caps_workers_at_the_cores_without_torchs_warning(hacs_run, tmp_path, caplog, recwarn):
    h5_path, ann_path, work, detections = hacs_run
    out = tmp_path / "detections.json"
    requested = usable_cores() + 3
    with caplog.at_level(logging.INFO):
        assert localize_cli.main(["--run", str(work), "--features", str(h5_path), "--annotations", str(ann_path),
                                  "--subset", "validation", "-o", str(out), "--workers", str(requested)]) == 0
    assert caplog.text.count(f"--workers {requested} > {usable_cores()} cores available") == 1
    assert not [w for w in recwarn if "suggested max number of worker" in str(w.message)]
    assert json.loads(out.read_text()) == detections


def test_resume_gives_the_same_weights(tmp_path):
    h5_path, ann_path = make_hacs(tmp_path / "data", n_train=6, n_val=2, seed=3)
    common = [*HACS_CFG, "--set", "data.tscale=16", "--set", "data.dscale=16", "--set", "train.lr_steps=[2]",
              "--features", str(h5_path), "--annotations", str(ann_path)]
    full, split = tmp_path / "full", tmp_path / "split"
    assert train_cli.main([*common, "--set", "train.epochs=3", "--work-dir", str(full)]) == 0
    assert train_cli.main([*common, "--set", "train.epochs=2", "--work-dir", str(split)]) == 0
    # a second start without --resume refuses to overwrite the run
    assert train_cli.main([*common, "--set", "train.epochs=2", "--work-dir", str(split)]) == 2
    assert train_cli.main([*common, "--set", "train.epochs=3", "--work-dir", str(split), "--resume"]) == 0
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(split / "checkpoints" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for part in ("head", "classifier"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), f"{part}.{key} differs after resume"
    assert a["scheduler"] == b["scheduler"]
    assert (full / "metrics.jsonl").read_text() == (split / "metrics.jsonl").read_text()


def test_ek100_train_localize_submission(tmp_path):
    h5_path, train_csv, val_csv, info = make_ek100(tmp_path / "data", n_train=12, n_val=4)
    work = tmp_path / "run"
    assert train_cli.main([*EK_CFG, "--set", "train.epochs=6", "--set", "train.lr_steps=[5]",
                           "--features", str(h5_path), "--annotations", str(train_csv),
                           "--val-annotations", str(val_csv), "--video-info", str(info), "--work-dir", str(work)]) == 0
    out = tmp_path / "ek.json"
    assert localize_cli.main(["--run", str(work), "--features", str(h5_path), "--annotations", str(val_csv),
                              "--video-info", str(info), "--sls", "0", "1", "2", "-o", str(out)]) == 0
    sub = json.loads(out.read_text())
    assert {k: sub[k] for k in ("version", "challenge", "sls_pt", "sls_tl", "sls_td")} == {
        "version": "0.2", "challenge": "action_detection", "sls_pt": 0, "sls_tl": 1, "sls_td": 2}
    assert set(sub) == {"version", "challenge", "sls_pt", "sls_tl", "sls_td", "results"}
    durations = {row.split(",")[0]: float(row.split(",")[1]) for row in info.read_text().splitlines()[1:]}
    assert len(sub["results"]) == 4
    for vid, dets in sub["results"].items():
        n_props = len({tuple(d["segment"]) for d in dets})
        assert n_props <= int(np.ceil(100 * durations[vid] / 60))  # top-100 per minute
        for d in dets:
            assert set(d) == {"verb", "noun", "action", "score", "segment"}
            assert isinstance(d["verb"], int) and d["action"] == f"{d['verb']},{d['noun']}"
            assert 0 <= d["segment"][0] < d["segment"][1] <= durations[vid] + 1e-9
    ours = evaluate_detection(val_csv, sub, dataset="ek100")
    chance = evaluate_detection(val_csv, _random_like(sub, durations, 0), dataset="ek100")
    got = {t: r.average_mAP for t, r in ours.tasks.items()}
    base = {t: r.average_mAP for t, r in chance.tasks.items()}
    print(f"EK100 synthetic: average mAP {got} (random segments {base})")
    assert got["action"] > 0.3 and got["action"] > 3 * base["action"]


def test_cli_errors_are_clear(tmp_path, capsys):
    h5_path, ann_path = make_hacs(tmp_path / "data", n_train=3, n_val=1)
    base = ["--features", str(h5_path), "--work-dir", str(tmp_path / "run")]
    bad = tmp_path / "bad.json"
    db = json.loads(ann_path.read_text())
    db["database"]["vid001"]["annotations"][0]["segment"] = [5.0, "x"]
    bad.write_text(json.dumps(db))
    assert train_cli.main([*HACS_CFG, *base, "--annotations", str(bad)]) == 2
    assert "bad.json: video 'vid001', annotation 0, field 'segment': not a number" in capsys.readouterr().err
    assert train_cli.main([*HACS_CFG, "--set", "train.epoch=3", *base, "--annotations", str(ann_path)]) == 2
    assert "unknown config key 'train.epoch'" in capsys.readouterr().err
    assert localize_cli.main(["--run", str(tmp_path / "nope"), "--features", str(h5_path), "--annotations",
                              str(ann_path), "-o", str(tmp_path / "x.json")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_ddp_two_ranks_on_cpu(tmp_path):
    h5_path, ann_path = make_hacs(tmp_path / "data", n_train=4, n_val=2, seed=5)
    work = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "localization.train_cli", *HACS_CFG, "--set", "data.tscale=16", "--set", "data.dscale=16",
           "--set", "train.epochs=1", "--features", str(h5_path), "--annotations", str(ann_path), "--work-dir", str(work)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cpu x2" in (work / "train.log").read_text()
    assert len((work / "metrics.jsonl").read_text().splitlines()) == 1  # written once, by rank 0
    assert (work / "checkpoints" / "last.pt").is_file()


def _check_ek100_submission(sub: dict, video_ids: set[str], num_verbs: int = 97, num_nouns: int = 300) -> None:
    """The EK100 action detection submission schema, checked plainly as the challenge's validator does
    (epic-kitchens/C2-Action-Detection ``validate_submission``: version "0.2", challenge "action_detection",
    sls_* in 0..5, per entry verb/noun ids in the class tables' ranges, action "v,n" of valid ids, a score and a
    2-number segment, nothing NaN), plus what our writer promises (every video, ordered segments)."""
    assert sub["version"] == "0.2" and sub["challenge"] == "action_detection"
    for key in ("sls_pt", "sls_tl", "sls_td"):
        assert isinstance(sub[key], int) and 0 <= sub[key] <= 5
    assert set(sub) == {"version", "challenge", "sls_pt", "sls_tl", "sls_td", "results"}
    assert set(sub["results"]) == video_ids
    for dets in sub["results"].values():
        assert isinstance(dets, list) and dets
        for d in dets:
            assert set(d) == {"verb", "noun", "action", "score", "segment"}
            assert isinstance(d["verb"], int) and isinstance(d["noun"], int) and isinstance(d["score"], float)
            assert 0 <= d["verb"] < num_verbs and 0 <= d["noun"] < num_nouns
            verb, noun = (int(x) for x in d["action"].split(","))
            assert d["action"] == f"{verb},{noun}" == f"{d['verb']},{d['noun']}"
            assert len(d["segment"]) == 2 and all(isinstance(t, float) and np.isfinite(t) for t in d["segment"])
            assert np.isfinite(d["score"]) and 0 <= d["segment"][0] <= d["segment"][1]


def test_ek100_test_set_submission_from_unlabelled_timestamps(tmp_path):
    h5_path, train_csv, val_csv, info = make_ek100(tmp_path / "data", n_train=6, n_val=3)
    work = tmp_path / "run"
    assert train_cli.main([*EK_CFG, "--set", "train.epochs=1", "--features", str(h5_path), "--annotations",
                           str(train_csv), "--video-info", str(info), "--work-dir", str(work)]) == 0
    # the test timestamps file: the EK100 columns without any label
    import pandas as pd
    table = pd.read_csv(val_csv)
    unlabelled = table[["narration_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp",
                        "start_frame", "stop_frame"]]
    test_csv = tmp_path / "EPIC_100_test_timestamps.csv"
    unlabelled.to_csv(test_csv, index=False)
    out = tmp_path / "test_submission.json"
    assert localize_cli.main(["--run", str(work), "--features", str(h5_path), "--annotations", str(test_csv),
                              "--video-info", str(info), "-o", str(out)]) == 0
    _check_ek100_submission(json.loads(out.read_text()), set(table["video_id"]))
    # training on it is refused with a message naming the file
    assert train_cli.main([*EK_CFG, "--features", str(h5_path), "--annotations", str(test_csv),
                           "--work-dir", str(tmp_path / "bad")]) == 2
