"""Proposal AR@AN / AUC: the official numbers on the fixture, the per-video-share quirks on hand-built cases,
and the vectorised curve against the loop baseline."""
import json
from pathlib import Path

import numpy as np
import pytest

from eval import baseline, synthetic
from eval.inputs import InputError, activitynet_ground_truth
from eval.proposals import evaluate_proposals

DATA = Path(__file__).parent / "data" / "eval"


def test_fixture_matches_official():
    official = json.loads((DATA / "anet_val300_proposals_seed11.official.json").read_text())
    result = evaluate_proposals(DATA / "anet_val300_gt.json", DATA / "anet_val300_proposals_seed11.json")
    report = result.to_dict()
    for key, value in official.items():
        assert report[key] == pytest.approx(value, abs=1e-6), key
    assert report["counts"]["predictions"] == 30000
    assert len(report["curve"]["average_recall"]) == 100


def _evaluate(tmp_path, gt, proposals, **kwargs):
    """gt: {video: [(t0, t1), ...]}; proposals: {video: [(score, t0, t1), ...]}; checked against the baseline."""
    database = {v: {"subset": "validation", "annotations": [{"label": "A", "segment": list(s)} for s in segs]}
                for v, segs in gt.items()}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"version": "t", "taxonomy": [], "database": database}))
    sub = {"version": "t", "external_data": {},
           "results": {v: [{"score": s, "segment": [a, b]} for s, a, b in p] for v, p in proposals.items()}}
    fast = evaluate_proposals(path, sub, tiou_thresholds=[0.5], **kwargs)
    slow = evaluate_proposals(path, sub, tiou_thresholds=[0.5], recall_function=baseline.recall_curve, **kwargs)
    assert np.array_equal(fast.avg_recall, slow.avg_recall)
    assert np.array_equal(fast.proposals_per_video, slow.proposals_per_video)
    return fast


def test_an_is_a_share_of_each_videos_own_proposals(tmp_path):
    # a: its only proposal hits; b: 3 proposals, the 2nd-ranked hits. ratio = 2 * 2 / 4 = 1, all kept.
    gt = {"a": [(0, 10)], "b": [(0, 10)]}
    props = {"a": [(0.5, 0, 10)], "b": [(0.9, 50, 60), (0.8, 0, 10), (0.7, 20, 30)]}
    result = _evaluate(tmp_path, gt, props, max_avg_nr_proposals=2)
    # grid point j uses int(n * j/100) proposals of a video with n: b reaches 2 at j = 67, a reaches 1 at j = 100
    recall = result.avg_recall
    assert recall[:66].max() == 0 and recall[66] == 0.5 and recall[98] == 0.5 and recall[99] == 1.0
    np.testing.assert_allclose(result.proposals_per_video, np.arange(1, 101) / 50)
    area = np.sum(np.diff(result.proposals_per_video) * (recall[1:] + recall[:-1]) / 2)
    assert result.auc == pytest.approx(100 * area / 2, abs=1e-12)


def test_proposals_on_videos_without_ground_truth_count_in_the_total(tmp_path):
    gt = {"a": [(0, 10)], "b": [(0, 10)]}
    props = {"a": [(0.5, 0, 10)], "b": [(0.9, 50, 60), (0.8, 0, 10), (0.7, 20, 30)],
             "c": [(0.9, 0, 1)] * 4}
    result = _evaluate(tmp_path, gt, props, max_avg_nr_proposals=2)
    # ratio = 2 * 2 / 8 = 0.5: a keeps int(0.5) = 0, b keeps int(1.5) = 1 (a miss)
    assert result.avg_recall.max() == 0
    assert result.counts["predictions_outside_evaluated_videos"] == 4


def test_video_without_proposals_recalls_nothing(tmp_path):
    result = _evaluate(tmp_path, {"a": [(0, 10)], "d": [(0, 10), (20, 30)]}, {"a": [(0.5, 0, 10)]})
    assert result.avg_recall[-1] == pytest.approx(1 / 3)
    assert result.counts["ground_truth_videos_without_predictions"] == 1


def test_zero_length_is_never_recalled(tmp_path):
    # tIoU NaN (0/0) fails `>=`, unlike the detection walk where it matches
    result = _evaluate(tmp_path, {"a": [(5, 5)]}, {"a": [(0.5, 5, 5)]})
    assert result.avg_recall.max() == 0


def test_no_proposals_is_an_error(tmp_path):
    with pytest.raises(InputError, match="no proposals"):
        _evaluate(tmp_path, {"a": [(0, 10)]}, {})


@pytest.mark.parametrize("per_video", [(20, 20), (3, 60)])
def test_generated_proposals_match_loop_baseline(per_video):
    gt = activitynet_ground_truth(DATA / "anet_val300_gt.json")
    sub = synthetic.activitynet_proposals(gt, per_video, seed=3)
    fast = evaluate_proposals(gt, sub)
    slow = evaluate_proposals(gt, sub, recall_function=baseline.recall_curve)
    assert np.array_equal(fast.recall, slow.recall) and fast.auc == slow.auc
