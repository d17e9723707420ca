"""Hostile inputs to ``evaluate``: each is exit status 2 with a message naming the file and the field, never a
traceback; what the official rules would silently drop is counted in report.json; the report folder is
replaced as a whole."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eval.cli import main
from eval.detection import evaluate_detection
from eval.report import write_report

DATA = Path(__file__).parent / "data" / "eval"
ANET_GT = DATA / "anet_val300_gt.json"
ANET_PRED = DATA / "anet_val300_pred_seed11.json"
EK_HEADER = "narration_id,video_id,start_timestamp,stop_timestamp,verb_class,noun_class\n"
EK_GOOD_ROW = "P01_1,P01,00:00:01.00,00:00:02.00,3,4\n"
EK_SUB = {"version": "0.2", "challenge": "action_detection", "sls_pt": 1, "sls_tl": 1, "sls_td": 1,
          "results": {"P01": [{"verb": 3, "noun": 4, "action": "3,4", "score": 0.5, "segment": [1.0, 2.0]}]}}


def _anet(tmp_path: Path, database: dict) -> Path:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"version": "t", "taxonomy": [], "database": database}))
    return path


def _run(capsys, dataset, gt, pred, *extra, out=None):
    argv = ["--dataset", dataset, "--annotations", str(gt), "--predictions", str(pred), "-o", str(out), *extra]
    status = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("rows, message", [
    ("P01_1,P01,00:00:01.00,00:00:02.00,-3,4\n", r"field 'verb_class' must be in 0..96, got -3"),
    ("P01_1,P01,00:00:01.00,00:00:02.00,97,4\n", r"field 'verb_class' must be in 0..96, got 97"),
    ("P01_1,P01,00:00:01.00,00:00:02.00,3,300\n", r"field 'noun_class' must be in 0..299, got 300"),
    ("", r"no ground-truth segments in the file"),
])
def test_ek100_ground_truth_is_validated(tmp_path, capsys, rows, message):
    gt = _write(tmp_path / "EPIC_100_validation.csv", EK_HEADER + rows)
    pred = _write(tmp_path / "sub.json", json.dumps(EK_SUB))
    status, captured = _run(capsys, "ek100", gt, pred, out=tmp_path / "out")
    assert status == 2
    assert "EPIC_100_validation.csv" in captured.err and re.search(message, captured.err)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("start, message", [
    ("-1.5", "timestamp must be finite and >= 0, got '-1.5'"),
    ("-00:00:01", "timestamp must be finite and >= 0, got '-00:00:01'"),  # each part alone is >= 0
    ("00:-0:01", "timestamp must be finite and >= 0, got '00:-0:01'"),
    ("00:75:00", "minutes and seconds of a HH:MM:SS.ss timestamp must be below 60, got '00:75:00'"),
])
def test_ek100_negative_or_malformed_timestamp(tmp_path, capsys, start, message):
    gt = _write(tmp_path / "gt.csv", EK_HEADER + f"P01_1,P01,{start},00:00:02.00,3,4\n")
    status, captured = _run(capsys, "ek100", gt, _write(tmp_path / "s.json", json.dumps(EK_SUB)), out=tmp_path / "o")
    assert status == 2
    assert f"gt.csv: video 'P01', narration 'P01_1', field 'start_timestamp': {message}" in captured.err


@pytest.mark.parametrize("text, message", [
    ('{"database": {"v": {"subset": "validation", "annotations": [{"label": null, "segment": [0, 5]}]}}}',
     "gt.json: video 'v', annotation 0: field 'label' must be a non-empty class name, got None"),
    ('{"database": {"v": {"subset": "validation", "annotations": [{"label": "", "segment": [0, 5]}]}}}',
     "gt.json: video 'v', annotation 0: field 'label' must be a non-empty class name, got ''"),
    ('{"database": {"v": {"subset": "validation", "annotations": [{"label": "A", "segment": [0, 5]}]},'
     ' "v": {"subset": "validation", "annotations": []}}}',
     "gt.json: key 'v' appears twice in one JSON object (a video listed twice?)"),
    ("[" * 100_000 + "]" * 100_000, "gt.json: JSON nested too deeply"),
])
def test_malformed_activitynet_ground_truth_file(tmp_path, capsys, text, message):
    pred = _write(tmp_path / "p.json", json.dumps({"version": "1", "external_data": {}, "results": {}}))
    status, captured = _run(capsys, "hacs", _write(tmp_path / "gt.json", text), pred, out=tmp_path / "out")
    assert status == 2 and message in captured.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "-1", "0.5", "nan"])
def test_max_avg_proposals_below_one(tmp_path, capsys, value):
    status, captured = _run(capsys, "hacs", ANET_GT, ANET_PRED, "--task", "proposals", "--max-avg-proposals", value,
                            out=tmp_path / "out")
    assert status == 2
    assert f"--max-avg-proposals must be a number >= 1 (the AN curve runs from 1 proposal per video to it), got {value}" in captured.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("database, message", [
    ({"v": {"subset": "validation", "annotations": [{"label": "A", "segment": [-2, 5]}]}},
     "gt.json: video 'v': field 'segment' starts before 0 s"),
    ({"v": {"subset": "validation", "annotations": []}}, "gt.json: no ground-truth segments in subset 'validation'"),
])
def test_activitynet_ground_truth_is_validated(tmp_path, capsys, database, message):
    pred = _write(tmp_path / "p.json", json.dumps({"version": "1", "external_data": {}, "results": {}}))
    status, captured = _run(capsys, "hacs", _anet(tmp_path, database), pred, out=tmp_path / "out")
    assert status == 2 and message in captured.err


@pytest.mark.parametrize("text, message", [
    ('{"version": "1", "external_data": {}, "results": {"v": [], "v": []}}',
     "p.json: key 'v' appears twice in one JSON object"),
    ('{"version": "1", "external_data": {}, "results": {"v": [{"label": "A", "score": true, "segment": [0, 1]}]}}',
     "p.json: video 'v', prediction 0: field 'score' must be a number, got True"),
    ('{"version": "1", "external_data": {}, "results": {"v": [{"label": "A", "score": 0.5, "segment": [0, 1]},'
     ' {"label": "A", "score": false, "segment": [0, 1]}]}}',
     "p.json: video 'v', prediction 1: field 'score' must be a number, got False"),
    ('{"version": "1", "external_data": {}, "results": {"v": [{"label": null, "score": 0.5, "segment": [0, 1]}]}}',
     "p.json: video 'v', prediction 0: field 'label' must be a string, got None"),
    ("[" * 100_000 + "]" * 100_000, "p.json: JSON nested too deeply"),
])
def test_malformed_predictions(tmp_path, capsys, text, message):
    gt = _anet(tmp_path, {"v": {"subset": "validation", "annotations": [{"label": "A", "segment": [0, 5]}]}})
    status, captured = _run(capsys, "activitynet", gt, _write(tmp_path / "p.json", text), out=tmp_path / "out")
    assert status == 2 and message in captured.err


def test_folders_and_thresholds(tmp_path, capsys):
    folder = tmp_path / "preds"
    folder.mkdir()
    status, captured = _run(capsys, "hacs", ANET_GT, folder, out=tmp_path / "out")
    assert status == 2 and f"{folder}: --predictions must be a file, and this is a folder" in captured.err
    status, captured = _run(capsys, "hacs", tmp_path, ANET_PRED, out=tmp_path / "out")
    assert status == 2 and "--annotations must be a file" in captured.err
    out_file = _write(tmp_path / "taken", "x")
    status, captured = _run(capsys, "hacs", ANET_GT, ANET_PRED, out=out_file)
    assert status == 2 and "taken: -o/--output must be a folder" in captured.err
    for bad in ("1.5", "-0.5", "0", "nan", "abc"):
        status, captured = _run(capsys, "hacs", ANET_GT, ANET_PRED, "--tiou", bad, out=tmp_path / "out")
        assert status == 2 and "--tiou" in captured.err
        assert ("must be in (0, 1]" if bad != "abc" else "not a number: 'abc'") in captured.err
    assert not (tmp_path / "out").exists()


def test_unmatched_predictions_are_counted_and_strict_fails(tmp_path, capsys):
    raw = json.loads(ANET_PRED.read_text())
    raw["results"]["not_a_video"] = [{"label": "Paintball", "score": 0.5, "segment": [0, 3]}] * 2
    pred = _write(tmp_path / "p.json", json.dumps(raw))
    status, _ = _run(capsys, "hacs", ANET_GT, pred, out=tmp_path / "out")
    assert status == 0
    matching = json.loads((tmp_path / "out" / "report.json").read_text())["matching"]
    n_pred_videos = len(raw["results"])
    with_preds = len(set(raw["results"]) & set(json.loads(ANET_GT.read_text())["database"]))
    database = json.loads(ANET_GT.read_text())["database"]
    unpredicted = [v for v in database if v not in raw["results"]]
    by_video = {k: v for k, v in matching.items() if k != "by_class"}
    assert by_video == {"predictions": sum(len(v) for v in raw["results"].values()),
                        "predictions_outside_evaluated_videos": 2, "prediction_videos_outside_evaluated_videos": 1,
                        "ground_truth": sum(len(database[v]["annotations"]) for v in database),
                        "ground_truth_videos": 300, "ground_truth_videos_without_predictions": 300 - with_preds,
                        "ground_truth_on_videos_without_predictions": sum(len(database[v]["annotations"]) for v in unpredicted)}
    assert n_pred_videos == with_preds + 1
    status, captured = _run(capsys, "hacs", ANET_GT, pred, "--strict", out=tmp_path / "out2")
    assert status == 2 and "p.json: video 'not_a_video': 2 predictions on 1 videos that are not in the ground truth" in captured.err


def test_no_prediction_on_any_ground_truth_video(tmp_path, capsys):
    raw = json.loads(ANET_PRED.read_text())
    raw["results"] = {"v_" + vid: preds for vid, preds in raw["results"].items()}  # the classic id prefix mistake
    pred = _write(tmp_path / "p.json", json.dumps(raw))
    status, captured = _run(capsys, "hacs", ANET_GT, pred, out=tmp_path / "out")
    assert status == 0 and "WARNING" in captured.err and "none of the" in captured.err and "'v_" in captured.err
    status, captured = _run(capsys, "hacs", ANET_GT, pred, "--strict", out=tmp_path / "out2")
    assert status == 2 and "p.json: none of the" in captured.err and not (tmp_path / "out2").exists()


def test_report_folder_is_replaced_as_a_whole(tmp_path, monkeypatch):
    """A run that dies while writing leaves the previous report untouched; a finished run leaves no old file."""
    out = tmp_path / "report"
    result = evaluate_detection(ANET_GT, ANET_PRED)
    write_report(result, out, {"run": 1})
    (out / "stale_plot.png").write_bytes(b"old")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("eval.report._plot", die)
    with pytest.raises(KeyboardInterrupt):
        write_report(result, out, {"run": 2})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # the temporary folder is gone
    monkeypatch.undo()
    dead = tmp_path / f".report.tmp{2**22 + 12345}"  # a killed run's leftovers (no such pid)
    dead.mkdir()
    write_report(result, out, {"run": 3})
    assert json.loads((out / "report.json").read_text())["meta"] == {"run": 3}
    assert not (out / "stale_plot.png").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_best_and_worst_classes_are_disjoint(tmp_path):
    gt = _anet(tmp_path, {"v": {"subset": "validation", "annotations": [
        {"label": c, "segment": [i * 10, i * 10 + 5]} for i, c in enumerate("ABC")]}})
    pred = {"version": "1", "external_data": {}, "results": {"v": [
        {"label": "A", "score": 0.9, "segment": [0, 5]}, {"label": "B", "score": 0.8, "segment": [10, 13]}]}}
    write_report(evaluate_detection(gt, pred), tmp_path / "out", {})
    md = (tmp_path / "out" / "report.md").read_text()
    best = md.split("## Best classes")[1].split("##")[0]
    worst = md.split("## Worst classes")[1].split("##")[0]
    rows = lambda text: {line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "class" not in line}
    assert rows(best) == {"A", "B"} and rows(worst) == {"C"}


def test_no_traceback_as_a_process(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    proc = subprocess.run([sys.executable, "-m", "eval.cli", "--dataset", "hacs", "--ground-truth", str(ANET_GT),
                           "--predictions", str(folder), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1],
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "must be a file" in proc.stderr
