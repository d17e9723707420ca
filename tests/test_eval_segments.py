"""Shared primitives: the official tIoU formula and the official per-group descending order."""
import numpy as np
import pytest

from eval.detection import greedy_assign, interpolated_ap
from eval.baseline import interpolated_prec_rec
from eval.segments import descending_order, thresholds_array, tiou


def test_tiou_formula_and_zero_length_nan():
    got = tiou(np.array([0.0, 5, 5, 0]), np.array([10.0, 5, 5, 5]), np.array([0.0, 5, 4, 0]), np.array([5.0, 5, 6, 10]))
    assert got[0] == 0.5 and np.isnan(got[1]) and got[2] == 0.0 and got[3] == 0.5


def test_descending_order_groups_and_ties():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, 2000)
    scores = np.round(rng.random(2000), 1)  # many ties, some groups over the small-sort size
    order = descending_order(groups, scores)
    assert np.all(np.diff(groups[order]) >= 0)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        np.testing.assert_array_equal(order[groups[order] == g], members[scores[members].argsort()[::-1]])
    assert descending_order(np.zeros(0, int), np.zeros(0)).size == 0


def test_greedy_assign_equals_sequential_walk():
    """Random preference lists: the parallel rounds give the one-by-one greedy result, ground truth for ground truth."""
    rng = np.random.default_rng(1)
    n_pred, n_gt, n_thr = 300, 40, 3
    lists = [rng.permutation(n_gt)[: rng.integers(0, 6)] for _ in range(n_pred)]
    usable = np.array([[rng.integers(0, len(lst) + 1) for lst in lists] for _ in range(n_thr)])
    offset = np.cumsum([len(lst) for lst in lists]) - [len(lst) for lst in lists]
    got = greedy_assign(np.concatenate(lists).astype(np.int64), offset, usable, n_gt)
    for t in range(n_thr):
        taken = set()
        for p, lst in enumerate(lists):
            free = [g for g in lst[: usable[t, p]] if g not in taken]
            assert got[t, p] == (free[0] if free else -1)
            taken.update(free[:1])


def test_interpolated_ap_is_the_official_one_bit_for_bit():
    """Random TP flags for 30 classes of varied sizes (1..300 predictions, some none): each (threshold, class)
    AP equals interpolated_prec_rec on that class's curve exactly."""
    rng = np.random.default_rng(2)
    sizes = rng.integers(0, 300, 30)
    sizes[[3, 7]] = 0
    cls = np.repeat(np.arange(30), sizes)
    tp = rng.random((4, len(cls))) < rng.random((4, 1))
    npos = np.maximum(np.bincount(cls, minlength=30), 1) + rng.integers(0, 5, 30)
    npos = np.maximum(npos, [np.max(tp[:, cls == c].sum(axis=1), initial=0) for c in range(30)])
    got = interpolated_ap(tp, cls, npos)
    for c in range(30):
        for t in range(4):
            flags = tp[t, cls == c]
            if not len(flags):
                assert got[t, c] == 0
                continue
            cum, fcum = np.cumsum(flags).astype(float), np.cumsum(~flags).astype(float)
            assert got[t, c] == interpolated_prec_rec(cum / (cum + fcum), cum / npos[c])


def test_threshold_validation():
    assert thresholds_array([0.5, 0.75, 1.0]).tolist() == [0.5, 0.75, 1.0]
    for bad in ([], [[0.5]], [float("nan")], [1.5], [-0.5], [0.0]):
        with pytest.raises(ValueError, match="tIoU thresholds"):
            thresholds_array(bad)
