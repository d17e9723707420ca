"""What finds no counterpart (eval.matching), said by ``evaluate`` in report.json, report.md and on stderr, with EK100
class names from the class tables; plots whose legends and labels stay off the data."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from eval.cli import main
from eval.inputs import activitynet_ground_truth, ek100_ground_truth, read_activitynet_predictions, read_ek100_predictions
from eval.matching import match_counts

DATA = Path(__file__).parent / "data"
EK_GT = DATA / "eval" / "ek100_val12.csv"
EK_SUB = DATA / "eval" / "ek100_val12_sub_seed11.json"
VERBS = DATA / "annotations" / "EPIC_100_verb_classes.csv"
NOUNS = DATA / "annotations" / "EPIC_100_noun_classes.csv"


def _gt_json(tmp_path: Path) -> Path:
    """Three validation videos (one without predictions), classes a, b, c (c never predicted), and a training video."""
    database = {
        "v1": {"subset": "validation", "duration": 30.0, "annotations": [
            {"label": "a", "segment": [1.0, 5.0]}, {"label": "b", "segment": [10.0, 12.0]}]},
        "v2": {"subset": "validation", "duration": 30.0, "annotations": [
            {"label": "a", "segment": [2.0, 4.0]}, {"label": "c", "segment": [6.0, 9.0]}]},
        "v3": {"subset": "validation", "duration": 30.0, "annotations": [
            {"label": "b", "segment": [3.0, 4.0]}, {"label": "c", "segment": [5.0, 8.0]}, {"label": "c", "segment": [9.0, 9.5]}]},
        "t1": {"subset": "training", "duration": 30.0, "annotations": [{"label": "z", "segment": [1.0, 2.0]}]},
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"version": "t", "taxonomy": [], "database": database}))
    return path


def _pred_json(tmp_path: Path, results: dict) -> Path:
    path = tmp_path / "pred.json"
    path.write_text(json.dumps({"version": "VERSION 1.3", "external_data": {}, "results": {
        vid: [{"label": label, "score": score, "segment": seg} for label, score, seg in rows] for vid, rows in results.items()}}))
    return path


PREDICTIONS = {
    "v1": [("a", 0.9, [1.0, 5.0]), ("b", 0.5, [10.0, 12.0]), ("d", 0.4, [1.0, 2.0])],  # d: no ground-truth class
    "v2": [("a", 0.8, [2.0, 4.0]), ("b", 0.3, [6.0, 9.0]), ("d", 0.2, [0.0, 1.0])],  # b here: class known, not in v2
    "x9": [("a", 0.7, [0.0, 1.0])] * 2,  # a video outside the ground truth
}


def test_match_counts_by_video_and_class(tmp_path):
    gt = activitynet_ground_truth(_gt_json(tmp_path))
    pred = read_activitynet_predictions(_pred_json(tmp_path, PREDICTIONS))
    got = match_counts(gt, pred).to_dict()
    # written out by hand from the two tables above
    assert got == {
        "predictions": 8, "predictions_outside_evaluated_videos": 2, "prediction_videos_outside_evaluated_videos": 1,
        "ground_truth": 7, "ground_truth_videos": 3, "ground_truth_videos_without_predictions": 1,
        "ground_truth_on_videos_without_predictions": 3,
        "by_class": {"label": {
            "predictions_unknown_label": 2, "classes_without_predictions": 1,
            "ground_truth_of_classes_without_predictions": 3,
            "predictions_on_ground_truth_video_and_class": 3,  # v1 a, v1 b, v2 a
            "predictions_per_unknown_label": {"d": 2},
            "ground_truth_per_class_without_predictions": {"c": 3},
        }},
    }


def test_ek100_matching_counts_each_labelling_against_a_plain_count():
    gt, pred = ek100_ground_truth(EK_GT), read_ek100_predictions(EK_SUB)
    got = match_counts(gt, pred).by_class
    assert list(got) == ["verb", "noun", "action"]
    for task in ("verb", "noun"):
        classes = set(gt.labels[task].tolist())
        predicted = pred.labels[task].tolist()
        unknown = [p for p in predicted if p not in classes]
        assert got[task].unknown_labels == {str(k): unknown.count(k) for k in set(unknown)}
        pairs = set(zip(gt.video.tolist(), gt.labels[task].tolist()))
        assert got[task].predictions_on_ground_truth_video_and_class == sum(
            (v, c) in pairs for v, c in zip(pred.video.tolist(), predicted))
    actions = [f"{v},{n}" for v, n in zip(gt.labels["verb"].tolist(), gt.labels["noun"].tolist())]
    predicted_actions = {f"{a // 300},{a % 300}" for a in pred.labels["action"].tolist()}
    missing = [a for a in actions if a not in predicted_actions]
    assert got["action"].classes_without_predictions == {a: missing.count(a) for a in set(missing)}
    assert sum(got["action"].classes_without_predictions.values()) == 90  # the EK100 report states 68 classes, 90 segments


def _evaluate(capsys, *argv):
    status = main(list(map(str, argv)))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.err


def test_evaluate_reports_unmatched_videos_and_classes(tmp_path, capsys):
    gt, pred = _gt_json(tmp_path), _pred_json(tmp_path, PREDICTIONS)
    out = tmp_path / "report"
    status, err = _evaluate(capsys, "--dataset", "hacs", "--ground-truth", gt, "--predictions", pred, "--out", out)
    assert status == 0  # a predicted label outside the ground truth's classes is counted, not fatal
    assert "evaluate: matching: 2 of 8 predictions are on 1 videos outside the ground truth; 1 of 3 ground-truth " \
           "videos (3 segments) have no prediction" in err
    assert "2 predictions have labels that are no ground-truth class, not scored ('d' x2)" in err
    assert "1 ground-truth classes (3 segments) have no prediction, AP 0 ('c' x3)" in err
    report = json.loads((out / "report.json").read_text())
    assert report["matching"]["by_class"]["label"]["ground_truth_per_class_without_predictions"] == {"c": 3}
    assert report["counts"]["predictions_unknown_label"] == 2  # one name for one count
    assert report["counts"]["classes_without_predictions"] == report["matching"]["by_class"]["label"]["classes_without_predictions"]
    md = (out / "report.md").read_text()
    assert "| ground-truth class without predictions (AP 0) | ground-truth segments |" in md and "| c | 3 |" in md
    assert "| predicted label, no ground-truth class (not scored) | predictions |" in md and "| d | 2 |" in md
    assert "WARNING" not in err
    status, err = _evaluate(capsys, "--dataset", "hacs", "--ground-truth", gt, "--predictions", pred, "--strict",
                            "--out", tmp_path / "strict")
    assert status == 2 and "x9" in err and "--strict" in err


def test_unknown_labels_are_an_error_with_strict(tmp_path, capsys):
    gt = _gt_json(tmp_path)
    pred = _pred_json(tmp_path, {k: v for k, v in PREDICTIONS.items() if k != "x9"})
    status, err = _evaluate(capsys, "--dataset", "hacs", "--ground-truth", gt, "--predictions", pred, "--strict",
                            "--out", tmp_path / "r")
    assert status == 2 and "field 'label' 'd' is not a class" in err
    status, err = _evaluate(capsys, "--dataset", "hacs", "--ground-truth", gt, "--predictions", pred, "--strict",
                            "--unknown-labels", "false_positive", "--out", tmp_path / "r")
    assert status == 0


def test_nothing_matching_by_class_warns_and_strict_fails(tmp_path, capsys):
    """Predictions on the right videos but with another dataset's classes: a loud warning, an error with --strict."""
    gt = _gt_json(tmp_path)
    # "d" is no ground-truth class; "b" is one, but v2 holds none
    pred = _pred_json(tmp_path, {"v1": [("d", 0.5, [1.0, 5.0])], "v2": [("b", 0.5, [10.0, 12.0])]})
    status, err = _evaluate(capsys, "--dataset", "hacs", "--ground-truth", gt, "--predictions", pred, "--out", tmp_path / "r")
    assert status == 0
    assert "evaluate: WARNING: " in err and "no prediction shares a video and a class with the ground truth" in err
    status, err = _evaluate(capsys, "--dataset", "hacs", "--ground-truth", gt, "--predictions", pred, "--strict",
                            "--unknown-labels", "false_positive", "--out", tmp_path / "r2")
    assert status == 2 and "no prediction shares a video and a class" in err and not (tmp_path / "r2").exists()
    empty = _pred_json(tmp_path, {})
    status, err = _evaluate(capsys, "--dataset", "hacs", "--ground-truth", gt, "--predictions", empty, "--out", tmp_path / "r3")
    assert status == 0 and "WARNING" in err and "the file holds no predictions" in err
    assert "3 of 3 ground-truth videos (7 segments) have no prediction" in err
    status, err = _evaluate(capsys, "--dataset", "hacs", "--ground-truth", gt, "--predictions", empty, "--strict",
                            "--out", tmp_path / "r4")
    assert status == 2 and "the file holds no predictions" in err


@pytest.fixture()
def ek_gt_with_tables(tmp_path):
    folder = tmp_path / "annotations"
    folder.mkdir()
    shutil.copy(EK_GT, folder / "EPIC_100_validation.csv")
    shutil.copy(VERBS, folder / "EPIC_100_verb_classes.csv")
    shutil.copy(NOUNS, folder / "EPIC_100_noun_classes.csv")
    return folder / "EPIC_100_validation.csv"


def _verb_names() -> list[str]:
    return [line.split(",", 2)[1] for line in VERBS.read_text().splitlines()[1:]]


def test_ek100_class_names_found_beside_the_ground_truth(tmp_path, capsys, ek_gt_with_tables, monkeypatch):
    ticks = {}
    import eval.report as report_module

    original = report_module._save

    def record(plt, fig, path):
        ticks[path.name] = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
        return original(plt, fig, path)

    monkeypatch.setattr(report_module, "_save", record)
    out = tmp_path / "report"
    status, err = _evaluate(capsys, "--dataset", "ek100", "--ground-truth", ek_gt_with_tables, "--predictions", EK_SUB,
                            "--out", out)
    assert status == 0
    assert f"verb names from {ek_gt_with_tables.parent / 'EPIC_100_verb_classes.csv'} (found beside the ground truth)" in err
    report = json.loads((out / "report.json").read_text())
    verbs = _verb_names()
    best_verb = max(report["verb"]["per_class_AP"], key=lambda c: np.mean(report["verb"]["per_class_AP"][c]))
    md = (out / "report.md").read_text()
    assert f"| {verbs[int(best_verb)]} ({best_verb}) |" in md  # e.g. "| pat (32) |"
    assert report["meta"]["verb_classes"].endswith("(found beside the ground truth)")
    assert f"{verbs[int(best_verb)]} ({best_verb})" in ticks["per_class_ap_verb.png"]
    action_ticks = [t for t in ticks["per_class_ap_action.png"] if "(" in t]
    verb_id, noun_id = (int(x) for x in action_ticks[0].rsplit("(", 1)[1].rstrip(")").split(","))
    nouns = [line.split(",", 2)[1] for line in NOUNS.read_text().splitlines()[1:]]
    assert action_ticks[0] == f"{verbs[verb_id]} {nouns[noun_id]} ({verb_id},{noun_id})"
    # without the tables: ids, and stderr says so
    status, err = _evaluate(capsys, "--dataset", "ek100", "--ground-truth", EK_GT, "--predictions", EK_SUB,
                            "--out", tmp_path / "plain")
    assert status == 0 and "classes are shown as ids" in err
    assert f"| {best_verb} |" in (tmp_path / "plain" / "report.md").read_text()


def test_ek100_class_tables_given_explicitly_and_bad_ones_named(tmp_path, capsys):
    status, err = _evaluate(capsys, "--dataset", "ek100", "--ground-truth", EK_GT, "--predictions", EK_SUB,
                            "--verb-classes", VERBS, "--out", tmp_path / "r")
    assert status == 0
    assert f"verb names from {VERBS} (given); noun classes shown as ids (no EPIC_100_noun_classes.csv)" in err
    bad = tmp_path / "EPIC_100_verb_classes.csv"
    bad.write_text("id,name\n0,take\n")
    status, err = _evaluate(capsys, "--dataset", "ek100", "--ground-truth", EK_GT, "--predictions", EK_SUB,
                            "--verb-classes", bad, "--out", tmp_path / "r2")
    assert status == 2 and f"{bad}: missing column 'key'" in err
    status, err = _evaluate(capsys, "--dataset", "hacs", "--ground-truth", _gt_json(tmp_path), "--predictions",
                            _pred_json(tmp_path, PREDICTIONS), "--verb-classes", VERBS, "--out", tmp_path / "r3")
    assert status == 2 and "apply to EK100" in err


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("task, plot", [("proposals", "ar_vs_an.png"), ("detection", "map_vs_tiou.png"),
                                        ("hacs", "map_vs_tiou.png")])
def test_plot_legends_outside_the_data_and_labels_apart(tmp_path, capsys, monkeypatch, task, plot):
    import eval.report as report_module

    original = report_module._save
    checked = []

    def check(plt, fig, path):
        if path.name == plot:
            fig.canvas.draw()
            renderer = fig.canvas.get_renderer()
            ax = fig.axes[0]
            legend = ax.get_legend().get_window_extent(renderer)
            assert not _boxes_overlap(legend, ax.get_window_extent(renderer))  # the legend covers no curve
            texts = [t for t in ax.texts if t.get_text()] + [t for t in ax.get_legend().get_texts()]
            boxes = [t.get_window_extent(renderer) for t in texts]
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    assert not _boxes_overlap(boxes[i], boxes[j]), (texts[i].get_text(), texts[j].get_text())
            checked.append([t.get_text() for t in texts])
        return original(plt, fig, path)

    monkeypatch.setattr(report_module, "_save", check)
    if task == "proposals":  # one ground truth per video, ranked first: AR@1, AR@5, AR@10 all 100 %, side by side
        rng = np.random.default_rng(0)
        database = {f"v{i}": {"subset": "validation", "duration": 60.0, "annotations": [
            {"label": "a", "segment": sorted(rng.uniform(0, 60, 2).tolist())}]} for i in range(20)}
        gt_path = tmp_path / "gt.json"
        gt_path.write_text(json.dumps({"version": "t", "taxonomy": [], "database": database}))
        results = {vid: [{"score": 1.0, "segment": a["segment"]} for a in v["annotations"]] + [
            {"score": 0.5, "segment": sorted(rng.uniform(0, 60, 2).tolist())} for _ in range(20)]
            for vid, v in database.items()}
        proposals = tmp_path / "proposals.json"
        proposals.write_text(json.dumps({"version": "1.3", "external_data": {}, "results": results}))
        argv = ["--dataset", "activitynet", "--task", "proposals", "--ground-truth", gt_path, "--predictions", proposals]
    elif task == "hacs":  # one curve, its values written at the points
        argv = ["--dataset", "activitynet", "--ground-truth", DATA / "eval" / "anet_val300_gt.json",
                "--predictions", DATA / "eval" / "anet_val300_pred_seed11.json"]
    else:
        argv = ["--dataset", "ek100", "--ground-truth", EK_GT, "--predictions", EK_SUB]
    status, _ = _evaluate(capsys, *argv, "--out", tmp_path / "r")
    assert status == 0 and len(checked) == 1
    if task == "proposals":  # the AR@AN values are in the legend, in order
        report = json.loads((tmp_path / "r" / "report.json").read_text())
        assert [t for t in checked[0] if t.startswith("AR@")] == [f"AR@{k} = {report[f'AR@{k}']:.1f}%" for k in (1, 5, 10, 50, 100)]


def test_report_thresholds_are_rounded(tmp_path, capsys):
    status, _ = _evaluate(capsys, "--dataset", "activitynet", "--ground-truth", DATA / "eval" / "anet_val300_gt.json",
                          "--predictions", DATA / "eval" / "anet_val300_pred_seed11.json", "--diagnose", "--out", tmp_path / "r")
    assert status == 0
    text = (tmp_path / "r" / "report.json").read_text()
    report = json.loads(text)
    assert report["tiou_thresholds"] == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert report["diagnosis"]["tiou_thresholds"] == report["tiou_thresholds"]
    assert "0.8999999" not in text and "0.7000000" not in text
