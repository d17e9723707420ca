"""The ``evaluate`` command: report files, the table on stdout, exit status 2 with a clear message on bad input."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval.cli import main

DATA = Path(__file__).parent / "data" / "eval"


def test_detection(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--dataset", "hacs", "--ground-truth", str(DATA / "anet_val300_gt.json"),
            "--predictions", str(DATA / "anet_val300_pred_seed11.json"), "--out", str(out)]
    assert main(argv) == 0
    official = json.loads((DATA / "anet_val300_pred_seed11.official.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert report["mAP"] == pytest.approx(official["mAP"], abs=1e-6)
    assert report["meta"] == {"dataset": "hacs", "task": "detection", "subset": "validation",
                              "ground_truth": argv[3], "predictions": argv[5]}
    stdout = capsys.readouterr().out
    assert "| 0.95 | 4.90 |" in stdout and "| **average** | **41.14** |" in stdout
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "map_vs_tiou.png", "per_class_ap.png"}


def test_tiou_list_and_proposals(tmp_path, capsys):
    argv = ["--dataset", "activitynet", "--task", "proposals", "--ground-truth", str(DATA / "anet_val300_gt.json"),
            "--predictions", str(DATA / "anet_val300_proposals_seed11.json"), "--out", str(tmp_path)]
    assert main(argv) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["AUC"] == pytest.approx(68.8791313559322, abs=1e-6)
    assert main(argv + ["--tiou", "0.5", "0.7"]) == 0
    assert json.loads((tmp_path / "report.json").read_text())["tiou_thresholds"] == [0.5, 0.7]
    assert "| AR@100 |" in capsys.readouterr().out


def test_ek100(tmp_path, capsys):
    argv = ["--dataset", "ek100", "--ground-truth", str(DATA / "ek100_val12.csv"),
            "--predictions", str(DATA / "ek100_val12_sub_seed11.json"), "--out", str(tmp_path)]
    assert main(argv) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["action"]["average_mAP"] == pytest.approx(52.54677791122002, abs=1e-6)
    assert "| **average** | **43.98** | **53.48** | **52.55** |" in capsys.readouterr().out
    assert main(argv + ["--subset", "validation"]) == 2


def test_bad_input_exits_2_naming_the_problem(tmp_path, capsys):
    bad = tmp_path / "pred.json"
    bad.write_text(json.dumps({"version": "1", "external_data": {}, "results": {"abc": [{"label": "Paintball", "score": 1}]}}))
    argv = ["--dataset", "activitynet", "--ground-truth", str(DATA / "anet_val300_gt.json"),
            "--predictions", str(bad), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pred.json: video 'abc', prediction 0: missing field 'segment'" in err
    assert not (tmp_path / "out").exists()
    assert main(argv[:-2]) == 2  # --out missing: argparse usage error
    assert main(argv + ["--tiou", "nan"]) == 2
    assert main(argv[:3] + [str(tmp_path / "nope.json")] + argv[4:]) == 2
    assert "nope.json: file not found" in capsys.readouterr().err


def test_runs_as_a_module(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "eval.cli", "--dataset", "activitynet", "--ground-truth", str(DATA / "anet_val300_gt.json"),
         "--predictions", str(DATA / "anet_val300_pred_seed11.json"), "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stderr
    assert "| 0.50 | 65.60 |" in proc.stdout
