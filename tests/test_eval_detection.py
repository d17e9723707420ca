"""Detection mAP: the official numbers on the fixtures, each quirk of SPEC.md on a hand-built case, and the
vectorised core against the loop baseline (fixtures, ties, and the full validation files when ../shared exists)."""
import json
from pathlib import Path

import numpy as np
import pytest

from eval import baseline, synthetic
from eval.detection import (
    ACTIVITYNET_TIOU,
    EK100_TIOU,
    evaluate_activitynet_detection,
    evaluate_detection,
    evaluate_ek100_detection,
)
from eval.inputs import InputError, activitynet_ground_truth

DATA = Path(__file__).parent / "data" / "eval"


def _official(name):
    return json.loads((DATA / name).read_text())


# ------------------------------------------------------------------------------------- official numbers


def test_activitynet_fixture_matches_official():
    official = _official("anet_val300_pred_seed11.official.json")
    result = evaluate_detection(DATA / "anet_val300_gt.json", DATA / "anet_val300_pred_seed11.json", dataset="activitynet")
    report = result.to_dict()
    assert report["tiou_thresholds"] == pytest.approx(official["tiou"], abs=1e-12)
    assert report["tiou_thresholds"][8] == 0.9  # rounded for the JSON (computed with linspace's 0.8999999999999999)
    np.testing.assert_allclose(report["mAP"], official["mAP"], rtol=0, atol=1e-6)
    assert report["average_mAP"] == pytest.approx(official["average_mAP"], abs=1e-6)
    assert report["counts"]["classes"] == official["n_classes"]
    assert report["counts"]["ground_truth"] == official["n_gt"]
    assert report["counts"]["predictions"] == official["n_pred"]


def test_hacs_uses_the_activitynet_rules():
    args = (DATA / "anet_val300_gt.json", DATA / "anet_val300_pred_seed11.json")
    hacs = evaluate_detection(*args, dataset="hacs")
    anet = evaluate_detection(*args, dataset="activitynet")
    assert np.array_equal(hacs.ap, anet.ap)


def test_ek100_fixture_matches_official():
    official = _official("ek100_val12_sub_seed11.official.json")
    result = evaluate_detection(DATA / "ek100_val12.csv", DATA / "ek100_val12_sub_seed11.json", dataset="ek100")
    report = result.to_dict()
    assert report["tiou_thresholds"] == pytest.approx(official["tiou"], abs=1e-12)
    for task in ("verb", "noun", "action"):
        np.testing.assert_allclose(report[task]["mAP"], official[task]["mAP"], rtol=0, atol=1e-6)
        assert report[task]["average_mAP"] == pytest.approx(official[task]["avg"], abs=1e-6)
        assert report[task]["counts"]["classes"] == official[task]["n_classes"]
        assert report[task]["counts"]["predictions_unknown_label"] > 0


def test_fixtures_agree_with_loop_baseline_bit_for_bit():
    args = (DATA / "anet_val300_gt.json", DATA / "anet_val300_pred_seed11.json")
    fast = evaluate_activitynet_detection(*args)
    slow = evaluate_activitynet_detection(*args, ap_function=baseline.average_precision)
    assert np.array_equal(fast.ap, slow.ap)
    args = (DATA / "ek100_val12.csv", DATA / "ek100_val12_sub_seed11.json")
    fast = evaluate_ek100_detection(*args)
    slow = evaluate_ek100_detection(*args, ap_function=baseline.average_precision)
    for task in fast.tasks:
        assert np.array_equal(fast.tasks[task].ap, slow.tasks[task].ap)


@pytest.mark.parametrize("decimals", [1, 2])
def test_tied_scores_follow_the_official_order(decimals):
    """Rounded scores make many ties; the order among them is the official argsort's, as in the loop."""
    gt = activitynet_ground_truth(DATA / "anet_val300_gt.json")
    sub = synthetic.activitynet_detections(gt, 3000, seed=5, score_decimals=decimals)
    fast = evaluate_activitynet_detection(gt, sub)
    slow = evaluate_activitynet_detection(gt, sub, ap_function=baseline.average_precision)
    assert np.array_equal(fast.ap, slow.ap)


# ------------------------------------------------------------------------------------ hand-built quirks


def _evaluate(tmp_path, gt, preds, thresholds=(0.5,), **kwargs):
    """gt: {video: [(label, t0, t1), ...]} or {video: (subset, [...])}; preds: {video: [(label, score, t0, t1)]}.

    Runs the vectorised evaluator and checks the loop baseline gives the same table.
    """
    database = {}
    for vid, anns in gt.items():
        subset, anns = anns if isinstance(anns, tuple) else ("validation", anns)
        database[vid] = {"subset": subset, "annotations": [{"label": l, "segment": [a, b]} for l, a, b in anns]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"version": "test", "taxonomy": [], "database": database}))
    sub = {
        "version": "test", "external_data": {},
        "results": {vid: [{"label": l, "score": s, "segment": [a, b]} for l, s, a, b in p] for vid, p in preds.items()},
    }
    result = evaluate_activitynet_detection(path, sub, tiou_thresholds=thresholds, **kwargs)
    slow = evaluate_activitynet_detection(path, sub, tiou_thresholds=thresholds, ap_function=baseline.average_precision, **kwargs)
    assert np.array_equal(result.ap, slow.ap)
    return result


def test_fall_through_to_the_next_best_ground_truth(tmp_path):
    # p2's best ground truth (g1, tIoU .905) is taken by p1; it falls through to g2 (tIoU .739).
    gt = {"v": [("A", 0, 10), ("A", 2, 12)]}
    preds = {"v": [("A", 0.9, 0, 10), ("A", 0.8, 0.5, 10.5)]}
    result = _evaluate(tmp_path, gt, preds, thresholds=(0.5, 0.75))
    # at 0.5 both are true positives (VOC would make p2 a false positive: AP 0.5); at 0.75 g2 is too far.
    np.testing.assert_array_equal(result.ap[:, 0], [1.0, 0.5])


def test_duplicate_detections_and_duplicate_ground_truth(tmp_path):
    gt = {"v1": [("A", 0, 10)], "v2": [("A", 0, 10)], "v3": [("B", 0, 10), ("B", 0, 10)]}
    preds = {
        "v1": [("A", 0.9, 0, 10), ("A", 0.8, 0, 10)],  # the duplicate is a false positive
        "v2": [("A", 0.7, 0, 10)],
        "v3": [("B", 0.6, 0, 10), ("B", 0.5, 0, 10)],  # two identical ground truths: both true positives
    }
    result = _evaluate(tmp_path, gt, preds)
    # A: TP, FP, TP over 2 ground truths -> 0.5 * 1 + 0.5 * 2/3
    assert result.ap[0, 0] == pytest.approx(0.5 + 0.5 * 2 / 3, abs=1e-15)
    assert result.ap[0, 1] == 1.0


def test_exact_threshold_counts_and_linspace_floats(tmp_path):
    # tIoU exactly 0.5 ([0, 5] in [0, 10]) matches at 0.5; tIoU 0.9 matches at linspace's 0.8999999999999999
    gt = {"v": [("A", 0, 10)], "w": [("B", 0, 10)]}
    preds = {"v": [("A", 0.9, 0, 5)], "w": [("B", 0.9, 0, 9)]}
    result = _evaluate(tmp_path, gt, preds, thresholds=ACTIVITYNET_TIOU)
    assert result.tiou_thresholds[8] == 0.8999999999999999
    np.testing.assert_array_equal(result.ap[:, 0], [1] + [0] * 9)
    np.testing.assert_array_equal(result.ap[:, 1], [1] * 9 + [0])


def test_class_without_predictions_scores_zero_and_counts(tmp_path):
    gt = {"v": [("A", 0, 10), ("B", 20, 30)]}
    result = _evaluate(tmp_path, gt, {"v": [("A", 0.9, 0, 10)]})
    assert result.classes == ("A", "B")
    np.testing.assert_array_equal(result.ap[0], [1.0, 0.0])
    assert result.mAP[0] == 0.5
    assert result.counts["classes_without_predictions"] == 1


def test_predictions_outside_the_subset_are_false_positives(tmp_path):
    gt = {"val": [("A", 0, 10)], "train": ("training", [("A", 0, 10)])}
    preds = {"train": [("A", 0.9, 0, 10)], "val": [("A", 0.8, 0, 10)]}
    result = _evaluate(tmp_path, gt, preds)
    assert result.ap[0, 0] == 0.5  # FP then TP
    assert result.counts["predictions_outside_evaluated_videos"] == 1
    assert result.counts["ground_truth"] == 1


def test_zero_length_segments(tmp_path):
    # zero-length against identical zero-length: tIoU 0/0 = NaN, which the official walk takes as a match
    gt = {"a": [("A", 5, 5)], "b": [("B", 5, 5)], "c": [("C", 0, 10)]}
    preds = {"a": [("A", 0.9, 5, 5)], "b": [("B", 0.9, 4, 6)], "c": [("C", 0.9, 5, 5)]}
    result = _evaluate(tmp_path, gt, preds, thresholds=ACTIVITYNET_TIOU)
    np.testing.assert_array_equal(result.ap.mean(axis=0), [1.0, 0.0, 0.0])


def test_unknown_label_is_an_error_or_an_unscored_false_positive(tmp_path):
    gt = {"v": [("A", 0, 10)]}
    preds = {"v": [("Z", 0.95, 0, 10), ("A", 0.9, 0, 10)]}
    with pytest.raises(InputError, match=r"video 'v'.*'label' 'Z'.*false_positive"):
        _evaluate(tmp_path, gt, preds)
    result = _evaluate(tmp_path, gt, preds, unknown_labels="false_positive")
    assert result.ap[0, 0] == 1.0  # a false positive of a class that is not scored changes no AP
    assert result.counts["predictions_unknown_label"] == 1


def test_blocked_videos_leave_ground_truth_and_predictions(tmp_path):
    gt = {"v": [("A", 0, 10)], "w": [("A", 0, 10)]}
    preds = {"v": [("A", 0.9, 0, 10)], "w": [("A", 0.95, 50, 60)]}
    assert _evaluate(tmp_path, gt, preds).ap[0, 0] == 0.25
    result = _evaluate(tmp_path, gt, preds, blocked_videos=["w"])
    assert result.ap[0, 0] == 1.0 and result.counts["ground_truth"] == 1


def test_class_order_is_first_appearance_in_the_subset(tmp_path):
    gt = {"t": ("training", [("Z", 0, 1)]), "v": [("C", 0, 10), ("A", 20, 30)], "w": [("B", 0, 10), ("A", 0, 5)]}
    result = _evaluate(tmp_path, gt, {"v": [("C", 0.9, 0, 10)]})
    assert result.classes == ("C", "A", "B")
    report = result.to_dict()
    assert list(report["per_class_AP"]) == ["C", "A", "B"] and report["per_class_AP"]["C"] == [100.0]


def test_ek100_drops_unknown_labels_and_reads_the_action_string(tmp_path):
    rows = [
        "narration_id,video_id,start_timestamp,stop_timestamp,verb_class,noun_class",
        "P01_01_0,P01_01,00:01:02.50,00:01:10.00,1,2",
        "P01_01_1,P01_01,00:02:00.00,00:02:05.00,3,4",
    ]
    (tmp_path / "gt.csv").write_text("\n".join(rows) + "\n")

    def entry(verb, noun, action, score, t0, t1):
        return {"verb": verb, "noun": noun, "action": action, "score": score, "segment": [t0, t1]}

    sub = {"version": "0.2", "challenge": "action_detection", "sls_pt": 0, "sls_tl": 0, "sls_td": 0, "results": {"P01_01": [
        entry(1, 2, "1,2", 0.9, 62.5, 70.0),  # timestamps 00:01:02.50 = 62.5 s
        entry(50, 250, "50,250", 0.99, 62.5, 70.0),  # labels absent from the ground truth: dropped, not FPs
        entry(3, 4, "1,2", 0.8, 120.0, 125.0),  # verb/noun right; the action comes from the string: wrong
    ]}}
    result = evaluate_ek100_detection(tmp_path / "gt.csv", sub, tiou_thresholds=EK100_TIOU)
    slow = evaluate_ek100_detection(tmp_path / "gt.csv", sub, ap_function=baseline.average_precision)
    assert result.tasks["verb"].classes == ("1", "3") and result.tasks["action"].classes == ("1,2", "3,4")
    np.testing.assert_array_equal(result.tasks["verb"].ap, np.ones((5, 2)))
    np.testing.assert_array_equal(result.tasks["noun"].ap, np.ones((5, 2)))
    # action "1,2": TP then an FP at a lower score -> AP 1; "3,4": no prediction -> 0
    np.testing.assert_array_equal(result.tasks["action"].ap, [[1.0, 0.0]] * 5)
    assert result.tasks["verb"].counts["predictions_unknown_label"] == 1
    for task in result.tasks:
        assert np.array_equal(result.tasks[task].ap, slow.tasks[task].ap)


def test_any_threshold_list_is_accepted(tmp_path):
    result = _evaluate(tmp_path, {"v": [("A", 0, 10)]}, {"v": [("A", 0.9, 0, 7)]}, thresholds=[0.3, 0.7, 0.71])
    np.testing.assert_array_equal(result.ap[:, 0], [1, 1, 0])
    with pytest.raises(ValueError, match="tIoU thresholds"):
        _evaluate(tmp_path, {"v": [("A", 0, 10)]}, {}, thresholds=[])


def test_no_predictions_at_all(tmp_path):
    result = _evaluate(tmp_path, {"v": [("A", 0, 10)]}, {})
    assert result.mAP.tolist() == [0.0] and result.counts["predictions"] == 0
