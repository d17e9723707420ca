"""BMN losses against mmaction2's BMNLoss (fixture), and their guards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from localization.losses import bmn_loss

DATA = Path(__file__).parent / "data" / "bmn"


@pytest.fixture(scope="module")
def ref() -> dict:
    return torch.load(DATA / "bmn_mmaction2_T32_f48_seed5.pt", weights_only=True)


def _loss(ref: dict, seed: int):
    return bmn_loss(
        ref["conf"], ref["start"], ref["end"], ref["label_iou"], ref["label_start"], ref["label_end"],
        generator=torch.Generator().manual_seed(seed),
    )


def test_deterministic_parts_match_mmaction2(ref):
    losses = _loss(ref, 0)
    torch.testing.assert_close(losses.tem, ref["loss_tem"], rtol=0, atol=1e-5)
    torch.testing.assert_close(losses.pem_cls, ref["loss_pem_cls"], rtol=0, atol=1e-5)
    torch.testing.assert_close(losses.total, losses.tem + 10 * losses.pem_reg + losses.pem_cls)


def test_sampled_regression_part_matches_statistically(ref):
    draws = torch.stack([_loss(ref, seed).pem_reg for seed in range(40)])
    assert torch.isfinite(draws).all() and draws.std() > 0
    assert abs(ref["loss_pem_reg"] - draws.mean()) < 4 * draws.std()
    # The reference total is consistent with its parts under the same weights.
    torch.testing.assert_close(
        ref["loss_total"], ref["loss_tem"] + 10 * ref["loss_pem_reg"] + ref["loss_pem_cls"], rtol=0, atol=1e-5
    )


def test_regression_sampling_follows_mmaction2_ratios():
    torch.manual_seed(0)
    gt_iou = torch.zeros(1, 6, 6)
    gt_iou[0, 0, :2] = torch.tensor([0.8, 0.9])  # 2 high
    gt_iou[0, 1, :5] = 0.5  # 5 medium: each kept with probability 2/5
    gt_iou[0, 2, :4] = 0.2  # 4 low (all valid): each kept with probability 2/4
    pred = torch.rand(1, 6, 6)
    conf = torch.stack([pred, torch.rand(1, 6, 6)], dim=1)
    seq = torch.rand(1, 6)
    losses = bmn_loss(conf, seq, seq, gt_iou, seq, seq, generator=torch.Generator().manual_seed(7))

    draws = torch.Generator().manual_seed(7)
    u_medium, u_low = torch.rand(1, 6, 6, generator=draws), torch.rand(1, 6, 6, generator=draws)
    medium, low = (gt_iou > 0.3) & (gt_iou <= 0.7), (gt_iou > 0) & (gt_iou <= 0.3)
    weights = (gt_iou > 0.7).float() + (medium & (u_medium > 1 - 2 / 5)).float() + (low & (u_low > 1 - 2 / 4)).float()
    expected = 0.5 * (weights * (pred - gt_iou)).square().sum() / weights.sum()
    torch.testing.assert_close(losses.pem_reg, expected)


def test_regression_ratio_above_one_selects_every_cell():
    # 2 high and no medium/low proposals: mmaction2's thresholds 1 - 2/0 = -inf select every cell in both the
    # medium and the low draw, so high cells weigh 3 and all others 2 (weights enter the squared error squared).
    gt_iou = torch.zeros(1, 4, 4)
    gt_iou[0, 0, :2] = torch.tensor([0.8, 0.9])
    conf = torch.full((1, 2, 4, 4), 0.5)
    seq = torch.full((1, 4), 0.5)
    losses = bmn_loss(conf, seq, seq, gt_iou, seq, seq)
    weights = 2 + (gt_iou > 0.7).float()
    expected = 0.5 * (weights * (0.5 - gt_iou)).square().sum() / weights.sum()
    torch.testing.assert_close(losses.pem_reg, expected)


def test_batch_without_positives_is_finite_and_differentiable():
    conf = torch.rand(2, 2, 6, 6, requires_grad=True)
    start = torch.rand(2, 6, requires_grad=True)
    end = torch.rand(2, 6, requires_grad=True)
    zeros_map, zeros_seq = torch.zeros(2, 6, 6), torch.zeros(2, 6)
    losses = bmn_loss(conf, start, end, zeros_map, zeros_seq, zeros_seq)
    assert all(torch.isfinite(x) for x in losses)
    assert losses.pem_reg == 0
    losses.total.backward()
    assert all(torch.isfinite(t.grad).all() for t in (conf, start, end))


def test_shape_mismatch_names_the_argument():
    with pytest.raises(ValueError, match="gt_iou"):
        bmn_loss(torch.rand(1, 2, 4, 5), torch.rand(1, 5), torch.rand(1, 5), torch.rand(1, 5, 4),
                 torch.rand(1, 5), torch.rand(1, 5))
