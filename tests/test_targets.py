"""BMN targets against mmaction2's generate_labels (bit for bit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from localization.targets import bmn_targets, proposal_bounds, valid_proposal_mask

DATA = Path(__file__).parent / "data" / "bmn"


def test_mmaction2_targets_on_reference_cases():
    cases = json.loads((DATA / "cases.json").read_text())["cases_normalised"]
    ref = np.load(DATA / "labels_ref.npz")
    assert len(cases) == 8
    for i, segments in enumerate(cases):
        iou, start, end = bmn_targets(np.array(segments), 100)
        assert iou.dtype == start.dtype == end.dtype == np.float32
        assert np.array_equal(iou, ref[f"mm_{i}_iou"]), i
        assert np.array_equal(start, ref[f"mm_{i}_start"]), i
        assert np.array_equal(end, ref[f"mm_{i}_end"]), i


def test_targets_of_checkpoint_fixture():
    ref = torch.load(DATA / "bmn_mmaction2_T32_f48_seed5.pt", weights_only=True)
    for b, segments in enumerate(ref["gt"]):
        iou, start, end = bmn_targets(np.array(segments), 32)
        assert np.array_equal(iou, ref["label_iou"][b].numpy())
        assert np.array_equal(start, ref["label_start"][b].numpy())
        assert np.array_equal(end, ref["label_end"][b].numpy())


def test_grid_and_anchor_conventions():
    tmin, tmax = proposal_bounds(10, 4)
    assert tmin.shape == tmax.shape == (4, 10)
    np.testing.assert_allclose(tmin[2, 3], 0.3)
    np.testing.assert_allclose(tmax[2, 3], 0.6)  # (s + d + 1) / T
    assert np.array_equal(valid_proposal_mask(10, 4), np.add.outer(np.arange(4), np.arange(10)) < 10)

    # A segment exactly on the grid: its proposal has IoU 1 (up to the float32 rounding of the segment);
    # anchors [(i-0.5)/T, (i+1.5)/T] vs the region [0.3 - 0.15, 0.3 + 0.15] around the start.
    iou, start, end = bmn_targets(np.array([[0.3, 0.6]]), 10)
    assert np.unravel_index(iou.argmax(), iou.shape) == (2, 3)
    np.testing.assert_allclose(iou[2, 3], 1.0, atol=1e-6)
    np.testing.assert_allclose(start, [0, 0.5, 1, 1, 0.5, 0, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(end, [0, 0, 0, 0, 0.5, 1, 1, 0.5, 0, 0], atol=1e-6)


def test_dscale_crops_the_duration_axis():
    segments = np.array([[0.1, 0.2], [0.5, 0.9]])
    full = bmn_targets(segments, 20)
    part = bmn_targets(segments, 20, 8)
    assert np.array_equal(part[0], full[0][:8])
    assert np.array_equal(part[1], full[1]) and np.array_equal(part[2], full[2])


@pytest.mark.parametrize(
    "segments, message",
    [(np.zeros((0, 2)), "non-empty"), (np.zeros((2, 3)), r"\(K, 2\)"), (np.array([[0.5, 0.2]]), "start <= end")],
)
def test_bad_segments(segments, message):
    with pytest.raises(ValueError, match=message):
        bmn_targets(segments, 10)
