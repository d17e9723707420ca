"""BMN losses, as mmaction2's ``BMNLoss``: TEM + 10 x PEM regression + PEM classification.

The arithmetic is mmaction2's, with one guard: a batch with no regression sample at all (nothing above IoU 0.7,
so nothing is sampled either) gives a regression loss of 0 where mmaction2 divides 0 by 0 (NaN).

``tadaconv_bmn_loss`` is the TAdaConv repository's EK100 variant (``tadaconv/models/utils/localization_losses.py``):
log epsilon 1e-6 instead of 1e-5, the balancing ratio not clamped (a map with no positive gets ratio 0, so its
balanced BCE is 0, as the reference's PEM classification), and with no medium-IoU proposal the medium sampling ratio
``#high / 1`` instead of ``#high / 0``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from localization.targets import valid_proposal_mask

__all__ = ["BMNLosses", "bmn_loss", "tadaconv_bmn_loss", "tem_loss", "pem_reg_loss", "pem_cls_loss"]


class BMNLosses(NamedTuple):
    """Scalar tensors: ``total = w_tem * tem + w_reg * pem_reg + w_cls * pem_cls``."""

    total: torch.Tensor
    tem: torch.Tensor
    pem_reg: torch.Tensor
    pem_cls: torch.Tensor


def _weighted_bce(
    pred: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    num_entries: torch.Tensor,
    ratio_range: tuple[float, float] | None = (1.05, 21.0),
    eps: float = 1e-5,
) -> torch.Tensor:
    """Class-balanced BCE shared by TEM and PEM classification.

    ``positive`` / ``negative`` are 0/1 float masks shaped like ``pred``; ``ratio = num_entries / max(#pos, 1)``
    (clamped to ``ratio_range``; without a range, 0 when there is no positive) weights positives by ``ratio/2`` and
    negatives by ``ratio / (2 (ratio - 1))``. Returns ``-sum(...) / num_entries``.
    """
    count = positive.sum()
    ratio = num_entries / count.clamp(min=1)
    if ratio_range is None:
        ratio = torch.where(count > 0, ratio, torch.zeros_like(ratio))
    else:
        ratio = ratio.clamp(*ratio_range)
    coef_0 = 0.5 * ratio / (ratio - 1)
    coef_1 = 0.5 * ratio
    loss = coef_1 * positive * torch.log(pred + eps) + coef_0 * negative * torch.log(1.0 - pred + eps)
    return -loss.sum() / num_entries


def tem_loss(
    pred_start: torch.Tensor,
    pred_end: torch.Tensor,
    gt_start: torch.Tensor,
    gt_end: torch.Tensor,
    ratio_range: tuple[float, float] | None = (1.05, 21.0),
    eps: float = 1e-5,
) -> torch.Tensor:
    """Temporal evaluation loss: balanced BCE (label > 0.5 is positive) on start plus on end, all ``(B, T)``."""
    total = pred_start.new_zeros(())
    for pred, gt in ((pred_start, gt_start), (pred_end, gt_end)):
        positive = (gt > 0.5).to(pred.dtype)
        num_entries = pred.new_tensor(float(gt.numel()))
        total = total + _weighted_bce(pred, positive, 1.0 - positive, num_entries, ratio_range, eps)
    return total


def pem_reg_loss(
    pred: torch.Tensor,
    gt_iou: torch.Tensor,
    valid: torch.Tensor,
    high: float = 0.7,
    low: float = 0.3,
    generator: torch.Generator | None = None,
    medium_floor: bool = False,
) -> torch.Tensor:
    """PEM regression: squared error on all high-IoU (> high) proposals plus random medium/low ones.

    Medium (``low < IoU <= high``) and low (``0 < IoU <= low``, valid only) proposals are each kept with
    probability ``#high / #medium`` resp. ``#high / #low`` (two ``torch.rand`` draws, in mmaction2's order).
    As in mmaction2, a ratio above 1 (more high than medium/low proposals, or none of them) makes the threshold
    negative, which selects every cell of the map; ``medium_floor`` (TAdaConv) divides by 1 instead of 0 when there
    is no medium proposal. ``pred``, ``gt_iou`` (already masked), ``valid``:
    ``(B, D, T)``. Returns ``0.5 * sum(w (p - g)^2) / sum(w)``, 0 when no cell has weight.
    """
    h_mask = (gt_iou > high).to(pred.dtype)
    m_mask = ((gt_iou <= high) & (gt_iou > low)).to(pred.dtype)
    l_mask = ((gt_iou <= low) & (gt_iou > 0.0)).to(pred.dtype) * valid
    num_h = h_mask.sum()
    num_m = m_mask.sum()
    r_m = num_h / (num_m.clamp(min=1) if medium_floor else num_m)
    sm_mask = (m_mask * _uniform(gt_iou, generator) > 1.0 - r_m).to(pred.dtype)
    r_l = num_h / l_mask.sum()
    sl_mask = (l_mask * _uniform(gt_iou, generator) > 1.0 - r_l).to(pred.dtype)
    weights = h_mask + sm_mask + sl_mask
    return 0.5 * ((pred - gt_iou) * weights).square().sum() / weights.sum().clamp(min=1)


def pem_cls_loss(
    pred: torch.Tensor,
    gt_iou: torch.Tensor,
    valid: torch.Tensor,
    threshold: float = 0.9,
    ratio_range: tuple[float, float] | None = (1.05, 21.0),
    eps: float = 1e-5,
) -> torch.Tensor:
    """PEM classification: balanced BCE with IoU > threshold positive, valid others negative; all ``(B, D, T)``."""
    positive = (gt_iou > threshold).to(pred.dtype)
    negative = (gt_iou <= threshold).to(pred.dtype) * valid
    num_entries = positive.sum().clamp(min=1) + negative.sum()
    return _weighted_bce(pred, positive, negative, num_entries, ratio_range, eps)


def bmn_loss(
    conf: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    gt_iou: torch.Tensor,
    gt_start: torch.Tensor,
    gt_end: torch.Tensor,
    weights: tuple[float, float, float] = (1.0, 10.0, 1.0),
    generator: torch.Generator | None = None,
    eps: float = 1e-5,
    ratio_range: tuple[float, float] | None = (1.05, 21.0),
    medium_floor: bool = False,
) -> BMNLosses:
    """Full BMN loss for a batch.

    Args:
        conf: ``(B, 2, D, T)`` model confidence map (channel 0 regression, 1 classification).
        start, end: ``(B, T)`` model boundary probabilities.
        gt_iou: ``(B, D, T)`` targets from ``bmn_targets`` (masked to valid proposals here).
        gt_start, gt_end: ``(B, T)`` targets.
        weights: ``(tem, pem_reg, pem_cls)`` weights; mmaction2 uses ``(1, 10, 1)``.
        generator: RNG for the regression sampling (default: torch's global RNG).
        eps, ratio_range, medium_floor: see ``tem_loss``, ``pem_cls_loss``, ``pem_reg_loss`` (mmaction2's defaults).

    Returns:
        ``BMNLosses(total, tem, pem_reg, pem_cls)``.
    """
    b, _, d, t = conf.shape
    expected = {"conf": (b, 2, d, t), "start": (b, t), "end": (b, t), "gt_iou": (b, d, t),
                "gt_start": (b, t), "gt_end": (b, t)}
    given = {"conf": conf, "start": start, "end": end, "gt_iou": gt_iou, "gt_start": gt_start, "gt_end": gt_end}
    for name, shape in expected.items():
        if tuple(given[name].shape) != shape:
            raise ValueError(f"bmn_loss: {name} has shape {tuple(given[name].shape)}, expected {shape}")
    valid = torch.from_numpy(valid_proposal_mask(t, d)).to(device=conf.device, dtype=conf.dtype)
    gt_iou = gt_iou.to(conf.dtype) * valid
    reg = pem_reg_loss(conf[:, 0], gt_iou, valid, generator=generator, medium_floor=medium_floor)
    cls = pem_cls_loss(conf[:, 1], gt_iou, valid, ratio_range=ratio_range, eps=eps)
    tem = tem_loss(start, end, gt_start.to(start.dtype), gt_end.to(end.dtype), ratio_range, eps)
    total = weights[0] * tem + weights[1] * reg + weights[2] * cls
    return BMNLosses(total, tem, reg, cls)


def tadaconv_bmn_loss(
    conf: torch.Tensor,
    start: torch.Tensor,
    end: torch.Tensor,
    gt_iou: torch.Tensor,
    gt_start: torch.Tensor,
    gt_end: torch.Tensor,
    weights: tuple[float, float, float] = (1.0, 10.0, 1.0),
    generator: torch.Generator | None = None,
) -> BMNLosses:
    """``bmn_loss`` with the TAdaConv EK100 arithmetic: eps 1e-6, no ratio clamp, medium ratio floor (same shapes)."""
    return bmn_loss(
        conf, start, end, gt_iou, gt_start, gt_end, weights, generator, eps=1e-6, ratio_range=None, medium_floor=True
    )


def _uniform(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)
