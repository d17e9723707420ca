"""BMN post-processing on small hand-built maps, and against the literal loop versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from localization.postprocess import (
    bmn_proposals,
    boundary_candidates,
    proposals_from_maps,
    proposals_from_maps_loop,
    soft_nms,
    soft_nms_loop,
)


def test_boundary_candidates_peaks_and_threshold():
    scores = np.array([0.1, 0.3, 0.2, 0.05, 0.9, 0.6, 0.1, 0.4, 0.3, 0.2])
    # peaks at 1, 4, 7; 5 is above 0.5 * 0.9; 0 is always a start and 9 always an end candidate
    assert np.flatnonzero(boundary_candidates(scores, is_start=True)).tolist() == [0, 1, 4, 5, 7]
    assert np.flatnonzero(boundary_candidates(scores, is_start=False)).tolist() == [1, 4, 5, 7, 9]
    assert np.flatnonzero(boundary_candidates(scores, True, peak_ratio=0.3)).tolist() == [0, 1, 4, 5, 7, 8]


def test_proposals_from_hand_built_maps():
    t = 8
    start = np.full(t, 0.1, np.float32)
    end = np.full(t, 0.1, np.float32)
    start[2], end[5] = 0.9, 0.8  # one clear action [2/8, 5/8]
    conf = np.full((2, t, t), 0.5, np.float32)
    conf[:, 2, 2] = 1.0  # (d=2, s=2) is that proposal

    props = proposals_from_maps(torch.from_numpy(conf), start, end)
    # start candidates {0 (always), 2 (peak)}, end candidates {5 (peak), 7 (always)}
    assert sorted(map(tuple, np.round(props[:, :2] * t).astype(int).tolist())) == [(0, 5), (0, 7), (2, 5), (2, 7)]
    best = props[props[:, 2].argmax()]
    np.testing.assert_allclose(best, [2 / t, 5 / t, 0.9 * 0.8 * 1.0 * 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="conf"):
        proposals_from_maps(conf[:, :, :5], start, end)


def test_soft_nms_decays_overlapping_only():
    proposals = np.array(
        [
            [0.10, 0.50, 0.9],  # best
            [0.12, 0.50, 0.8],  # IoU 0.95 with best > 0.5 + 0.4 * 0.4 = 0.66: decayed
            [0.30, 0.70, 0.7],  # IoU 0.33: below the threshold, untouched
            [0.80, 0.90, 0.6],  # disjoint
        ]
    )
    out = soft_nms(proposals, alpha=0.4, low=0.5, high=0.9, top_k=10)
    iou = 0.38 / 0.40
    decayed = 0.8 * np.exp(-(iou**2) / 0.4)
    np.testing.assert_allclose(out, [[0.1, 0.5, 0.9], [0.3, 0.7, 0.7], [0.8, 0.9, 0.6], [0.12, 0.5, decayed]])
    assert soft_nms(proposals, top_k=2).shape == (2, 3)
    assert soft_nms(np.zeros((0, 3))).shape == (0, 3)


def test_vectorised_equals_loop_versions():
    rng = np.random.default_rng(3)
    t, d = 40, 30
    for _ in range(3):
        conf = rng.random((2, d, t)).astype(np.float32)
        start = rng.random(t).astype(np.float32)
        end = rng.random(t).astype(np.float32)
        candidates = proposals_from_maps(conf, start, end)
        assert len(candidates) > 100
        assert np.array_equal(candidates, proposals_from_maps_loop(conf, start, end))
        fast = soft_nms(candidates, top_k=30)
        assert fast.shape == (30, 3) and np.all(np.diff(fast[:, 2]) <= 0)
        assert np.array_equal(fast, soft_nms_loop(candidates, top_k=30))
        assert np.array_equal(bmn_proposals(conf, start, end, top_k=30), fast)


def test_soft_nms_orders_exact_ties_as_mmaction2():
    """Candidates with many tied scores; the fixture is mmaction2's own soft_nms / post_processing on them."""
    with np.load(Path(__file__).parent / "data" / "ek100_protocol" / "mmaction2_soft_nms_ties.npz") as ref:
        for case in range(3):
            cand, final = ref[f"cand_{case}"], ref[f"final_{case}"]
            assert len(np.unique(cand[:, 2])) < 20  # heavily tied
            ours = soft_nms(cand, alpha=0.4, low=0.5, high=0.9, top_k=100)
            assert np.array_equal(ours, final)
            assert np.array_equal(soft_nms_loop(cand, alpha=0.4, low=0.5, high=0.9, top_k=100), final)
            # mmaction2's soft_nms itself returns top_k + 1 picks before post_processing cuts them to top_k
            assert len(ref[f"soft_nms_{case}"]) == 101
