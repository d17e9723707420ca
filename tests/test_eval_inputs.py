"""Input validation: every malformed input is an error naming the file, the video and the field."""
import json
from pathlib import Path

import numpy as np
import pytest

from eval.detection import evaluate_detection
from eval.inputs import (
    InputError,
    activitynet_ground_truth,
    ek100_ground_truth,
    read_activitynet_predictions,
    read_ek100_predictions,
)
from tal_common.annotations import AnnotationError

DATA = Path(__file__).parent / "data" / "eval"


def _sub(entries, **top):
    return {"version": "1.3", "external_data": {}, "results": {"vid1": [{"label": "A", "score": 0.5, "segment": [0, 1]}],
                                                               "vid2": entries}, **top}


def test_reads_the_fixture_as_flat_arrays():
    pred = read_activitynet_predictions(DATA / "anet_val300_pred_seed11.json")
    raw = json.loads((DATA / "anet_val300_pred_seed11.json").read_text())["results"]
    first_vid, first = next(iter(raw.items()))
    assert len(pred) == 1238 and pred.video[0] == first_vid
    assert (pred.start[0], pred.end[0], pred.score[0]) == (*first[0]["segment"], first[0]["score"])
    assert pred.labels["label"][0] == first[0]["label"]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"label": "A", "segment": [0, 1]}, r"missing field 'score'"),
        ({"label": "A", "score": float("nan"), "segment": [0, 1]}, r"field 'score' must be finite"),
        ({"label": "A", "score": "high", "segment": [0, 1]}, r"field 'score' must be a number, got 'high'"),
        ({"label": "A", "score": 0.5, "segment": [0, float("inf")]}, r"field 'segment' must be finite"),
        ({"label": "A", "score": 0.5, "segment": [3, 1]}, r"field 'segment' ends before it starts"),
        ({"label": "A", "score": 0.5, "segment": [1]}, r"field 'segment' must be \[start, end\] numbers, got \[1\]"),
        ({"label": "A", "score": 0.5, "segment": [0, None]}, r"field 'segment' must be \[start, end\] numbers"),
        ({"label": 3, "score": 0.5, "segment": [0, 1]}, r"field 'label' must be a string, got 3"),
        ("oops", r"must be a mapping"),
    ],
)
def test_malformed_prediction_entries(entry, message):
    good = {"label": "A", "score": 0.4, "segment": [0, 2]}
    with pytest.raises(InputError, match=r"<predictions in memory>: video 'vid2', prediction 1: " + message):
        read_activitynet_predictions(_sub([good, entry]))


def test_malformed_prediction_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"results": {')
    with pytest.raises(InputError, match=r"bad.json: not valid JSON"):
        read_activitynet_predictions(bad)
    with pytest.raises(InputError, match=r"missing.json: file not found"):
        read_activitynet_predictions(tmp_path / "missing.json")
    no_external = _sub([])
    del no_external["external_data"]
    with pytest.raises(InputError, match=r"missing top-level field\(s\) \['external_data'\]"):
        read_activitynet_predictions(no_external)
    with pytest.raises(InputError, match=r"'results\['vid2'\]' must be a list"):
        read_activitynet_predictions({**_sub([]), "results": {"vid2": {"label": "A"}}})
    bad.write_text("[1, 2]")
    with pytest.raises(InputError, match=r"bad.json: top level must be a JSON object"):
        read_activitynet_predictions(bad)


def test_proposals_need_no_labels():
    pred = read_activitynet_predictions(_sub([{"score": 0.9, "segment": [0, 1]}]), with_labels=False)
    assert pred.labels == {} and len(pred) == 2


def test_activitynet_ground_truth_subset_and_errors(tmp_path):
    gt = activitynet_ground_truth(DATA / "anet_val300_gt.json")
    assert len(gt) == 472 and len(gt.videos) == 300 and len(set(gt.labels["label"])) == 156
    with pytest.raises(AnnotationError, match=r"no videos in subset 'testing'; subsets present: \['validation'\]"):
        evaluate_detection(DATA / "anet_val300_gt.json", DATA / "anet_val300_pred_seed11.json", subset="testing")
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"version": "t", "taxonomy": [], "database": {
        "v": {"subset": "validation", "annotations": [{"label": "A", "segment": [5, 2]}]}}}))
    with pytest.raises(AnnotationError, match=r"gt.json: video 'v', annotation 0: segment ends before it starts"):
        activitynet_ground_truth(path)


def test_ek100_ground_truth_from_timestamps():
    gt = ek100_ground_truth(DATA / "ek100_val12.csv")
    assert len(gt) == 1445 and len(gt.videos) == 12
    # first row: P02_14_0, 00:00:03.04 -> 00:00:04.25, verb 53, noun 111
    assert (gt.start[0], gt.end[0]) == (3.04, 4.25)
    assert (gt.labels["verb"][0], gt.labels["noun"][0], gt.labels["action"][0]) == (53, 111, 53 * 300 + 111)


def test_ek100_csv_errors(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("narration_id,video_id,start_timestamp,stop_timestamp,verb_class\nx,P01,00:00:01.00,00:00:02.00,3\n")
    with pytest.raises(AnnotationError, match=r"gt.csv: missing column\(s\) \['noun_class'\]"):
        ek100_ground_truth(path)
    path.write_text("narration_id,video_id,start_timestamp,stop_timestamp,verb_class,noun_class\nx,P01,00:00:0x,00:00:02.00,3,4\n")
    with pytest.raises(AnnotationError, match=r"video 'P01', narration 'x', field 'start_timestamp'"):
        ek100_ground_truth(path)


def _ek(entries, **top):
    return {"version": "0.2", "challenge": "action_detection", "sls_pt": 1, "sls_tl": 1, "sls_td": 1,
            "results": {"P01_01": entries}, **top}


def test_ek100_submission_fields():
    good = {"verb": 3, "noun": 4, "action": "3,4", "score": 0.5, "segment": [0.0, 1.0]}
    pred = read_ek100_predictions(_ek([good, {**good, "action": "5,6"}]))
    np.testing.assert_array_equal(pred.labels["action"], [904, 1506])
    np.testing.assert_array_equal(pred.labels["verb"], [3, 3])
    cases = [
        (_ek([good], version="0.1"), r"field 'version' must be \"0.2\""),
        (_ek([good], sls_pt=7), r"field 'sls_pt' must be an integer in 0..5"),
        ({k: v for k, v in _ek([good]).items() if k != "challenge"}, r"missing top-level field\(s\) \['challenge'\]"),
        (_ek([good, {**good, "verb": 97}]), r"video 'P01_01', prediction 1: field 'verb' must be in 0..96"),
        (_ek([good, {**good, "noun": 2.5}]), r"prediction 1: field 'noun' must be an integer, got 2.5"),
        (_ek([{**good, "action": "3-4"}]), r"prediction 0: field 'action' must be a \"verb,noun\" string"),
        (_ek([{**good, "action": "3,300"}]), r"field 'action' '3,300' out of range"),
        (_ek([{**good, "segment": [float("nan"), 1]}]), r"field 'segment' must be finite"),
    ]
    for sub, message in cases:
        with pytest.raises(InputError, match=message):
            read_ek100_predictions(sub)
