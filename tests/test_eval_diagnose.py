"""DETAD diagnosis: against DETAD's own outputs (tests/data/detad), hand-built error types, and the sensitivity
bins recomputed plainly."""
import json
from pathlib import Path

import numpy as np
import pytest

from eval.detection import ACTIVITYNET_TIOU
from eval.diagnose import (
    ACTIVITYNET_CHARACTERISTICS,
    ERROR_TYPES,
    THUMOS14_CHARACTERISTICS,
    Characteristic,
    diagnose,
)
from eval.inputs import SegmentTable, activitynet_ground_truth, read_activitynet_predictions

DETAD = Path(__file__).parent / "data" / "detad"
REFERENCE = json.loads((DETAD / "detad_outputs.json").read_text())
DETAD_NAMES = {"double_detection": "Double Detection Err", "wrong_label": "Wrong Label Err",
               "localization": "Localization Err", "confusion": "Confusion Err", "background": "Background Err"}
DETAD_CHARACTERISTICS = {"coverage": "coverage", "length": "length", "num_instances": "num-instances"}


def _run(case: str):
    ref = REFERENCE[case]
    gt = activitynet_ground_truth(DETAD / ref["inputs"][0])
    pred = read_activitynet_predictions(DETAD / ref["inputs"][1])
    chars = ACTIVITYNET_CHARACTERISTICS if ref["bins"] == "activitynet" else THUMOS14_CHARACTERISTICS
    return ref, gt, pred, diagnose(gt, pred, "label", ref["tiou_thresholds"], chars)


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_equals_detad(case):
    ref, _, _, got = _run(case)
    assert got.average_mAP_N == pytest.approx(ref["average_mAP_N"], abs=1e-12)
    for k, shares in enumerate(ref["fp_profile"].values()):
        np.testing.assert_allclose(got.fp_profile[k], np.array(shares, dtype=float), atol=1e-12)
    for name, detad_name in DETAD_NAMES.items():
        assert got.mAP_N_gain[name] == pytest.approx(ref["average_mAP_N_gain"][detad_name], abs=1e-12)
    for char in got.characteristics:
        detad = DETAD_CHARACTERISTICS[char.name]
        for b, label in enumerate(char.bins):
            sens = ref["sensitivity"][detad].get(label)
            fn = ref["false_negative_rate"][detad].get(label)
            if got.ground_truth_per_bin[char.name][b] == 0:  # DETAD (pandas 3) leaves empty bins out
                assert sens is None and fn is None and np.isnan(got.sensitivity[char.name][b])
            else:
                assert got.sensitivity[char.name][b] == pytest.approx(sens, abs=1e-12), (char.name, label)
                assert got.false_negative_rate[char.name][b] == pytest.approx(fn, abs=1e-12), (char.name, label)


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_error_type_of_every_prediction_equals_detad(case):
    ref, _, pred, got = _run(case)
    ours = {(pred.video[r], float(pred.score[r])): list(got.error_type[:, i]) for i, r in enumerate(got.diagnosed_rows)}
    detad = {(e["video"], e["score"]): e["types"] for e in ref["error_types"]}
    assert ours == detad


def test_hand_built_error_types():
    """tests/data/detad/small_pred.json is built so that each prediction has a known type (at tIoU 0.6)."""
    _, _, pred, got = _run("small_activitynet")
    t = int(np.flatnonzero(np.isclose(got.tiou_thresholds, 0.6))[0])
    by_score = {float(pred.score[r]): ERROR_TYPES[got.error_type[t, i]] for i, r in enumerate(got.diagnosed_rows)}
    assert by_score[0.99] == "true_positive"  # v1 A [10, 30] = the ground truth
    assert by_score[0.95] == "double_detection"  # A [11, 30]: tIoU 0.95 with the A already taken
    assert by_score[0.90] == "wrong_label"  # B [10, 29] on the A: tIoU 0.95
    assert by_score[0.85] == "localization"  # B [50, 70] on B [50, 90]: tIoU 0.5
    assert by_score[0.80] == "confusion"  # C [12, 20] on A [10, 30]: tIoU 0.4
    assert by_score[0.30] == "background"  # A [95, 99]: no ground truth near
    assert by_score[0.77] == "background"  # a video without ground truth
    t50 = int(np.flatnonzero(np.isclose(got.tiou_thresholds, 0.5))[0])
    assert ERROR_TYPES[got.error_type[t50, list(pred.score[got.diagnosed_rows]).index(0.85)]] == "true_positive"
    assert got.counts["ground_truth_left_out_zero_length"] == 1  # v5's [4, 4]


def _plain_bin(value, edges):
    """pandas.cut(right=True, include_lowest=True) written out: (lo, hi], the first bin also takes lo."""
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        if lo < value <= hi or (i == 0 and value == lo):
            return i
    return None


def test_bin_edges_are_detads():
    cov, length, inst = ACTIVITYNET_CHARACTERISTICS
    assert cov.bins == ("XS", "S", "M", "L", "XL") and inst.bins == ("XS", "S", "M", "L")
    np.testing.assert_array_equal(cov.assign(np.array([0.0, 0.2, 0.2000001, 0.8, 1.0, 1.01])), [0, 0, 1, 3, 4, -1])
    np.testing.assert_array_equal(length.assign(np.array([0.0, 30.0, 30.5, 180.0, 1e9])), [0, 0, 1, 3, 4])
    np.testing.assert_array_equal(inst.assign(np.array([1.0, 2.0, 4.0, 5.0, 8.0, 9.0])), [0, 1, 1, 2, 2, 3])
    assert THUMOS14_CHARACTERISTICS[1].edges == (0, 3, 6, 12, 18, np.inf)


def test_sensitivity_bins_against_a_plain_computation():
    """Per-bin ground-truth counts and false-negative rates recomputed with plain loops from the JSON files and the
    matched ground truth of each true positive."""
    ref, gt, pred, got = _run("random_activitynet")
    raw = json.loads((DETAD / ref["inputs"][0]).read_text())["database"]
    rows = []  # (video, label, start, end, coverage, length, instances) of each kept ground truth, file order
    for vid, v in raw.items():
        for a in v["annotations"]:
            t0, t1 = a["segment"]
            same = sum(1 for b in v["annotations"] if b["label"] == a["label"])
            if t0 < t1 and (t1 - t0) / v["duration"] <= 1:
                rows.append((vid, a["label"], t0, t1, (t1 - t0) / v["duration"], t1 - t0, same))
    for col, char in zip((4, 5, 6), ACTIVITYNET_CHARACTERISTICS):
        counts = [0] * len(char.bins)
        for r in rows:
            counts[_plain_bin(r[col], char.edges)] += 1
        assert list(got.ground_truth_per_bin[char.name]) == counts
    # false negatives: the ground truth left free by a plain greedy walk of the diagnosed (top 10 n_c) predictions
    ranked = [(pred.video[r], pred.labels["label"][r], pred.start[r], pred.end[r]) for r in got.diagnosed_rows]
    char = ACTIVITYNET_CHARACTERISTICS[1]
    missed_share = np.zeros((len(got.tiou_thresholds), len(char.bins)))
    for ti, thr in enumerate(got.tiou_thresholds):
        taken = set()
        for vid, label, p0, p1 in ranked:  # class by class, best score first: the official walk
            cands = [(min(p1, r[3]) - max(p0, r[2])) / ((p1 - p0) + (r[3] - r[2]) - max(0, min(p1, r[3]) - max(p0, r[2])))
                     if min(p1, r[3]) > max(p0, r[2]) else 0.0 for r in rows]
            order = sorted((j for j, r in enumerate(rows) if r[0] == vid and r[1] == label), key=lambda j: -cands[j])
            for j in order:
                if cands[j] < thr:
                    break
                if j not in taken:
                    taken.add(j)
                    break
        for b in range(len(char.bins)):
            members = [j for j, r in enumerate(rows) if _plain_bin(r[5], char.edges) == b]
            missed_share[ti, b] = sum(j not in taken for j in members) / len(members) if members else np.nan
    np.testing.assert_allclose(got.false_negative_rate["length"], missed_share.mean(axis=0), atol=1e-12)


# ------------------------------------------------------------------------------------------ evaluate --diagnose

ANET_GT = Path(__file__).parent / "data" / "eval" / "anet_val300_gt.json"
PNG = b"\x89PNG\r\n\x1a\n"


def _good_detector(seed: int = 0) -> dict:
    """Near-perfect detections of the 300-video ground truth: each segment jittered by 2 % of its length."""
    rng = np.random.default_rng(seed)
    database = json.loads(ANET_GT.read_text())["database"]
    results = {}
    for vid, v in database.items():
        results[vid] = []
        for a in v["annotations"]:
            t0, t1 = a["segment"]
            jitter = rng.normal(0, 0.02, 2) * (t1 - t0)
            results[vid].append({"label": a["label"], "score": float(rng.random()),
                                 "segment": [t0 + jitter[0], t1 + jitter[1]]})
    return {"version": "1.3", "external_data": {}, "results": results}


def _diagnose_cli(tmp_path, sub: dict, name: str) -> dict:
    from eval.cli import main

    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(sub))
    out = tmp_path / name
    assert main(["--dataset", "hacs", "--ground-truth", str(ANET_GT), "--predictions", str(path),
                 "--diagnose", "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text())["diagnosis"]


def _dominant_error(diagnosis: dict) -> str:
    shares = {e: v for e, v in diagnosis["false_positive_profile"]["1G"].items() if e not in ("predictions", "true_positive")}
    return max(shares, key=shares.get)


def test_shifted_detections_are_localization_errors(tmp_path, capsys):
    sub = _good_detector()
    for preds in sub["results"].values():
        for p in preds:
            half = (p["segment"][1] - p["segment"][0]) / 2
            p["segment"] = [p["segment"][0] + half, p["segment"][1] + half]
    diagnosis = _diagnose_cli(tmp_path, sub, "shifted")
    profile = diagnosis["false_positive_profile"]["1G"]
    assert _dominant_error(diagnosis) == "localization" and profile["localization"] > 80
    assert "false-positive profile, top 1G" in capsys.readouterr().out
    gains = diagnosis["average_mAP_N_gain_removing"]
    assert max(gains, key=gains.get) == "localization"


def test_shuffled_labels_are_wrong_label_errors(tmp_path):
    sub = _good_detector()
    labels = [p["label"] for preds in sub["results"].values() for p in preds]
    shuffled = iter(np.random.default_rng(1).permutation(labels))
    for preds in sub["results"].values():
        for p in preds:
            p["label"] = str(next(shuffled))
    diagnosis = _diagnose_cli(tmp_path, sub, "shuffled")
    assert _dominant_error(diagnosis) == "wrong_label" and diagnosis["false_positive_profile"]["1G"]["wrong_label"] > 80


def test_good_detector_report(tmp_path):
    diagnosis = _diagnose_cli(tmp_path, _good_detector(), "good")
    assert diagnosis["false_positive_profile"]["1G"]["true_positive"] > 80
    assert diagnosis["tiou_thresholds"][8] == 0.9
    cov = diagnosis["sensitivity"]["coverage"]
    assert list(cov) == ["XS", "S", "M", "L", "XL"] and cov["XS"]["edges"] == "(0, 0.2]"
    assert sum(b["ground_truth"] for b in cov.values()) == 472  # every (positive-length) ground truth in one bin
    md = (tmp_path / "good" / "report.md").read_text()
    for heading in ("## Diagnosis (DETAD)", "false-positive profile", "average-mAP_N gain", "sensitivity to ground-truth"):
        assert heading in md
    assert "Double detection" in md and "AP_N is DETAD's normalised AP" in md
    for png in ("diagnosis_false_positives.png", "diagnosis_sensitivity.png"):
        assert (tmp_path / "good" / png).read_bytes()[:8] == PNG and f"]({png})" in md


def test_ek100_diagnosis_per_task(tmp_path):
    from eval.cli import main

    data = Path(__file__).parent / "data" / "eval"
    out = tmp_path / "ek"
    assert main(["--dataset", "ek100", "--ground-truth", str(data / "ek100_val12.csv"),
                 "--predictions", str(data / "ek100_val12_sub_seed11.json"), "--diagnose", "--out", str(out)]) == 0
    diagnosis = json.loads((out / "report.json").read_text())["diagnosis"]
    assert set(diagnosis) == {"verb", "noun", "action"}
    assert diagnosis["action"]["sensitivity"]["length"]["XS"]["edges"] == "(0, 3]"  # DETAD's THUMOS14 bins
    assert (out / "diagnosis_sensitivity_action.png").exists() and (out / "diagnosis_false_positives_verb.png").exists()
