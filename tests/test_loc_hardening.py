"""Hostile inputs to ``train-localizer`` and ``localize``: each is exit status 2 with a message naming the file, the
video and the attribute or field, never a traceback, and nothing is trained on a timeline that cannot be."""
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from localization import detect_cli, localize_cli, train_cli
from localization.config import LocalizeConfig
from localization.data import build_entries
from localization.tasks import make_task
from tal_common.annotations import read_annotations
from tal_common.config import load_config
from tal_common.h5 import FeatureFileError, FeatureReader
from loc_synth import make_ek100, make_hacs

ROOT = Path(__file__).resolve().parents[1]
CFG = [
    "--config", str(ROOT / "configs/localize/demo_bmn.yaml"), "--set", "data.tscale=16", "--set", "data.dscale=16",
    "--set", "model.num_samples=4", "--set", "model.hidden_dim_1d=16", "--set", "model.hidden_dim_2d=8",
    "--set", "model.hidden_dim_3d=16", "--set", "classifier.hidden_dim=16", "--set", "train.batch_size=2",
    "--set", "train.num_threads=1", "--set", "train.epochs=1",
]
VIDEO = "vid001"  # stored without the v_ prefix (odd index, see loc_synth.make_hacs)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_hacs(tmp_path_factory.mktemp("data"), n_train=4, n_val=2, seed=4)


@pytest.fixture(scope="module")
def run_dir(data, tmp_path_factory):
    """A one-epoch run on the good features (for ``localize``)."""
    h5_path, ann_path = data
    work = tmp_path_factory.mktemp("run") / "run"
    assert train_cli.main([*CFG, "--features", str(h5_path), "--annotations", str(ann_path), "--work-dir", str(work)]) == 0
    return work


def _corrupt(data, tmp_path: Path, change) -> Path:
    """A copy of the feature file with ``change(h5file)`` applied."""
    path = tmp_path / "bad.h5"
    shutil.copy(data[0], path)
    with h5py.File(path, "a") as f:
        change(f)
    return path


def _set(name, value):
    def change(f):
        f[VIDEO].attrs[name] = value
    return change


def _huge(f):
    """The video's dataset replaced by a lazily declared (10^9, 256) one (a terabyte never written) with the same timing."""
    attrs = dict(f[VIDEO].attrs)
    del f[VIDEO]
    dset = f.create_dataset(VIDEO, shape=(10**9, 256), dtype=np.float32, chunks=(256, 256))
    dset.attrs.update(attrs)


CASES = [
    (_set("stride_s", 0.0), "timing attribute 'stride_s' must be > 0, got 0.0"),
    (_set("stride_s", -0.5), "timing attribute 'stride_s' must be > 0, got -0.5"),
    (_set("stride_s", np.nan), "timing attribute 'stride_s' must be finite, got nan"),
    (_set("first_center_s", np.inf), "timing attribute 'first_center_s' must be finite, got inf"),
    (_set("duration_s", np.array([30.0, 31.0])), "timing attribute 'duration_s' must be a single number, got [30.0, 31.0]"),
    (_huge, "1000000000 clips every 0.5 s (timing attribute 'stride_s') end at"),
]


def _check_error(capsys, status: int, path: Path, message: str) -> None:
    err = capsys.readouterr().err
    assert status == 2, err
    assert f"{path}: video {VIDEO!r}: " in err and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("change, message", CASES, ids=["stride0", "stride-", "strideNaN", "centreInf", "array", "huge"])
def test_train_on_broken_timing(data, tmp_path, capsys, change, message):
    bad = _corrupt(data, tmp_path, change)
    work = tmp_path / "run"
    status = train_cli.main([*CFG, "--features", str(bad), "--annotations", str(data[1]), "--work-dir", str(work)])
    _check_error(capsys, status, bad, message)
    assert not (work / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("change, message", CASES[:1] + CASES[-1:], ids=["stride0", "huge"])
def test_localize_on_broken_timing(data, run_dir, tmp_path, capsys, change, message):
    bad = _corrupt(data, tmp_path, change)
    out = tmp_path / "det.json"
    annotations = tmp_path / "val.json"
    db = json.loads(data[1].read_text())
    for entry in db["database"].values():
        entry["subset"] = "validation"  # localize every video, VIDEO included
    annotations.write_text(json.dumps(db))
    status = localize_cli.main(["--run", str(run_dir), "--features", str(bad), "--annotations", str(annotations),
                                "-o", str(out)])
    _check_error(capsys, status, bad, message)
    assert not out.exists()


def test_annotation_duration_far_past_the_features(data, tmp_path, caplog):
    """A duration of 1e300 for a ~30 s video (a truncated download or a wrong field) is not used as the window:
    that video is skipped with a warning naming it; when every video is like that, a named error."""
    db = json.loads(data[1].read_text())
    db["database"][VIDEO]["duration"] = 1e300
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(db))
    task = make_task(load_config(LocalizeConfig, ROOT / "configs/localize/demo_bmn.yaml"))
    with h5py.File(data[0], "r") as f:
        covered = f[VIDEO].attrs["duration_s"]
    entries = build_entries(FeatureReader(data[0]), read_annotations(ann), task)
    assert VIDEO not in {e.video_id for e in entries} and len(entries) == len(db["database"]) - 1
    assert f"{VIDEO} (1e+300 s annotated, features cover {covered:g} s)" in caplog.text and "truncated" in caplog.text
    db["database"] = {VIDEO: db["database"][VIDEO]}
    ann.write_text(json.dumps(db))
    with pytest.raises(FeatureFileError, match="none of the 1 annotated videos has usable features .1 look truncated"):
        build_entries(FeatureReader(data[0]), read_annotations(ann), task)


@pytest.mark.parametrize("label", [None, "", "  "])
def test_null_or_empty_label(data, tmp_path, capsys, label):
    db = json.loads(data[1].read_text())
    db["database"][VIDEO]["annotations"][0]["label"] = label
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(db))
    status = train_cli.main([*CFG, "--features", str(data[0]), "--annotations", str(ann), "--work-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert f"ann.json: video {VIDEO!r}, annotation 0: field 'label' must be a non-empty class name, got {label!r}" in err


def test_video_listed_twice(data, tmp_path, capsys):
    text = data[1].read_text()
    entry = json.dumps(json.loads(text)["database"][VIDEO])
    ann = tmp_path / "ann.json"
    ann.write_text(text.replace('"database": {', f'"database": {{"{VIDEO}": {entry}, ', 1))
    status = train_cli.main([*CFG, "--features", str(data[0]), "--annotations", str(ann), "--work-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert f"ann.json: key {VIDEO!r} appears twice in one JSON object" in err


def test_diverging_training_is_a_named_error(data, tmp_path, capsys):
    status = train_cli.main([*CFG, "--set", "train.lr=1e6", "--features", str(data[0]), "--annotations", str(data[1]),
                             "--work-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert "epoch 0: training diverged, the loss became nan (lower train.lr, now 1e+06" in err


def test_outputs_that_cannot_be_written(data, run_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    base = ["--features", str(data[0]), "--annotations", str(data[1])]
    for work_dir, message in ((tmp_path / "file", f"--work-dir {tmp_path / 'file'}: is a file; give the path of the folder"),
                              (tmp_path / "file" / "run", f"--work-dir {tmp_path / 'file' / 'run'}: cannot be created, "
                                                          f"{tmp_path / 'file'} is a file")):
        status = train_cli.main([*CFG, *base, "--work-dir", str(work_dir)])
        err = capsys.readouterr().err
        assert status == 2 and message in err and "Traceback" not in err
    for out, message in ((tmp_path, f"-o {tmp_path}: is a folder; give the path of the file to write"),
                         (tmp_path / "file" / "d.json", f"-o {tmp_path / 'file' / 'd.json'}: cannot be created, "
                                                        f"{tmp_path / 'file'} is a file")):
        status = localize_cli.main(["--run", str(run_dir), *base, "-o", str(out)])
        err = capsys.readouterr().err
        assert status == 2 and message in err and "Traceback" not in err
    status = detect_cli.main([str(tmp_path), "--run", str(run_dir), "-o", str(tmp_path / "file")])
    err = capsys.readouterr().err
    assert status == 2 and f"-o {tmp_path / 'file'}: is a file; give the path of the folder to write" in err


def test_ek100_inputs_that_are_folders_or_list_a_video_twice(tmp_path, capsys):
    h5_path, train_csv, _, info = make_ek100(tmp_path / "data", n_train=2, n_val=1)
    ek_cfg = [*CFG[:1], str(ROOT / "configs/localize/demo_ek100_bmn.yaml"), *CFG[2:], "--set", "data.window_bin_s=0.5"]
    base = [*ek_cfg, "--features", str(h5_path), "--work-dir", str(tmp_path / "r")]
    twice = tmp_path / "info.csv"
    lines = info.read_text().splitlines()
    twice.write_text("\n".join([*lines, lines[1]]) + "\n")
    video = lines[1].split(",")[0]
    folder_csv = tmp_path / "EPIC_100_train.csv"
    folder_csv.mkdir()
    for argv, message in (
        (["--annotations", str(train_csv), "--video-info", str(twice)], f"info.csv: video {video!r}: listed twice"),
        (["--annotations", str(folder_csv)], f"{folder_csv}: a folder, not an annotation file"),
        (["--annotations", str(train_csv), "--video-info", str(tmp_path)], f"{tmp_path}: a folder, not a CSV file"),
    ):
        status = train_cli.main([*base, *argv])
        err = capsys.readouterr().err
        assert status == 2 and message in err and "Traceback" not in err
